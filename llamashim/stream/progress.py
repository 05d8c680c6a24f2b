"""llama-server's prompt-processing progress (pure): recognised, reported, and never shown to a client.

Asked with ``return_progress: true`` on a streamed request, llama-server sends progress events while it processes the
prompt, before the first token (older builds ignore the field and send none). Each carries
``prompt_progress: {total, cache, processed, time_ms}``: ``total`` prompt tokens, ``cache`` of them served from its
prompt cache, ``processed`` so far (the cached ones included: it goes from ``cache`` to ``total``), ``time_ms`` since
the slot started on it. The first comes when a slot takes the request (``processed`` = ``cache``), then one per
batch. On ``/v1/chat/completions`` each is a role chunk (``delta: {"role": "assistant", "content": null}``, no
``finish_reason``) with ``prompt_progress`` beside ``choices``; the real role chunk comes again with the first token.
On ``/completion`` and ``/infill`` it is an event with empty ``content`` and ``stop: false``.

* :class:`PromptProgressStage` — the chat pipeline's first stage: reports each progress chunk and drops it (no dialect
  ever shows one; a dropped chunk writes nothing, so it is not the stream's first output and keep-alives go on), and
  counts the generated tokens after it (one chunk with text, reasoning or a tool-call fragment per token).
* :class:`ProgressTap` — around a ``/completion`` stream's transform: reports the progress events before the first
  other event, then stops looking; the bytes go on unchanged (the transform shows nothing for an event without text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llamashim import jsonutil
from llamashim.stream.items import Chunk, Item, StreamError
from llamashim.stream.sse import SSEEvent, SSEParser
from llamashim.stream.transform import StreamTransform
from llamashim.stream.usage import Usage

REQUEST_FIELD = "return_progress"
REPORT_EVERY = 8  # the answer's token count is reported with its first token and every 8th after

Report = Callable[[int, int, int, int], None]
"""Told ``(total, cache, processed, generated)``: the prompt's tokens, those its cache served, those processed so
far (cached ones included), and the answer's tokens since (0 during the prefill)."""


@dataclass(frozen=True, slots=True)
class PromptProgress:
    total: int
    cache: int
    processed: int


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def progress_of(data: Mapping[str, Any]) -> PromptProgress | None:
    """The ``prompt_progress`` a chunk or event carries (``None``: none, or not in its known shape)."""
    value = data.get("prompt_progress")
    if not isinstance(value, dict):
        return None
    total, cache, processed = _count(value.get("total")), _count(value.get("cache")), _count(value.get("processed"))
    if total is None or processed is None:
        return None
    return PromptProgress(total, cache or 0, processed)


def _is_token(data: Mapping[str, Any]) -> bool:
    """Whether a chat chunk carries a piece of the answer (text, reasoning or a tool-call fragment)."""
    for choice in data.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content")
                                        or delta.get("tool_calls")):
            return True
    return False


def _shows_nothing(data: Mapping[str, Any]) -> bool:
    """A progress chunk with nothing else for the client: no answer piece, no finish, no usage."""
    if _is_token(data) or "usage" in data or "timings" in data:
        return False
    return not any(isinstance(c, dict) and c.get("finish_reason") for c in data.get("choices") or ())


class PromptProgressStage:
    """Reports progress chunks to ``report`` and drops them; counts the answer's tokens after them."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.progress = PromptProgress(0, 0, 0)  # the last reported (all 0 when the upstream sent none)
        self.generated = 0

    def feed(self, item: Item) -> list[Item]:
        if not isinstance(item, Chunk):
            return [item]
        data = item.data
        if "prompt_progress" in data:
            progress = progress_of(data)
            if progress is not None:
                self.progress = progress
                self.report(progress.total, progress.cache, progress.processed, self.generated)
            if _shows_nothing(data):
                return []
            item = Chunk({k: v for k, v in data.items() if k != "prompt_progress"})
        if _is_token(item.data):
            self.generated += 1
            if self.generated % REPORT_EVERY == 1:  # the first token, then every REPORT_EVERY-th: off the hot path
                p = self.progress
                self.report(p.total, p.cache, p.processed, self.generated)
        return [item]

    def finish(self) -> list[Item]:
        return []


class ProgressTap:
    """``inner`` (a ``/completion`` or ``/infill`` stream's transform) with its progress events reported to
    ``report``: they are parsed here until the first other event, then this only passes bytes on."""

    def __init__(self, inner: StreamTransform, report: Report) -> None:
        self.inner = inner
        self.report = report
        self._parser: SSEParser | None = SSEParser()
        self.ended = inner.ended
        self.error: StreamError | None = inner.error
        self.usage: Usage | None = inner.usage
        self.cut: str | None = None  # (a completion stream is never cut)

    def _out(self, data: bytes) -> bytes:
        inner = self.inner
        self.ended, self.error, self.usage = inner.ended, inner.error, inner.usage
        return data

    def feed(self, data: bytes) -> bytes:
        if self._parser is not None:
            try:
                events = self._parser.feed(data)
            except ValueError:
                events, self._parser = [], None  # the transform says what is wrong with the stream
            for ev in events:
                if isinstance(ev, SSEEvent) and not self._progress(ev):
                    self._parser = None
                    break
        return self._out(self.inner.feed(data))

    def _progress(self, ev: SSEEvent) -> bool:
        try:
            value = jsonutil.loads(ev.data) if ev.data else None
        except jsonutil.JSONError:
            return False
        progress = progress_of(value) if isinstance(value, dict) else None
        if progress is None:
            return False
        self.report(progress.total, progress.cache, progress.processed, 0)
        return True

    def keepalive(self) -> bytes:
        return self.inner.keepalive()

    def finish(self) -> bytes:
        return self._out(self.inner.finish())

    def fail(self, message: str, type: str = "upstream_error", code: int | str | None = 502) -> bytes:
        return self._out(self.inner.fail(message, type, code))
