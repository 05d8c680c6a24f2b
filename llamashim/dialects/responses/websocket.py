"""The Responses API over a WebSocket (``GET /v1/responses`` upgraded; Codex's ``supports_websockets``), on
autobahn's Twisted WebSocket protocol.

The client sends JSON text messages ``{"type": "response.create", ...a Responses request body...}``; each is one
turn on the shared chat flow, answered with the same event objects as the SSE stream, one text message per event
(``response.created`` … ``response.completed``). Turns run one after another, several on one socket.
``previous_response_id`` finds the socket's own recent responses (:class:`LocalResponses`) even with
``store: false``, then the store; a turn that fails forgets the response it continued, and a new socket starts
with an empty memory, so both answer ``previous_response_not_found``. ``generate: false`` (Codex's warm-up)
completes a response with no output, nothing asked upstream. ``response.processed`` messages are accepted and
ignored. ``{"type": "response.compact", ...}`` (the body of ``POST /v1/responses/compact``; llamashim's own message:
neither the Open Responses spec nor Codex defines one) is a turn too, answered with one ``response.compacted``
message whose ``response`` is the compacted window the HTTP route returns.

Each turn is accounted for as an HTTP request is (:meth:`ShimSite.account`): an access line
(``WS /v1/responses 200 … id=<upgrade id>.<n>``), the status page's recent requests and ``/metrics`` (route
``responses_websocket`` or ``responses_websocket_compact``), with the error's status when it failed and
``aborted`` when the socket closed before its terminal event.

Errors before a turn's first event are the spec's WebSocket error envelope,
``{"type": "error", "status": 404, "error": {"type", "code", "message", "param"}}``; a failure after it is the
stream's ``response.failed`` (the SSE stream's separate ``error`` event is left out: one terminal event a turn).

The upgrade request has passed the gate like any HTTP request (API keys, Host allow-list); a browser's ``Origin``
must be one of ``cors.origins`` (:func:`refused_origin`). Flow control is the HTTP relay's: while a turn streams,
the upstream response's transport is the socket's streaming producer (:class:`SocketRelay`), so a client that stops
reading pauses the upstream read; a socket that closes cancels the running turn, which closes the upstream
connection at once.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat.turn import TerminalFrame
from llamashim.errors import BadRequest, ShimError
from llamashim.stream.transform import StreamTransform
from llamashim.upstream.body import BodyPump
from llamashim.web.context import RequestContext, context_of
from llamashim.web.respond import json_object
from llamashim.web.site import ShimSite
from llamashim.web.turn import ContextTurn, KeepAlive

from .events import error_fields, response_error_code

JSON = dict[str, Any]
MAX_REMEMBERED = 8  # responses a socket remembers for previous_response_id (Codex continues from the last one)
GOING_AWAY = 1001
SHUTDOWN = "llamashim is shutting down"
INTERNAL = ShimError(500, "internal error in llamashim (see its log)", "server_error")
CREATE = "response.create"
COMPACT = "response.compact"
COMPACTED = b"response.compacted"
TERMINAL = frozenset((b"response.completed", b"response.failed", b"response.incomplete"))
COMPLETE_EVENTS = TERMINAL - {b"response.failed"}  # an answer that is whole
ROUTES = {CREATE: "responses_websocket", COMPACT: "responses_websocket_compact"}  # the turns' metrics labels


class LocalResponses:
    """A socket's memory of its last responses' conversations (response id → chat messages), newest last."""

    def __init__(self, size: int = MAX_REMEMBERED) -> None:
        self.size = size
        self._items: OrderedDict[str, list[JSON]] = OrderedDict()

    def get(self, response_id: str) -> list[JSON] | None:
        return self._items.get(response_id)

    def remember(self, response_id: str, conversation: list[JSON]) -> None:
        self._items[response_id] = conversation
        self._items.move_to_end(response_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def forget(self, response_id: str) -> None:
        self._items.pop(response_id, None)


# -- the wire (pure) --------------------------------------------------------------------------------------------------


def sse_events(data: bytes) -> list[tuple[bytes, bytes]]:
    """(event type, JSON payload) of each whole SSE event in ``data``, as the Responses encoder writes them."""
    out = []
    for block in data.split(b"\n\n"):
        kind, payload = b"", b""
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                kind = line[7:]
            elif line.startswith(b"data: "):
                payload = line[6:]
        if payload:
            out.append((kind, payload))
    return out


def error_envelope(err: ShimError) -> bytes:
    """The WebSocket error event for an error before a turn's first event (its ``code`` always a string)."""
    fields = error_fields(err)
    if fields["code"] is None:
        fields["code"] = fields["type"] if err.status < 500 else response_error_code(err.type, err.code)
    return jsonutil.dumps({"type": "error", "status": err.status, "error": fields})


