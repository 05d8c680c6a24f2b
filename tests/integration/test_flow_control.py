"""Backpressure and cancellation: client → llamashim → upstream, over real loopback sockets where the wire matters.

* A client that stops reading keeps the upstream paused (it sees ``pauseProducing`` and stays paused, measured on
  bytes llamashim relays to another client meanwhile), and llamashim holds little of the stream; once the client
  reads again every byte arrives. Without the producer registration in ``StreamRelay`` this fails.
* A client that vanishes — mid-stream, before the upstream answered, or while a non-streamed answer is awaited —
  makes llamashim close the upstream connection at once (the upstream sees its request's connection lost). On TCP,
  Twisted itself stops a registered producer when the client's connection is lost; the in-memory test (whose
  transports do not) pins ``StreamRelay``'s own cancel path, and fails without its ``pump.stop()``.
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

from llamashim import compat, jsonutil
from llamashim.testing.fake_llama import FakeLlama
from llamashim.testing.memory import memory_shim
from tests.integration.support import (
    Shim,
    config,
    fetch,
    http_request,
    listen,
    raw_connect,
    reactor,
    start_shim,
    timeout,
)

BLOCK = 64 * 1024
TOTAL = 20 * 1024 * 1024
METADATA = (b"/v1/models", b"/props", b"/slots", b"/health")
STEADY = 4 * 1024 * 1024  # bytes another client reads through llamashim while the slow client's upstream stays paused


@implementer(IPushProducer)
class BigBody:
    """Writes ``total`` bytes as fast as the transport takes them; honours pause/resume; records what it saw."""

    def __init__(self, request: Request, total: int) -> None:
        self.request = request
        self.total = total
        self.written = 0
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.stopped = False
        self.scheduled = False
        self.done: Deferred[None] = Deferred()
        self._changes: list[Deferred[None]] = []

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self._schedule()

    def changed(self) -> Deferred[None]:
        """Fires at the next pause or resume, or at the end."""
        d: Deferred[None] = Deferred()
        if self.done.called:
            d.callback(None)
        else:
            self._changes.append(d)
        return d

    def _changed(self) -> None:
        waiting, self._changes = self._changes, []
        for d in waiting:
            d.callback(None)

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self.scheduled = False
        while not self.paused and not self.stopped and self.written < self.total:
            self.request.write(b"x" * BLOCK)
            self.written += BLOCK
        if self.written >= self.total and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()
            self.done.callback(None)
            self._changed()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1
        self._changed()

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumes += 1
        self._changed()
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True

    @property
    def unsent(self) -> int:
        """Bytes the upstream's own transport holds, not yet taken by its socket."""
        channel: Any = self.request.channel
        return compat.buffered_bytes(channel.transport) if channel is not None else 0


class Upstream(Resource):
    """The upstream end of these tests: huge bodies (``/big?bytes=N``), a paced endless SSE stream, or no answer."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[BigBody] = []
        self.big_ready: Deferred[BigBody] = Deferred()
        self.lost: Deferred[float] = Deferred()
        self.arrived: Deferred[str] = Deferred()
        self.mode = "stream"
        self.metadata = FakeLlama(reactor, model="m").resource()

    def render(self, request: Request) -> Any:
        if request.method == b"GET" and request.path in METADATA:
            return self.metadata.render(request)  # llamashim's own reads of the upstream's models and health
        request.notifyFinish().addErrback(lambda _: self.lost.callback(reactor.seconds()))
        if not self.arrived.called:
            self.arrived.callback(request.path.decode())
        if request.path == b"/big":
            size = int((request.args.get(b"bytes") or [b"%d" % TOTAL])[0])
            request.setHeader(b"content-type", b"application/octet-stream")
            big = BigBody(request, size)
            self.bodies.append(big)
            big.start()
            if not self.big_ready.called:
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


async def until_upstream_stays_paused(shim: Shim, big: BigBody) -> int:
    """Wait until the upstream *stays* paused, measured on bytes, not time: it is paused with its own write buffer
    full, and it stays so — not one resume — while llamashim relays ``STEADY`` bytes to another client that reads
    (llamashim's reactor kept reading sockets all along). Returns how many rounds that took. Fails at once if the
    upstream wrote its whole body while the client was not reading: then llamashim buffered it."""
    for rounds in range(1, 50):
        if big.done.called:
            raise AssertionError(f"the upstream wrote all {big.written} bytes to a client that was not reading")
        if not big.paused:
            await timeout(big.changed(), 20)
            continue
        resumes = big.resumes
        status, _, body = await fetch(f"{shim.url}/big?bytes={STEADY}")
        assert status == 200 and len(body) == STEADY
        if big.paused and big.resumes == resumes and big.unsent > 0:
            return rounds
    raise AssertionError(f"the upstream never stayed paused ({big.pauses} pauses, {big.resumes} resumes)")


@pytest_twisted.ensureDeferred
async def test_slow_client_pauses_upstream_and_loses_nothing() -> None:
    """A client that stops reading keeps the upstream paused (llamashim holds < 2 MiB of a 20 MiB body meanwhile);
    once it reads again every byte arrives."""
    up, shim, port = await setup()
    try:
        request = http_request("GET", "/big", headers={"Connection": "close"})  # the end is the connection's end
        client = await raw_connect(shim.url, request, rcvbuf=32 * 1024)
        client.stop_reading()
        big = await timeout(up.big_ready)
        await until_upstream_stays_paused(shim, big)
        # What the upstream produced is what the sockets on the way hold, far from the 20 MiB.
        assert big.written < TOTAL // 2, big.written
        # llamashim itself holds at most a little in user space for this client.
        held = shim.site.buffered_bytes()
        assert held < 2 * 1024 * 1024, held
        client.read_again()
        await timeout(client.closed, 60)
        assert _body_len(bytes(client.received)) == TOTAL
        await timeout(big.done)
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
        client.abort()
        closed_at = await timeout(up.lost, 5)
        assert closed_at - left < 0.5, moment
    finally:
        await teardown(shim, port)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_client_leaving_mid_stream_closes_the_upstream_in_memory(path: str) -> None:
    """In memory, on one clock: a client that leaves mid-stream has its upstream connection closed on the next
    flush — no time passes — while the upstream still had most of its answer to send."""
    shim = memory_shim(tools={"streaming": "native"})
    fake = shim.fake
    assert fake is not None
    fake.content = [f"t{i} " for i in range(100)]
    fake.chunk_interval = 1.0
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    exchange = shim.request("POST", path, body)
    shim.advance(3.0)
    assert exchange.code == 200 and exchange.body and not exchange.ended
    seen = fake.chat_requests()[-1]
    assert not seen.lost.called
    exchange.abort()
    shim.flush()
    assert seen.lost.called and not seen.done.called
    assert fake.active == 0
    assert shim.upstream_agent.open_connections == 0
