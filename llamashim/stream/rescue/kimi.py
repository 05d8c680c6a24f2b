"""Kimi K2: ``<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{…}
<|tool_call_end|><|tool_calls_section_end|>``, several calls in one section (a call outside a section counts too).

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_kimi_k2`` (scope ``<|tool_calls_section_begin|>``,
tool ``<|tool_call_begin|>``, ``<|tool_call_argument_begin|>``, ``<|tool_call_end|>``); template
``models/templates/moonshotai-Kimi-K2.jinja``; ids ``functions.NAME:IDX``.
"""

from __future__ import annotations

import re

from llamashim.stream.rescue.base import (
    Miss,
    Offered,
    ToolCall,
    Verdict,
    closing,
    json_args,
    name_at,
    sectioned,
    ws,
)

SECTION, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
BEGIN, ARGS, END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
OPENERS = (SECTION, BEGIN)
_ID = re.compile(r"(?:functions\.)?(.+?)(?::\d+)?")


class _Ids:
    """Offered names, seen through Kimi's ``functions.NAME:IDX`` ids."""

    def __init__(self, offered: Offered) -> None:
        self.offered = offered

    def __contains__(self, ident: object) -> bool:
        m = _ID.fullmatch(ident) if isinstance(ident, str) else None
        return m is not None and m.group(1) in self.offered


def _call(text: str, j: int, offered: Offered, final: bool) -> tuple[int, ToolCall] | Miss:
    named = name_at(text, j, ARGS, final, _Ids(offered))
    if isinstance(named, Miss):
        return named
    m = _ID.fullmatch(named[1])
    assert m is not None
    got = json_args(text, ws(text, named[0] + len(ARGS)), m.group(1), offered, final)
    if isinstance(got, Miss):
        return got
    end = closing(text, ws(text, got[0]), END, final)
    return end if isinstance(end, Miss) else (end, got[1])


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    return sectioned(text, i, opener, offered, final, begin=BEGIN, section_end=SECTION_END, call=_call)
