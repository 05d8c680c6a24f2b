"""Qwen3-Coder / Qwen3.5 XML calls, and Functionary v3.1's ``<function=name>{json}</function>``:
``<tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>``.

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_qwen3_coder_xml`` (scope ``<tool_call>``, tool
``<function=``, key ``<parameter=``, value end ``</parameter>``, ``trim_raw_argval``) and
``common_chat_parse_functionary_v3_1_llama_3_1`` (``<function=(\\w+)>`` JSON ``</function>``); template
``models/templates/Qwen3-Coder.jinja``; tests ``tests/test-chat.cpp`` (also the call without its ``<tool_call>``).
Values are typed by the tool's schema (a string parameter keeps its text); a value whose ``</parameter>`` is missing
ends at the next ``<parameter=`` or ``</function>``.
"""

from __future__ import annotations

from llamashim.stream.rescue.base import (
    MORE,
    NO,
    Found,
    Miss,
    Offered,
    ToolCall,
    Verdict,
    json_args,
    lit,
    name_at,
    prefix_of,
    wait,
    ws,
)

OPENERS = ("<tool_call>", "<function=")
_ENDS = ("</parameter>", "<parameter=", "</function>")


def _trim(value: str) -> str:
    if value.startswith("\r\n"):
        value = value[2:]
    elif value.startswith("\n"):
        value = value[1:]
    if value.endswith("\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith("\n") else value


def _params(text: str, j: int, final: bool) -> tuple[int, dict[str, str]] | Miss:
    params: dict[str, str] = {}
    while True:
        j = ws(text, j)
        if text.startswith("</function>", j):
            return j + len("</function>"), params
        if j >= len(text) or prefix_of(text, j, "</function>", "<parameter="):
            return wait(final)
        start = lit(text, j, "<parameter=", final)
        if isinstance(start, Miss):
            return start
        close = text.find(">", start, start + 129)
        if close < 0:
            return wait(final) if len(text) - start < 128 else NO
        ends = [at for at in (text.find(e, close + 1) for e in _ENDS) if at >= 0]
        if not ends:
            return wait(final)
        at = min(ends)
        params[text[start:close].strip()] = _trim(text[close + 1:at])
        j = at + len("</parameter>") if text.startswith("</parameter>", at) else at


def _function(text: str, j: int, offered: Offered, final: bool) -> tuple[int, ToolCall] | Miss:
    start = lit(text, j, "<function=", final)
    if isinstance(start, Miss):
        return start
    named = name_at(text, start, ">", final, offered)
    if isinstance(named, Miss):
        return named
    close, name = named
    body = ws(text, close + 1)
    if body < len(text) and text[body] == "{":  # Functionary: JSON arguments
        got = json_args(text, body, name, offered, final)
        if isinstance(got, Miss):
            return got
        end = lit(text, ws(text, got[0]), "</function>", final)
        return end if isinstance(end, Miss) else (end, got[1])
    params = _params(text, close + 1, final)
    if isinstance(params, Miss):
        return params
    return params[0], offered.xml_call(name, params[1])


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    wrapped = opener == "<tool_call>"
    j = ws(text, i + len(opener)) if wrapped else i
    calls: list[ToolCall] = []
    while True:
        got = _function(text, j, offered, final)
        if isinstance(got, Miss):
            return got
        end, call = got
        calls.append(call)
        j = ws(text, end)
        if wrapped and text.startswith("<function=", j):
            continue
        if j >= len(text):
            return Found(end, tuple(calls)) if final else MORE
        close = lit(text, j, "</tool_call>", final)
        if close is MORE:
            return MORE
        if isinstance(close, int):
            return Found(close, tuple(calls))
        return NO if wrapped else Found(end, tuple(calls))
