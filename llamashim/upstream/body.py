"""Upstream bodies: request bodies in memory, reading a response body (:class:`BodyPump`, with an idle timeout),
and the upstream's error answers.

:class:`BodyPump` is the ``IProtocol`` an upstream response delivers its body to; :func:`collect_body` and
:func:`json_reply` read a whole body, and :class:`llamashim.web.relay.StreamRelay` streams one to a client.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from llamashim import jsonutil
from llamashim.errors import ShimError


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory (no cooperator, no global reactor)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def error_message(body: bytes | str) -> tuple[str, str | None]:
    """(message, type) from an upstream error body: OpenAI/llama-server error JSON, ``{"error": "..."}`` or text."""
    try:
        value = jsonutil.loads(body)
    except jsonutil.JSONError:
        value = None
    if isinstance(value, dict):
        err = value.get("error", value)
        if isinstance(err, dict):
            kind = err.get("type")
            return str(err.get("message") or ""), kind if isinstance(kind, str) else None
        if isinstance(err, str):
            return err, None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text.strip()[:500], None


# llama-server answers a request with an image or audio its model cannot take with HTTP 500 ("image input is not
# supported - hint: if this is unexpected, you may need to provide the mmproj"): the client's request is what cannot
# be served, so it is a 400 the client can act on, not a server fault it would retry.
_NO_MEDIA = re.compile(r"(image|audio) input is not supported")


def upstream_error(status: int, body: bytes) -> ShimError:
    """An upstream error status passed on with its message (a media refusal as the 400 it is)."""
    message, type_ = error_message(body)
    if not message:
        message = f"upstream answered HTTP {status}"
    media = _NO_MEDIA.match(message) if status == 500 else None
    if media is not None:
        return ShimError(400, f"this model cannot read {media.group(1)} input: its llama-server has no multimodal "
                              "projector (start it with --mmproj FILE, or send text only)", "invalid_request_error")
    return ShimError(status if status >= 400 else 502, message, type_)


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
        # One timer, re-armed lazily when it fires, instead of TimeoutMixin's resetTimeout() (a cancel and a new
        # callLater per chunk): a chunk then costs one clock read, which matters at thousands of chunks a second.
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
    data = await collect_body(response, clock, idle_timeout, max_bytes)
    if response.code != 200:
        raise upstream_error(response.code, data)
    try:
        return jsonutil.loads(data, 0)
    except jsonutil.JSONError:
        raise ShimError(502, f"upstream {what} is not JSON", "upstream_error") from None
