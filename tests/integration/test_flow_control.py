"""Backpressure and cancellation over real loopback sockets: client → llamashim → upstream.

* A client that stops reading pauses the upstream read (the upstream sees ``pauseProducing``), and llamashim holds
  no more than a socket buffer's worth of the stream meanwhile; once the client reads again every byte arrives.
* A client that vanishes — mid-stream, before the upstream answered, or while a non-streamed answer is awaited —
  makes llamashim close the upstream connection at once (the upstream sees its request's connection lost).
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from llamashim import jsonutil
from tests.integration.support import (
    Shim,
    config,
    http_request,
    listen,
    raw_connect,
    reactor,
    start_shim,
    timeout,
)

BLOCK = 64 * 1024
TOTAL = 20 * 1024 * 1024


@implementer(IPushProducer)
class BigBody:
    """Writes ``TOTAL`` bytes as fast as the transport takes them; honours pause/resume; records what it saw."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.written = 0
        self.paused = False
        self.pauses = 0
        self.first_pause: Deferred[int] = Deferred()
        self.stopped = False
        self.scheduled = False
        self.done: Deferred[None] = Deferred()

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self.scheduled = False
        while not self.paused and not self.stopped and self.written < TOTAL:
            self.request.write(b"x" * BLOCK)
            self.written += BLOCK
        if self.written >= TOTAL and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1
        if not self.first_pause.called:
            self.first_pause.callback(self.written)

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True


class Upstream(Resource):
    """The upstream end of these tests: a huge body, a paced endless SSE stream, or no answer at all."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.big_ready: Deferred[BigBody] = Deferred()
        self.lost: Deferred[float] = Deferred()
        self.arrived: Deferred[str] = Deferred()
        self.mode = "stream"

    def render(self, request: Request) -> Any:
        request.notifyFinish().addErrback(lambda _: self.lost.callback(reactor.seconds()))
        if not self.arrived.called:
            self.arrived.callback(request.path.decode())
        if request.path == b"/big":
            request.setHeader(b"content-type", b"application/octet-stream")
            big = BigBody(request)
            big.start()
            self.big_ready.callback(big)
            return NOT_DONE_YET
        if self.mode == "hang":
            return NOT_DONE_YET  # never a header, never a byte
        request.setHeader(b"content-type", b"text/event-stream")
        chunk = {
            "choices": [{"finish_reason": None, "index": 0, "delta": {"content": "tick"}}],
            "created": 1,
            "id": "chatcmpl-1",
            "model": "m",
            "object": "chat.completion.chunk",
        }
        frame = b"data: " + jsonutil.dumps(chunk) + b"\n\n"

        def tick() -> None:
            request.write(frame)

        loop = LoopingCall(tick)
        loop.clock = reactor
        loop.start(0.02)
        request.notifyFinish().addBoth(lambda _: loop.stop() if loop.running else None)
        return NOT_DONE_YET


async def setup(mode: str = "stream") -> tuple[Upstream, Shim, Any]:
    up = Upstream()
    up.mode = mode
    port, url = listen(up)
    shim = await start_shim(config(url, {"tool_streaming": "native"}))
    return up, shim, port


async def teardown(shim: Shim, port: Any) -> None:
    await shim.stop()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_slow_client_pauses_upstream_and_loses_nothing() -> None:
    up, shim, port = await setup()
    try:
        client = await raw_connect(shim.url, http_request("GET", "/big"), rcvbuf=32 * 1024)
        client.transport.pauseProducing()  # the client stops reading
        big = await timeout(up.big_ready)
        written_at_pause = await timeout(big.first_pause, 20)
        # While paused, what the upstream has produced is bounded by socket buffers, far from the 20 MB.
        assert written_at_pause < TOTAL // 2, written_at_pause
        # llamashim itself holds at most a little in its write buffers for this client.
        held = _buffered_in_shim(shim)
        assert held <= 2 * 1024 * 1024, held
        client.transport.resumeProducing()
        await timeout(client.wait_for(lambda b: _body_len(b) >= TOTAL), 60)
        assert _body_len(bytes(client.received)) == TOTAL
        assert big.pauses >= 1
    finally:
        await teardown(shim, port)


def _body_len(raw: bytes) -> int:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return 0
    if b"transfer-encoding: chunked" in head.lower():
        total, pos = 0, 0
        while True:
            end = rest.find(b"\r\n", pos)
            if end < 0:
                return total
            size = int(rest[pos:end].split(b";")[0], 16)
            if size == 0 or end + 2 + size > len(rest):
                return total + max(0, min(size, len(rest) - end - 2)) if size else total
            total += size
            pos = end + 2 + size + 2
    return len(rest)


def _buffered_in_shim(shim: Shim) -> int:
    total = 0
    for proto in getattr(shim.site, "open_channels", ()):
        t = proto.transport
        total += len(getattr(t, "dataBuffer", b"")) + sum(len(x) for x in getattr(t, "_tempDataBuffer", []))
    return total


CHAT = jsonutil.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
CHAT_PLAIN = jsonutil.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(
    ("moment", "mode", "body"),
    [
        ("mid-stream", "stream", CHAT),
        ("before the upstream answered", "hang", CHAT),
        ("while waiting for a non-streamed answer", "hang", CHAT_PLAIN),
    ],
)
@pytest_twisted.ensureDeferred
async def test_client_leaving_closes_the_upstream_at_once(moment: str, mode: str, body: bytes) -> None:
    """A client that disconnects (at any moment) makes llamashim close its upstream connection within 0.5 s."""
    up, shim, port = await setup(mode)
    try:
        client = await raw_connect(
            shim.url, http_request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        )
        if mode == "stream":
            await timeout(client.wait_for(lambda b: b.count(b"data: ") >= 2))
        else:
            await timeout(up.arrived)
        left = reactor.seconds()
        client.transport.abortConnection()
        closed_at = await timeout(up.lost, 5)
        assert closed_at - left < 0.5, moment
    finally:
        await teardown(shim, port)
