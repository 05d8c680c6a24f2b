"""The integration tier's one fixture module, in the shape of Tahoe's ``HttpTestFixture``.

In memory (most tests): :class:`ShimFixture` (the ``shims`` fixture) starts each :class:`Env` — the daemon's real
site in front of a fake upstream on one clock (:mod:`llamashim.testing.memory`) — and stops them after the test; an
``Env`` answers ``post``/``get`` as ``(status, headers, body)`` and hands out the ``openai``, ``anthropic`` and
``ollama`` SDK clients, whose requests it serves in memory through their HTTP client's ``MockTransport``.

On loopback (what only the wire shows: TCP flow control, disconnect timing, chunked bodies, TLS, the service tree,
real clients on real sockets): :func:`start_shim`, :func:`listen`, :func:`fetch`, :func:`raw_connect`,
:func:`in_thread`.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import anthropic
import httpx
import httpx2
import ollama
import openai
from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet import threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from llamashim.config import Config, load_config
from llamashim.dialects.responses.store import ResponseStore
from llamashim.service import LlamashimService, build_service
from llamashim.testing.fake_llama import FakeLlama
from llamashim.testing.memory import CLIENT_BASE, MemoryClock, MemoryShim, memory_config
from llamashim.web.site import ShimSite

reactor: Any = _reactor
T = TypeVar("T")
JSON = dict[str, Any]
BASE = CLIENT_BASE.decode()  # what an SDK client's base URL starts with in memory (a Host on the allow-list)


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
    service: LlamashimService
    port: IListeningPort
    url: str

    @property
    def site(self) -> ShimSite:
        return self.service.site

    @property
    def port_number(self) -> int:
        return cast(IPv4Address, self.port.getHost()).port

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
        assert self.transport is not None
        self.transport.write(self.request)
        self.connected_d.callback(self)

    def _tcp(self) -> Any:
        assert self.transport is not None, "not connected"
        return self.transport  # a tcp.Client: ITCPTransport and IPushProducer

    def stop_reading(self) -> None:
        """Stop reading the socket: the kernel's buffers fill, then the server's writes stall."""
        self._tcp().pauseProducing()

    def read_again(self) -> None:
        self._tcp().resumeProducing()

    def abort(self) -> None:
        """Vanish now (RST), as a killed client does."""
        self._tcp().abortConnection()

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

    def connectionLost(self, reason: Failure | None = None) -> None:
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
        headers = {k.lower(): list(v) for k, v in request.requestHeaders.getAllRawHeaders()}
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
    url: str, method: str = "GET", body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Headers, bytes]:
    """One request with treq on a non-persistent pool: (status, response headers, body)."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool))
    sent = Headers({k: [v] for k, v in (headers or {}).items()})
    try:
        response = await timeout(client.request(method, url, data=body, headers=sent))
        data = await timeout(response.content())
        return response.code, response.headers, data
    finally:
        await pool.closeCachedConnections()


async def in_thread(fn: Callable[[], T], seconds: float = 30) -> T:
    """Run a blocking client call (an SDK on a real socket) in a thread while the reactor serves; with a deadline."""
    return await timeout(threads.deferToThread(fn), seconds)


# -- fake upstreams -------------------------------------------------------------------------------------------------


# -- the in-memory tier -------------------------------------------------------------------------------------------

_NOT_FORWARDED = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}  # the Agent's business


class Env:
    """One memory shim as a route suite drives it. ``post``/``get`` send a request and run the clock until its
    response ended: ``(status, headers, body)``. ``fake`` is the fake llama-server behind it (when there is one)."""

    def __init__(self, shim: MemoryShim, fake: FakeLlama | None, headers: Mapping[str, str]) -> None:
        self.shim = shim
        self._fake = fake
        self.headers = dict(headers)
        self.stopped = False

    @property
    def fake(self) -> FakeLlama:
        assert self._fake is not None, "this shim's upstream is not a FakeLlama"
        return self._fake

    @property
    def store_path(self) -> str:
        """Where this shim's Responses store keeps its SQLite file (when the store is on)."""
        return str(self.shim.config.responses.store_path)

    def post(self, path: str, body: bytes | Mapping[str, Any], headers: Mapping[str, str] | None = None
             ) -> tuple[int, Headers, bytes]:
        """POST ``body`` (a mapping as JSON) with ``Content-Type: application/json`` and the env's headers."""
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        return self.call("POST", path, data, {"Content-Type": "application/json", **self.headers, **(headers or {})})

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, Headers, bytes]:
        return self.call("GET", path, None, headers)

    def call(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
             ) -> tuple[int, Headers, bytes]:
        exchange = self.shim.fetch(method, path, body, headers)
        assert exchange.response is not None, f"no response: {exchange.failure}"
        return exchange.code, exchange.response.headers, bytes(exchange.body)

    def _serve(self, method: str, target: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes
               ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        sent = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
                if k.decode("latin-1").lower() not in _NOT_FORWARDED}
        exchange = self.shim.fetch(method, target.decode("latin-1"), body if body or method != "GET" else None, sent)
        if exchange.response is None:
            raise ConnectionError(f"no response: {exchange.failure}")
        got = [(k, v) for k, values in exchange.response.headers.getAllRawHeaders() for v in values
               if k.lower().decode("latin-1") not in _NOT_FORWARDED]
        return exchange.code, got, bytes(exchange.body)

    def _httpx2(self, request: httpx2.Request) -> httpx2.Response:
        code, headers, body = self._serve(request.method, request.url.raw_path, request.headers.raw, request.read())
        return httpx2.Response(code, headers=headers, content=body)

    def _httpx(self, request: httpx.Request) -> httpx.Response:
        code, headers, body = self._serve(request.method, request.url.raw_path, request.headers.raw, request.read())
        return httpx.Response(code, headers=headers, content=body)

    def openai(self, key: str = "sk-x", v1: bool = True, **headers: str) -> openai.OpenAI:
        """The ``openai`` SDK, its requests served in memory (base URL with or without ``/v1``)."""
        return openai.OpenAI(base_url=BASE + ("/v1" if v1 else ""), api_key=key, max_retries=0,
                             default_headers=headers or None,
                             http_client=httpx2.Client(transport=httpx2.MockTransport(self._httpx2)))

    def anthropic(self, key: str = "sk-x", bearer: bool = False) -> anthropic.Anthropic:
        """The ``anthropic`` SDK (the key as ``x-api-key``, or as a Bearer token), its requests served in memory."""
        http = httpx2.Client(transport=httpx2.MockTransport(self._httpx2))
        if bearer:
            return anthropic.Anthropic(base_url=BASE, auth_token=key, max_retries=0, http_client=http)
        return anthropic.Anthropic(base_url=BASE, api_key=key, max_retries=0, http_client=http)

    def ollama(self) -> ollama.Client:
        """The ``ollama`` client, its requests served in memory."""
        return ollama.Client(host=BASE, transport=httpx.MockTransport(self._httpx))

    def restart(self) -> None:
        """Stop this shim as the daemon stops and start a new one on the same configuration and upstream (so the
        same Responses store file)."""
        self.shim.shutdown()
        self.shim = MemoryShim(self.shim.config, self.shim.upstream_resource, clock=self.shim.clock)

    def shutdown(self) -> None:
        """Stop as the daemon does (drain, then stop), once."""
        if not self.stopped:
            self.stopped = True
            self.shim.shutdown()


