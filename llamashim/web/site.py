"""The twisted.web edge: our Request (body limit, JSON errors, the request context) and Site (access log, metrics).

twisted.web reads a request body completely before dispatching it. :class:`ShimRequest` refuses an oversized body as
soon as its declared length (or, for chunked uploads, its running size) passes ``limits.max_body_bytes``: it answers
413 in the dialect's shape and closes the connection instead of spooling the rest to disk.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel

from llamashim import compat
from llamashim.errors import ShimError
from llamashim.ops.metrics import Metrics
from llamashim.ops.recent import RecentRequests, Served
from llamashim.ops.recorder import ClientSide, Recorder, public_headers
from llamashim.web.context import RequestContext, owner_of
from llamashim.web.dialect import Dialect
from llamashim.web.gate import Gate, key_headers
from llamashim.web.respond import end_with_error
from llamashim.web.root import Root

# Module level on purpose: a Logger as a class attribute renames its namespace after the class.
access_log = Logger(namespace="llamashim.access")
_REQUEST_ID_OK = re.compile(rb"[A-Za-z0-9._:@/+=-]+")


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
        self._body_seen = 0
        self._refused = False
        self.ctx = RequestContext(self._site.root.fallback.dialect if self.channel is not None else Dialect())

    def mark_streaming(self) -> None:
        """This response is a stream (counted in the active-streams gauge until it ends)."""
        if self.channel is not None:
            self._site.stream_started(self.ctx)
        else:
            self.ctx.streaming = True

    def write(self, data: bytes) -> None:
        if self.ctx.first_byte_at is None and data and self.channel is not None:
            self.ctx.first_byte_at = self._site.reactor.seconds()
        if self.ctx.tape is not None:
            self.ctx.tape.client_out.append(data)
        super().write(data)

    def connectionLost(self, reason: Failure) -> None:
        # A refused body has its own log line (log_refusal); the connection it closes is no client abort. A stream
        # whose terminal event went out is complete, even when the client hangs up before the response ends.
        if not self.finished and self.channel is not None and not self._refused:
            self._site.log(self, aborted=not self.ctx.delivered)
        super().connectionLost(reason)

    @property
    def _site(self) -> ShimSite:
        site: ShimSite = self.channel.site  # type: ignore[attr-defined]  # set by Site.buildProtocol
        return site

    def gotLength(self, length: int | None) -> None:
        site = self._site
        self.max_body_bytes = site.max_body_bytes
        self.ctx.started = site.reactor.seconds()
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
        self.content = _Discard()
        path = compat.channel_path(self.channel)
        what = f"{length} bytes" if length is not None else "more than the limit"
        message = f"request body too large ({what}); limits.max_body_bytes is {self.max_body_bytes}"
        body = self._site.root.dialect_for(path).error_body(ShimError(413, message))
        self._site.log_refusal(path, 413, message)
        transport: Any = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def process(self) -> None:
        """Before any route: request id, Host allow-list, CORS, API keys."""
        site = self._site
        dialect = self.ctx.dialect = site.root.dialect_for(self.path)
        rid = self.requestHeaders.getRawHeaders(b"x-request-id", [b""])[0]
        if not rid or len(rid) > 128 or not _REQUEST_ID_OK.fullmatch(rid):
            rid = uuid.uuid4().hex.encode("ascii")
            self.requestHeaders.setRawHeaders(b"x-request-id", [rid])  # forwarded upstream with the rest
        self.ctx.request_id = rid
        self.setHeader(b"x-request-id", rid)
        if site.worker_header is not None:  # server.workers > 1: which worker answered
            self.setHeader(b"x-llamashim-worker", site.worker_header)
        if site.recorder is not None:
            self.ctx.tape = site.recorder.tapes.begin(rid)
        gate: Gate = site.gate
        preflight = self.method == b"OPTIONS" and self.requestHeaders.hasHeader(b"access-control-request-method")
        for name, value in gate.cors_headers(self.requestHeaders, preflight).items():
            self.setHeader(name, value)
        if preflight and gate.cors_origins:
            self.setResponseCode(204)
            self.finish()
            return
        query = self.uri.partition(b"?")[2]
        err = gate.check(self.method, self.path, self.requestHeaders, dialect, query)
        if err is not None:
            self.ctx.route = "refused"
            if err.status == 401:
                self.setHeader(b"www-authenticate", b"Bearer")
            self.answer_error(err)
            return
        if gate.auth_enabled:
            # Whose request this is (stored Responses belong to the key that created them), as a hash.
            self.ctx.owner = owner_of(gate.presented_key(self.requestHeaders, dialect, query)
                                      if gate.key_ok(self.requestHeaders, dialect, query) else None)
            # The client's key is ours; it is not passed on (upstream.api_key is, when set).
            self.requestHeaders.removeHeader(b"authorization")
            for name in key_headers(dialect):
                self.requestHeaders.removeHeader(name)
        site.in_flight.add(self)
        self.notifyFinish().addBoth(lambda _: site.in_flight.discard(self))
        super().process()

    def processingFailed(self, reason: Failure) -> None:
        """An unexpected error in our code: log it, answer a JSON 500 — never a traceback or an HTML page."""
        self._log.failure("unhandled error handling {method} {uri}", reason, method=self.method, uri=self.uri)
        self.answer_error(ShimError(500, "internal error in llamashim (see its log)", "server_error"))

    def answer_error(self, err: ShimError) -> None:
        """End this request with ``err`` in its dialect's shape (see :func:`respond.end_with_error`)."""
        end_with_error(self, err)


