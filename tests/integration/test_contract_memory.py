"""The error contract of every dialect, in memory (llamashim.testing.memory): the real site and routes, a fake
upstream, one clock — each status a client can see, in the dialect's shape, and the terminal frame of a stream that
fails after it started."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from llamashim import jsonutil
from llamashim.testing.memory import Exchange, MemoryShim, Valve, memory_shim

MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Dialect:
    """One client API under test: its chat path and how its error bodies and terminal frames look."""

    name: str
    chat: str
    mount: str

    def body(self, stream: bool | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "m", "messages": MESSAGES}
        if stream is not None:
            body["stream"] = stream
        return body

    def error(self, exchange: Exchange) -> str:
        """The message of an error body, checking its shape (exactly the dialect's keys)."""
        value = exchange.json()
        assert set(value) == {"error"}, value
        if self.name == "openai":
            err = value["error"]
            assert isinstance(err, dict) and set(err) == {"message", "type", "code"}, err
            assert isinstance(err["message"], str) and isinstance(err["type"], str)
            return err["message"]
        assert isinstance(value["error"], str), value
        return str(value["error"])

    def terminal_error(self, exchange: Exchange) -> str:
        """The message of the stream's terminal error frame (its last record), checking there is no clean end."""
        body = bytes(exchange.body)
        assert exchange.complete, (exchange.reason, body[-300:])
        if self.name == "openai":
            assert b"data: [DONE]" not in body, body[-300:]
            events = [e for e in body.split(b"\n\n") if e.strip()]
            last = events[-1]
            assert last.startswith(b"data: {"), body[-300:]
            frame = jsonutil.loads(last[len(b"data: "):])
            assert set(frame) == {"error"}, last
            err = frame["error"]
            assert set(err) == {"message", "type", "code"}, err
            return str(err["message"])
        lines = exchange.lines()
        last_record = jsonutil.loads(lines[-1])
        assert set(last_record) == {"error"} and isinstance(last_record["error"], str), lines[-1]
        assert not any(jsonutil.loads(line).get("done") is True for line in lines), lines
        return str(last_record["error"])


OPENAI = Dialect("openai", "/v1/chat/completions", "/v1/chat/completions")
OLLAMA = Dialect("ollama", "/api/chat", "/api")
DIALECTS = [pytest.param(OPENAI, id="openai"), pytest.param(OLLAMA, id="ollama")]


@pytest.fixture
def no_double_finish() -> Iterator[None]:
    """Fails the test if any request is finished twice (twisted.web only warns)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    twice = [w for w in seen if "finish called twice" in str(w.message)]
    assert not twice, [str(w.message) for w in twice]


def post_chat(shim: MemoryShim, dialect: Dialect, stream: bool | None = None,
              headers: dict[str, str] | None = None) -> Exchange:
    return shim.request("POST", dialect.chat, dialect.body(stream), headers)


# -- before the first byte --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_missing_api_key_is_401_in_the_dialect_shape(dialect: Dialect) -> None:
    """With API keys set, a chat request without a key is 401 (WWW-Authenticate: Bearer), never sent upstream."""
    shim = memory_shim(auth={"api_keys": ("sk-test-12345678",)})
    exchange = post_chat(shim, dialect)
    assert exchange.code == 401
    assert exchange.header("www-authenticate") == "Bearer"
    assert "API key" in dialect.error(exchange)
    assert shim.fake is not None and shim.fake.chat_requests() == []
    ok = post_chat(shim, dialect, headers={"Authorization": "Bearer sk-test-12345678"})
    assert ok.code == 200, bytes(ok.body)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_foreign_host_is_403_in_the_dialect_shape(dialect: Dialect) -> None:
    """A Host outside the allow-list (DNS rebinding) is 403 in the dialect's shape."""
    shim = memory_shim()
    exchange = post_chat(shim, dialect, headers={"Host": "evil.example"})
    assert exchange.code == 403
    assert "evil.example" in dialect.error(exchange)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_body_over_the_limit_is_413_in_the_dialect_shape(dialect: Dialect) -> None:
    """A declared body length over limits.max_body_bytes is answered 413 at once and the connection closed."""
    shim = memory_shim(limits={"max_body_bytes": 1024})
    big = {**dialect.body(), "pad": "x" * 4096}
    exchange = shim.request("POST", dialect.chat, big)
    assert exchange.code == 413
    assert shim.client_agent.open_connections == 0  # closed: the rest of the body is never read
    assert "limits.max_body_bytes" in dialect.error(exchange)
    assert shim.fake is not None and shim.fake.chat_requests() == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_queue_full_is_429_with_retry_after(dialect: Dialect) -> None:
    """max_concurrent_upstream 1 and max_queue 0: while one request is at the upstream, the next is 429."""
    valve = Valve(_fake_resource())
    shim = memory_shim(upstream_resource=valve, limits={"max_concurrent_upstream": 1, "max_queue": 0})
    valve.hold(b"/v1/chat/completions")
    first = post_chat(shim, dialect, stream=False)
    assert len(valve.held) == 1 and first.response is None
    second = post_chat(shim, dialect, stream=False)
    assert second.code == 429
    assert second.header("retry-after") == "1"
    assert "concurrency limit" in dialect.error(second)
    valve.release()
    shim.flush()
    assert first.code == 200 and first.complete


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unavailable_upstream_is_503(dialect: Dialect) -> None:
    """While the upstream is not ready (a supervisor's reason), upstream routes answer 503 with that reason."""
    reason: list[str | None] = ["llama-server is loading the model"]
    shim = memory_shim(unavailable=lambda: reason[0])
    exchange = post_chat(shim, dialect)
    assert exchange.code == 503
    assert dialect.error(exchange) == "llama-server is loading the model"
    reason[0] = None
    assert post_chat(shim, dialect).code == 200


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.usefixtures("no_double_finish")
def test_unknown_sub_path_under_a_mount_is_json_404(dialect: Dialect) -> None:
    """An unknown path under a dialect's mount is a JSON 404 in its shape, never an HTML page."""
    shim = memory_shim()
    exchange = shim.request("POST", dialect.mount + "/no-such-thing", dialect.body())
    assert exchange.code == 404
    assert (exchange.header("content-type") or "").startswith("application/json")
    assert "no route for" in dialect.error(exchange)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.usefixtures("no_double_finish")
def test_wrong_method_under_a_mount_is_json_405(dialect: Dialect) -> None:
    """A known path with a method it does not take is a JSON 405 naming the allowed methods."""
    shim = memory_shim()
    exchange = shim.request("DELETE", dialect.chat)
    assert exchange.code == 405
    assert (exchange.header("content-type") or "").startswith("application/json")
    assert "allowed: POST" in dialect.error(exchange)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_upstream_error_status_is_passed_on_with_its_message(dialect: Dialect) -> None:
    """An upstream error answer keeps its status and its message, in the dialect's shape."""
    shim = memory_shim()
    assert shim.fake is not None
    shim.fake.status_override = 400
    exchange = post_chat(shim, dialect, stream=False)
    assert exchange.code == 400
    assert dialect.error(exchange) == "scripted failure"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_upstream_gone_unreachable_is_502(dialect: Dialect) -> None:
    """An upstream that stopped listening (its connect refused) is 502 naming the upstream and the cause."""
    shim = memory_shim()
    assert post_chat(shim, dialect).code == 200
    shim.plug.pull()
    exchange = post_chat(shim, dialect)
    assert exchange.code == 502
    message = dialect.error(exchange)
    assert "unreachable" in message and "connection refused" in message, message


# -- after the first byte -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_upstream_drop_mid_stream_ends_with_the_terminal_error_frame(dialect: Dialect) -> None:
    """An upstream that drops the connection mid-stream: the client's 200 stream ends with the dialect's terminal
    error frame, and never with its clean end ([DONE] / done: true)."""
    shim = memory_shim(tools={"streaming": "native"})
    assert shim.fake is not None
    shim.fake.fault = "drop_mid_stream"
    shim.fake.fault_after = 3
    exchange = post_chat(shim, dialect, stream=True)
    assert exchange.code == 200
    assert "mid-stream" in dialect.terminal_error(exchange)
    assert len(exchange.lines()) >= 3  # the frames before the drop reached the client


def test_synthesis_failure_after_heartbeats_ends_with_the_terminal_error_frame() -> None:
    """tools.streaming synthesize: keep-alive chunks (the role chunk, then empty deltas) start the stream while the
    reply is awaited; an upstream 500 then ends it with the terminal error frame carrying the upstream's message,
    and no [DONE]."""
    valve = Valve(_fake_resource())
    shim = memory_shim(upstream_resource=valve, tools={"streaming": "synthesize", "heartbeat": 1.0})
    valve.hold(b"/v1/chat/completions")
    exchange = post_chat(shim, OPENAI, stream=True)
    shim.advance(3.5)
    assert exchange.code == 200
    waiting = [jsonutil.loads(e[len(b"data: "):]) for e in bytes(exchange.body).split(b"\n\n") if e]
    assert [c["choices"][0]["delta"] for c in waiting] == [{"role": "assistant", "content": None}, {}, {}]
    assert len(valve.held) == 1 and valve.held[0].content is not None
    assert jsonutil.loads(valve.held[0].content.getvalue())["stream"] is False
    valve.fail(500, "the model fell over")
    shim.flush()
    assert OPENAI.terminal_error(exchange) == "the model fell over"


def test_synthesis_failure_after_ollama_keepalives_ends_with_the_error_line() -> None:
    """Ollama: empty ``done: false`` lines keep the client waiting for a synthesized answer; an upstream 500 then
    ends the stream with the terminal ``{"error": ...}`` line."""
    valve = Valve(_fake_resource())
    shim = memory_shim(upstream_resource=valve, tools={"streaming": "synthesize", "heartbeat": 1.0})
    valve.hold(b"/v1/chat/completions")
    exchange = post_chat(shim, OLLAMA, stream=True)
    shim.advance(3.5)
    waiting = [jsonutil.loads(line) for line in exchange.lines()]
    assert len(waiting) == 3 and all(w["message"] == {"role": "assistant", "content": ""} for w in waiting)
    assert not any(w["done"] for w in waiting)
    valve.fail(500, "the model fell over")
    shim.flush()
    assert OLLAMA.terminal_error(exchange) == "the model fell over"


def test_synthesis_failure_before_any_keepalive_is_an_error_answer() -> None:
    """A synthesized answer that fails before the first keep-alive is a plain error answer, status kept."""
    valve = Valve(_fake_resource())
    shim = memory_shim(upstream_resource=valve, tools={"streaming": "synthesize", "heartbeat": 5.0})
    valve.hold(b"/v1/chat/completions")
    exchange = post_chat(shim, OLLAMA, stream=True)
    shim.advance(1.0)
    assert exchange.response is None  # nothing was sent yet
    valve.fail(500, "the model fell over")
    shim.flush()
    assert exchange.code == 500
    assert OLLAMA.error(exchange) == "the model fell over"


def _fake_resource() -> Any:
    """A FakeLlama's resource on a throwaway clock (its own pacing is not used by these tests)."""
    from twisted.internet.task import Clock

    from llamashim.testing.fake_llama import FakeLlama

    return FakeLlama(Clock()).resource()
