"""What went to the upstreams for one client request, and what came back (``log.record``): the upstream side of a
recording.

A :class:`Tape` is opened per client request (by its request id, which every upstream request carries as
``X-Request-Id``); :class:`RecordingAgent` wraps an upstream client's agent and, for a request whose id has an open
tape, notes the request (method, path, body) and tees the response (status, headers, every body piece with its
time). Requests of no client request (health checks, ``/props``) are not recorded. Keys never reach a tape: the
upstream's own API key is an ``Authorization`` header, and headers are not kept for requests, only for responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.python.components import proxyForInterface
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

RESPONSE_HEADERS = (b"content-type",)  # the upstream response headers a recording keeps (replay needs no more)


@dataclass
class UpstreamExchange:
    """One upstream request of a recorded client request."""

    method: str
    path: str
    body: bytes
    started: float
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (seconds after ``started``, bytes)


@dataclass
class Tape:
    """Everything one client request did upstream, and what its client got (``client_out``)."""

    request_id: bytes
    upstream: list[UpstreamExchange] = field(default_factory=list)
    client_out: list[bytes] = field(default_factory=list)
    client_bytes: int = 0


class Tapes:
    """The open tapes, by request id."""

    def __init__(self) -> None:
        self.open: dict[bytes, Tape] = {}

    def begin(self, request_id: bytes) -> Tape:
        tape = self.open[request_id] = Tape(request_id)
        return tape

    def end(self, request_id: bytes) -> Tape | None:
        return self.open.pop(request_id, None)


class _TeeProtocol:
    """The body protocol that notes each piece before passing it on (transport and all: backpressure and
    cancellation are the inner protocol's)."""

    def __init__(self, inner: IProtocol, exchange: UpstreamExchange, clock: IReactorTime) -> None:
        self.inner = inner
        self.exchange = exchange
        self.clock = clock

    def makeConnection(self, transport: Any) -> None:
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.exchange.chunks.append((self.clock.seconds() - self.exchange.started, data))
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self.inner.connectionLost(reason)


class _TeeResponse(proxyForInterface(IResponse, "original")):  # type: ignore[misc]
    def __init__(self, original: IResponse, exchange: UpstreamExchange, clock: IReactorTime) -> None:
        super().__init__(original)
        self.exchange = exchange
        self.clock = clock

    def deliverBody(self, protocol: IProtocol) -> None:
        self.original.deliverBody(_TeeProtocol(protocol, self.exchange, self.clock))


@implementer(IAgent)
class RecordingAgent:
    """``agent``, with the requests of recorded client requests noted on their tapes."""

    def __init__(self, agent: IAgent, tapes: Tapes, clock: IReactorTime, base_url: bytes) -> None:
        self.agent = agent
        self.tapes = tapes
        self.clock = clock
        self.base = base_url.rstrip(b"/")

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred[IResponse]:
        rid = headers.getRawHeaders(b"x-request-id", [b""])[0] if headers is not None else b""
        tape = self.tapes.open.get(rid) if rid else None
        d: Deferred[IResponse] = self.agent.request(method, uri, headers, bodyProducer)
        if tape is None:
            return d
        path = uri[len(self.base):] if uri.startswith(self.base) else uri
        body = getattr(bodyProducer, "body", b"")
        exchange = UpstreamExchange(method.decode("latin-1"), path.decode("latin-1"),
                                    body if isinstance(body, bytes) else b"", self.clock.seconds())
        tape.upstream.append(exchange)

        def tee(response: IResponse) -> IResponse:
            exchange.status = response.code
            for name in RESPONSE_HEADERS:
                value = response.headers.getRawHeaders(name)
                if value:
                    exchange.headers[name.decode("latin-1")] = value[0].decode("latin-1")
            return _TeeResponse(response, exchange, self.clock)

        return d.addCallback(tee)
