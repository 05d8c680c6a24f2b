"""How agent frameworks (Open Interpreter, n8n, hand-written loops) assemble a streamed chat completion."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Assembled:
    calls: dict[int, dict[str, str]] = field(default_factory=dict)  # index -> id, name, arguments
    finish: str | None = None
    text: str = ""
    usage: Any = None


def assemble(chunks: Iterable[Any]) -> Assembled:
    """Accumulate ``openai`` ChatCompletionChunk objects by hand, keyed on ``delta.tool_calls[].index``."""
    out = Assembled()
    for chunk in chunks:
        out.usage = chunk.usage or out.usage
        for choice in chunk.choices:
            out.finish = choice.finish_reason or out.finish
            out.text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                entry = out.calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = tc.id or entry["id"]
                if tc.function:
                    entry["name"] = tc.function.name or entry["name"]
                    entry["arguments"] += tc.function.arguments or ""
    return out
