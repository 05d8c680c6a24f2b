"""The I/O edge between an upstream response body and a client request: streaming with backpressure.

:class:`StreamRelay` registers the upstream transport on the client request as a *streaming producer*: when the
client stops reading, twisted.web pauses the producer, which stops reading the upstream socket, so llama-server's own
send buffer fills and it blocks — no bytes pile up in llamashim. When the client goes away, Klein cancels the
handler's Deferred; the canceller here stops the upstream transport, closing the upstream connection at once so
llama-server stops generating.

Silence from the upstream for ``idle_timeout`` seconds ends the relay with a terminal error frame (the stream's
business, not the web framework's, once bytes have been sent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from llamashim import compat
from llamashim.errors import ShimError
from llamashim.stream.transform import StreamTransform
from llamashim.upstream.body import BodyPump
from llamashim.web.context import context_of


class StreamRelay:
    """Streams one upstream response body through a transform to one client request, then finishes it.

    The caller has set the status and headers already. :meth:`start` returns a Deferred that fires when the client's
    response is complete (with ``finish`` false: when the body ended, the request left open for the caller to end).
    Cancelling it (Klein does when the client disconnects) closes the upstream connection and leaves the request
    alone. Bytes go out through ``write`` (a :class:`~llamashim.web.turn.RequestTurn`'s, which
    keeps the client's connection alive between them; the request's own by default). The transform only ever emits
    whole events, so a keep-alive never lands inside one.

    Failures after the first byte are the stream's business: the transform's terminal frame, a log line with the
    request id, and the error kind in the request context (counted in ``/metrics``).
    """

    log = Logger()

    def __init__(
        self,
        request: Request,
        response: IResponse,
        transform: StreamTransform,
        clock: IReactorTime,
        idle_timeout: float | None,
        write: Callable[[bytes], None] | None = None,
        finish: bool = True,
    ) -> None:
        self.request = request
        self.finishes = finish  # False: the caller writes more (the end it kept back) and finishes the request
        self.response = response
        self.transform = transform
        self.ctx = context_of(request)
        self.out = write if write is not None else request.write
        self.gone = False
        self.pump = BodyPump(self._sink, clock, idle_timeout, on_connect=self._registered)
        self.done: Deferred[None] = Deferred(self._cancel)

    def start(self) -> Deferred[None]:
        self.ctx.drain = self.drain
        self.pump.done.addBoth(self._ended)
        self.response.deliverBody(self.pump)
        return self.done

    # upstream → client

    def _registered(self, transport: Any) -> None:
        # The upstream transport is the client response's streaming producer: a slow client pauses the upstream
        # read (twisted.web calls pauseProducing when the client's send buffer is full).
        self.request.registerProducer(transport, True)

    def _write(self, data: bytes) -> None:
        if data and not self.gone:
            self.out(data)
            if self.transform.ended and self.transform.error is None and self.finishes:
                self.ctx.delivered = True  # the terminal event is out: a hang-up from here on is no abort

    def _sink(self, data: bytes) -> None:
        self._write(self.transform.feed(data))
        if self.transform.ended and self.transform.error is not None:
            # A terminal error: stop the upstream now. After a clean end the body is left to end by itself, so
            # the kept-alive connection goes back to the pool instead of being closed.
            self._failed_midstream(ShimError(502, self.transform.error.message, self.transform.error.type))
            self.pump.stop()
        elif self.transform.ended and self.transform.cut is not None and not self.ctx.cut:
            # Ended by a stage (a runaway model): the client has a whole answer; stop the generation.
            self.ctx.cut = self.transform.cut
            self.log.warn("stream {path} cut at its {reason} limit; upstream stopped (id={request_id})",
                          path=self.request.path.decode("latin-1"), reason=self.transform.cut,
                          request_id=self.ctx.request_id.decode("ascii", "replace"))
            self.pump.stop()

    # the end

    def _unregister(self) -> None:
        if self.request.producer is not None:
            self.request.unregisterProducer()

    def _failed_midstream(self, err: ShimError) -> None:
        self.ctx.upstream_failed(err)
        self.log.warn(
            "stream {path} ended by an error after the response started: {message} (id={request_id})",
            path=self.request.path.decode("latin-1"),
            message=err.message,
            request_id=self.ctx.request_id.decode("ascii", "replace"),
        )

    def _ended(self, result: Failure | None) -> None:
        self.ctx.drain = None
        if not self.gone:
            self._unregister()
            if isinstance(result, Failure) and not self.transform.ended:
                err = result.value if isinstance(result.value, ShimError) else ShimError(
                    502, f"upstream connection failed mid-stream: {_describe(result)}", "upstream_error"
                )
                self._failed_midstream(err)
                self._write(self.transform.fail(err.message, err.type, err.code))
            elif not isinstance(result, Failure):
                had_error = self.transform.error is not None
                self._write(self.transform.finish())
                if self.transform.error is not None and not had_error:
                    self._failed_midstream(ShimError(502, self.transform.error.message, self.transform.error.type))
            self._finish()
        if not self.done.called:
            self.done.callback(None)

    def _finish(self) -> None:
        if self.transform.usage is not None:
            self.ctx.usage = self.transform.usage  # before finish(): the access line and /metrics read it then
        if self.finishes and not self.request.finished and not compat.client_gone(self.request):
            self.request.finish()

    def _cancel(self, _: Deferred[None]) -> None:
        """The client went away: stop reading and close the upstream connection at once."""
        self.gone = True
        self.ctx.client_gone = True
        if self.request.producer is not None and not compat.client_gone(self.request):
            self.request.unregisterProducer()
        self.pump.stop()

    def drain(self, message: str) -> None:
        """Shutdown: end this stream now with the dialect's terminal frame and close the upstream."""
        if self.gone or self.request.finished:
            return
        self.finishes = True  # the stream ends here, whatever the caller meant to write after it
        self._write(self.transform.fail(message, "unavailable_error", 503))  # (an end held back: that end)
        self.gone = True
        self._unregister()
        self.pump.stop()
        self._finish()


def _describe(failure: Failure) -> str:
    value = failure.value
    reasons = getattr(value, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    if isinstance(value, CancelledError):
        return "cancelled"
    return failure.getErrorMessage() or type(value).__name__
