"""Mistral: ``[TOOL_CALLS][{"name": …, "arguments": {…}, "id": "…"}]`` (Nemo, Small 3; a JSON array after the
token) and the newer ``[TOOL_CALLS]NAME[ARGS]{json}`` (Magistral, Ministral 3, Devstral; ``[CALL_ID]id`` optional,
one token per call or several calls after one).

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_mistral_nemo`` / ``common_chat_parse_magistral``
(prefix ``[TOOL_CALLS]`` then a JSON array); ``tests/test-chat.cpp`` (``[TOOL_CALLS]special_function[ARGS]{"arg1":1}``);
templates ``models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja``,
``mistralai-Ministral-3-14B-Reasoning-2512.jinja``.
"""

from __future__ import annotations

import re

from llamashim.stream.rescue.base import MORE, NO, Found, Miss, Offered, ToolCall, Verdict, json_args, json_calls, ws

OPENERS = ("[TOOL_CALLS]",)
_CALL = re.compile(r"([A-Za-z0-9_.\-]+)(?:\[CALL_ID\][A-Za-z0-9_\-]*)?\[ARGS\]")
_MAYBE = re.compile(r"[A-Za-z0-9_.\-]*(?:\[[A-Za-z0-9_\-\[\]]*)?\Z")


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    j = ws(text, i + len(opener))
    if j >= len(text):
        return NO if final else MORE
    if text[j] in "[{":
        got = json_calls(text, j, offered, final)
        return got if isinstance(got, Miss) else Found(got[0], tuple(got[1]))
    calls: list[ToolCall] = []
    while True:
        m = _CALL.match(text, j)
        if m is None:
            if not final and _MAYBE.match(text, j):
                return MORE
            return Found(j, tuple(calls)) if calls else NO
        if m.group(1) not in offered:
            return NO
        got_args = json_args(text, ws(text, m.end()), m.group(1), offered, final)
        if isinstance(got_args, Miss):
            return got_args
        j, call = got_args
        calls.append(call)
        if j >= len(text) and not final:
            return MORE  # another NAME[ARGS] may follow
