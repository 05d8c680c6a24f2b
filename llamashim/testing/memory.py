"""The in-memory test tier: the daemon's real resource tree and :class:`~llamashim.web.site.ShimSite`, its upstream
served in memory, everything on one :class:`~twisted.internet.testing.MemoryReactorClock` — no sockets, no global
reactor, no sleeps.

::

    shim = memory_shim(limits={"max_concurrent_upstream": 1, "max_queue": 0})
    exchange = shim.request("POST", "/v1/chat/completions", {"model": "m", "messages": [...], "stream": True})
    shim.flush()                  # move every byte that can move (client ↔ shim ↔ upstream)
    shim.advance(5)               # run the clock forward, timer by timer, flushing after each
    assert exchange.code == 200 and exchange.body.endswith(b"data: [DONE]\\n\\n")

Requests are real ``ShimRequest`` objects on a ``ShimChannel`` of the ``ShimSite`` (gate, request context, dialect
error shapes, body limit, access log and metrics), routed by the real ``Root`` to the real Klein routes; the upstream
client is the real :class:`~llamashim.upstream.client.UpstreamClient` whose ``Agent`` is a
:class:`MemoryAgent` over the fake upstream's ``Site`` (by default :class:`~llamashim.testing.fake_llama.FakeLlama`).

:class:`MemoryAgent` is treq's ``RequestTraversalAgent`` idea (the real ``Agent`` over ``iosim``) with three changes: it
serves a given ``Site`` (treq builds a plain ``Site`` around a resource); it runs on a given reactor, so the client,
llamashim and the upstream share one clock; and bytes move only when the test calls :meth:`MemoryShim.flush` (or
:meth:`MemoryShim.advance`, :meth:`MemoryShim.fetch`), never inside ``request()`` — an answer never arrives in the
call stack that asked for it, as on a real connection. A
:class:`Plug` sits between llamashim and the fake upstream: pulled, the upstream's connects are refused.
:meth:`MemoryShim.websocket` opens a WebSocket (an autobahn client, :class:`MemorySocket`) to the site the same
way. What memory cannot show — TCP flow control (``pauseProducing`` on a full socket), real disconnect timing, chunked
bodies on the wire — stays in the loopback tier (``tests/integration``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from unittest import mock

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import threadpool
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import URI, Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import directlyProvides, implementer

from llamashim import jsonutil
from llamashim import service as daemon
from llamashim.config import Config, load_config
from llamashim.dialects.registry import ROUTES
from llamashim.ops.metrics import Metrics
from llamashim.service import SiteParts
from llamashim.testing.fake_llama import FakeLlama
from llamashim.upstream.body import BytesProducer
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.limiter import UpstreamSlots
from llamashim.upstream.set import Member
from llamashim.web.routing import DialectRoutes
from llamashim.web.shutdown import drain

UPSTREAM_URL = "http://llama.memory:8080"  # never resolved: the MemoryAgent serves every URL from its Site
CLIENT_BASE = b"http://127.0.0.1"  # the Host a client sends by default (on the default allow-list)

__all__ = [
    "CLIENT_BASE",
    "UPSTREAM_URL",
    "Exchange",
    "MemoryAgent",
    "MemoryClock",
    "MemoryShim",
    "MemorySocket",
    "Plug",
    "SiteParts",
    "Valve",
    "build_site",
    "memory_config",
    "memory_shim",
]


# -- configuration ------------------------------------------------------------------------------------------------


def memory_config(
    cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None, **sections: Mapping[str, Any]
) -> Config:
    """A validated :class:`Config` for the memory tier: the upstream at :data:`UPSTREAM_URL`, a loopback listener
    (so the default Host allow-list applies), then ``sections`` replacing fields section by section, e.g.
    ``memory_config(limits={"max_body_bytes": 1024}, auth={"api_keys": ("sk-1",)})``.

    The Responses store is off unless ``responses={"store": True, "store_path": ...}`` says otherwise (its default
    path is the user's state directory); on, its SQLite work runs inline (see :class:`MemoryClock`)."""
    args: dict[str, Any] = {"upstream": UPSTREAM_URL, "listen": ["tcp:0:interface=127.0.0.1"]}
    args.update(cli or {})
    cfg = load_config(args, environ or {})
    sections = {**sections, "responses": {"store": False, **sections.get("responses", {})}}
    changes = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **changes)


# -- the clock ------------------------------------------------------------------------------------------------------


