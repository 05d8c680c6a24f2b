"""Helpers for the integration tier: loopback listeners, the daemon's service tree in-process, raw clients."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from llamashim.config import Config, load_config
from llamashim.service import build_service

reactor: Any = _reactor
T = TypeVar("T")


def timeout(d: Deferred[T], seconds: float = 10.0) -> Deferred[T]:
    """Every Deferred a test waits on gets a deadline."""
    return d.addTimeout(seconds, reactor)


def listen(resource: IResource) -> tuple[IListeningPort, str]:
    site = Site(resource)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return port, f"http://127.0.0.1:{port.getHost().port}"


def config(upstream: str, cli: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Config:
    args: dict[str, Any] = {"upstream": upstream, "listen": ["tcp:0:interface=127.0.0.1"]}
    args.update(cli or {})
    return load_config(args, environ or {})


@dataclass
class Shim:
    service: Any
    port: IListeningPort
    url: str

    @property
    def site(self) -> Any:
        return self.service.site

    def stop(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self.service.stopService()


async def start_shim(cfg: Config) -> Shim:
    """The real service tree (upstream client, routes, site) listening on a free loopback port."""
    svc = build_service(cfg, reactor)
    svc.startService()
    port = None
    for s in svc.listening:  # strports services listen asynchronously
        port = await timeout(s._waitingForPort)
    assert port is not None
    return Shim(svc, port, f"http://127.0.0.1:{port.getHost().port}")


class RawClient(Protocol):
    """A raw HTTP/1.1 client that can stop reading, or vanish, whenever the test says."""

    def __init__(self, request: bytes, rcvbuf: int | None = None) -> None:
        self.request = request
        self.rcvbuf = rcvbuf
        self.received = bytearray()
        self.connected_d: Deferred[RawClient] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.waiters: list[tuple[Callable[[bytes], bool], Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]
        self.connected_d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for cond, d in list(self.waiters):
            if cond(bytes(self.received)):
                self.waiters.remove((cond, d))
                d.callback(None)

    def wait_for(self, cond: Callable[[bytes], bool]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if cond(bytes(self.received)):
            d.callback(None)
        else:
            self.waiters.append((cond, d))
        return d

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.closed.called:
            self.closed.callback(None)


@dataclass
class _Factory(ClientFactory):
    proto: RawClient
    failed: list[Failure] = field(default_factory=list)

    def buildProtocol(self, addr: Any) -> RawClient:
        return self.proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.proto.connected_d.errback(reason)


def raw_connect(url: str, request: bytes, rcvbuf: int | None = None) -> Deferred[RawClient]:
    host, port = url.removeprefix("http://").split(":")
    proto = RawClient(request, rcvbuf)
    connector = reactor.connectTCP(host, int(port), _Factory(proto))
    if rcvbuf is not None:
        sock = getattr(connector.transport, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return timeout(proto.connected_d)


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Scripted(Resource):
    """An upstream that answers every request with what the test scripted, and records what it got."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.headers: dict[bytes, bytes] = {b"content-type": b"application/json"}
        self.body: bytes = b"{}"
        self.frames: list[bytes] | None = None  # SSE: written one by one, then the response ends
        self.abort_after_frames = False
        self.seen: list[tuple[bytes, bytes, dict[bytes, list[bytes]], bytes]] = []

    def posts(self) -> list[tuple[bytes, bytes, dict[bytes, list[bytes]], bytes]]:
        """The requests that were not llamashim's own metadata reads (its model index polls GETs)."""
        return [r for r in self.seen if r[0] != b"GET" or r[1] not in (b"/v1/models", b"/props", b"/slots",
                                                                         b"/health")]

    def render(self, request: Request) -> bytes | int:
        assert request.content is not None
        body = request.content.read()
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((request.method, request.uri, headers, body))
        request.setResponseCode(self.status)
        for k, v in self.headers.items():
            request.setHeader(k, v)
        if self.frames is None:
            return self.body
        request.setHeader(b"content-type", b"text/event-stream")
        for frame in self.frames:
            request.write(frame)
        if self.abort_after_frames:
            # drop the connection mid-body: the chunked body never gets its terminating chunk
            request.channel.transport.loseConnection()  # type: ignore[union-attr]
            return NOT_DONE_YET
        request.finish()
        return NOT_DONE_YET


async def fetch(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    """One request with treq on a non-persistent pool: (status, response headers, body)."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool))
    try:
        response = await timeout(client.request(method, url, data=body, headers=headers))
        data = await timeout(response.content())
        return response.code, response.headers, data
    finally:
        await pool.closeCachedConnections()
