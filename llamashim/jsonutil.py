"""Fast, strict JSON helpers (orjson): compact output, parse errors as one exception type, a nesting limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

DEFAULT_MAX_DEPTH = 64


class JSONError(ValueError):
    """The input is not acceptable JSON (syntax, encoding or nesting)."""


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (no spaces, UTF-8, non-ASCII kept as is)."""
    return orjson.dumps(value)


def loads(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse JSON, refusing documents nested deeper than ``max_depth`` before parsing them.

    orjson itself refuses nesting beyond 1024 levels, but a cheap byte scan first lets us give a clear message for
    the configured limit and never recurse on hostile input.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if max_depth and (data.count(b"[") + data.count(b"{")) > max_depth:
        depth = nesting_depth(data)
        if depth > max_depth:
            raise JSONError(f"JSON nested {depth} levels deep; the limit is {max_depth}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise JSONError(f"invalid JSON: {e}") from None


def nesting_depth(data: bytes) -> int:
    """The maximum bracket nesting depth of a JSON text, ignoring brackets inside strings."""
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (for reading untrusted JSON without KeyErrors)."""
    return value if isinstance(value, dict) else {}


def object_in(text: str) -> dict[str, Any]:
    """The JSON object ``text`` holds, else an empty one (empty text, invalid JSON or another value): tool-call
    arguments as the object a dialect's ``input``/``args`` must be."""
    if not text.strip():
        return {}
    try:
        return obj(loads(text))
    except JSONError:
        return {}


def arr(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def int_or(value: Any, default: int) -> int:
    """``value`` if it is an integer (not a bool), else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def map_objects(items: list[Any], fn: Callable[[dict[str, Any], int], Any]) -> list[Any]:
    """Copy-on-write map over the JSON objects of a list: ``fn(item, position)`` returns the item itself when nothing
    changes. Returns ``items`` itself when nothing changed, else a new list (the caller's objects are never mutated)."""
    out: list[Any] | None = None
    for pos, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        new = fn(item, pos)
        if new is not item:
            if out is None:
                out = list(items)
            out[pos] = new
    return items if out is None else out