class MemoryClock(MemoryReactorClock):
    """A ``MemoryReactorClock`` that also takes calls "from a thread" (``callFromThread``, as on a later turn of the
    clock: there are no other threads here). With :func:`_inline_threads`, it runs the Responses store: adbapi's
    work happens inline, its results arrive through ``callFromThread``, so never in the call stack that asked."""

    def callFromThread(self, f: Callable[..., object], *args: object, **kw: object) -> None:
        self.callLater(0, f, *args, **kw)


class _InlinePool:
    """What adbapi needs of a ``ThreadPool``, running each piece of work at once in the calling thread."""

    def __init__(self, *args: object, **kw: object) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, object], object], f: Callable[..., object], *args: object, **kw: object
    ) -> None:
        try:
            result = f(*args, **kw)
        except Exception:
            on_result(False, Failure())
            return
        on_result(True, result)


@contextmanager
def _inline_threads() -> Iterator[None]:
    """While services start: a thread pool built now (adbapi builds one, by name, when the store starts) runs its
    work inline. The patch lasts only for the synchronous ``startService`` calls."""
    with mock.patch.object(threadpool, "ThreadPool", _InlinePool):
        yield


# -- the site, as the daemon builds it ------------------------------------------------------------------------------


def build_site(
    config: Config,
    reactor: Any,
    agent: IAgent | None = None,
    unavailable: Callable[[], str | None] | None = None,
    agents: Mapping[str, IAgent] | None = None,
    dialects: Sequence[type[DialectRoutes]] = ROUTES,
) -> SiteParts:
    """The daemon's ``ShimSite`` over its real resource tree, wired as :func:`llamashim.service.build_service` wires
    it, minus what only a process has (listeners, llama-server supervisors, the log observer, GC tuning).

    ``agent`` replaces every upstream client's ``Agent`` (a :class:`MemoryAgent` over a fake upstream), ``agents``
    the one of the upstream of that name; ``unavailable`` stands in for the upstreams' readiness (a reason string
    makes every upstream route answer 503); ``dialects`` are the routes classes mounted (a test may add its own).
    """
    members = []
    for spec in config.upstream_specs():
        if spec.spawn is not None or spec.url is None:
            raise ValueError(f"upstream {spec.name}: build_site serves URLs; upstream.spawn needs the full service")
        client = UpstreamClient.from_spec(reactor, spec, agent=(agents or {}).get(spec.name, agent))
        members.append(Member(spec, client))
    return daemon.build_site(config, reactor, members, unavailable, dialects)


# -- agents -----------------------------------------------------------------------------------------------------


