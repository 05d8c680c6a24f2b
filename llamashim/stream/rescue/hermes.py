"""Hermes 2 Pro / Qwen 2.5–3 / Granite 3.1 and most JSON-in-tags models: ``<tool_call>{"name": …, "arguments": {…}}
</tool_call>``, one block per call (or several objects, or an array, in one block); ``<function_call>`` too.

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_hermes_2_pro`` (open tags ``<tool_call>``,
``<function_call>``; the JSON needs ``"name"``); templates ``models/templates/NousResearch-Hermes-2-Pro-Llama-3-8B-
tool_use.jinja`` and ``Qwen-Qwen2.5-7B-Instruct.jinja`` (``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>``).
A block whose closing tag never came (the answer ended) still counts when its JSON is whole.
"""

from __future__ import annotations

from llamashim.stream.rescue.base import MORE, NO, Found, Miss, Offered, ToolCall, Verdict, json_calls, prefix_of, ws

OPENERS = ("<tool_call>", "<function_call>")


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    closer = "</" + opener[1:]
    j = ws(text, i + len(opener))
    calls: list[ToolCall] = []
    while True:
        if j >= len(text):
            return Found(j, tuple(calls)) if final and calls else (NO if final else MORE)
        if text.startswith(closer, j):
            return Found(j + len(closer), tuple(calls)) if calls else NO
        if prefix_of(text, j, closer):
            return Found(len(text), tuple(calls)) if final and calls else (NO if final else MORE)
        if text[j] not in "{[":
            return NO
        got = json_calls(text, j, offered, final)
        if isinstance(got, Miss):
            return got
        j, found = got
        calls.extend(found)
        j = ws(text, j)
