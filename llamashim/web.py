"""The twisted.web edge: our Request (body limit, JSON errors, timing) and Site (access log).

twisted.web reads a request body completely before dispatching it. :class:`ShimRequest` refuses an oversized body as
soon as its declared length (or, for chunked uploads, its running size) passes ``limits.max_body_bytes``: it answers
413 in the dialect's shape and closes the connection instead of spooling the rest to disk.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource

from llamashim import errors

NULL_SINK_LIMIT = 0


def is_ollama_path(path: bytes) -> bool:
    return path.startswith(b"/api/")


def error_body(path: bytes, status: int, message: str) -> bytes:
    """The dialect's error body for a request path."""
    if is_ollama_path(path):
        return errors.ollama_error(message)
    return errors.openai_error(message, errors.error_type(status), status)


class _Discard:
    """A write-only content sink used once a body is known to be too large."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *a: Any) -> None:
        pass

    def read(self, *a: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


class ShimRequest(server.Request):
    """A Request with a body-size limit, JSON error pages and timing for the access log."""

    max_body_bytes = 32 * 1024 * 1024

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started = 0.0
        self.upstream_ttfb: float | None = None
        self.upstream_started: float | None = None
        self._body_seen = 0
        self._refused = False
        self.dialect = "openai"

    @property
    def clock(self) -> Any:
        return self.channel.site.reactor if self.channel is not None else None

    def gotLength(self, length: int | None) -> None:
        site = self.channel.site
        self.max_body_bytes = getattr(site, "max_body_bytes", self.max_body_bytes)
        self.started = site.reactor.seconds()
        if length is not None and length > self.max_body_bytes:
            self._refuse_body(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_seen += len(data)
        if self._body_seen > self.max_body_bytes:
            self._refuse_body(None)
            return
        super().handleContentChunk(data)

    def _refuse_body(self, length: int | None) -> None:
        """Answer 413 right away and drop the connection; the rest of the body is never read."""
        self._refused = True
        self.content = _Discard()  # type: ignore[assignment]
        path = getattr(self.channel, "_path", b"") or b""
        what = f"{length} bytes" if length is not None else "more than the limit"
        message = f"request body too large ({what}); limits.max_body_bytes is {self.max_body_bytes}"
        body = error_body(path, 413, message)
        self.channel.site.log_refusal(path, 413, message)
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def processingFailed(self, reason: Failure) -> None:  # type: ignore[override]
        """An unexpected error in our code: log it, answer a JSON 500 — never a traceback or an HTML page."""
        self._log.failure("unhandled error handling {method} {uri}", reason, method=self.method, uri=self.uri)
        if self.finished or self._disconnected:
            return
        if self.startedWriting:
            self.finish()
            return
        body = error_body(self.path or b"", 500, "internal error in llamashim (see its log)")
        self.setResponseCode(500)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()


class ShimChannel(HTTPChannel):
    """An HTTP connection that the site keeps track of (for draining on shutdown and for tests)."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.open_channels.add(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.site.open_channels.discard(self)
        super().connectionLost(reason)


class ShimSite(server.Site):
    """A Site whose access log is one structured line per request."""

    access_log = Logger(namespace="llamashim.access")
    requestFactory = ShimRequest
    protocol = ShimChannel
    displayTracebacks = False

    def __init__(self, resource: IResource, reactor: Any, max_body_bytes: int = 32 * 1024 * 1024) -> None:
        super().__init__(resource, reactor=reactor)
        self.max_body_bytes = max_body_bytes
        self.noisy = False
        self.open_channels: set[ShimChannel] = set()

    def log(self, request: ShimRequest) -> None:  # type: ignore[override]
        now = self.reactor.seconds()
        started = request.started or now
        ttfb = "-" if request.upstream_ttfb is None else f"{request.upstream_ttfb * 1000:.1f}ms"
        ShimSite.access_log.info(
            "{method} {path} {status} {bytes}B {duration_ms}ms upstream_ttfb={ttfb}",
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1"),
            status=request.code,
            bytes=request.sentLength,
            duration_ms=f"{(now - started) * 1000:.1f}",
            ttfb=ttfb,
            client=request.getClientAddress().host if hasattr(request.getClientAddress(), "host") else "-",
        )

    def log_refusal(self, path: bytes, status: int, message: str) -> None:
        ShimSite.access_log.info("refused {path} {status}: {message}", path=path.decode("latin-1"), status=status,
                          message=message)
