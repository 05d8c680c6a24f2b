"""Each private-Twisted assumption in llamashim.compat, pinned against the installed Twisted: an upgrade that breaks
one fails here, by name, instead of somewhere in the daemon."""

from __future__ import annotations

import socket
from typing import Any, ClassVar

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web._newclient import Request as ClientRequest
from twisted.web.client import URI, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from llamashim import compat
from llamashim.upstream.tls import policy_for

reactor: Any = _reactor


def test_every_compat_name_is_pinned_here() -> None:
    """compat exports exactly the names this module tests (a new private name needs a test of its own)."""
    assert sorted(compat.__all__) == [
        "RequestNotSent", "StandardEndpointFactory", "buffered_bytes", "channel_path", "client_gone", "quiet_pool",
    ]


# -- RequestNotSent -----------------------------------------------------------------------------------------------


def test_request_not_sent_is_what_a_closed_connection_fails_a_request_with() -> None:
    """RequestNotSent (twisted.web._newclient) is the failure of a request sent on a connection already lost — the
    one failure UpstreamClient retries because the request never went out."""
    protocol = HTTP11ClientProtocol()
    protocol.makeConnection(StringTransport())
    protocol.connectionLost(Failure(ConnectionDone()))
    failures: list[Failure] = []
    protocol.request(ClientRequest(b"GET", b"/", Headers({b"host": [b"h"]}), None)).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(compat.RequestNotSent), failures


# -- StandardEndpointFactory --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [b"http://h:1/", b"https://h:1/"])
def test_standard_endpoint_factory_builds_an_endpoint_per_uri(url: bytes) -> None:
    """_StandardEndpointFactory(reactor, policy, connect timeout, bind address) gives an endpoint for a URI, as
    Agent's default factory does (UpstreamClient caches one per origin)."""
    factory = compat.StandardEndpointFactory(MemoryReactorClock(), policy_for(True), 10.0, None)
    endpoint = factory.endpointForURI(URI.fromBytes(url))
    assert IStreamClientEndpoint.providedBy(endpoint)


# -- quiet_pool ---------------------------------------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class _RecordingEndpoint:
    def __init__(self) -> None:
        self.factories: list[Any] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.factories.append(factory)
        return Deferred()  # never connects: only the factory the pool built matters


def test_quiet_pool_makes_the_pool_build_quiet_client_factories() -> None:
    """quiet_pool replaces HTTPConnectionPool._factory, which the pool calls for every new connection, with an
    _HTTP11ClientFactory whose noisy is False (no "Starting factory" line per upstream connection)."""
    pool = compat.quiet_pool(HTTPConnectionPool(Clock(), persistent=True))
    assert issubclass(pool._factory, _HTTP11ClientFactory)
    assert pool._factory.noisy is False
    endpoint = _RecordingEndpoint()
    pool.getConnection(("http", b"h", 1), endpoint)
    [factory] = endpoint.factories
    assert isinstance(factory, _HTTP11ClientFactory) and factory.noisy is False


# -- channel_path and client_gone ---------------------------------------------------------------------------------


class _Held(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> int:
        self.requests.append(request)
        return NOT_DONE_YET


class _Seen(Request):
    """The request class of the test site: it records the HTTPChannel it is read by (the one compat sees)."""

    channels: ClassVar[list[Any]] = []

    def __init__(self, channel: Any, *args: Any, **kw: Any) -> None:
        _Seen.channels.append(channel)
        super().__init__(channel, *args, **kw)


def _channel(resource: Resource | None = None) -> tuple[Any, StringTransport]:
    site = Site(resource or Resource(), reactor=Clock())
    site.requestFactory = _Seen
    protocol = site.buildProtocol(None)  # HTTP/1.1 inside twisted.web's protocol-negotiation wrapper
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_channel_path_is_the_request_line_path_while_headers_are_read() -> None:
    """HTTPChannel keeps the request line's path in _path as soon as the line is parsed, before the headers end
    (what the 413 refusal shapes its error by); a channel that read no request line gives b""."""
    _Seen.channels.clear()
    protocol, _ = _channel()
    protocol.dataReceived(b"POST /api/chat?x=1 HTTP/1.1\r\n")
    [channel] = _Seen.channels  # the request's channel exists from the request line on
    assert compat.channel_path(channel) == b"/api/chat?x=1"
    protocol.dataReceived(b"Host: h\r\nContent-Length: 99999\r\n")
    assert compat.channel_path(channel) == b"/api/chat?x=1"
    fresh, _ = _channel()
    assert compat.channel_path(fresh) == b""


def test_client_gone_after_the_connection_is_lost() -> None:
    """Request._disconnected is false while the client is there and true once the connection is lost (when
    notifyFinish errbacks, and before any write or finish)."""
    held = _Held()
    channel, _ = _channel(held)
    channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    [request] = held.requests
    assert compat.client_gone(request) is False
    lost: list[Failure] = []
    request.notifyFinish().addErrback(lost.append)
    channel.connectionLost(Failure(ConnectionLost()))
    assert compat.client_gone(request) is True
    assert len(lost) == 1
    assert compat.client_gone(object()) is False


# -- buffered_bytes -----------------------------------------------------------------------------------------------


class _Sink(Protocol):
    """The far end of the pair: reads nothing until told to, then counts."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.ready: Deferred[_Sink] = Deferred()
        self.all_in: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.expected and not self.all_in.called:
            self.all_in.callback(None)


def _timeout(d: Deferred[Any], seconds: float = 10.0) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_buffered_bytes_counts_what_the_tcp_transport_has_not_given_the_kernel() -> None:
    """A TCP transport's unsent bytes are _tempDataBuffer plus dataBuffer from offset on: right after write() all of
    them, then exactly what writeSomeData (the kernel) has not taken yet — a partial send included — then 0."""
    total = 4 * 1024 * 1024
    sink = _Sink(total)
    port = reactor.listenTCP(0, Factory.forProtocol(lambda: sink), interface="127.0.0.1")
    connected: Deferred[Protocol] = Deferred()

    class Sender(Protocol):
        def connectionMade(self) -> None:
            connected.callback(self)

    connector = reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Sender))
    try:
        sender = await _timeout(connected)
        await _timeout(sink.ready)
        transport = sender.transport
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # the kernel fills soon
        assert compat.buffered_bytes(transport) == 0
        taken = [0]
        partial: Deferred[None] = Deferred()
        original = transport.writeSomeData

        def counting(data: bytes) -> Any:
            n = original(data)
            if isinstance(n, int):
                taken[0] += n
                if 0 < n < len(data) and not partial.called:
                    reactor.callLater(0, partial.callback, None)  # look once doWrite has settled its offset
            return n

        transport.writeSomeData = counting
        transport.write(b"x" * total)
        assert compat.buffered_bytes(transport) == total  # all in _tempDataBuffer until the reactor writes
        await _timeout(partial)
        assert 0 < taken[0] < total
        assert compat.buffered_bytes(transport) == total - taken[0]  # dataBuffer from offset on
        sink.transport.resumeProducing()  # type: ignore[union-attr]
        await _timeout(sink.all_in, 30)
        assert taken[0] == total
        assert compat.buffered_bytes(transport) == 0
        assert compat.buffered_bytes(StringTransport()) == 0  # not a TCP transport: nothing known, 0
    finally:
        connector.disconnect()
        await port.stopListening()
