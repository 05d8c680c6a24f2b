"""Cohere Command R7B / Command A: ``<|START_ACTION|>[{"tool_call_id": "0", "tool_name": …, "parameters": {…}}]
<|END_ACTION|>``.

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_command_r7b`` (``<|START_ACTION|>``, a JSON array
with ``tool_name`` / ``parameters``, ``<|END_ACTION|>``); template
``models/templates/CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja``.
"""

from __future__ import annotations

from llamashim.stream.rescue.base import Found, Miss, Offered, Verdict, closing, json_calls, ws

OPENERS = ("<|START_ACTION|>",)


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    got = json_calls(text, ws(text, i + len(opener)), offered, final)
    if isinstance(got, Miss):
        return got
    end = closing(text, ws(text, got[0]), "<|END_ACTION|>", final)
    return end if isinstance(end, Miss) else Found(end, tuple(got[1]))