def client_message(message: bytes, max_depth: int) -> tuple[str, JSON] | None:
    """(type, request body) of a client's text message — ``response.create`` (a Responses request) or
    ``response.compact`` (a ``/responses/compact`` request) — or ``None`` for a message to ignore; a 400 for
    anything else. The HTTP-only fields (``stream``, ``stream_options``, ``background``) are dropped: a socket
    always streams a ``response.create``."""
    value = json_object(message, max_depth, "message")
    kind = value.get("type")
    if kind == "response.processed":
        return None
    if kind not in (CREATE, COMPACT):
        raise BadRequest(f"unsupported message type {kind!r}: send response.create or response.compact")
    body = {k: v for k, v in value.items() if k not in ("type", "stream", "stream_options", "background")}
    return (CREATE, {**body, "stream": True}) if kind == CREATE else (COMPACT, body)


def is_upgrade(request: Request) -> bool:
    """A WebSocket upgrade request (``Upgrade: websocket``, ``Connection: upgrade``)."""
    headers = request.requestHeaders
    upgrade = b",".join(headers.getRawHeaders(b"upgrade", [])).lower()
    connection = b",".join(headers.getRawHeaders(b"connection", [])).lower()
    return b"websocket" in upgrade and b"upgrade" in connection


def bad_handshake(request: Request) -> ShimError | None:
    """A JSON 400 for an upgrade that autobahn would refuse with a bare status line: not version 13, or no
    ``Sec-WebSocket-Key``."""
    headers = request.requestHeaders
    version = headers.getRawHeaders(b"sec-websocket-version", [b""])[0].strip()
    if version != b"13":
        return BadRequest(f"WebSocket version {version.decode('latin-1')!r} is not supported: use 13")
    if not headers.getRawHeaders(b"sec-websocket-key", [b""])[0].strip():
        return BadRequest("WebSocket upgrade without a Sec-WebSocket-Key")
    return None


def refused_origin(request: Request, allowed: tuple[str, ...]) -> ShimError | None:
    """A 403 for an upgrade from a web page whose ``Origin`` is not in ``cors.origins`` (a WebSocket is not
    protected by CORS: without this any page the user visits could talk to llamashim). Clients that are not
    browsers send no ``Origin``."""
    origin = request.requestHeaders.getRawHeaders(b"origin")
    if not origin or "*" in allowed or origin[0].decode("latin-1") in allowed:
        return None
    return ShimError(403, f"WebSocket from origin {origin[0].decode('latin-1')!r} refused (cors.origins)",
                     "permission_error")


# -- one turn -------------------------------------------------------------------------------------------------------


class Socket(Protocol):
    """What a turn needs of its WebSocket."""

    def send(self, payload: bytes) -> None: ...

    def is_gone(self) -> bool: ...

    def hold(self, producer: Any) -> None: ...

    def release(self) -> None: ...


