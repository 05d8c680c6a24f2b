"""What every markup module shares (pure): the rescued :class:`ToolCall`, the tools a request :class:`Offered`, a
parser's verdict (:class:`Found`, :data:`MORE`, :data:`NO`) and small cursor helpers over the answer's text.

A markup parser is ``parse(text, i, opener, offered, final) -> Verdict``: ``text[i:]`` starts with ``opener``; it
answers :class:`Found` (the markup ends at ``end`` and holds these calls, every one naming an offered tool),
:data:`MORE` (undecided: more text could make it a call — never when ``final``) or :data:`NO` (not a call). A parser
must not answer ``Found`` or ``NO`` early when more text could change the answer: the streaming stage and
:func:`~llamashim.stream.rescue.detect.rescue_text` share the verdicts, so a stream split anywhere decides alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from llamashim.stream.rescue.args import MISSING, arguments_of, coerce, dumps_text, lenient_loads, xml_value


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One rescued call: the offered tool's name and its arguments as JSON text (as the model wrote them when they
    could not be repaired)."""

    name: str
    arguments: str


class Miss(Enum):
    MORE = "more"
    NO = "no"


MORE = Miss.MORE
NO = Miss.NO


@dataclass(frozen=True, slots=True)
class Found:
    end: int
    calls: tuple[ToolCall, ...]


Verdict = Found | Miss


