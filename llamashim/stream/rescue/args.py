"""Arguments that parse (pure): nearly-JSON arguments repaired, and scalars coerced to what the offered schema says.

Repairs, in one string-aware pass: trailing commas, single-quoted strings, raw control characters (newlines, tabs)
inside strings, Python literals (``True``/``False``/``None``), a code fence around the whole. Coercion, where the
tool's JSON schema says so: a string holding an integer, number, boolean, null, array or object becomes one (a bare
string where an array is wanted becomes a one-element array). What cannot be repaired is returned as the model wrote
it; nothing here raises.
"""

from __future__ import annotations

import re
from typing import Any

from llamashim import jsonutil

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[A-Za-z_][A-Za-z0-9_]*|,(?=\s*[}\]])|.', re.S)
_PY = {"True": "true", "False": "false", "None": "null"}
_SQ_ESCAPE = re.compile(r'\\(.)|"', re.S)
_FENCE = re.compile(r"\A\s*```[A-Za-z]*\s*\n(.*?)\n?\s*```\s*\Z", re.S)
_INTEGER = re.compile(r"\s*[-+]?\d+\s*")
_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class _Missing:
    """No value (distinct from JSON null)."""


MISSING = _Missing()


def _controls(s: str) -> str:
    if not any(ch < " " for ch in s):
        return s
    return "".join(_CONTROL.get(ch, f"\\u{ord(ch):04x}") if ch < " " else ch for ch in s)


def _single(token: str) -> str:
    def swap(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return '\\"'
        return "'" if m.group(1) == "'" else m.group(0)

    return '"' + _controls(_SQ_ESCAPE.sub(swap, token[1:-1])) + '"'


def _repaired(text: str) -> str:
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok[0] == '"' and len(tok) > 1:
            out.append(_controls(tok))
        elif tok[0] == "'" and len(tok) > 1:
            out.append(_single(tok))
        elif tok == ",":
            if m.end() < len(text) and text[m.end():].lstrip()[:1] in ("}", "]"):
                continue  # a trailing comma
            out.append(tok)
        else:
            out.append(_PY.get(tok, tok))
    return "".join(out)


def lenient_loads(text: str) -> Any:
    """The JSON value ``text`` holds, repaired when it is nearly JSON; :data:`MISSING` when it cannot be read."""
    try:
        return jsonutil.loads(text)
    except jsonutil.JSONError:
        pass
    fenced = _FENCE.match(text)
    if fenced is not None:
        text = fenced.group(1)
    try:
        return jsonutil.loads(_repaired(text))
    except (jsonutil.JSONError, RecursionError):
        return MISSING


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    found: list[str] = []
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or ():
            if isinstance(sub, dict):
                found.extend(_types(sub))
    return found


def _sub(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """The (sub)schema that describes a value of ``kind`` (``object``/``array``)."""
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or ():
            if isinstance(sub, dict) and kind in _types(sub):
                return sub
    return schema


def _from_string(s: str, kind: str) -> Any:
    low = s.strip().lower()
    if kind == "integer" and _INTEGER.fullmatch(s):
        return int(s)
    if kind == "number":
        if _INTEGER.fullmatch(s):
            return int(s)
        try:
            value = float(s)
        except ValueError:
            return MISSING
        return value if value == value and value not in (float("inf"), float("-inf")) else MISSING
    if kind == "boolean" and low in ("true", "false"):
        return low == "true"
    if kind == "null" and low in ("null", "none"):
        return None
    if kind in ("array", "object"):
        value = lenient_loads(s)
        if isinstance(value, list if kind == "array" else dict):
            return value
        if kind == "array" and not s.lstrip().startswith("["):
            return [s]
    return MISSING


def coerce(value: Any, schema: Any) -> Any:
    """``value`` with strings turned into the scalars, arrays and objects ``schema`` asks for (recursively)."""
    if not isinstance(schema, dict):
        return value
    kinds = _types(schema)
    if isinstance(value, str) and kinds and "string" not in kinds:
        for kind in kinds:
            converted = _from_string(value, kind)
            if converted is not MISSING:
                value = converted
                break
    if isinstance(value, dict):
        props = _sub(schema, "object").get("properties")
        if isinstance(props, dict):
            value = {k: coerce(v, props.get(k)) for k, v in value.items()}
    elif isinstance(value, list):
        items = _sub(schema, "array").get("items")
        if isinstance(items, dict):
            value = [coerce(v, items) for v in value]
    return value


def dumps_text(value: Any) -> str | None:
    """Compact JSON text of ``value``, or ``None`` when it cannot be written (e.g. an integer beyond 64 bits)."""
    try:
        return jsonutil.dumps(value).decode("utf-8")
    except (TypeError, ValueError):
        return None


def repair_arguments(text: str, schema: Any = None) -> str:
    """Arguments text that parses as the schema's JSON object when it can be made to; else ``text`` unchanged. Text
    that already parses and needs no coercion is returned byte for byte."""
    try:
        strict: Any = jsonutil.loads(text)
    except jsonutil.JSONError:
        strict = MISSING
    value = lenient_loads(text) if strict is MISSING else strict
    if value is MISSING:
        return text
    fixed = coerce(value, schema)
    if strict is not MISSING and fixed == strict:
        return text
    out = dumps_text(fixed)
    return text if out is None else out


def arguments_of(value: Any, schema: Any = None) -> str:
    """A call's arguments as JSON text: a string is repaired, anything else coerced and written."""
    if isinstance(value, str):
        return repair_arguments(value, schema)
    out = dumps_text(coerce({} if value is None else value, schema))
    return "{}" if out is None else out


def xml_value(raw: str, schema: Any) -> Any:
    """One per-parameter XML value (Qwen3-Coder, GLM, MiniMax): kept as written where the schema says string (or
    the text is not JSON), else the JSON it holds."""
    kinds = _types(schema) if isinstance(schema, dict) else []
    if "string" in kinds:
        return raw
    value = lenient_loads(raw) if raw.strip() else MISSING
    return raw if value is MISSING else value
