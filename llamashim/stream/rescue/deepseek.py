"""DeepSeek R1 / V3 (R1, V3-0324):
``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{…}\\n```
<｜tool▁call▁end｜><｜tool▁calls▁end｜>``; and V3.1+ (V3.1, V3.2):
``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>``;
several calls in one section.

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_deepseek_r1`` (section-begin spellings
``<｜tool▁calls▁begin｜>|<｜tool_calls_begin｜>|<｜tool calls begin｜>|<｜tool\\_calls\\_begin｜>|<｜tool▁calls｜>``,
``function<｜tool▁sep｜>NAME\\n```json\\n``, close ``` ``` ``<｜tool▁call▁end｜>``) and
``common_chat_parse_deepseek_v3_1_content`` (``NAME<｜tool▁sep｜>``, JSON, ``<｜tool▁call▁end｜>``); templates
``models/templates/deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja``, ``deepseek-ai-DeepSeek-V3.1.jinja``.
"""

from __future__ import annotations

import re

from llamashim.stream.rescue.base import (
    NO,
    Miss,
    Offered,
    ToolCall,
    Verdict,
    closing,
    json_args,
    lit,
    name_at,
    prefix_of,
    sectioned,
    wait,
    ws,
)

SECTIONS = ("<｜tool▁calls▁begin｜>", "<｜tool_calls_begin｜>", "<｜tool calls begin｜>", "<｜tool\\_calls\\_begin｜>",
            "<｜tool▁calls｜>")
BEGIN, SEP, END, SECTION_END = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>"
OPENERS = (*SECTIONS, BEGIN)
_R1_HEAD = re.compile(r"function" + SEP + r"([^\n]+)\n\s*```(?:json)?\s*\n")


def _call(text: str, j: int, offered: Offered, final: bool) -> tuple[int, ToolCall] | Miss:
    m = _R1_HEAD.match(text, j)
    if m is not None:
        name = m.group(1).strip()
        if name not in offered:
            return NO
        got = json_args(text, ws(text, m.end()), name, offered, final)
        if isinstance(got, Miss):
            return got
        fence = lit(text, ws(text, got[0]), "```", final)
        if isinstance(fence, Miss):
            return fence
        end = closing(text, ws(text, fence), END, final)
        return end if isinstance(end, Miss) else (end, got[1])
    if text.startswith("function" + SEP, j) or prefix_of(text, j, "function" + SEP):
        return wait(final)  # the R1 head is not complete yet
    named = name_at(text, j, SEP, final, offered)
    if isinstance(named, Miss):
        return named
    body = ws(text, named[0] + len(SEP))
    if text.startswith("```", body):  # a fenced V3.1 call
        body = ws(text, body + 3 + (4 if text.startswith("json", body + 3) else 0))
    got = json_args(text, body, named[1], offered, final)
    if isinstance(got, Miss):
        return got
    k = ws(text, got[0])
    if text.startswith("```", k):
        k = ws(text, k + 3)
    end = closing(text, k, END, final)
    return end if isinstance(end, Miss) else (end, got[1])


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    return sectioned(text, i, opener, offered, final, begin=BEGIN, section_end=SECTION_END, call=_call,
                     bare_first=True)
