"""Fault injection at the byte level: an upstream that closes, resets, talks garbage, stalls or cuts its chunked
body ends each request in a well-formed error and leaks no connection — in memory, where a raw upstream protocol
writes exactly the bytes it likes and every connection is counted. On loopback: a kept-alive connection the upstream
closes just as the pool reuses it (only a real pool shows it)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import Factory, Protocol

from llamashim import jsonutil
from tests.integration.support import ShimFixture, config, fetch, reactor, start_shim

CHUNK = (
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hi"}}],"created":1,'
    b'"id":"c1","model":"m","object":"chat.completion.chunk"}\n\n'
)


class RawUpstream(Protocol):
    """A misbehaving upstream at the TCP level."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.got = b""

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        if b"\r\n\r\n" not in self.got or self.transport is None:
            return
        t: Any = self.transport
        if self.mode == "close_before_headers":
            t.loseConnection()
        elif self.mode == "reset_before_headers":
            t.abortConnection()
        elif self.mode == "garbage":
            t.write(b"\x00\x01garbage that is not HTTP\r\n\r\n")
            t.loseConnection()
        elif self.mode == "slow_headers":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-")  # ...and nothing more
        elif self.mode == "drop_mid_stream":
            t.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
            )
            t.loseConnection()  # after the buffered chunk is flushed: the body never gets its last chunk
        elif self.mode == "truncated_chunked":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            t.loseConnection()


BODY = jsonutil.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
PLAIN = jsonutil.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(
    ("mode", "body", "status", "needle"),
    [
        ("close_before_headers", BODY, 502, "upstream"),
        ("reset_before_headers", PLAIN, 502, "upstream"),
        ("garbage", BODY, 502, "upstream"),
        ("slow_headers", BODY, 504, "idle_timeout"),
        ("drop_mid_stream", BODY, 200, "mid-stream"),
        ("truncated_chunked", BODY, 200, "mid-stream"),
    ],
)
def test_upstream_faults_end_well_and_leak_nothing(
    shims: ShimFixture, mode: str, body: bytes, status: int, needle: str
) -> None:
    """Each upstream socket fault gives its 502/504 or final error frame, every time, and leaves no connection open."""
    env = shims.start(upstream=Factory.forProtocol(lambda: RawUpstream(mode)),
                      settings={"upstream": {"idle_timeout": 0.3}})
    for _ in range(3):
        code, _, data = env.post("/v1/chat/completions", body)
        assert code == status, (code, data)
        if status == 200:
            last = data.rstrip(b"\n").split(b"\n\n")[-1]
            assert last.startswith(b'data: {"error"')
            assert needle in jsonutil.loads(last[6:])["error"]["message"]
        else:
            err = jsonutil.loads(data)["error"]
            assert needle in err["message"], err
    assert not env.shim.site.open_channels  # no client connection is left open on llamashim's side
    assert env.shim.upstream_agent.open_connections == 0  # nor any upstream connection


class ClosesIdleConnections(Protocol):
    """Answers the first request on a connection and keeps it 'alive'; a second request on the same connection finds
    it closed — the race a pool hits when llama-server closes an idle kept-alive connection just as it is reused."""

    def __init__(self) -> None:
        self.answered = 0

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" not in data or self.transport is None:
            return
        if self.answered:
            self.transport.loseConnection()
            return
        self.answered += 1
        body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))


@pytest_twisted.ensureDeferred
async def test_stale_pooled_connection_is_retried_once() -> None:
    """A request sent on a kept-alive connection the upstream closes is retried on a new one: no 502."""
    port = reactor.listenTCP(0, Factory.forProtocol(ClosesIdleConnections), interface="127.0.0.1")
    shim = await start_shim(config(f"http://127.0.0.1:{port.getHost().port}"))
    try:
        for _ in range(3):
            code, _, data = await fetch(shim.url + "/v1/chat/completions", "POST", PLAIN)
            assert code == 200, data
    finally:
        await shim.stop()
        await port.stopListening()
