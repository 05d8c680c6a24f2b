"""Token usage (pure): the one :class:`Usage` value every stage, encoder and counter reads.

llama-server tells an answer's tokens two ways: an OpenAI ``usage`` object (on a non-streamed reply, and on the usage
chunk of a stream that asked for ``stream_options.include_usage``) and its own ``timings`` (on the last chunk of
every stream, the usage chunk, every reply, and the last event of ``/completion``). ``timings`` counts the prompt in
two parts: ``prompt_n`` tokens evaluated and ``cache_n`` tokens its prompt cache served; the prompt is their sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llamashim.jsonutil import int_or, obj


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens of one answer, and how long llama-server took for them when it said (``timings``)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None  # prompt tokens served from the upstream's prompt cache, when it says
    prompt_ms: float | None = None
    predicted_ms: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_timings(cls, timings: Any) -> Usage | None:
        """Usage from llama-server's ``timings`` (``None`` when there are none)."""
        t = obj(timings)
        if not t:
            return None
        cached = _int(t.get("cache_n"))
        return cls(int_or(t.get("prompt_n"), 0) + (cached or 0), int_or(t.get("predicted_n"), 0), cached,
                   _ms(t.get("prompt_ms")), _ms(t.get("predicted_ms")))

    @classmethod
    def from_openai(cls, usage: Any, timings: Any = None) -> Usage | None:
        """Usage from an OpenAI ``usage`` object (``None`` when there is none); the cached tokens from its
        ``prompt_tokens_details``, else from ``timings``, and the durations from ``timings``."""
        u = obj(usage)
        if not u:
            return None
        t = obj(timings)
        cached = _int(obj(u.get("prompt_tokens_details")).get("cached_tokens"))
        if cached is None:
            cached = _int(t.get("cache_n"))
        return cls(int_or(u.get("prompt_tokens"), 0), int_or(u.get("completion_tokens"), 0), cached,
                   _ms(t.get("prompt_ms")), _ms(t.get("predicted_ms")))

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Usage | None:
        """The usage a chunk or a reply states: its ``usage``, else its ``timings``, else ``None``."""
        usage, timings = value.get("usage"), value.get("timings")
        return cls.from_openai(usage, timings) or cls.from_timings(timings)

    def to_openai(self) -> dict[str, Any]:
        """As an OpenAI ``usage`` object (``prompt_tokens_details.cached_tokens`` when the cached part is known)."""
        out: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                               "total_tokens": self.total_tokens}
        if self.cached_tokens is not None:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out
