"""The Responses API over a WebSocket, on real loopback sockets (the wire is the point): a real autobahn client, and
the OpenAI SDK's own ``responses.connect()``, against the real daemon in front of the fake llama-server.

Several turns on one socket; ``previous_response_id`` with ``store: false`` on the same socket, and
``previous_response_not_found`` on a new one; the gate on the upgrade request; a socket that closes closes the
upstream request; a reader that stops reading pauses the upstream.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred

from llamashim.dialects.responses.store import ResponseStore
from llamashim.testing.fake_llama import MODEL, FakeLlama, Seen
from tests.integration.support import Loopback, config, fetch, in_thread, listen, reactor, start_shim, timeout

JSON = dict[str, Any]
TERMINAL = ("response.completed", "response.failed", "response.incomplete", "error")


class Client(WebSocketClientProtocol):
    """A WebSocket client that keeps every message and can wait for the next terminal event, or pause reading."""

    factory: ClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[JSON] = []
        self.closed: Deferred[None] = Deferred()
        self._waiting: list[tuple[int, Deferred[list[JSON]]]] = []
        self._seen_terminal = 0
        self._firsts: dict[str, Deferred[None]] = {}
        self._pongs: list[Deferred[None]] = []

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(json.loads(payload))
        first = self._firsts.pop(self.messages[-1]["type"], None)
        if first is not None:
            first.callback(None)
        if self.messages[-1]["type"] in TERMINAL:
            self._seen_terminal += 1
            ready = [d for n, d in self._waiting if n <= self._seen_terminal]
            self._waiting = [(n, d) for n, d in self._waiting if n > self._seen_terminal]
            for d in ready:
                d.callback(self.messages)

    def onPong(self, payload: bytes) -> None:
        pongs, self._pongs = self._pongs, []
        for d in pongs:
            d.callback(None)

    def round_trip(self) -> Deferred[None]:
        """A ping answered: every message the server sent before the pong has arrived."""
        d: Deferred[None] = Deferred()
        self._pongs.append(d)
        self.sendPing()
        return timeout(d)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"websocket refused: {reason}"))
        self.closed.callback(None)

    def tcp(self) -> Any:
        """The TCP transport (a producer: it can stop reading)."""
        return self.transport

    def first(self, kind: str) -> Deferred[None]:
        """Fires when the next message of type ``kind`` arrives."""
        d: Deferred[None] = Deferred()
        self._firsts[kind] = d
        return d

    def create(self, **body: Any) -> Deferred[list[JSON]]:
        """Send one ``response.create``; fires with every message once its terminal event arrived."""
        self.sendMessage(json.dumps({"type": "response.create", "model": MODEL, **body}).encode())
        d: Deferred[list[JSON]] = Deferred()
        self._waiting.append((self._seen_terminal + 1 + len(self._waiting), d))
        return timeout(d, 20)


class ClientFactory(WebSocketClientFactory):
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(url, headers=headers)
        self.protocol = Client
        self.opened: Deferred[Client] = Deferred()


async def connect(loop: Loopback, headers: dict[str, str] | None = None, rcvbuf: int | None = None) -> Client:
    factory = ClientFactory(f"ws://127.0.0.1:{loop.shim.port_number}/v1/responses", headers or {})
    connector = connectWS(factory)
    if rcvbuf is not None:  # a small receive window, so a reader that stops fills the sender's buffers quickly
        connector.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return await timeout(factory.opened)


async def loopback(tmp_path: Path, fake: FakeLlama, environ: dict[str, str] | None = None) -> Loopback:
    port, url = listen(fake.resource())
    cfg = config(url, environ=environ)
    cfg = dataclasses.replace(cfg, responses=dataclasses.replace(cfg.responses, store_path=str(tmp_path / "r.db")))
    return Loopback(fake, await start_shim(cfg), port)


async def chat_request(fake: FakeLlama) -> Seen:
    """The next chat request the fake receives (not a metadata read llamashim makes on the way)."""
    while True:
        seen = await fake.next_request()
        if seen.path.endswith("/chat/completions"):
            return seen


def of_turn(messages: list[JSON], n: int) -> list[JSON]:
    """The messages of the ``n``-th turn (from 1): those after the (n-1)-th terminal event up to the n-th."""
    turns: list[list[JSON]] = [[]]
    for message in messages:
        turns[-1].append(message)
        if message["type"] in TERMINAL:
            turns.append([])
    return turns[n - 1]


@pytest_twisted.ensureDeferred
async def test_several_turns_on_one_socket_each_answered_with_the_sse_events(tmp_path: Path) -> None:
    """Two response.create messages on one socket: each turn is the SSE stream's event objects, one message each,
    sequence numbers from 0, ending in response.completed; the upstream was asked twice."""
    loop = await loopback(tmp_path, FakeLlama(reactor))
    try:
        client = await connect(loop)
        await client.create(input="first", store=False)
        messages = await client.create(input="second", store=False)
        for n in (1, 2):
            turn = of_turn(messages, n)
            assert [m["type"] for m in turn[:2]] == ["response.created", "response.in_progress"]
            assert turn[-1]["type"] == "response.completed"
            assert [m["sequence_number"] for m in turn] == list(range(len(turn)))
            text = "".join(m["delta"] for m in turn if m["type"] == "response.output_text.delta")
            assert text == "Hello, world!"
        assert len(loop.fake.chat_requests()) == 2
        client.sendClose()
        await timeout(client.closed)
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_store_false_continues_on_its_socket_and_is_not_found_after_a_reconnect(tmp_path: Path) -> None:
    """previous_response_id of a store:false response works on its own socket (the upstream sees the whole
    conversation) and is previous_response_not_found (the spec's error envelope, 404) on a new socket."""
    loop = await loopback(tmp_path, FakeLlama(reactor))
    try:
        client = await connect(loop)
        first = (await client.create(input="Remember: cobalt.", store=False))[-1]["response"]
        second = of_turn(await client.create(input="The word?", store=False, previous_response_id=first["id"]), 2)
        assert second[-1]["type"] == "response.completed"
        assert [m["role"] for m in loop.fake.last.body["messages"]] == ["user", "assistant", "user"]
        assert loop.fake.last.body["messages"][1]["content"] == "Hello, world!"
        client.sendClose()
        await timeout(client.closed)

        again = await connect(loop)
        error = (await again.create(input="The word?", store=False, previous_response_id=first["id"]))[-1]
        assert error["type"] == "error" and error["status"] == 404
        assert error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["param"] == "previous_response_id"
        recovered = of_turn(await again.create(input="Start again.", store=False), 2)
        assert recovered[-1]["type"] == "response.completed"
        assert len(loop.fake.chat_requests()) == 3
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_a_turns_end_waits_for_its_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored turn's ``response.completed`` is sent only once its row is written (so another instance sharing
    the store finds it): its text has arrived, a ping is answered, and still no end; the write lands, the end
    follows."""
    asked: Deferred[None] = Deferred()
    write: Deferred[None] = Deferred()

    def put(self: ResponseStore, owner: str, response: JSON, items: list[Any], turns: list[JSON]) -> Deferred[None]:
        asked.callback(None)
        return write

    monkeypatch.setattr(ResponseStore, "put", put)
    loop = await loopback(tmp_path, FakeLlama(reactor))
    try:
        client = await connect(loop)
        done = client.create(input="Hi")
        await timeout(asked)
        await client.round_trip()
        kinds = [m["type"] for m in client.messages]
        assert "response.output_text.done" in kinds and "response.completed" not in kinds and not done.called
        write.callback(None)
        assert (await done)[-1]["type"] == "response.completed"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_continuation_forgets_what_it_continued(tmp_path: Path) -> None:
    """A continuation whose tool output answers no call fails (400 envelope, nothing asked upstream), and the
    response it continued is forgotten on that socket: continuing it again is previous_response_not_found."""
    loop = await loopback(tmp_path, FakeLlama(reactor))
    try:
        client = await connect(loop)
        first = (await client.create(input="Hi", store=False))[-1]["response"]
        orphan = [{"type": "function_call_output", "call_id": "call_missing", "output": "x"}]
        failed = (await client.create(input=orphan, store=False, previous_response_id=first["id"]))[-1]
        assert failed["status"] == 400 and "call_missing" in failed["error"]["message"]
        retry = (await client.create(input="Again", store=False, previous_response_id=first["id"]))[-1]
        assert retry["error"]["code"] == "previous_response_not_found"
        assert len(loop.fake.chat_requests()) == 1
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_the_upgrade_passes_the_gate(tmp_path: Path) -> None:
    """With API keys set, an upgrade without a key is refused with a JSON 401 before any WebSocket; with one it
    opens. A plain GET stays a JSON 405, a web page's Origin not in cors.origins a 403, a handshake autobahn
    would refuse with a bare status line a JSON 400."""
    loop = await loopback(tmp_path, FakeLlama(reactor), environ={"LLAMASHIM_API_KEYS": "sk-right"})
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    try:
        status, _, body = await fetch(f"{loop.shim.url}/v1/responses", method="GET", headers=upgrade)
        assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
        key = {"Authorization": "Bearer sk-right"}
        status, _, body = await fetch(f"{loop.shim.url}/v1/responses", method="GET", headers=key)
        assert status == 405 and json.loads(body)["error"]["message"].startswith("method GET not allowed")
        status, _, body = await fetch(f"{loop.shim.url}/responses", method="GET",
                                      headers={**upgrade, **key, "Origin": "https://evil.example"})
        assert status == 403 and "origin" in json.loads(body)["error"]["message"]
        status, _, body = await fetch(f"{loop.shim.url}/responses", method="GET",
                                      headers={**upgrade, **key, "Sec-WebSocket-Version": "8"})
        assert status == 400 and "version" in json.loads(body)["error"]["message"]
        client = await connect(loop, headers=key)
        assert (await client.create(input="hi"))[-1]["type"] == "response.completed"
    finally:
        await loop.close()


@pytest.mark.parametrize("moment", ["streaming", "before the upstream answered"])
@pytest_twisted.ensureDeferred
async def test_a_closed_socket_closes_the_upstream_request(tmp_path: Path, moment: str) -> None:
    """The client drops its socket mid-answer, or while the upstream has not answered yet: llamashim closes the
    upstream request at once (the fake sees its connection lost long before the answer would have ended). While
    streaming, the TCP transport also stops its registered producer; before the answer only the turn's
    cancellation can."""
    fake = FakeLlama(reactor)
    fake.content = ["tok "] * 400
    fake.chunk_interval = 0.05  # a 20 s answer
    if moment != "streaming":
        fake.fault, fake.slow_headers = "slow_headers", 30.0
    loop = await loopback(tmp_path, fake)
    try:
        client = await connect(loop)
        arrived = Deferred.fromCoroutine(chat_request(fake))
        client.sendMessage(json.dumps({"type": "response.create", "model": MODEL, "input": "go"}).encode())
        seen = await timeout(arrived)
        started = reactor.seconds()
        if moment == "streaming":
            await timeout(client.first("response.output_text.delta"))
        client.tcp().abortConnection()
        await timeout(seen.lost, 5)
        assert reactor.seconds() - started < 5 and not seen.done.called
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_a_reader_that_stops_pauses_the_upstream_and_then_gets_everything(tmp_path: Path) -> None:
    """A client that stops reading a paced 20 MB answer pauses the fake's stream (backpressure through the
    socket's producer: the fake is paced, so nothing else fills its buffers), and once it reads again the turn
    completes with every byte."""
    fake = FakeLlama(reactor)
    fake.content = ["x" * 8192] * 2500
    fake.chunk_interval = 0.001  # paced: the fake's own buffer never fills while llamashim reads
    loop = await loopback(tmp_path, fake)
    try:
        client = await connect(loop, rcvbuf=32 * 1024)
        client.tcp().pauseProducing()  # stop reading the socket
        paused = fake.stream_paused()
        done = client.create(input="a lot")
        await timeout(paused, 20)
        assert fake.streams[-1].sent < 2500
        client.tcp().resumeProducing()
        messages = await timeout(done, 60)
        assert messages[-1]["type"] == "response.completed"
        assert sum(len(m["delta"]) for m in messages if m["type"] == "response.output_text.delta") == 8192 * 2500
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_the_openai_sdk_websocket_connection(tmp_path: Path) -> None:
    """The OpenAI SDK's own Responses WebSocket (``client.responses.connect()``): a turn streamed to its
    response.completed, then a store:false continuation on the same connection."""
    loop = await loopback(tmp_path, FakeLlama(reactor))

    def converse() -> tuple[str, str, int]:
        client = openai.OpenAI(base_url=f"{loop.shim.url}/v1", api_key="sk-x", max_retries=0)
        with client.responses.connect() as conn:
            conn.response.create(model=MODEL, input="Name a colour.", store=False)
            first = next(e for e in conn if e.type == "response.completed").response
            conn.response.create(model=MODEL, input="Another?", store=False, previous_response_id=first.id)
            second = next(e for e in conn if e.type == "response.completed").response
        return first.output_text, second.output_text, len(loop.fake.last.body["messages"])

    try:
        first, second, messages = await in_thread(converse)
        assert first == second == "Hello, world!"
        assert messages == 3
    finally:
        await loop.close()