@implementer(IAgentEndpointFactory)
class _AnyOrigin:
    """An endpoint for every URI (the port is all ``RequestTraversalAgent`` looks at)."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor

    def endpointForURI(self, uri: URI) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", uri.port)


@implementer(IAgent)
class MemoryAgent:
    """The real ``Agent`` over ``iosim``, as treq's ``RequestTraversalAgent``, serving a given :class:`Site` (such as
    a ``ShimSite``, so requests are its own request class on its own channel class; or any server factory, such as a
    misbehaving raw upstream) on a given ``MemoryReactorClock``, and — unlike treq's, which delivers a request inside
    ``request()`` — moving bytes only when flushed, as a real connection would: no answer ever arrives in the call
    stack that asked for it.

    Each request gets a new in-memory connection (an ``iosim`` pump). :meth:`flush` moves the bytes; a connection
    either side closes is closed for the other on the next flush.
    """

    def __init__(self, site: Factory[Any], reactor: MemoryReactorClock) -> None:
        self.site = site
        self.reactor = reactor
        self._agent = Agent.usingEndpointFactory(reactor, _AnyOrigin(reactor))
        self._pumps: set[iosim.IOPump] = set()

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        d: Deferred[IResponse] = self._agent.request(method, uri, headers, bodyProducer)
        if d.called:  # failed before connecting (a bad URI, say)
            return d
        _host, port, factory, _timeout, _bind = self.reactor.tcpClients[-1]
        self.connect(factory.buildProtocol(None), port, URI.fromBytes(uri).scheme == b"https")
        return d

    def connect(self, client: Any, port: int = 80, tls: bool = False) -> None:
        """Connect the client protocol ``client`` to a new server protocol of the site (bytes move on
        :meth:`flush`)."""
        server_address = IPv4Address("TCP", "127.0.0.1", port)
        client_address = IPv4Address("TCP", "127.0.0.1", 31337)
        server = self.site.buildProtocol(client_address)
        server_io = iosim.FakeTransport(server, isServer=True, hostAddress=server_address, peerAddress=client_address)
        client_io = iosim.FakeTransport(client, isServer=False, hostAddress=client_address, peerAddress=server_address)
        if tls:
            directlyProvides(server_io, ISSLTransport)
            directlyProvides(client_io, ISSLTransport)
        self._pumps.add(iosim.connect(server, server_io, client, client_io, greet=False, clock=self.reactor))

    def flush(self) -> bool:
        """Move every byte waiting in either direction (and deliver closes); ``True`` if anything moved."""
        moved = False
        pumps, self._pumps = self._pumps, set()
        for pump in pumps:
            moved = bool(pump.flush()) or moved
            if not (pump.clientIO.disconnected and pump.serverIO.disconnected):
                self._pumps.add(pump)
        return moved

    @property
    def open_connections(self) -> int:
        """Connections neither side has closed yet."""
        return sum(1 for p in self._pumps if not (p.clientIO.disconnected and p.serverIO.disconnected))


@implementer(IAgent)
class Plug:
    """Between llamashim and its in-memory upstream: while pulled (:meth:`pull`), every request fails as ``Agent``
    fails when the connect is refused — on a later turn of the clock, never inside ``request()`` — because nobody
    listens there any more; :meth:`push` puts it back."""

    def __init__(self, agent: IAgent, clock: MemoryReactorClock, pulled: bool = False) -> None:
        self.agent = agent
        self.clock = clock
        self.pulled = pulled
        self.refused = 0

    def pull(self) -> None:
        self.pulled = True

    def push(self) -> None:
        self.pulled = False

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        if not self.pulled:
            result: Deferred[IResponse] = self.agent.request(method, uri, headers, bodyProducer)
            return result
        self.refused += 1
        d: Deferred[IResponse] = Deferred()
        self.clock.callLater(0, d.errback, Failure(ConnectionRefusedError("Connection refused")))
        return d


# -- the client side ----------------------------------------------------------------------------------------------


class _Collector(Protocol):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def dataReceived(self, data: bytes) -> None:
        self.exchange.body += data

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008 (Twisted's default)
        self.exchange.ended = True
        if not reason.check(ResponseDone, PotentialDataLoss):
            self.exchange.reason = reason


class Exchange:
    """One client request through the in-memory ``ShimSite``; fills in as the shim is flushed.

    ``response`` is set once the status and headers arrived, ``body`` grows with every flush, ``ended`` is set when
    the response body ended (``reason`` holds the failure if it did not end cleanly), ``failure`` when the request
    failed before any response (the connection closed without an answer).
    """

    def __init__(self, d: Deferred[IResponse]) -> None:
        self.response: IResponse | None = None
        self.body = bytearray()
        self.ended = False
        self.reason: Failure | None = None
        self.failure: Failure | None = None
        self._collector: _Collector | None = None
        self._d = d
        d.addCallbacks(self._got, self._failed)

    def _got(self, response: IResponse) -> None:
        self.response = response
        self._collector = _Collector(self)
        response.deliverBody(self._collector)

    def _failed(self, failure: Failure) -> None:
        self.failure = failure
        self.ended = True

    @property
    def complete(self) -> bool:
        """The response arrived and its body ended cleanly."""
        return self.response is not None and self.ended and self.reason is None

    @property
    def code(self) -> int:
        assert self.response is not None, f"no response yet (failure: {self.failure})"
        return int(self.response.code)

    def header(self, name: str) -> str | None:
        """The first value of a response header (``None`` when absent)."""
        assert self.response is not None, f"no response yet (failure: {self.failure})"
        values = self.response.headers.getRawHeaders(name.encode("latin-1"))
        return values[0].decode("latin-1") if values else None

    def json(self) -> Any:
        assert self.complete, f"response not complete (ended={self.ended}, reason={self.reason})"
        return jsonutil.loads(bytes(self.body))

    def lines(self) -> list[bytes]:
        """The body's non-empty lines (NDJSON records, SSE fields)."""
        return [line for line in bytes(self.body).split(b"\n") if line.strip()]

    def abort(self) -> None:
        """The client goes away now: its connection closes (seen by llamashim on the next flush)."""
        if self.response is None:
            self._d.cancel()  # the HTTP client aborts the connection
            return
        assert self._collector is not None
        transport: Any = self._collector.transport  # the response body's transport is a producer
        transport.stopProducing()


