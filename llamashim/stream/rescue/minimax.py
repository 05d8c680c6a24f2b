"""MiniMax M2: ``<minimax:tool_call>\\n<invoke name="NAME">\\n<parameter name="KEY">VALUE</parameter>\\n</invoke>\\n
</minimax:tool_call>``, several ``<invoke>`` in one block.

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_minimax_m2`` (scope ``<minimax:tool_call>``, tool
``<invoke name="``, key ``<parameter name="``, value end ``</parameter>``, tool end ``</invoke>``); template
``models/templates/MiniMax-M2.jinja``. Values are typed by the tool's schema.
"""

from __future__ import annotations

from llamashim.stream.rescue.base import (
    NO,
    Found,
    Miss,
    Offered,
    ToolCall,
    Verdict,
    closing,
    lit,
    name_at,
    prefix_of,
    wait,
    ws,
)

OPENERS = ("<minimax:tool_call>",)
_END = "</minimax:tool_call>"


def _params(text: str, j: int, final: bool) -> tuple[int, dict[str, str]] | Miss:
    params: dict[str, str] = {}
    while True:
        j = ws(text, j)
        if text.startswith("</invoke>", j):
            return j + len("</invoke>"), params
        if j >= len(text) or prefix_of(text, j, "</invoke>"):
            return wait(final)
        start = lit(text, j, '<parameter name="', final)
        if isinstance(start, Miss):
            return start
        close = text.find('">', start, start + 130)
        if close < 0:
            return wait(final) if len(text) - start < 128 else NO
        at = text.find("</parameter>", close + 2)
        if at < 0:
            return wait(final)
        params[text[start:close]] = text[close + 2:at].strip("\n")
        j = at + len("</parameter>")


def _invoke(text: str, j: int, offered: Offered, final: bool) -> tuple[int, ToolCall] | Miss:
    start = lit(text, j, '<invoke name="', final)
    if isinstance(start, Miss):
        return start
    named = name_at(text, start, '">', final, offered)
    if isinstance(named, Miss):
        return named
    got = _params(text, named[0] + 2, final)
    return got if isinstance(got, Miss) else (got[0], offered.xml_call(named[1], got[1]))


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    j = i + len(opener)
    calls: list[ToolCall] = []
    while True:
        j = ws(text, j)
        if calls and not text.startswith("<invoke", j) and not prefix_of(text, j, "<invoke"):
            end = closing(text, j, _END, final)
            return end if isinstance(end, Miss) else Found(end, tuple(calls))
        got = _invoke(text, j, offered, final)
        if isinstance(got, Miss):
            return got
        j, call = got
        calls.append(call)