class ShimChannel(HTTPChannel):
    """An HTTP connection that the site keeps track of (for draining on shutdown), with a deadline for each
    request's headers: a client dribbling a header block byte by byte is dropped after
    ``limits.header_timeout`` seconds (twisted.web's own timeout restarts on every byte)."""

    _header_timer: Any = None
    site: ShimSite  # set by Site.buildProtocol
    transport: Any

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.open_channels.add(self)
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        seconds = getattr(self.site, "header_timeout", None)
        if seconds:
            self._header_timer = self.site.reactor.callLater(seconds, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        access_log.info("dropped a connection: request headers not complete in time (limits.header_timeout)")
        self.transport.abortConnection()

    def allHeadersReceived(self) -> None:
        self._disarm_header_deadline()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if not self._header_timer and self.transport is not None and not self.transport.disconnecting:
            self._arm_header_deadline()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._disarm_header_deadline()
        self.site.open_channels.discard(self)
        super().connectionLost(reason)


def _first_token(ctx: RequestContext) -> float | None:
    """Seconds from the request to its stream's first real output (``None``: no stream output)."""
    return None if ctx.first_output_at is None else max(0.0, ctx.first_output_at - ctx.started)


class ShimSite(server.Site):
    """A Site whose access log is one structured line per request."""

    requestFactory = ShimRequest
    protocol = ShimChannel  # type: ignore[assignment]
    displayTracebacks = False

    def __init__(
        self,
        root: Root,
        reactor: Any,
        max_body_bytes: int = 32 * 1024 * 1024,
        gate: Gate | None = None,
        header_timeout: float | None = 30.0,
        metrics: Metrics | None = None,
        recent: RecentRequests | None = None,
        in_flight: set[Any] | None = None,
        recorder: Recorder | None = None,
        worker_header: bytes | None = None,
    ) -> None:
        # Never parse bodies as HTML forms: every route reads JSON, and the form check costs ~0.1 ms a request.
        super().__init__(root, reactor=reactor, parsePOSTFormSubmission=False)
        self.root = root  # which dialect a path belongs to: the same match that dispatches it
        self.max_body_bytes = max_body_bytes
        self.gate = gate or Gate()
        self.header_timeout = header_timeout
        self.noisy = False
        self.open_channels: set[ShimChannel] = set()
        self.in_flight: set[ShimRequest] = in_flight if in_flight is not None else set()
        self.metrics: Metrics | None = metrics
        self.recent = recent  # the status page's ring of recent requests (llamashim.ops.recent)
        self.recorder = recorder  # log.record: every exchange written to a directory (llamashim.ops.recorder)
        self.worker_header = worker_header  # X-Llamashim-Worker on every answer (several workers only)
        if metrics is not None:
            metrics.watch_buffered(self.buffered_bytes)

    def stream_started(self, ctx: RequestContext) -> None:
        """The exchange of ``ctx`` answers with a stream: counted in the active-streams gauge until it is logged."""
        if not ctx.streaming:
            ctx.streaming = True
            if self.metrics is not None:
                self.metrics.active_streams.inc()

    def log(self, request: ShimRequest, aborted: bool = False) -> None:  # type: ignore[override]
        """One access line per request (also for a client that left), its entry among the recent requests, its
        metrics, and its recording (``log.record``)."""
        # A client that left before its request was complete has no request path yet: the channel's is it.
        path = request.path if request.path is not None else compat.channel_path(request.channel)
        served = self.account(request.ctx, request.method.decode("latin-1"), path,
                              "aborted" if aborted else str(request.code), request.sentLength)
        if served is not None and self.recorder is not None and request.ctx.tape is not None:
            self._record(request, served)

    def account(self, ctx: RequestContext, method: str, path: bytes, status: str, bytes_out: int) -> Served | None:
        """Account for one finished exchange — an HTTP request, or one turn on a WebSocket — once: its access line,
        its entry among the recent requests (never a path, a body or a key) and its metrics. ``None`` when it was
        accounted for already."""
        if ctx.logged:
            return None
        ctx.logged = True
        served = self._served(ctx, method, status, bytes_out)
        self._access_line(ctx, served, path)
        if self.recent is not None:
            self.recent.record(served)
        if self.metrics is not None:
            self.metrics.count(served)
            prompt_ms = ctx.usage.prompt_ms if ctx.usage is not None else None
            self.metrics.timed(served.route, _first_token(ctx), None if prompt_ms is None else prompt_ms / 1000)
        return served

    def _record(self, request: ShimRequest, served: Served) -> None:
        assert self.recorder is not None
        content = request.content
        body = b""
        if content is not None:
            content.seek(0)
            body = content.read()
        path = self.recorder.save(request.ctx.request_id, ClientSide(
            request.method.decode("latin-1"), request.uri.decode("latin-1"),
            public_headers((k, v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs), body,
            served.status, public_headers((k, v) for k, vs in request.responseHeaders.getAllRawHeaders() for v in vs),
            served.duration))
        if path is not None:
            access_log.debug("recorded {request_id} to {path}", request_id=request.ctx.request_id.decode(
                "ascii", "replace"), path=str(path))

    def _served(self, ctx: RequestContext, method: str, status: str, bytes_out: int) -> Served:
        now = self.reactor.seconds()
        started = ctx.started or now
        usage = ctx.usage
        return Served(
            at=now, method=method, route=ctx.route, dialect=ctx.dialect.name,
            status=status, duration=now - started, upstream=ctx.upstream,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            streamed=ctx.streaming, bytes_out=bytes_out,
            ttft=ctx.first_byte_at - started if ctx.streaming and ctx.first_byte_at is not None else None,
            upstream_error=ctx.upstream_error, cut=ctx.cut, model=ctx.model,
            cached_tokens=usage.cached_tokens if usage else None,
        )

    def _access_line(self, ctx: RequestContext, served: Served, path: bytes) -> None:
        ttfb = "-" if ctx.upstream_ttfb is None else f"{ctx.upstream_ttfb * 1000:.1f}ms"
        tokens = "-" if served.prompt_tokens is None else f"{served.prompt_tokens}/{served.completion_tokens}"
        first_token = _first_token(ctx)
        ttft = "-" if first_token is None else f"{first_token * 1000:.1f}ms"
        access_log.info(
            "{method} {path} {status} {bytes}B {duration_ms}ms ttft={ttft} dialect={dialect} upstream={upstream} "
            "upstream_ttfb={ttfb} tokens={tokens} id={request_id} cached={cached}",
            method=served.method,
            path=path.decode("latin-1"),
            status=served.status,
            bytes=served.bytes_out,
            duration_ms=f"{served.duration * 1000:.1f}",
            dialect=served.dialect,
            upstream=served.upstream or "-",
            ttfb=ttfb,
            ttft=ttft,
            tokens=tokens,
            request_id=ctx.request_id.decode("ascii", "replace"),
            cached="-" if served.cached_tokens is None else served.cached_tokens,
        )

    def buffered_bytes(self) -> int:
        """Response bytes llamashim holds in user space, waiting for slow clients' sockets (for /metrics)."""
        return sum(compat.buffered_bytes(channel.transport) for channel in self.open_channels)

    def log_refusal(self, path: bytes, status: int, message: str) -> None:
        access_log.info("refused {path} {status}: {message}", path=path.decode("latin-1"), status=status,
                          message=message)