class MemorySocket(WebSocketClientProtocol):
    """A WebSocket client of the in-memory site (:meth:`MemoryShim.websocket`): every message it got, parsed, in
    ``messages``; ``opened``/``closed`` as the handshakes went. :meth:`send` a JSON message, :meth:`drop` the
    connection without a close handshake (seen by llamashim on the next flush)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []
        self.opened = False
        self.closed = False
        self.close_code: int | None = None

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(jsonutil.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.close_code = code

    def send(self, message: Mapping[str, Any]) -> None:
        self.sendMessage(jsonutil.dumps(dict(message)), isBinary=False)

    def drop(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()

    def types(self) -> list[str]:
        """The ``type`` of every message so far."""
        return [m.get("type") for m in self.messages]


# -- the whole tier -----------------------------------------------------------------------------------------------


class MemoryShim:
    """The daemon's site with an in-memory client and upstream, on one clock. See the module docstring.

    ``request()`` sends a request and returns its :class:`Exchange`; ``treq`` is a treq ``HTTPClient`` on the same
    client agent, for tests that prefer treq's API (flush before reading its Deferreds). ``fake`` is the default
    upstream's :class:`FakeLlama`, ``plug`` the :class:`Plug` in front of it, ``site`` the ``ShimSite`` and
    ``parts`` everything :func:`build_site` made. The upstream set and route-owned services are started here.
    """

    def __init__(
        self,
        config: Config,
        upstream_resource: IResource | Factory[Any] | None = None,
        clock: MemoryReactorClock | None = None,
        unavailable: Callable[[], str | None] | None = None,
        unreachable: bool = False,
        dialects: Sequence[type[DialectRoutes]] = ROUTES,
    ) -> None:
        self.clock = clock if clock is not None else MemoryClock()
        self.config = config
        self.fake: FakeLlama | None = None
        if upstream_resource is None:
            self.fake = FakeLlama(self.clock)
            upstream_resource = self.fake.resource()
        self.upstream_resource = upstream_resource
        upstream_site: Factory[Any]
        if isinstance(upstream_resource, Factory):
            upstream_site = upstream_resource  # (a raw protocol's factory: the upstream's bytes are the test's)
        else:
            upstream_site = Site(upstream_resource, reactor=self.clock)
        upstream_site.noisy = False
        self.upstream_agent = MemoryAgent(upstream_site, self.clock)
        self.plug = Plug(self.upstream_agent, self.clock, pulled=unreachable)
        self.parts = build_site(config, self.clock, self.plug, unavailable, dialects=dialects)
        self.site = self.parts.site
        self.client_agent = MemoryAgent(self.site, self.clock)
        self.treq = HTTPClient(self.client_agent, data_to_body_producer=BytesProducer)
        with _inline_threads():
            for service in self.parts.services:
                service.startService()

    @property
    def metrics(self) -> Metrics:
        assert self.parts.metrics is not None, "metrics.enabled is false"
        return self.parts.metrics

    @property
    def slots(self) -> UpstreamSlots:
        return self.parts.slots

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        """Send one request (a mapping body is sent as JSON) and flush; the returned :class:`Exchange` fills in."""
        h = Headers()
        for name, value in (headers or {}).items():
            h.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        if body is not None and not isinstance(body, bytes):
            body = jsonutil.dumps(dict(body))
            if not h.hasHeader(b"content-type"):
                h.setRawHeaders(b"content-type", [b"application/json"])
        producer = BytesProducer(body) if body is not None else None
        url = CLIENT_BASE + path.encode("latin-1")
        exchange = Exchange(self.client_agent.request(method.encode("ascii"), url, h, producer))
        self.flush()
        return exchange

    def websocket(self, path: str = "/v1/responses", headers: Mapping[str, str] | None = None) -> MemorySocket:
        """Open a WebSocket to ``path`` (the upgrade request carries ``headers``) and flush: the returned
        :class:`MemorySocket` is open unless the upgrade was refused."""
        factory = WebSocketClientFactory("ws://127.0.0.1" + path, headers=dict(headers or {}), reactor=self.clock)
        factory.protocol = MemorySocket
        client = factory.buildProtocol(None)
        assert isinstance(client, MemorySocket)
        self.client_agent.connect(client)
        self.flush()
        return client

    def flush(self) -> None:
        """Move bytes between the client, llamashim and the upstream until nothing moves (running what is due on
        the clock now, such as ``callLater(0, ...)``, between rounds)."""
        for _ in range(100_000):
            self.clock.advance(0)
            moved = False
            for agent in (self.client_agent, self.upstream_agent):
                moved = agent.flush() or moved
            if not moved and not any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()):
                return
        raise AssertionError("the in-memory connections never went quiet")

    def advance(self, seconds: float) -> None:
        """Run the clock ``seconds`` forward one due timer at a time, flushing after each, so every timer sees the
        bytes that came before it (an idle timeout, a heartbeat, a paced upstream)."""
        self.flush()
        target = self.clock.seconds() + seconds
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= target]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
            self.flush()
        self.clock.advance(target - self.clock.seconds())
        self.flush()

    def fetch(
        self,
        method: str,
        path: str,
        body: bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        within: float = 600.0,
    ) -> Exchange:
        """:meth:`request`, then run the clock until its response ended (a paced upstream, a heartbeat); fails
        with ``TimeoutError`` when it has not ended after ``within`` seconds on the clock."""
        exchange = self.request(method, path, body, headers)
        self.run_until(lambda: exchange.ended, within)
        return exchange

    def run_until(self, condition: Callable[[], bool], within: float = 600.0, step: float = 1.0) -> None:
        """Flush, then run the clock ``step`` by ``step`` until ``condition()`` holds; ``TimeoutError`` after
        ``within`` seconds on the clock."""
        self.flush()
        deadline = self.clock.seconds() + within
        while not condition():
            if self.clock.seconds() >= deadline:
                raise TimeoutError(f"not done after {within:g} s on the clock")
            self.advance(step)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the site's metrics (``0.0`` when never set), e.g. ``metric("llamashim_requests_total",
        route="chat", status="200", dialect="openai")``."""
        value = self.metrics.registry.get_sample_value(name, labels)
        return float(value) if value is not None else 0.0

    def stop(self) -> None:
        """Stop what :func:`build_site` made to run (the upstream set, route-owned services), then flush."""
        for service in reversed(self.parts.services):
            service.stopService()
        self.flush()

    def shutdown(self) -> None:
        """Stop as the daemon does: drain (in-flight requests get ``shutdown.drain_timeout`` seconds on the clock,
        the rest end with their dialect's terminal error), then :meth:`stop`."""
        timeout = self.config.shutdown.drain_timeout
        drained = Deferred.fromCoroutine(drain(self.site, self.clock, timeout))
        self.run_until(lambda: drained.called, within=timeout + 1.0)
        self.stop()


