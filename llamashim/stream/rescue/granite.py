"""IBM Granite 3.0 / 3.2 and Phi-4-mini: ``<|tool_call|>[{"name": …, "arguments": {…}}]`` (Phi closes it with
``<|/tool_call|>``; Granite 3.1's ``<tool_call>`` is Hermes').

Source: llama.cpp ``common/chat.cpp`` Granite params (``<|tool_call|>`` grammar trigger, a JSON array of
``{name, arguments}``); templates ``models/templates/ibm-granite-granite-3.3-2B-Instruct.jinja``,
``microsoft-Phi-4-mini-instruct.jinja``.
"""

from __future__ import annotations

from llamashim.stream.rescue.base import MORE, Found, Miss, Offered, Verdict, json_calls, lit, ws

OPENERS = ("<|tool_call|>",)


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    got = json_calls(text, ws(text, i + len(opener)), offered, final)
    if isinstance(got, Miss):
        return got
    end, calls = got
    close = lit(text, ws(text, end), "<|/tool_call|>", final)
    if close is MORE:
        return MORE
    return Found(close if isinstance(close, int) else end, tuple(calls))