class SocketTurn(ContextTurn):
    """One ``response.create`` as the chat flow sees it (:class:`llamashim.chat.turn.Turn`): events go out one
    message each; what the flow tells lands in the turn's own context, which :meth:`account` hands to the site
    when the turn ends (its access line, the recent requests, ``/metrics``).

    While it runs the turn is one of the site's in-flight requests (``channel``, ``ctx``, ``notifyFinish``), so a
    shutdown waits for it and then ends it through ``ctx.drain``, as it does an HTTP stream."""

    channel = None

    def __init__(self, socket: Socket, upgrade: RequestContext, clock: IReactorTime, number: int,
                 authorization: list[bytes] | None = None, site: ShimSite | None = None, kind: str = CREATE
                 ) -> None:
        self.socket = socket
        self.authorization = authorization  # the client's, passed on as an HTTP request's is (no API keys set)
        self.site = site  # where the turn is accounted for (a test's bare upgrade request has none)
        self.kind = kind
        self.ctx = RequestContext(upgrade.dialect, b"%s.%d" % (upgrade.request_id, number), ROUTES[kind],
                                  clock.seconds(), owner=upgrade.owner)
        self.clock = clock
        self.number = number
        self._finished: list[Deferred[None]] = []
        self.done = False
        self.failed = False  # an error envelope or response.failed went out
        self.status = 200  # the error's, once the turn failed
        self.sent = False  # a stream event (or the compacted window) went out
        self.bytes_out = 0
        self.terminal_frame: TerminalFrame | None = None
        self._keepalive: KeepAlive | None = None
        self._beat: Callable[[], bytes] = lambda: b""

    def cut(self, limit: str) -> None:
        self.ctx.cut = limit

    def progressed(self, total: int, cache: int, processed: int, generated: int) -> None:
        pass

    def started(self) -> bool:
        return self.sent

    def gone(self) -> bool:
        return self.socket.is_gone()

    def upstream_headers(self) -> Headers:
        headers = Headers({b"content-type": [b"application/json"], b"x-request-id": [self.request_id.encode("ascii")]})
        if self.authorization:
            headers.setRawHeaders(b"authorization", self.authorization)
        return headers

    def reply(self, body: bytes) -> bytes:  # (a socket always streams a response; kept for the Turn contract)
        self.write(body)
        return body

    def prepare_stream(self, terminal_frame: TerminalFrame, keepalive: float, beat: Callable[[], bytes],
                       content_type: bytes | None = None) -> None:
        self.terminal_frame = terminal_frame
        self._beat = beat
        if keepalive <= 0:
            self._stop_keepalive()
        elif self._keepalive is None:
            self._keepalive = KeepAlive(self.clock, keepalive, self._send_keepalive)
        else:
            self._keepalive.seconds = keepalive

    def _send_keepalive(self) -> None:
        self._send(self._beat())

    def write(self, data: bytes) -> None:
        if data:
            if self.ctx.first_output_at is None:
                self.ctx.first_output_at = self.clock.seconds()  # time to first token: the access line, /metrics
            self._stop_keepalive()
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self.socket.is_gone():
            return self._stop_keepalive()
        for kind, payload in sse_events(data):
            if kind == b"error":  # its response.failed follows: one terminal event a turn
                continue
            if kind == b"response.failed" and not self.failed:
                self.failed_midstream(ShimError(502, "the answer ended with response.failed", "upstream_error"))
            if not self.sent:  # the turn's stream starts (time to first byte, the active-streams gauge)
                self.sent = True
                self.ctx.first_byte_at = self.clock.seconds()
                if self.site is not None:
                    self.site.stream_started(self.ctx)
            self._message(payload, kind in TERMINAL)
        if self._keepalive is not None:
            self._keepalive.touched()

    def _message(self, payload: bytes, terminal: bool) -> None:
        """One message out; a terminal one makes the turn delivered (a close after it is no abort)."""
        if not self.socket.is_gone():
            self.ctx.delivered |= terminal
            self.bytes_out += len(payload)
            self.socket.send(payload)

    def failed_midstream(self, err: ShimError) -> None:
        """The turn failed with ``err`` (its status is the turn's); an upstream failure is counted as such."""
        self.failed = True
        self.status = err.status
        self.ctx.upstream_failed(err)

    def fail(self, err: ShimError) -> None:
        """End the turn with ``err``: the error envelope before its first event, its terminal frame after — unless
        its answer is whole (its end already out, or held back for the store: then that end goes out, no failure)."""
        if self.ctx.delivered:
            return
        if not self.sent:
            self.failed_midstream(err)
            self._message(error_envelope(err), True)
            return
        frame = self.terminal_frame(err) if self.terminal_frame is not None else b""
        if not any(kind in COMPLETE_EVENTS for kind, _ in sse_events(frame)):
            self.failed_midstream(err)
        self._send(frame)

    def finish(self) -> None:
        self._stop_keepalive()

    def account(self, path: bytes) -> None:
        """The turn is over: its access line, its entry among the recent requests and its metrics, as an HTTP
        request's (``aborted`` when the socket closed before its terminal message)."""
        if self.site is not None:
            status = "aborted" if self.socket.is_gone() and not self.ctx.delivered else str(self.status)
            self.site.account(self.ctx, "WS", path, status, self.bytes_out)

    def ended(self) -> None:
        """The turn is over (the in-flight set's ``notifyFinish`` fires)."""
        self.done = True
        self._stop_keepalive()
        waiting, self._finished = self._finished, []
        for d in waiting:
            d.callback(None)

    def notifyFinish(self) -> Deferred[None]:  # (twisted.web's name: the drain waits on it)
        d: Deferred[None] = Deferred()
        if self.done:
            d.callback(None)
        else:
            self._finished.append(d)
        return d

    def relay(self, response: IResponse, transform: StreamTransform, idle_timeout: float | None,
              finish: bool = True) -> Deferred[None]:
        # (a turn's end is its runner's: the relay never ends anything, and what the flow kept back it writes itself)
        return SocketRelay(self, response, transform, idle_timeout).start()

    def _stop_keepalive(self) -> None:
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.stop()


