"""What the relay streams through: a :class:`StreamTransform` turns upstream body bytes into client bytes (the chat
pipeline, Ollama's completion stream, or :class:`Identity` for the pass-through)."""

from __future__ import annotations

from typing import Protocol

from llamashim.stream.items import StreamError
from llamashim.stream.usage import Usage


class StreamTransform(Protocol):
    ended: bool
    error: StreamError | None  # the terminal error that ended the transform, if one did
    usage: Usage | None  # the stream's token usage once it said (None before)
    cut: str | None  # why a stage ended the stream before the upstream did (the upstream is then stopped)

    def feed(self, data: bytes) -> bytes: ...

    def keepalive(self) -> bytes:
        """What keeps the client waiting before the answer, in its dialect (``b""``: nothing)."""
        ...

    def finish(self) -> bytes: ...

    def fail(self, message: str, type: str = ..., code: int | str | None = ...) -> bytes: ...


class Identity:
    """The pass-through transform: bytes out as they came in."""

    ended = False
    error: StreamError | None = None
    cut: str | None = None
    usage: Usage | None = None

    def feed(self, data: bytes) -> bytes:
        return data

    def keepalive(self) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""

    def fail(self, message: str, type: str = "upstream_error", code: int | str | None = 502) -> bytes:
        return b""
