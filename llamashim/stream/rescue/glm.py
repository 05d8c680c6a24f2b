"""GLM 4.5 / 4.6 / 4.7: ``<tool_call>NAME\\n<arg_key>KEY</arg_key>\\n<arg_value>VALUE</arg_value>\\n</tool_call>``
(4.7 without the newlines).

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_glm_4_5`` (tool ``<tool_call>``, key
``<arg_key>``/``</arg_key>``, value ``<arg_value>``/``</arg_value>``, end ``</tool_call>``); template
``models/templates/zai-org-GLM-4.5.jinja``; tests ``tests/test-chat.cpp`` (``\\n<tool_call>special_function\\n
<arg_key>arg1</arg_key>\\n<arg_value>1</arg_value>\\n</tool_call>``). Values are typed by the tool's schema.
"""

from __future__ import annotations

import re

from llamashim.stream.rescue.base import MORE, NO, Found, Miss, Offered, Verdict, lit, prefix_of, wait, ws

OPENERS = ("<tool_call>",)
_NAME = re.compile(r"[A-Za-z0-9_.:\-/]+")


def _pair(text: str, j: int, final: bool) -> tuple[int, str, str] | Miss:
    start = lit(text, j, "<arg_key>", final)
    if isinstance(start, Miss):
        return start
    key_end = text.find("</arg_key>", start, start + 256)
    if key_end < 0:
        return wait(final) if len(text) - start < 256 else NO
    value = lit(text, ws(text, key_end + len("</arg_key>")), "<arg_value>", final)
    if isinstance(value, Miss):
        return value
    value_end = text.find("</arg_value>", value)
    if value_end < 0:
        return wait(final)
    return value_end + len("</arg_value>"), text[start:key_end].strip(), text[value:value_end]


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    j = ws(text, i + len(opener))
    m = _NAME.match(text, j)
    if m is None:
        return wait(final) if j >= len(text) else NO
    if m.end() >= len(text):
        return MORE if not final else NO
    if text[m.end()] not in "\r\n<" or m.group() not in offered:
        return NO
    params: dict[str, str] = {}
    j = m.end()
    while True:
        j = ws(text, j)
        if text.startswith("</tool_call>", j):
            return Found(j + len("</tool_call>"), (offered.xml_call(m.group(), params),))
        if j >= len(text):
            return Found(j, (offered.xml_call(m.group(), params),)) if final else MORE
        if prefix_of(text, j, "</tool_call>"):
            return wait(final)
        got = _pair(text, j, final)
        if isinstance(got, Miss):
            return got
        j, key, value = got
        params[key] = value