def memory_shim(
    config: Config | None = None,
    upstream_resource: IResource | Factory[Any] | None = None,
    unavailable: Callable[[], str | None] | None = None,
    unreachable: bool = False,
    dialects: Sequence[type[DialectRoutes]] = ROUTES,
    **sections: Mapping[str, Any],
) -> MemoryShim:
    """A :class:`MemoryShim` for ``config`` (default: :func:`memory_config` with ``sections``, e.g.
    ``upstream={"idle_timeout": 5.0}``) in front of ``upstream_resource`` (default: a fresh :class:`FakeLlama`, at
    ``shim.fake``), with the plug pulled from the start when ``unreachable``."""
    if config is None:
        config = memory_config(**sections)
    elif sections:
        raise TypeError("pass either a config or sections, not both")
    return MemoryShim(config, upstream_resource, unavailable=unavailable, unreachable=unreachable, dialects=dialects)


# -- a fake-upstream helper -----------------------------------------------------------------------------------------


class Valve(Resource):
    """In front of an upstream resource: requests for the paths being held wait (``NOT_DONE_YET``) until the test
    lets them through (:meth:`release`) or answers them with a llama-server error (:meth:`fail`)."""

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self.inner = inner
        self.holding: set[bytes] = set()
        self.held: list[Request] = []

    def hold(self, *paths: bytes) -> None:
        """Hold every later request for these paths."""
        self.holding.update(paths)

    def render(self, request: Request) -> bytes | int:
        if request.path in self.holding:
            self.held.append(request)
            return NOT_DONE_YET
        result: bytes | int = self.inner.render(request)
        return result

    def _waiting(self) -> list[Request]:
        waiting, self.held = self.held, []
        return [r for r in waiting if not r.finished and not getattr(r, "_disconnected", False)]

    def release(self) -> None:
        """Stop holding; every held request goes on to the inner resource."""
        self.holding.clear()
        for request in self._waiting():
            result = self.inner.render(request)
            if isinstance(result, bytes):
                request.write(result)
                request.finish()

    def fail(self, status: int, message: str, type_: str = "server_error") -> None:
        """Answer every held request with ``status`` and a llama-server error body."""
        body = jsonutil.dumps({"error": {"code": status, "message": message, "type": type_}})
        for request in self._waiting():
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.write(body)
            request.finish()
