"""Fault injection at the socket level: each failure ends in a well-formed error and leaks no connection."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol

from llamashim import jsonutil
from tests.integration.support import config, fetch, reactor, start_shim, timeout

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


def connections_to(port: int) -> int:
    """Open sockets in this process connected to ``port`` (llamashim's upstream connections)."""
    n = 0
    for reader in set(reactor.getReaders()) | set(reactor.getWriters()):
        if not isinstance(reader, tcp.Connection) or reader.disconnected:
            continue
        if getattr(reader.getPeer(), "port", None) == port:
            n += 1
    return n


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
@pytest_twisted.ensureDeferred
async def test_upstream_faults_end_well_and_leak_nothing(mode: str, body: bytes, status: int, needle: str) -> None:
    """Each upstream socket fault gives its 502/504 or final error frame, every time, and leaves no connection open."""
    factory = Factory.forProtocol(lambda: RawUpstream(mode))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    shim = await start_shim(
        config(f"http://127.0.0.1:{port.getHost().port}", {"tool_streaming": "native"})
    )
    shim.service.upstream.idle_timeout = 0.3
    try:
        for _ in range(3):
            code, _, data = await fetch(shim.url + "/v1/chat/completions", "POST", body)
            assert code == status, (code, data)
            if status == 200:
                last = data.rstrip(b"\n").split(b"\n\n")[-1]
                assert last.startswith(b'data: {"error"')
                assert needle in jsonutil.loads(last[6:])["error"]["message"]
            else:
                err = jsonutil.loads(data)["error"]
                assert needle in err["message"], err
        await timeout(shim.site.when_idle())  # no client connection is left open on llamashim's side
        assert connections_to(port.getHost().port) == 0  # nor any upstream connection
    finally:
        await shim.stop()
        await port.stopListening()


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