class CompactTurn(SocketTurn):
    """One ``response.compact``: the flow's one JSON reply (the compacted window) goes out as one
    ``response.compacted`` message, ``{"type", "sequence_number": 0, "response": {...}}``."""

    def reply(self, body: bytes) -> bytes:
        self.sent = True
        self._message(b'{"type":"%s","sequence_number":0,"response":%s}' % (COMPACTED, body), True)
        return body


class SocketRelay:
    """Streams one upstream response body through a transform to a turn's socket: the upstream transport is the
    socket's streaming producer while it runs (a slow reader pauses the upstream read); cancelling :meth:`start`'s
    Deferred (the socket closed) closes the upstream connection at once."""

    log = Logger()

    def __init__(self, turn: SocketTurn, response: IResponse, transform: StreamTransform,
                 idle_timeout: float | None) -> None:
        self.turn = turn
        self.socket = turn.socket
        self.response = response
        self.transform = transform
        self.gone = False
        self.pump = BodyPump(self._sink, turn.clock, idle_timeout, on_connect=self.socket.hold)
        self.done: Deferred[None] = Deferred(self._cancel)

    def start(self) -> Deferred[None]:
        self.pump.done.addBoth(self._ended)
        self.response.deliverBody(self.pump)
        return self.done

    def _sink(self, data: bytes) -> None:
        out = self.transform.feed(data)
        error = self.transform.error
        if error is not None and not self.turn.failed:  # (as the HTTP relay counts it: the error's own type)
            self.turn.failed_midstream(ShimError(502, error.message, error.type))
        if not self.gone:
            self.turn.write(out)
        if self.transform.ended and (error is not None or self.transform.cut is not None):
            if self.transform.cut is not None:
                self.turn.cut(self.transform.cut)
            self.pump.stop()  # a terminal error, or a runaway model cut: stop the generation

    def _ended(self, result: Failure | None) -> None:
        self.socket.release()
        if not self.gone:
            if isinstance(result, Failure) and not self.transform.ended:
                err = result.value if isinstance(result.value, ShimError) else ShimError(
                    502, f"upstream connection failed mid-stream: {result.getErrorMessage()}", "upstream_error")
                self.log.warn("websocket turn ended by an error after it started: {message}", message=err.message)
                self.turn.failed_midstream(err)
                self.turn.write(self.transform.fail(err.message, err.type, err.code))
            elif not isinstance(result, Failure):
                self.turn.write(self.transform.finish())
        if not self.done.called:
            self.done.callback(None)

    def _cancel(self, _: Deferred[None]) -> None:
        self.gone = True
        self.socket.release()
        self.pump.stop()


