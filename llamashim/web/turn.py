"""The web edge's side of a chat turn: :class:`RequestTurn` (a :class:`llamashim.chat.turn.Turn` over one
twisted.web request) and :class:`KeepAlive`, the one keep-alive mechanism every stream uses — while a synthesized
answer is awaited and while an upstream stream is relayed alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from llamashim.chat.turn import TerminalFrame
from llamashim.stream.transform import StreamTransform
from llamashim.stream.usage import Usage
from llamashim.web.context import RequestContext, context_of
from llamashim.web.relay import StreamRelay
from llamashim.web.respond import send_json, start_stream

# Headers of the client's request that go upstream with a JSON call (with API keys on, the gate has removed the
# client's key: it is ours, never passed on).
FORWARDED = (b"authorization", b"x-request-id")


class KeepAlive:
    """Calls ``beat`` whenever ``seconds`` passed without :meth:`touched` — one timer, re-armed lazily when it
    fires (a write then costs one clock read, not a cancel and a new ``callLater``)."""

    def __init__(self, clock: IReactorTime, seconds: float, beat: Callable[[], None]) -> None:
        self.clock = clock
        self.seconds = seconds
        self.beat = beat
        self._last = clock.seconds()
        self._timer: IDelayedCall | None = clock.callLater(seconds, self._check)

    def touched(self) -> None:
        self._last = self.clock.seconds()

    def _check(self) -> None:
        quiet = self.clock.seconds() - self._last
        if quiet >= self.seconds:
            self.beat()  # writes, and so touches
            quiet = self.clock.seconds() - self._last
        if self._timer is not None:  # beat() may have stopped it
            self._timer = self.clock.callLater(max(self.seconds - quiet, 0.0), self._check)

    def stop(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


class ContextTurn:
    """What every :class:`~llamashim.chat.turn.Turn` of the edge records of what the flow tells it: the chosen
    upstream and model, the upstream's time to its headers and the tokens, in its :class:`RequestContext` (where
    the access line, ``/metrics`` and the status page read them)."""

    ctx: RequestContext

    @property
    def request_id(self) -> str:
        return self.ctx.request_id.decode("ascii", "replace")

    @property
    def owner(self) -> str:
        return self.ctx.owner

    def chose(self, upstream: str, model: str) -> None:
        self.ctx.upstream = upstream
        self.ctx.model = model

    def upstream_answered(self, seconds: float) -> None:
        if self.ctx.upstream_ttfb is None:
            self.ctx.upstream_ttfb = seconds

    def counted(self, usage: Usage | None) -> None:
        if usage is not None:
            self.ctx.usage = usage


class RequestTurn(ContextTurn):
    """One client exchange over ``request``: what the chat flow tells it lands in the request context (the access
    line, ``/metrics`` and the status page read it there); what it answers goes out in the request's dialect."""

    log = Logger()

    def __init__(self, request: Request, clock: IReactorTime) -> None:
        self.request = request
        self.clock = clock
        self.ctx = context_of(request)
        self._content_type: bytes | None = None
        self._opened = False
        self._output = False  # real output went out (not only keep-alives)
        self._keepalive: KeepAlive | None = None
        self._beat: Callable[[], bytes] = lambda: b""

    def cut(self, limit: str) -> None:
        self.ctx.cut = limit
        self.log.warn("answer to {path} cut at its {limit} limit (id={request_id})",
                      path=self.request.path.decode("latin-1"), limit=limit, request_id=self.request_id)

    def progressed(self, total: int, cache: int, processed: int, generated: int) -> None:
        ctx = self.ctx
        ctx.prompt_total, ctx.prompt_cache, ctx.prompt_processed = total, cache, processed
        if generated and ctx.generating_since is None:
            ctx.generating_since = self.clock.seconds()
        ctx.generated = generated

    def started(self) -> bool:
        return bool(self.request.startedWriting)

    def gone(self) -> bool:
        return self.ctx.client_gone

    def upstream_headers(self) -> Headers:
        headers = Headers({b"content-type": [b"application/json"]})
        for name in FORWARDED:
            value = self.request.requestHeaders.getRawHeaders(name)
            if value:
                headers.setRawHeaders(name, value)
        return headers

    def reply(self, body: bytes) -> bytes:
        self._stop_keepalive()
        return send_json(self.request, body)

    def prepare_stream(
        self,
        terminal_frame: TerminalFrame,
        keepalive: float,
        beat: Callable[[], bytes],
        content_type: bytes | None = None,
    ) -> None:
        self._content_type = content_type
        self.ctx.terminal_frame = terminal_frame
        self._beat = beat
        if keepalive <= 0 or self._output:
            self._stop_keepalive()
        elif self._keepalive is None:
            self._keepalive = KeepAlive(self.clock, keepalive, self._send_keepalive)
            self.request.notifyFinish().addBoth(lambda _: self._stop_keepalive())
        else:
            self._keepalive.seconds = keepalive

    def _send_keepalive(self) -> None:
        data = self._beat()
        if data:
            self._send(data)

    def _open(self) -> None:
        if not self._opened:
            self._opened = True
            if not self.request.startedWriting:
                start_stream(self.request, self._content_type or self.ctx.dialect.stream_content_type)

    def write(self, data: bytes) -> None:
        if data:
            if not self._output:
                self._output = True
                self.ctx.first_output_at = self.clock.seconds()  # time to first token: the access line, /metrics
            self._stop_keepalive()  # the answer is coming: keep-alives stop the moment real output starts
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self.request.finished or self.ctx.client_gone:
            self._stop_keepalive()
            return
        self._open()
        self.request.write(data)
        if self._keepalive is not None:
            self._keepalive.touched()

    def finish(self) -> None:
        self._stop_keepalive()
        if not self.request.finished and not self.ctx.client_gone:
            self._open()
            self.request.finish()

    def relay(self, response: IResponse, transform: StreamTransform, idle_timeout: float | None,
              finish: bool = True) -> Deferred[None]:
        self._open()
        done = StreamRelay(self.request, response, transform, self.clock, idle_timeout, write=self.write,
                           finish=finish).start()
        return done.addBoth(self._relayed)

    def _relayed(self, result: Any) -> Any:
        self._stop_keepalive()
        return result

    def _stop_keepalive(self) -> None:
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.stop()

