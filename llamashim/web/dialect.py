"""The dialect seam: a :class:`Dialect` object per client API, and the registry that finds one by path.
A dialect knows its name (the metrics label and log field), the path prefixes it owns, the error body it answers
before the first byte, the terminal frame that ends a stream it started, its heartbeat and its stream content type.
Everything that answers before routing — 401, 403, 413, 429, 500, 503, the drain frames — asks the registry
which dialect a path belongs to. How a dialect's chat request becomes the internal chat call
and how the shared stream comes back in its wire format lives in its own module (``dialects/<name>...``), which
builds a :class:`llamashim.chat.call.ChatCall` for :class:`llamashim.chat.flow.ChatFlow`.

Adding a dialect is one module plus one line in :mod:`llamashim.dialects.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable

from llamashim.errors import ShimError
from llamashim.stream.items import StreamError


class Dialect:
    """The wire shapes of one client API that do not depend on a running stream (override what differs)."""

    name: str = "openai"
    prefixes: tuple[bytes, ...] = ()
    stream_content_type: bytes = b"text/event-stream; charset=utf-8"

    def error_body(self, err: ShimError) -> bytes:
        """The JSON body of an error answered before the first byte."""
        raise NotImplementedError

    def error_status(self, err: ShimError) -> int:
        """The HTTP status of that answer (a dialect may word a status its own way, e.g. Anthropic's 529)."""
        return err.status

    def stream_error(self, err: StreamError) -> bytes:
        """The terminal frame that ends a started stream (for streams whose encoder has no state of its own)."""
        raise NotImplementedError

    def heartbeat(self) -> bytes | None:
        """A keep-alive the dialect's clients ignore, or ``None`` when the wire format has none."""
        return None

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"


class DialectRegistry:
    """Dialects by path prefix (the longest matching prefix wins); the fallback answers everything else."""

    def __init__(self, fallback: Dialect, dialects: Iterable[Dialect] = ()) -> None:
        self.fallback = fallback
        self._by_prefix: list[tuple[bytes, Dialect]] = []
        self._by_name: dict[str, Dialect] = {fallback.name: fallback}
        for dialect in dialects:
            self.add(dialect)

    def add(self, dialect: Dialect) -> None:
        self._by_name[dialect.name] = dialect
        self._by_prefix.extend((prefix, dialect) for prefix in dialect.prefixes)
        self._by_prefix.sort(key=lambda entry: -len(entry[0]))

    def for_path(self, path: bytes) -> Dialect:
        for prefix, dialect in self._by_prefix:
            if path == prefix or path.startswith(prefix if prefix.endswith(b"/") else prefix + b"/"):
                return dialect
        return self.fallback

    def named(self, name: str) -> Dialect:
        return self._by_name[name]

    def __iter__(self) -> Iterable[Dialect]:  # type: ignore[override]
        return iter(self._by_name.values())
