"""Llama 3.1–3.3 / 4: ``{"name": …, "parameters": {…}}`` as the whole answer (``"type": "function"`` optional, several
separated by ``;``), the same after ``<|python_tag|>``, ``<|python_tag|>NAME.call(key=value, …)`` for built-in tools,
and Llama 3.2 / 4's pythonic ``[name(key=value, …), …]``.

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_llama_3_1`` (``function_regex_start_only``: the
JSON call only at the start of the answer; ``<|python_tag|>`` with ``name.call(``); templates
``models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja``, ``meta-llama-Llama-3.2-3B-Instruct.jinja``,
``meta-llama-Llama-4-Scout-17B-16E-Instruct.jinja`` (pythonic). Bare JSON and pythonic calls count only at the start
of the answer or right after another call (the detector's *boundary*), never in the middle of prose.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from llamashim.stream.rescue.base import (
    MORE,
    NO,
    Found,
    Miss,
    Offered,
    ToolCall,
    Verdict,
    json_calls,
    lit,
    value_end,
    wait,
    ws,
)

OPENERS = ("<|python_tag|>",)
_BUILTIN = re.compile(r"([A-Za-z_]\w*)\.call(?=\()")
_PYTHONIC = re.compile(r"\[\s*([A-Za-z_][\w.]*)\s*\(")
_PYTHONIC_MAYBE = re.compile(r"\[\s*[A-Za-z_\w.]*\s*\Z")
_TAIL = ("<|eom_id|>", "<|eot_id|>")


def _literal(node: ast.expr) -> Any:
    return ast.literal_eval(node)


def _python_calls(source: str, offered: Offered, builtin: bool) -> list[ToolCall] | None:
    try:
        tree = ast.parse(source.strip(), mode="eval").body
        nodes = [tree] if builtin else (tree.elts if isinstance(tree, ast.List) else [])
        calls: list[ToolCall] = []
        for node in nodes:
            if not isinstance(node, ast.Call) or node.args:
                return None
            func = node.func
            name = func.value.id if builtin and isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name) else ast.unparse(func)
            if name not in offered:
                return None
            calls.append(offered.call(name, {k.arg: _literal(k.value) for k in node.keywords if k.arg}))
        return calls or None
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None


def _json_run(text: str, j: int, offered: Offered, final: bool, need_args: bool) -> Verdict:
    """JSON call objects from ``j``, separated by ``;``."""
    calls: list[ToolCall] = []
    while True:
        if need_args and not _has_args_key(text, j):
            return NO if final or value_end(text, j, final) is not MORE else MORE
        got = json_calls(text, j, offered, final)
        if isinstance(got, Miss):
            return got
        end, found = got
        calls.extend(found)
        k = ws(text, end)
        if k >= len(text):
            return Found(end, tuple(calls)) if final else MORE
        if text[k] != ";":
            return Found(end, tuple(calls))
        j = ws(text, k + 1)
        if j >= len(text):
            return Found(end, tuple(calls)) if final else MORE


def _has_args_key(text: str, j: int) -> bool:
    end = value_end(text, j, True)
    body = text[j:end] if isinstance(end, int) else text[j:]
    return re.search(r'["\'](?:parameters|arguments)["\']\s*:', body) is not None


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    """``<|python_tag|>`` then a JSON call or ``name.call(…)``."""
    j = ws(text, i + len(opener))
    if j >= len(text):
        return wait(final)
    if text[j] == "{":
        return _tail(text, _json_run(text, j, offered, final, need_args=False), final)
    m = _BUILTIN.match(text, j)
    if m is None:
        return MORE if not final and re.fullmatch(r"[\w.]*", text[j:]) else NO
    end = value_end(text, m.end(), final)
    if isinstance(end, Miss):
        return end
    calls = _python_calls(text[j:end], offered, builtin=True)
    return _tail(text, Found(end, tuple(calls)) if calls else NO, final)


def _tail(text: str, verdict: Verdict, final: bool) -> Verdict:
    if not isinstance(verdict, Found):
        return verdict
    for token in _TAIL:
        end = lit(text, ws(text, verdict.end), token, final)
        if end is MORE:
            return MORE
        if isinstance(end, int):
            return Found(end, verdict.calls)
    return verdict


def bare(text: str, i: int, offered: Offered, final: bool) -> Verdict:
    """At a boundary: a JSON call object (with ``parameters`` or ``arguments``), or a pythonic call list."""
    k = ws(text, i + 1)
    if text[i] == "{" or (k < len(text) and text[k] == "{"):
        return _json_run(text, i, offered, final, need_args=True)
    if k >= len(text):
        return wait(final)
    m = _PYTHONIC.match(text, i)
    if m is None:
        return MORE if not final and _PYTHONIC_MAYBE.match(text, i) else NO
    if m.group(1) not in offered:
        return NO
    end = value_end(text, i, final)
    if isinstance(end, Miss):
        return end
    calls = _python_calls(text[i:end], offered, builtin=False)
    return Found(end, tuple(calls)) if calls else NO
