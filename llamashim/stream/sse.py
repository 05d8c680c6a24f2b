"""Server-sent events: an incremental parser, the item mapping and the frame writers (all pure).

The parser follows the WHATWG event-stream rules: lines end in LF, CRLF or CR (a CR at the end of one read may be
the first half of a CRLF split across reads), ``data:`` lines of one event are joined with LF, ``:`` lines are
comments, a blank line dispatches the event. Bytes are decoded as UTF-8 per complete line, so a multi-byte character
split across reads is never broken. Each event keeps its exact bytes (``raw``) so an unchanged event can be re-emitted
verbatim without re-serialising it.

llama-server also has a non-standard legacy error form, a field named ``error`` (``error: {...}``); the parser keeps
it in :attr:`SSEEvent.error` so the pipeline can turn it into a terminal error.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamashim import jsonutil
from llamashim.stream.items import Chunk, Done, Item, Passthrough, StreamError


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event."""

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    error: str | None = None
    raw: bytes = b""


@dataclass(slots=True)
class SSEComment:
    """One ``:`` comment line (keep-alive)."""

    text: str


class SSEParser:
    """Bytes in (any split), events and comments out, in order."""

    def __init__(self, max_line: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        self._skip_lf = False  # the last read ended in CR: a leading LF of the next read belongs to it
        self._raw: list[bytes] = []
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._error: str | None = None
        self._has_fields = False
        self._first = True
        self.max_line = max_line

    def feed(self, data: bytes) -> list[SSEEvent | SSEComment]:
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                if self._raw:
                    self._raw[-1] += b"\n"
                data = data[1:]
        buf = self._buf + data if self._buf else data
        out: list[SSEEvent | SSEComment] = []
        if b"\r" not in buf:
            # The common case (llama-server writes LF only): split once.
            parts = buf.split(b"\n")
            self._buf = parts.pop()
            for line in parts:
                self._line(line, b"\n", out)
        else:
            pos = 0
            n = len(buf)
            while pos < n:
                lf = buf.find(b"\n", pos)
                cr = buf.find(b"\r", pos, lf if lf >= 0 else n)
                if cr >= 0:
                    if cr + 1 < n:
                        end = b"\r\n" if buf[cr + 1 : cr + 2] == b"\n" else b"\r"
                    else:
                        end = b"\r"
                        self._skip_lf = True
                    self._line(buf[pos:cr], end, out)
                    pos = cr + len(end)
                elif lf >= 0:
                    self._line(buf[pos:lf], b"\n", out)
                    pos = lf + 1
                else:
                    break
            self._buf = buf[pos:]
        if len(self._buf) > self.max_line:
            raise ValueError(f"SSE line longer than {self.max_line} bytes")
        return out

    def finish(self) -> list[SSEEvent | SSEComment]:
        """The stream ended: an unterminated last line and event are dispatched as if a blank line followed."""
        out: list[SSEEvent | SSEComment] = []
        if self._buf:
            line, self._buf = self._buf, b""
            self._line(line, b"\n", out)
        if self._has_fields:
            self._line(b"", b"\n", out)
        return out

    def _line(self, line: bytes, end: bytes, out: list[SSEEvent | SSEComment]) -> None:
        if self._first:
            self._first = False
            if line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
        if not line:
            if self._has_fields:
                self._raw.append(end)
                out.append(
                    SSEEvent(
                        "\n".join(self._data),
                        self._event,
                        self._id,
                        self._retry,
                        self._error,
                        b"".join(self._raw),
                    )
                )
            self._raw = []
            self._data = []
            self._event = self._error = None
            self._retry = None
            self._has_fields = False
            return
        if line[:1] == b":":
            text = line[1:].decode("utf-8", "replace")
            out.append(SSEComment(text[1:] if text.startswith(" ") else text))
            return
        self._raw.append(line + end)
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        text = value.decode("utf-8", "replace")
        if name == b"data":
            self._data.append(text)
            self._has_fields = True
        elif name == b"event":
            self._event = text
            self._has_fields = True
        elif name == b"id":
            if "\x00" not in text:
                self._id = text
        elif name == b"retry":
            if text.isdigit():
                self._retry = int(text)
        elif name == b"error":
            self._error = text
            self._has_fields = True


def _error_from(value: object, fallback: str) -> StreamError:
    if isinstance(value, dict):
        err = value.get("error", value)
        if isinstance(err, dict):
            message = err.get("message") or fallback
            code = err.get("code")
            kind = err.get("type")
            type_ = kind if isinstance(kind, str) else "upstream_error"
            return StreamError(str(message), type_, code if isinstance(code, (int, str)) else None)
        if isinstance(err, str):
            return StreamError(err, "upstream_error", None)
    return StreamError(fallback, "upstream_error", None)


def items_from_event(ev: SSEEvent) -> Item | None:
    """The pipeline item an upstream event stands for (``None``: nothing to pass on)."""
    if ev.error is not None:
        try:
            value: object = jsonutil.loads(ev.error)
        except jsonutil.JSONError:
            value = ev.error
        if isinstance(value, str):
            return StreamError(value or "upstream reported an error mid-stream", "upstream_error", None)
        return _error_from(value, "upstream reported an error mid-stream")
    if ev.event not in (None, "", "message"):
        return Passthrough(ev.raw, ev.event, ev.data)
    data = ev.data
    if data == "[DONE]":
        return Done()
    if not data:
        return None
    try:
        value = jsonutil.loads(data)
    except jsonutil.JSONError:
        return StreamError("upstream sent a stream event that is not JSON", "upstream_error", 502)
    if not isinstance(value, dict):
        return StreamError("upstream sent a stream event that is not a JSON object", "upstream_error", 502)
    if "error" in value and "choices" not in value:
        return _error_from(value, "upstream reported an error mid-stream")
    return Chunk(value, ev.raw if ev.raw.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")) else None)


def encode_data(value: object) -> bytes:
    return b"data: " + jsonutil.dumps(value) + b"\n\n"


def encode_event(event: str, value: object) -> bytes:
    return b"event: " + event.encode("utf-8") + b"\n" + encode_data(value)
