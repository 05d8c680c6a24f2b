"""The I/O edge between an upstream response body and a client request: streaming with backpressure.

:class:`BodyPump` is the ``IProtocol`` an upstream response delivers its body to. :func:`relay` registers the upstream
transport on the client request as a *streaming producer*: when the client stops reading, twisted.web pauses the
producer, which stops reading the upstream socket, so llama-server's own send buffer fills and it blocks — no bytes
pile up in llamashim. When the client goes away, Klein cancels the handler's Deferred; the canceller here stops the
upstream transport, closing the upstream connection at once so llama-server stops generating.

Silence from the upstream for ``idle_timeout`` seconds ends the relay with a terminal error frame (the stream's
business, not the web framework's, once bytes have been sent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.errors import ShimError


class StreamTransform(TypingProtocol):
    ended: bool

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def fail(self, message: str, type: str = ..., code: int | str | None = ...) -> bytes: ...


class Identity:
    """The pass-through transform: bytes out as they came in."""

    ended = False

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""

    def fail(self, message: str, type: str = "upstream_error", code: int | str | None = 502) -> bytes:
        return b""


class UpstreamIdle(ShimError):
    def __init__(self, seconds: float):
        super().__init__(504, f"upstream sent nothing for {seconds:g} s (upstream.idle_timeout)", "timeout_error")


class BodyPump(Protocol):
    """Receive an upstream body: each read goes to ``sink``; ``done`` fires at the end (errback on failure)."""

    log = Logger()

    def __init__(
        self,
        sink: Callable[[bytes], None],
        clock: IReactorTime,
        idle_timeout: float | None,
        on_connect: Callable[[Any], None] | None = None,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.on_connect = on_connect
        self.done: Deferred[None] = Deferred(lambda _: self.stop())
        self._timer: IDelayedCall | None = None
        self._last = 0.0
        self._failure: Exception | None = None
        self.finished = False

    def connectionMade(self) -> None:
        if self.idle_timeout:
            self._last = self.clock.seconds()
            self._timer = self.clock.callLater(self.idle_timeout, self._check_idle)
        if self.on_connect is not None:
            self.on_connect(self.transport)

    def _check_idle(self) -> None:
        assert self.idle_timeout
        idle = self.clock.seconds() - self._last
        if idle < self.idle_timeout:
            self._timer = self.clock.callLater(self.idle_timeout - idle, self._check_idle)
            return
        self._timer = None
        self._failure = UpstreamIdle(self.idle_timeout)
        self.stop()

    def dataReceived(self, data: bytes) -> None:
        if self._timer is not None:
            self._last = self.clock.seconds()
        self.sink(data)

    def stop(self) -> None:
        """Stop reading and close the upstream connection now."""
        if self.transport is not None and not self.finished:
            self.transport.stopProducing()  # type: ignore[attr-defined]  # the response body transport is a producer

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self.finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.done.called:
            return
        if self._failure is not None:
            self.done.errback(Failure(self._failure))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


def collect_body(
    response: IResponse, clock: IReactorTime, idle_timeout: float | None, max_bytes: int = 64 * 1024 * 1024
) -> Deferred[bytes]:
    """The whole body of ``response``. Cancelling closes the upstream connection."""
    parts: list[bytes] = []
    size = [0]
    pump: BodyPump

    def sink(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > max_bytes:
            pump._failure = ShimError(502, f"upstream reply larger than {max_bytes} bytes", "upstream_error")
            pump.stop()
            return
        parts.append(data)

    pump = BodyPump(sink, clock, idle_timeout)
    response.deliverBody(pump)
    return pump.done.addCallback(lambda _: b"".join(parts))


async def json_reply(
    response: IResponse, clock: IReactorTime, idle_timeout: float | None, what: str,
    max_bytes: int = 64 * 1024 * 1024,
) -> Any:
    """The whole JSON body of an upstream answer; an error status is passed on with its message, a body that is not
    JSON is a 502 naming ``what``."""
    from llamashim.http_util import upstream_error

    data = await collect_body(response, clock, idle_timeout, max_bytes)
    if response.code != 200:
        raise upstream_error(response.code, data)
    try:
        return jsonutil.loads(data, 0)
    except jsonutil.JSONError:
        raise ShimError(502, f"upstream {what} is not JSON", "upstream_error") from None


def relay(
    request: Request,
    response: IResponse,
    transform: StreamTransform,
    clock: IReactorTime,
    idle_timeout: float | None,
    on_first_byte: Callable[[], None] | None = None,
    heartbeat: bytes | None = None,
    heartbeat_seconds: float = 0.0,
) -> Deferred[None]:
    """Stream ``response``'s body through ``transform`` to ``request``, then finish the request.

    The caller has set the status and headers already. Fires when the client's response is complete; cancelling it
    (Klein does when the client disconnects) closes the upstream connection and leaves the request alone.
    When ``heartbeat`` is given, it is written whenever nothing went to the client for ``heartbeat_seconds`` (the
    transform only ever emits whole events, so a comment never lands inside one).
    """
    state = {"gone": False, "first": True}
    last_write = [clock.seconds()]
    beat_timer: list[IDelayedCall | None] = [None]

    def write(data: bytes) -> None:
        if data and not state["gone"]:
            if beat_timer[0] is not None:
                last_write[0] = clock.seconds()
            request.write(data)

    def beat() -> None:
        beat_timer[0] = None
        if state["gone"] or transform.ended or request.finished:
            return
        assert heartbeat is not None
        quiet = clock.seconds() - last_write[0]
        if quiet >= heartbeat_seconds:
            request.write(heartbeat)
            last_write[0] = clock.seconds()
            quiet = 0.0
        beat_timer[0] = clock.callLater(heartbeat_seconds - quiet, beat)

    if heartbeat is not None and heartbeat_seconds > 0:
        beat_timer[0] = clock.callLater(heartbeat_seconds, beat)

    def stop_beat(result: Any) -> Any:
        timer = beat_timer[0]
        beat_timer[0] = None
        if timer is not None and timer.active():
            timer.cancel()
        return result

    def sink(data: bytes) -> None:
        if state["first"]:
            state["first"] = False
            if on_first_byte is not None:
                on_first_byte()
        write(transform.feed(data))
        if transform.ended and getattr(transform, "error", None) is not None:
            # A terminal error: stop the upstream now. After a clean [DONE] the body is left to end by itself, so
            # the kept-alive connection goes back to the pool instead of being closed.
            pump.stop()

    def registered(transport: Any) -> None:
        request.registerProducer(transport, True)

    pump = BodyPump(sink, clock, idle_timeout, on_connect=registered)

    def unregister() -> None:
        if request.producer is not None:
            request.unregisterProducer()

    def ended(result: Failure | None) -> None:
        if state["gone"]:
            return None
        unregister()
        if isinstance(result, Failure):
            if transform.ended:
                pass  # we stopped it ourselves after a terminal item
            elif isinstance(result.value, ShimError):
                err = result.value
                write(transform.fail(err.message, err.type, err.code))
            else:
                write(transform.fail(f"upstream connection failed mid-stream: {_describe(result)}"))
        else:
            write(transform.finish())
        if not request.finished and not request._disconnected:
            request.finish()
        return None

    def cancel(d: Deferred[None]) -> None:
        state["gone"] = True
        try:
            unregister()
        except Exception:  # the request may be half torn down already
            pass
        pump.stop()

    def drain(message: str) -> None:
        """Shutdown: end this stream now with the dialect's terminal error frame and close the upstream."""
        if state["gone"] or request.finished:
            return
        write(transform.fail(message, "unavailable_error", 503))
        state["gone"] = True
        unregister()
        pump.stop()
        if not request.finished and not request._disconnected:
            request.finish()

    request.drain = drain  # type: ignore[attr-defined]
    result: Deferred[None] = Deferred(cancel)
    result.addBoth(stop_beat)
    pump.done.addBoth(ended).addBoth(lambda r: None if result.called else result.callback(None))
    response.deliverBody(pump)
    return result


def _describe(failure: Failure) -> str:
    value = failure.value
    reasons = getattr(value, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    if isinstance(value, CancelledError):
        return "cancelled"
    return failure.getErrorMessage() or type(value).__name__
