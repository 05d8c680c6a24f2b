"""The stream → Ollama NDJSON (pure), and the same object for a non-streamed reply.

Ollama's wire format: NDJSON (``application/x-ndjson``) for ``/api/chat`` and ``/api/generate``, streamed unless
``"stream": false``; tool-call ``arguments`` as JSON objects; the last line ``done: true`` with ``done_reason`` and
counts and durations in nanoseconds; errors as ``{"error": "..."}``. :func:`chat_reply_to_ollama` runs a
non-streamed reply through :class:`OllamaChatEncoder`, so both paths build one object.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from llamashim import jsonutil
from llamashim.dialects.ollama.dialect import error_message
from llamashim.stream.deltas import DeltaEncoder, ToolCallDelta, reply_deltas
from llamashim.stream.items import StreamError
from llamashim.stream.usage import Usage


@lru_cache(maxsize=8)  # a stream's lines share their second: one strftime a second, not one a line
def _whole_second(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def now_iso(seconds: float) -> str:
    """``2026-12-01T22:33:20.123456Z`` (Ollama's ``created_at``)."""
    whole = int(seconds)
    return f"{_whole_second(whole)}.{int((seconds - whole) * 1e6):06d}Z"


def counts(usage: Usage | None) -> dict[str, int]:
    """Ollama's counts and nanosecond durations from the usage and llama-server's timings."""
    u = usage or Usage(0, 0)
    prompt_ms, predicted_ms = u.prompt_ms or 0.0, u.predicted_ms or 0.0
    return {
        "total_duration": int((prompt_ms + predicted_ms) * 1e6),
        "load_duration": 0,
        "prompt_eval_count": u.prompt_tokens,
        "prompt_eval_duration": int(prompt_ms * 1e6),
        "eval_count": u.completion_tokens,
        "eval_duration": int(predicted_ms * 1e6),
    }


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def _ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        fn = call.get("function") or {}
        args: Any = fn.get("arguments") or "{}"
        if isinstance(args, str):
            try:
                args = jsonutil.loads(args)
            except jsonutil.JSONError:
                args = {"_raw": args}
        if not isinstance(args, dict):
            args = {"value": args}
        entry: dict[str, Any] = {"function": {"name": fn.get("name") or "", "arguments": args}}
        if call.get("id"):
            entry["id"] = call["id"]
        out.append(entry)
    return out


def _with_text(line: dict[str, Any], content: str, thinking: str, generate: bool) -> dict[str, Any]:
    """Answer text where each endpoint puts it: ``response``/``thinking`` for generate, ``message`` for chat."""
    if generate:
        line["response"] = content
        if thinking:
            line["thinking"] = thinking
    else:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        line["message"] = message
    return line


class OllamaChatEncoder(DeltaEncoder):
    """Pipeline items → Ollama NDJSON lines (``/api/chat``, or ``/api/generate`` with ``generate=True``): one line
    per upstream chunk that carries text or thinking, tool calls and counts on the final ``done`` line."""

    def __init__(self, model: str, clock: Callable[[], float], generate: bool = False) -> None:
        super().__init__()
        self.model = model
        self.clock = clock
        self.generate = generate
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: Usage | None = None
        self._text: list[str] = []
        self._thinking: list[str] = []

    def _line(self, value: dict[str, Any]) -> bytes:
        return jsonutil.dumps(value) + b"\n"

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": now_iso(self.clock())}

    def keepalive(self) -> bytes:
        """A line with no text and ``done: false``: the shape of every line of the answer, adding nothing."""
        line = _with_text(self._head(), "", "", self.generate)
        line["done"] = False
        return self._line(line)

    def on_text(self, text: str) -> bytes:
        self._text.append(text)
        return b""

    def on_reasoning(self, text: str) -> bytes:
        self._thinking.append(text)
        return b""

    def on_tool_call(self, d: ToolCallDelta) -> bytes:
        entry = self.calls.setdefault(d.index, {"function": {"name": "", "arguments": ""}})
        if d.id:
            entry["id"] = d.id
        if d.name:
            entry["function"]["name"] = d.name
        entry["function"]["arguments"] += d.arguments
        return b""

    def on_finish(self, reason: str) -> bytes:
        self.finish = reason
        return b""

    def on_usage(self, usage: Usage) -> bytes:
        self.usage = usage
        return b""

    def on_chunk_end(self) -> bytes:
        if not self._text and not self._thinking:
            return b""
        text, thought = "".join(self._text), "".join(self._thinking)
        self._text.clear()
        self._thinking.clear()
        line = _with_text(self._head(), text, thought, self.generate)
        line["done"] = False
        return self._line(line)

    def on_done(self) -> bytes:
        return self._line(self.last_line("", ""))

    def last_line(self, text: str, thinking: str) -> dict[str, Any]:
        """The ``done`` line: ``text`` and ``thinking`` (empty when they streamed before it), the tool calls, the
        reason and the counts."""
        line = _with_text(self._head(), text, thinking, self.generate)
        if self.calls and not self.generate:
            line["message"]["tool_calls"] = _ollama_calls([self.calls[k] for k in sorted(self.calls)])
        line["done"] = True
        line["done_reason"] = _done_reason(self.finish)
        line.update(counts(self.usage))
        return line

    def whole(self, reply: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed ``chat.completion`` → its one Ollama object, by the deltas a stream of it would give."""
        self.feed_deltas(reply_deltas(reply))
        return self.last_line("".join(self._text), "".join(self._thinking))

    def on_error(self, err: StreamError) -> bytes:
        return self._line({"error": error_message(err)})


def chat_reply_to_ollama(reply: dict[str, Any], model: str, now: float, generate: bool = False) -> dict[str, Any]:
    """A non-streamed chat.completion → one Ollama ``/api/chat`` (or ``/api/generate``) object."""
    return OllamaChatEncoder(model, lambda: now, generate).whole(reply)


def load_reply(model: str, now: float, generate: bool, done_reason: str) -> dict[str, Any]:
    """The answer to Ollama's load (``done_reason: "load"``) or unload (``"unload"``) request: no text."""
    out = _with_text({"model": model, "created_at": now_iso(now)}, "", "", generate)
    out["done"] = True
    out["done_reason"] = done_reason
    return out
