"""Client model names → upstream model names (pure): glob aliases shared by every dialect."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase


def resolve_model(name: str, aliases: Mapping[str, str], default: str | None) -> str | None:
    """The upstream model to ask for when a client names ``name``.

    ``aliases`` maps glob patterns (:func:`fnmatch.fnmatchcase`, compared case-insensitively) to upstream names;
    the first pattern in mapping order that matches wins, so put specific patterns first (``claude-*haiku*``
    before ``claude-*``). A pattern whose target is empty stands for ``default``. An empty ``name`` gets
    ``default``; a name no pattern matches passes through unchanged.
    """
    if not name:
        return default
    lowered = name.lower()
    for pattern, target in aliases.items():
        if fnmatchcase(lowered, pattern.lower()):
            return target or default
    return name
