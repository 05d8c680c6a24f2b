"""Composition of the pure stream stages into one incremental bytes → bytes transform.

A :class:`StreamPipeline` is what the relay (the I/O edge) drives: it feeds upstream reads in and writes whatever comes
out to the client. Once a terminal item (``Done`` or ``StreamError``) has been encoded the pipeline is ``ended`` and
ignores further input; the relay then stops reading the upstream.

With ``hold_end``, the encoded end of a clean answer (the ``Done`` item's bytes: Responses' ``response.completed``)
is kept back in :attr:`StreamPipeline.held` instead of being returned, until :meth:`StreamPipeline.release`: the flow
sends it once the answer is kept (the Responses store), so a client that has the end can continue from anywhere.

The pipeline learns the answer's token usage (``usage``) from what goes in, before any stage: the upstream's usage
chunk, or llama-server's ``timings`` on the last chunk of every stream — whether or not the client asked for usage
in its own stream, which the stages alone decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from llamashim.stream.items import Chunk, Done, Item, Stage, StreamError
from llamashim.stream.sse import SSEComment, SSEParser, items_from_event
from llamashim.stream.usage import Usage


class Encoder(Protocol):
    """Pipeline items → a dialect's wire bytes (stateful: one per request), and the events that keep a client
    waiting (see :class:`~llamashim.stream.deltas.DeltaEncoder`)."""

    def __call__(self, items: list[Item]) -> bytes: ...

    def opening(self) -> bytes: ...

    def keepalive(self) -> bytes: ...


class StreamPipeline:
    """SSE bytes in → items → stages → encoded bytes out."""

    def __init__(self, stages: Sequence[Stage], encoder: Encoder, hold_end: bool = False) -> None:
        self._parser = SSEParser()
        self.hold_end = hold_end
        self.held = b""  # the encoded end of a clean answer, kept back (hold_end) until release()
        self._stages = list(stages)
        self._encode = encoder
        self.ended = False
        self.saw_finish_reason = False
        self.error: StreamError | None = None
        self.cut: str | None = None  # why a stage ended the stream early (a Done naming it)
        self.usage: Usage | None = None  # the last the upstream stated (usage chunk or timings)
        self._opened = False

    def keepalive(self) -> bytes:
        """What keeps the client waiting before the answer: the dialect's opening events the first time, then its
        keep-alive event; nothing once the stream ended."""
        if self.ended:
            return b""
        if not self._opened:
            self._opened = True
            return self._encode.opening() or self._encode.keepalive()
        return self._encode.keepalive()

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            return b""
        items: list[Item] = []
        for ev in self._parser.feed(data):
            if isinstance(ev, SSEComment):
                continue  # upstream keep-alives are not forwarded; we send our own heartbeats
            item = items_from_event(ev)
            if item is not None:
                items.append(item)
        return self.push(items) if items else b""

    def push(self, items: Iterable[Item]) -> bytes:
        """Run already-built items (e.g. from stream synthesis) through the stages and the encoder."""
        if self.ended:
            return b""
        out: list[Item] = []
        for item in items:
            if isinstance(item, Chunk) and ("timings" in item.data or item.data.get("usage")):
                self.usage = Usage.of(item.data) or self.usage
            batch = [item]
            for stage in self._stages:
                nxt: list[Item] = []
                for it in batch:
                    nxt.extend(stage.feed(it))
                batch = nxt
            out.extend(batch)
        return self._emit(out)

    def finish(self) -> bytes:
        """The upstream body ended cleanly."""
        if self.ended:
            return b""
        items: list[Item] = []
        for ev in self._parser.finish():
            if not isinstance(ev, SSEComment):
                item = items_from_event(ev)
                if item is not None:
                    items.append(item)
        out = self.push(items) if items else b""
        if self.ended:
            return out
        tail: list[Item] = []
        for i, stage in enumerate(self._stages):
            flushed = stage.finish()
            for later in self._stages[i + 1 :]:
                nxt: list[Item] = []
                for it in flushed:
                    nxt.extend(later.feed(it))
                flushed = nxt
            tail.extend(flushed)
        if not any(isinstance(it, (Done, StreamError)) for it in tail):
            if self.saw_finish_reason or any(_has_finish(it) for it in tail):
                tail.append(Done())
            else:
                tail.append(
                    StreamError("upstream closed the stream before it was complete", "upstream_error", 502)
                )
        return out + self._emit(tail)

    def fail(self, message: str, type: str = "upstream_error", code: int | str | None = 502) -> bytes:
        """The stream must end now (the upstream failed mid-stream, a shutdown): the dialect's terminal error frame —
        or, once the answer ended cleanly with its end held back (``hold_end``), that end: the answer is whole."""
        if self.ended:
            return self.release()
        return self._emit([StreamError(message, type, code)])

    def release(self) -> bytes:
        """The end kept back (``hold_end``), once: ``b""`` when none is (yet, or any more)."""
        held, self.held = self.held, b""
        return held

    def _emit(self, items: list[Item]) -> bytes:
        if not items:
            return b""
        for i, item in enumerate(items):
            if isinstance(item, Chunk):
                if not self.saw_finish_reason and _has_finish(item):
                    self.saw_finish_reason = True
            elif isinstance(item, (Done, StreamError)):
                self.ended = True
                if isinstance(item, StreamError):
                    self.error = item
                else:
                    self.cut = item.cut
                    if self.hold_end:
                        out = self._encode(items[:i])
                        self.held = self._encode([item])
                        return out
                items = items[: i + 1]
                break
        return self._encode(items)


def _has_finish(item: Item) -> bool:
    if not isinstance(item, Chunk):
        return False
    for choice in item.data.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return True
    return False
