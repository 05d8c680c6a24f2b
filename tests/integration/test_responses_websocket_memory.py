"""The Responses WebSocket in memory (an autobahn client over ``iosim``, :meth:`MemoryShim.websocket`): every turn is
accounted for as an HTTP request is — the access line, the status page's recent requests, ``/metrics`` (requests,
tokens, durations, time to first byte and token, aborts) — and ``response.compact`` compacts the conversation on a
live socket, its window usable as the next ``response.create``'s input."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from llamashim.chat.flow import COMPLETE_TIMEOUT
from llamashim.dialects.responses.compact import SUMMARY_REQUEST
from llamashim.dialects.responses.routes import ResponsesRoutes
from llamashim.dialects.responses.translate import SUMMARY_HEADING
from llamashim.testing.fake_llama import MODEL, FakeLlama
from llamashim.testing.memory import MemoryShim, MemorySocket
from tests.integration.support import HeldWrites, ShimFixture
from tests.support import logged

JSON = dict[str, Any]
TERMINAL = ("response.completed", "response.failed", "response.incomplete", "response.compacted", "error")
TURN = "responses_websocket"
ANSWER = "Hello, world!"


def terminals(sock: MemorySocket) -> list[JSON]:
    return [m for m in sock.messages if m["type"] in TERMINAL]


def turn(shim: MemoryShim, sock: MemorySocket, kind: str = "response.create", **body: Any) -> JSON:
    """Send one message and run the clock until its terminal message arrived; that message."""
    before = len(terminals(sock))
    sock.send({"type": kind, "model": MODEL, **body})
    shim.run_until(lambda: len(terminals(sock)) > before, within=60)
    return terminals(sock)[-1]


def access_lines(events: list[Any]) -> list[str]:
    return [e["log_format"].format(**e) for e in events if e.get("log_namespace") == "llamashim.access"]


def metric(shim: MemoryShim, name: str, **labels: str) -> float:
    return shim.metric(name, **labels)


def requests(shim: MemoryShim, route: str, status: str) -> float:
    return shim.metric("llamashim_requests_total", route=route, status=status, dialect="responses")


def test_each_turn_is_counted_like_an_http_request(shims: ShimFixture) -> None:
    """Two turns on one socket: two access lines (WS /v1/responses 200, tokens, id <upgrade id>.<n>), two entries
    among the status page's recent requests, and in /metrics two requests, their tokens, durations, time to first
    byte and to first token; the active-streams gauge is back at 0 and the upgrade is its own 101."""
    env = shims.start()
    shim, fake = env.shim, env.fake
    with logged() as events:
        sock = shim.websocket(headers={"X-Request-Id": "sock1"})
        assert sock.opened
        assert turn(shim, sock, input="first", store=False)["type"] == "response.completed"
        assert turn(shim, sock, input="second", store=False)["type"] == "response.completed"
    p, c = fake.prompt_tokens, len(fake.content)
    lines = [line for line in access_lines(events) if line.startswith("WS ")]
    assert len(lines) == 2, access_lines(events)
    for n, line in enumerate(lines, 1):
        assert re.match(rf"WS /v1/responses 200 \d+B [\d.]+ms ttft=[\d.]+ms dialect=responses upstream=\S+ "
                        rf"upstream_ttfb=[\d.]+ms tokens={p}/{c} id=sock1\.{n} ", line), line
    assert requests(shim, TURN, "200") == 2
    assert requests(shim, "responses_websocket_upgrade", "101") == 1
    assert metric(shim, "llamashim_tokens_total", kind="prompt") == 2 * p
    assert metric(shim, "llamashim_tokens_total", kind="completion") == 2 * c
    for histogram in ("request_duration", "time_to_first_byte", "time_to_first_token"):
        assert metric(shim, f"llamashim_{histogram}_seconds_count", route=TURN) == 2, histogram
    assert metric(shim, "llamashim_active_streams") == 0
    assert metric(shim, "llamashim_response_bytes_total") > 0
    recent = json.loads(env.get("/status.json")[2])["recent"]
    turns = [r for r in recent if r["route"] == TURN]
    assert [(r["method"], r["status"], r["prompt_tokens"], r["completion_tokens"]) for r in turns] == [
        ("WS", "200", p, c)] * 2


def test_a_failed_turn_counts_with_its_status(shims: ShimFixture) -> None:
    """A turn refused before its first event (previous_response_not_found) counts as a 404; one whose upstream
    connection drops mid-answer (response.failed) as a 502 and an upstream error; the socket goes on."""
    env = shims.start()
    shim, fake = env.shim, env.fake
    sock = shim.websocket()
    with logged() as events:
        assert turn(shim, sock, input="x", previous_response_id="resp_gone")["status"] == 404
        fake.fault, fake.fault_after = "drop_mid_stream", 3
        assert turn(shim, sock, input="y")["type"] == "response.failed"
        fake.fault = None
        assert turn(shim, sock, input="z")["type"] == "response.completed"
    assert [line.split()[2] for line in access_lines(events) if line.startswith("WS ")] == ["404", "502", "200"]
    assert [requests(shim, TURN, status) for status in ("404", "502", "200")] == [1, 1, 1]
    assert metric(shim, "llamashim_upstream_errors_total", kind="upstream_error") == 1
    assert metric(shim, "llamashim_active_streams") == 0


def test_a_socket_closed_mid_turn_counts_as_an_abort(shims: ShimFixture) -> None:
    """The client drops its socket while the answer streams: the turn is counted once, as aborted (the client
    aborts counter of its route), its stream leaves the active-streams gauge, and the upstream request closes."""
    fake = FakeLlama(shims.clock)
    fake.content = ["tok "] * 100
    fake.chunk_interval = 0.5
    env = shims.start(fake=fake)
    shim = env.shim
    sock = shim.websocket()
    sock.send({"type": "response.create", "model": MODEL, "input": "go"})
    shim.run_until(lambda: "response.output_text.delta" in sock.types(), within=30)
    assert metric(shim, "llamashim_active_streams") == 1
    with logged() as events:
        sock.drop()
        shim.flush()
    assert [line.split()[2] for line in access_lines(events) if line.startswith("WS ")] == ["aborted"]
    assert metric(shim, "llamashim_client_aborts_total", route=TURN) == 1
    assert requests(shim, TURN, "aborted") == 1
    assert metric(shim, "llamashim_active_streams") == 0
    assert shim.upstream_agent.open_connections == 0


def test_compaction_on_a_live_socket_feeds_the_next_turn(shims: ShimFixture) -> None:
    """Between two turns, response.compact of the socket's own store:false response is answered with one
    response.compacted message holding the compacted window (the user messages, then a compaction item); that
    window as the next response.create's input reaches the model as the summary; each is counted on its route."""
    env = shims.start()
    shim, fake = env.shim, env.fake
    sock = shim.websocket()
    first = turn(shim, sock, input="Remember: cobalt.", store=False)["response"]
    compacted = turn(shim, sock, "response.compact", input="Also: slate.", previous_response_id=first["id"])
    assert compacted["type"] == "response.compacted" and compacted["sequence_number"] == 0
    window = compacted["response"]
    assert window["object"] == "response.compaction" and window["usage"]["total_tokens"] > 0
    assert [i["type"] for i in window["output"]] == ["message", "message", "compaction"]
    asked = fake.last.body["messages"]
    assert [m["content"] for m in asked] == ["Remember: cobalt.", ANSWER, "Also: slate.", SUMMARY_REQUEST]
    assert "stream" not in fake.last.body or fake.last.body["stream"] is False

    nxt = turn(shim, sock, input=[*window["output"], {"role": "user", "content": "Go on."}], store=False)
    assert nxt["type"] == "response.completed"
    contents = [m["content"] for m in fake.last.body["messages"]]
    assert contents == ["Remember: cobalt.", "Also: slate.", f"{SUMMARY_HEADING}\n\n{ANSWER}", "Go on."]
    assert requests(shim, "responses_websocket_compact", "200") == 1
    assert requests(shim, TURN, "200") == 2


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": "", "input": "x"}, 400, "invalid_request_error"),
    ({"model": MODEL, "input": "x", "previous_response_id": "resp_gone"}, 404, "previous_response_not_found"),
])
def test_a_refused_compaction_is_the_error_envelope_and_the_socket_goes_on(
        shims: ShimFixture, body: JSON, status: int, code: str) -> None:
    """A response.compact without a model, or continuing an unknown response, is the socket's error envelope
    (status, string code), nothing asked upstream; a response.create after it completes."""
    env = shims.start()
    shim = env.shim
    sock = shim.websocket()
    sock.send({"type": "response.compact", **body})
    shim.run_until(lambda: bool(terminals(sock)), within=30)
    error = terminals(sock)[-1]
    assert error["type"] == "error" and error["status"] == status and error["error"]["code"] == code
    assert env.fake.chat_requests() == []
    assert turn(shim, sock, input="hi")["type"] == "response.completed"
    assert requests(shim, "responses_websocket_compact", str(status)) == 1