class ShimFixture:
    """Tahoe's ``HttpTestFixture`` for llamashim: one clock per test, the shims started on it (each with its
    configuration written as YAML and loaded as the daemon loads it, a Responses store under ``tmp_path``), and
    every one stopped when the test ends."""

    def __init__(self, tmp_path: Path, headers: Mapping[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.clock = MemoryClock()
        self.headers = dict(headers or {})  # sent with every Env.post (an API version header, say)
        self.envs: list[Env] = []

    def start(
        self,
        tools: str = "native",
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        fake: FakeLlama | None = None,
        upstream: IResource | Factory[Any] | None = None,
        cli: Mapping[str, Any] | None = None,
        unreachable: bool = False,
    ) -> Env:
        """A shim in front of ``upstream`` (default: ``fake``, default a new :class:`FakeLlama` on the clock), with
        ``tools`` as ``--tool-streaming`` and ``settings`` as the YAML configuration's sections."""
        n = len(self.envs)
        sections = {name: dict(values) for name, values in (settings or {}).items()}
        store = {"store": True, "store_path": str(self.tmp_path / f"store{n}" / "responses.sqlite3"),
                 **sections.pop("responses", {})}
        path = self.tmp_path / f"llamashim{n}.yaml"
        path.write_text(json.dumps(sections))  # JSON is YAML
        cfg = memory_config({"config": str(path), "tool_streaming": tools, **(cli or {})}, responses=store)
        if upstream is None:
            fake = fake or FakeLlama(self.clock)
            upstream = fake.resource()
        env = Env(MemoryShim(cfg, upstream, clock=self.clock, unreachable=unreachable), fake, self.headers)
        self.envs.append(env)
        return env

    def close(self) -> None:
        for env in reversed(self.envs):
            if not env.stopped:
                env.stopped = True
                env.shim.stop()


@dataclass
class Loopback:
    """A fake llama-server and a llamashim in front of it, on real loopback sockets."""

    fake: FakeLlama
    shim: Shim
    port: Any

    async def close(self) -> None:
        await self.shim.stop()
        await maybeDeferred(self.port.stopListening)


async def start_loopback(fake: FakeLlama, **limits: Any) -> Loopback:
    """Serve ``fake`` on loopback and start a llamashim in front of it (``limits`` replaced field by field)."""
    port, url = listen(fake.resource())
    cfg = config(url)
    if limits:
        cfg = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, **limits))
    return Loopback(fake, await start_shim(cfg), port)


def anthropic_tool_uses(client: anthropic.Anthropic, ask: dict[str, Any]) -> list[tuple[str | None, str, Any]]:
    """``messages.create`` and ``messages.stream`` with ``ask``: (stop reason, name, input) of every tool_use block the
    SDK parsed, the plain answer's then the streamed one's."""
    message = client.messages.create(**ask)
    with client.messages.stream(**ask) as stream:
        streamed = stream.get_final_message()
    return [(answer.stop_reason, b.name, b.input) for answer in (message, streamed) for b in answer.content
            if isinstance(b, anthropic.types.ToolUseBlock)]


class HeldWrites:
    """Stands in for the store's ``put``: each write is a Deferred the test fires (``land``, ``refuse``)."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.writes: list[tuple[str, Deferred[None]]] = []
        store.put = self.put  # type: ignore[method-assign]

    def put(self, owner: str, response: dict[str, Any], input_items: list[Any], conversation: list[Any]
            ) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append((response["id"], d))
        return d

    def land(self) -> None:
        self.writes[-1][1].callback(None)

    def refuse(self) -> None:
        self.writes[-1][1].errback(Failure(OSError("disk says no")))