class Parser(Protocol):
    def __call__(self, text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict: ...


class Offered:
    """The tools a request offered, by name, with their parameter schemas (OpenAI ``tools`` entries, flat
    ``{name, parameters}`` ones, or bare names)."""

    def __init__(self, tools: Any = None) -> None:
        self.schemas: dict[str, Any] = {}
        for tool in tools if isinstance(tools, Sequence) and not isinstance(tools, str) else ():
            if isinstance(tool, str):
                self.schemas[tool] = None
                continue
            fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
            if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
                self.schemas[fn["name"]] = fn.get("parameters", fn.get("input_schema"))

    def __bool__(self) -> bool:
        return bool(self.schemas)

    def __contains__(self, name: object) -> bool:
        return name in self.schemas

    def call(self, name: str, arguments: Any) -> ToolCall:
        """The call with its arguments repaired against the tool's schema."""
        return ToolCall(name, arguments_of(arguments, self.schemas.get(name)))

    def xml_call(self, name: str, params: Mapping[str, str]) -> ToolCall:
        """A call whose arguments came as per-parameter text (XML markups), typed by the schema."""
        schema = self.schemas.get(name)
        props = schema.get("properties") if isinstance(schema, dict) else None
        props = props if isinstance(props, dict) else {}
        value = coerce({k: xml_value(v, props.get(k)) for k, v in params.items()}, schema)
        return ToolCall(name, dumps_text(value) or "{}")


# -- cursor helpers ---------------------------------------------------------------------------------------------------


def ws(text: str, i: int) -> int:
    """The first index at or after ``i`` that is not whitespace."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


def prefix_of(text: str, i: int, *options: str) -> bool:
    """``text[i:]`` (what is left) is a proper beginning of one of ``options``."""
    rest = len(text) - i
    return any(rest < len(o) and o.startswith(text[i:]) for o in options)


def lit(text: str, i: int, s: str, final: bool) -> int | Miss:
    """The index after ``s`` when it is at ``i``; :data:`MORE` while the text so far could still become it."""
    if text.startswith(s, i):
        return i + len(s)
    return MORE if not final and prefix_of(text, i, s) else NO


def closing(text: str, i: int, s: str, final: bool) -> int | Miss:
    """Like :func:`lit` for a markup's closing token, which a generation cut at its end may lack: at the end of the
    answer (``final``) the call counts without it."""
    if text.startswith(s, i):
        return i + len(s)
    if i >= len(text) or prefix_of(text, i, s):
        return len(text) if final else MORE
    return NO


def wait(final: bool) -> Miss:
    """The text ran out before the markup was complete: wait for more, or it is not a call."""
    return NO if final else MORE


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|["\'{}\[\]()]', re.S)


def value_end(text: str, i: int, final: bool) -> int | Miss:
    """The end of the bracketed value (JSON object or array, or a Python call) starting at ``text[i]``."""
    if i >= len(text):
        return wait(final)
    if text[i] not in "{[(":
        return NO
    depth = 0
    for m in _BRACKETS.finditer(text, i):
        tok = m.group()
        if len(tok) > 1:
            continue
        if tok in "{[(":
            depth += 1
        elif tok in "}])":
            depth -= 1
            if depth == 0:
                return m.end()
        else:
            return wait(final)  # an unterminated string
    return wait(final)


# -- JSON calls -------------------------------------------------------------------------------------------------------

# The keys a call object may start with (an object starting with any other key is not a call: no need to wait for
# its end).
CALL_KEYS = frozenset({"name", "type", "function", "arguments", "parameters", "tool_name", "tool_call_id"})
_FIRST_KEY = re.compile(r'\[?\s*\{\s*(?:["\']([^"\'\\]{0,64})["\']\s*:|([^\s"\'}]))')
_NAME_FIRST = re.compile(r'\[?\s*\{\s*["\'](?:name|tool_name)["\']\s*:\s*["\']([^"\'\\]*)["\']')


def call_from_object(value: Any, offered: Offered) -> ToolCall | None:
    """The call a JSON object describes (``{name, arguments|parameters}``, ``{type, function: {…}}``, Command R's
    ``{tool_name, parameters}``), when it names an offered tool."""
    if not isinstance(value, dict):
        return None
    fn = value.get("function")
    inner = fn if isinstance(fn, dict) else value
    name = inner.get("name", value.get("tool_name", fn if isinstance(fn, str) else None))
    if not isinstance(name, str) or name not in offered:
        return None
    for where in (inner, value):
        for key in ("arguments", "parameters", "args", "input"):
            if key in where:
                return offered.call(name, where[key])
    return offered.call(name, {})


def json_calls(text: str, i: int, offered: Offered, final: bool) -> tuple[int, list[ToolCall]] | Miss:
    """The call object, or array of call objects, at ``i`` (every one naming an offered tool) and where it ends."""
    first = _FIRST_KEY.match(text, i)
    if first is not None and (first.group(2) is not None or first.group(1) not in CALL_KEYS):
        return NO  # an object, but not a call's: no need to wait for its end
    named = _NAME_FIRST.match(text, i)
    if named is not None and named.group(1) not in offered:
        return NO
    end = value_end(text, i, final)
    if isinstance(end, Miss):
        return end
    value = lenient_loads(text[i:end])
    if value is MISSING:
        return NO
    items = value if isinstance(value, list) else [value]
    calls = [call_from_object(v, offered) for v in items]
    if not calls or any(c is None for c in calls):
        return NO
    return end, [c for c in calls if c is not None]


def json_args(text: str, i: int, name: str, offered: Offered, final: bool) -> tuple[int, ToolCall] | Miss:
    """A JSON arguments object at ``i`` for the call of ``name``, and where it ends."""
    end = value_end(text, i, final)
    if isinstance(end, Miss):
        return end
    return end, offered.call(name, text[i:end])


NAME = re.compile(r"[A-Za-z0-9_.:\-/]+")


def name_at(text: str, i: int, stop: str, final: bool, offered: Container[str], limit: int = 128
            ) -> tuple[int, str] | Miss:
    """The tool name from ``i`` up to ``stop`` (exclusive; returns the index of ``stop``), when it is an offered one."""
    at = text.find(stop, i, i + limit + len(stop))
    if at < 0:
        return wait(final) if len(text) - i < limit and "\n" not in text[i:] else NO
    name = text[i:at].strip()
    return (at, name) if name in offered else NO


# -- sections of calls ------------------------------------------------------------------------------------------------

CallAt = Callable[[str, int, Offered, bool], "tuple[int, ToolCall] | Miss"]
"""A markup's one-call parser: ``(text, j, offered, final)`` → where the call ends and the call, after its opener."""


def sectioned(text: str, i: int, opener: str, offered: Offered, final: bool, *, begin: str, section_end: str,
              call: CallAt, bare_first: bool = False) -> Verdict:
    """Calls each opened by ``begin``, either inside a section (``opener`` is the section's opener: the calls up to
    ``section_end``, which a cut generation may lack) or one on its own (``opener`` is ``begin``). ``bare_first``: a
    section may hold its first call without ``begin`` (DeepSeek V3.1's ``<｜tool▁calls｜>NAME…``)."""
    section = opener != begin
    j = i + len(opener) if section else i
    calls: list[ToolCall] = []
    while True:
        j = ws(text, j)
        if section and text.startswith(section_end, j):
            return Found(j + len(section_end), tuple(calls)) if calls else NO
        if j >= len(text) or prefix_of(text, j, section_end, begin):
            return Found(len(text), tuple(calls)) if final and calls else wait(final)
        if text.startswith(begin, j):
            j += len(begin)
        elif calls or not (section and bare_first):
            return Found(j, tuple(calls)) if calls else NO
        got = call(text, ws(text, j), offered, final)
        if isinstance(got, Miss):
            return got
        j, one = got
        calls.append(one)
        if not section:
            return Found(j, tuple(calls))