def test_a_shutdown_ends_a_running_turn_and_counts_it(shims: ShimFixture) -> None:
    """A shutdown waits shutdown.drain_timeout for a streaming turn, then ends it with response.failed and closes
    the socket (1001); the turn is counted once, as a 503, and leaves the active-streams gauge."""
    fake = FakeLlama(shims.clock)
    fake.content = ["tok "] * 100
    fake.chunk_interval = 0.5
    env = shims.start(fake=fake, settings={"shutdown": {"drain_timeout": 2.0}})
    shim = env.shim
    sock = shim.websocket()
    sock.send({"type": "response.create", "model": MODEL, "input": "go"})
    shim.run_until(lambda: "response.output_text.delta" in sock.types(), within=30)
    env.shutdown()
    shim.flush()
    assert sock.types()[-1] == "response.failed" and sock.closed and sock.close_code == 1001
    assert requests(shim, TURN, "503") == 1
    assert metric(shim, "llamashim_active_streams") == 0


def test_a_shutdown_while_a_turns_write_is_in_flight_sends_its_end(shims: ShimFixture) -> None:
    """A shutdown whose drain deadline passes while a finished turn's write is in flight: the turn's held
    ``response.completed`` goes out (its answer is whole) and it is counted as a 200, not as a failed 503."""
    env = shims.start(settings={"shutdown": {"drain_timeout": 2.0}})
    shim = env.shim
    routes = next(r for r in shim.parts.routes if isinstance(r, ResponsesRoutes))
    assert routes.store is not None
    held = HeldWrites(routes.store)
    sock = shim.websocket()
    sock.send({"type": "response.create", "model": MODEL, "input": "go"})
    shim.run_until(lambda: bool(held.writes), within=30)
    assert "response.output_text.done" in sock.types() and "response.completed" not in sock.types()
    env.shutdown()
    shim.flush()
    assert sock.types()[-1] == "response.completed" and "response.failed" not in sock.types()
    assert requests(shim, TURN, "200") == 1 and requests(shim, TURN, "503") == 0


def test_a_warm_up_whose_write_hangs_still_completes(shims: ShimFixture) -> None:
    """``generate: false`` (Codex's warm-up) with a store write that never lands: its ``response.completed`` goes out
    ``COMPLETE_TIMEOUT`` seconds later, not never, and the socket takes the next turn."""
    env = shims.start()
    shim = env.shim
    routes = next(r for r in shim.parts.routes if isinstance(r, ResponsesRoutes))
    assert routes.store is not None
    held = HeldWrites(routes.store)
    sock = shim.websocket()
    sock.send({"type": "response.create", "model": MODEL, "input": "warm", "generate": False})
    shim.run_until(lambda: bool(held.writes), within=30)
    shim.advance(COMPLETE_TIMEOUT - 0.5)
    assert "response.completed" not in sock.types()
    shim.advance(1.0)
    assert sock.types()[-1] == "response.completed"
    assert turn(shim, sock, input="hi", store=False)["type"] == "response.completed"