# -- the socket ---------------------------------------------------------------------------------------------------

TurnRunner = Callable[[SocketTurn, JSON, LocalResponses], Deferred[None]]
"""Runs one message's body as its turn (the routes' :meth:`ResponsesRoutes._socket_turn`; the turn's ``kind``
says which message it was)."""


class ResponsesSocket(WebSocketServerProtocol):
    """One client's WebSocket: its ``response.create`` and ``response.compact`` messages queued and run one at a
    time."""

    # (not ``log``: autobahn's own per-frame debug lines go to the txaio logger of that name, quiet below info)
    _log = Logger(namespace="llamashim.dialects.responses.websocket")
    factory: SocketFactory

    def __init__(self) -> None:
        super().__init__()
        self.local = LocalResponses()
        self.queue: deque[tuple[str, JSON]] = deque()
        self.turn: SocketTurn | None = None
        self.running: Deferred[None] | None = None
        self.turns = 0
        self.closed = False
        self.closing: str | None = None  # shutting down: close once the running turn ended

    def connectionMade(self) -> None:
        super().connectionMade()
        # The HTTP channel that read the upgrade request is still the transport's producer: the turns' upstream
        # responses take its place while they stream.
        self._transport().unregisterProducer()

    def _transport(self) -> Any:
        """The TCP (or TLS) transport, a consumer of producers (autobahn types it as a bare ``ITransport``)."""
        return self.transport

    def onOpen(self) -> None:
        self.factory.opened(self)

    # Socket

    def send(self, payload: bytes) -> None:
        if not self.closed:
            self.sendMessage(payload, isBinary=False)

    def is_gone(self) -> bool:
        return self.closed

    def hold(self, producer: Any) -> None:
        if not self.closed:
            self._transport().registerProducer(producer, True)

    def release(self) -> None:
        if self.transport is not None:
            self._transport().unregisterProducer()

    # messages

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            if isBinary:
                raise BadRequest("binary messages are not supported: send JSON text messages")
            message = client_message(payload, self.factory.max_depth)
        except ShimError as e:
            self.send(error_envelope(e))
            return
        if message is not None:
            self.queue.append(message)
            self._next()

    def _next(self) -> None:
        if self.running is not None or not self.queue or self.closed or self.closing:
            return
        kind, body = self.queue.popleft()
        self.turns += 1
        factory = self.factory
        turn = self.turn = (CompactTurn if kind == COMPACT else SocketTurn)(
            self, context_of(factory.upgrade), factory.clock, self.turns, factory.authorization, factory.site, kind)
        turn.ctx.drain = self._drain_turn
        self.factory.in_flight.add(turn)
        self.running = Deferred.fromCoroutine(self._run(turn, body))
        self.running.addBoth(self._turn_ended, turn, body)  # (at once when the turn ended without waiting)

    async def _run(self, turn: SocketTurn, body: JSON) -> None:
        try:
            await self.factory.runner(turn, body, self.local)
        except ShimError as e:
            turn.fail(e)
        except CancelledError:
            raise
        except Exception:
            self._log.failure("unhandled error in websocket turn (id={request_id})", request_id=turn.request_id)
            turn.fail(INTERNAL)
        finally:
            turn.finish()

    def _turn_ended(self, result: Failure | None, turn: SocketTurn, body: JSON) -> None:
        if isinstance(result, Failure):
            result.trap(CancelledError)  # the socket closed under it
        previous = body.get("previous_response_id")
        if turn.failed and turn.kind == CREATE and isinstance(previous, str):
            self.local.forget(previous)  # a failed continuation evicts what it continued
        turn.account(self.factory.path)
        self.factory.in_flight.discard(turn)
        turn.ended()
        self.running, self.turn = None, None
        if self.closing is not None:
            self.shut(self.closing)
        self._next()

    # the end

    def shut(self, message: str) -> None:
        """Shutdown: close now when idle, else once the running turn ended (the drain waits for it)."""
        self.closing = message
        if self.running is None and not self.closed:
            self.sendCloseFrame(GOING_AWAY, message.encode("utf-8"))

    def _drain_turn(self, message: str) -> None:
        """The drain's deadline passed: end the running turn with its terminal event and close the socket."""
        if self.turn is not None:
            self.turn.fail(ShimError(503, message, "unavailable_error"))
        if self.running is not None:
            self.running.cancel()
        self.shut(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.queue.clear()
        if self.running is not None:
            self.running.cancel()  # closes the upstream connection of a running turn
        self.factory.gone(self)


class Sockets(Service):
    """The open Responses WebSockets of one routes object: closed (1001, going away) when the daemon stops, after
    the drain let their running turns end."""

    def __init__(self) -> None:
        self.open: set[ResponsesSocket] = set()

    def stopService(self) -> None:
        super().stopService()
        for sock in list(self.open):
            sock.shut(SHUTDOWN)


class SocketFactory(WebSocketServerFactory):
    """The factory of one upgrade request's socket (it carries the request's context: owner, id, key)."""

    def __init__(self, upgrade: Request, runner: TurnRunner, clock: Any, sockets: Sockets, max_bytes: int,
                 max_depth: int) -> None:
        super().__init__(server="llamashim", reactor=clock)
        self.protocol = ResponsesSocket
        self.upgrade = upgrade
        self.path: bytes = upgrade.path  # the turns' access lines name it
        self.runner = runner
        self.sockets = sockets
        self.clock: IReactorTime = clock
        self.max_depth = max_depth
        # each running turn is one of the site's in-flight requests, and accounted for there as a request is (a
        # test's bare Request has no site)
        site = getattr(upgrade.channel, "site", None)
        self.site: ShimSite | None = site if isinstance(site, ShimSite) else None
        self.in_flight: set[Any] = self.site.in_flight if self.site is not None else set()
        # The client's key leaves the headers autobahn reads (and could log); an HTTP request would pass it on
        # upstream, and so does each turn.
        headers = upgrade.requestHeaders
        self.authorization = list(headers.getRawHeaders(b"authorization", []))
        for name in (b"authorization", b"x-api-key"):
            headers.removeHeader(name)
        self.setProtocolOptions(maxMessagePayloadSize=max_bytes, maxFramePayloadSize=max_bytes)

    def opened(self, sock: ResponsesSocket) -> None:
        """The handshake is done: the upgrade request ends as HTTP (its access line, ``101``), the socket lives on
        in :class:`Sockets`."""
        self.sockets.open.add(sock)
        self._release()

    def gone(self, sock: ResponsesSocket) -> None:
        self.sockets.open.discard(sock)
        self._release()

    def _release(self) -> None:
        request = self.upgrade
        context_of(request).delivered = True  # an upgrade is no aborted request
        channel = request.channel
        if channel is not None:  # (a second call finds it gone)
            channel.connectionLost(Failure(ConnectionDone("upgraded to a WebSocket")))


def socket_resource(request: Request, runner: TurnRunner, clock: Any, sockets: Sockets, max_bytes: int,
                    max_depth: int) -> WebSocketResource:
    """The resource that takes ``request``'s connection over as a Responses WebSocket."""
    request.setResponseCode(101)
    return WebSocketResource(SocketFactory(request, runner, clock, sockets, max_bytes, max_depth))
