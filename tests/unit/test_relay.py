"""The relay in memory, on a Clock: producer registration, cancellation, idle timeout, keep-alives, drain."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from llamashim.dialects.openai_chat.dialect import OpenAIChatEncoder
from llamashim.stream.pipeline import StreamPipeline
from llamashim.web.context import context_of
from llamashim.web.relay import StreamRelay
from llamashim.web.turn import KeepAlive

FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
FINISH = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


class FakeRequest:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.finished = False
        self._disconnected = False
        self.producer: Any = None
        self.streaming: bool | None = None
        self.path = b"/v1/chat/completions"

    @property
    def startedWriting(self) -> bool:
        return bool(self.written)

    def write(self, data: bytes) -> None:
        assert not self.finished
        self.written.append(data)

    def finish(self) -> None:
        assert not self.finished
        self.finished = True

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = None


class FakeResponse:
    def __init__(self) -> None:
        self.protocol: Any = None
        self.transport = StringTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


def start(
    clock: Clock, idle: float | None = 600, heartbeat: float = 0
) -> tuple[FakeRequest, FakeResponse, Deferred[None]]:
    """A relay writing through a keep-alive the way the web edge's turn does."""
    request, response = FakeRequest(), FakeResponse()
    keepalive: KeepAlive | None = None

    def write(data: bytes) -> None:
        request.write(data)
        if keepalive is not None:
            keepalive.touched()

    if heartbeat:
        keepalive = KeepAlive(clock, heartbeat, lambda: write(b": keep-alive\n\n"))
    relay = StreamRelay(request, response, StreamPipeline([], OpenAIChatEncoder("m", 0)), clock, idle,  # type: ignore[arg-type]
                        write=write)
    d = relay.start()
    if keepalive is not None:
        beating = keepalive

        def stop(result: object) -> object:
            beating.stop()
            return result

        d.addBoth(stop)
    return request, response, d


def test_upstream_transport_is_a_streaming_producer_on_the_request() -> None:
    """The upstream transport is the request's streaming producer; frames pass unchanged; it is unregistered."""
    clock = Clock()
    request, response, d = start(clock)
    assert request.producer is response.transport and request.streaming is True
    response.protocol.dataReceived(FRAME + FINISH + b"data: [DONE]\n\n")
    response.protocol.connectionLost(Failure(ResponseDone()))
    assert d.called and request.finished and request.producer is None
    assert b"".join(request.written) == FRAME + FINISH + b"data: [DONE]\n\n"


def test_cancel_closes_the_upstream_and_leaves_the_request_alone() -> None:
    """Cancelling the relay stops the upstream transport and does not finish the request."""
    clock = Clock()
    request, response, d = start(clock)
    response.protocol.dataReceived(FRAME)
    d.cancel()
    assert response.transport.producerState == "stopped"
    assert not request.finished


def test_idle_upstream_ends_with_a_terminal_error_frame() -> None:
    """Silence past the idle timeout (reset by each frame) stops the upstream and ends with an idle_timeout error."""
    clock = Clock()
    request, response, d = start(clock, idle=30)
    response.protocol.dataReceived(FRAME)
    clock.advance(20)
    response.protocol.dataReceived(FRAME)
    clock.advance(20)  # 20 s of silence: still fine
    assert response.transport.producerState != "stopped"
    clock.advance(11)
    assert response.transport.producerState == "stopped"
    response.protocol.connectionLost(Failure(ResponseDone()))
    body = b"".join(request.written)
    assert body.endswith(b"\n\n") and b'"error"' in body.split(b"\n\n")[-2] and b"idle_timeout" in body
    assert request.finished and d.called


def test_keepalive_only_when_quiet() -> None:
    """A keep-alive is written only after its seconds without a frame; no timer is left after the stream ends."""
    clock = Clock()
    request, response, d = start(clock, heartbeat=15)
    clock.advance(15)
    assert request.written == [b": keep-alive\n\n"]
    clock.advance(5)
    response.protocol.dataReceived(FRAME)
    clock.advance(10)  # 10 s after the frame: no heartbeat yet
    assert request.written[-1] == FRAME
    clock.advance(5)
    assert request.written[-1] == b": keep-alive\n\n"
    response.protocol.dataReceived(FINISH)
    response.protocol.connectionLost(Failure(ResponseDone()))
    assert d.called and not clock.getDelayedCalls()


def test_drain_ends_the_stream_with_an_error_frame() -> None:
    """The drain hook writes a shutting-down error frame, finishes the request and stops the upstream."""
    clock = Clock()
    request, response, d = start(clock)
    response.protocol.dataReceived(FRAME)
    hook = context_of(request).drain
    assert hook is not None
    hook("llamashim is shutting down")
    assert b"shutting down" in request.written[-1] and request.finished
    assert response.transport.producerState == "stopped"
