"""A shared GPU box: API keys, Host allow-list, CORS, limits, metrics and request ids — in memory, and on loopback
what only a raw socket shows (a client that never finishes its headers, a request line Agent would not send)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted

from llamashim import jsonutil
from llamashim.testing.fake_llama import FakeLlama
from tests.integration.support import (
    Loopback,
    ShimFixture,
    http_request,
    raw_connect,
    reactor,
    start_loopback,
    timeout,
)
from tests.support import logged

CHAT = jsonutil.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest_twisted.async_yield_fixture
async def loopback() -> AsyncIterator[Loopback]:
    env = await start_loopback(FakeLlama(reactor), header_timeout=0.3)
    yield env
    await env.close()


def test_api_keys(shims: ShimFixture, tmp_path: Path) -> None:
    """Chat needs a configured key (401 per dialect); metadata paths do not, /metrics does; upstream gets its key."""
    keys = tmp_path / "keys"
    keys.write_text("sk-from-file-9999\n")
    env = shims.start(settings={"auth": {"api_keys": ["sk-alpha-1234"], "api_keys_file": str(keys)},
                                "upstream": {"api_key": "upstream-secret"}})
    status, headers, body = env.post("/v1/chat/completions", CHAT)
    assert status == 401 and jsonutil.loads(body)["error"]["type"] == "authentication_error"
    assert headers.getRawHeaders(b"www-authenticate") == [b"Bearer"]
    status, _, body = env.post("/api/chat", CHAT)
    assert status == 401 and isinstance(jsonutil.loads(body)["error"], str)  # Ollama shape
    status, _, _ = env.post("/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-alpha-1234"})
    assert status == 200
    # the client's key stays here; llama-server gets upstream.api_key
    assert env.fake.last.headers["authorization"] == ["Bearer upstream-secret"]
    status, _, _ = env.get("/v1/models", {"x-api-key": "sk-from-file-9999"})
    assert status == 200
    for path in ("/health", "/api/version", "/api/tags", "/"):
        status, _, _ = env.get(path)
        assert status == 200, path
    status, _, _ = env.post("/api/show", b'{"model":"x"}')
    assert status == 200
    status, _, _ = env.get("/metrics")
    assert status == 401


def test_keys_never_reach_the_log(shims: ShimFixture) -> None:
    """Neither a valid nor a wrong client key appears in any log event, while access events are logged."""
    with logged() as events:
        env = shims.start(settings={"auth": {"api_keys": ["sk-secret-value-abcd"]}})
        env.post("/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-secret-value-abcd"})
        env.post("/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-wrong-guess"})
    text = repr(events)
    assert "sk-secret-value-abcd" not in text and "sk-wrong-guess" not in text
    assert any(e.get("log_namespace") == "llamashim.access" for e in events), {e.get("log_namespace") for e in events}


def test_host_allow_list_against_dns_rebinding(shims: ShimFixture) -> None:
    """A request with a foreign Host is a 403 naming the host; a localhost Host is served."""
    env = shims.start()
    status, _, body = env.get("/v1/models", {"Host": "evil.example:11434"})
    assert status == 403 and "evil.example" in jsonutil.loads(body)["error"]["message"]
    status, _, _ = env.get("/v1/models", {"Host": "localhost:11434"})
    assert status == 200


def test_cors_preflight_and_simple_requests(shims: ShimFixture) -> None:
    """A listed origin's preflight is a 204 with CORS headers; simple requests get them only for listed origins."""
    env = shims.start(settings={"cors": {"origins": ["https://app.example"]}})
    status, headers, _ = env.call(
        "OPTIONS", "/v1/chat/completions", None,
        {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
         "Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert status == 204
    assert headers.getRawHeaders(b"access-control-allow-origin") == [b"https://app.example"]
    assert headers.getRawHeaders(b"access-control-allow-headers") == [b"authorization, content-type"]
    status, headers, _ = env.get("/v1/models", {"Origin": "https://app.example"})
    assert status == 200 and headers.getRawHeaders(b"access-control-allow-origin") == [b"https://app.example"]
    status, headers, _ = env.get("/v1/models", {"Origin": "https://evil.example"})
    assert not headers.hasHeader(b"access-control-allow-origin")


def test_cors_is_off_by_default(shims: ShimFixture) -> None:
    """With no origins configured, no Access-Control-Allow-Origin header is sent."""
    env = shims.start()
    _, headers, _ = env.get("/v1/models", {"Origin": "https://app.example"})
    assert not headers.hasHeader(b"access-control-allow-origin")


def test_request_ids_are_kept_generated_and_forwarded(shims: ShimFixture) -> None:
    """A client's X-Request-Id is echoed and forwarded; without one a 32-char id is generated and forwarded."""
    env = shims.start()
    _, headers, _ = env.post("/v1/chat/completions", CHAT, {"X-Request-Id": "abc-123"})
    assert headers.getRawHeaders(b"x-request-id") == [b"abc-123"]
    assert env.fake.last.headers["x-request-id"] == ["abc-123"]
    _, headers, _ = env.post("/v1/chat/completions", CHAT)
    (generated,) = headers.getRawHeaders(b"x-request-id") or [b""]
    assert len(generated) == 32 and env.fake.last.headers["x-request-id"] == [generated.decode()]


def test_concurrency_limit_queues_then_refuses(shims: ShimFixture) -> None:
    """With one slot and one queue place, a third request is a 429 with Retry-After; the first two succeed."""
    env = shims.start(settings={"limits": {"max_concurrent_upstream": 1, "max_queue": 1}})
    env.fake.fault = "slow_headers"
    env.fake.slow_headers = 0.5
    first = env.shim.request("POST", "/v1/chat/completions", CHAT)
    env.shim.run_until(lambda: bool(env.fake.chat_requests()))  # the first holds the only slot (answered in 0.5 s)
    second = env.shim.request("POST", "/v1/chat/completions", CHAT)
    env.shim.flush()
    assert env.shim.slots.queued == 1
    status, headers, body = env.post("/v1/chat/completions", CHAT)
    assert status == 429 and headers.getRawHeaders(b"retry-after") == [b"1"]
    assert "limit" in jsonutil.loads(body)["error"]["message"]
    env.shim.run_until(lambda: first.ended and second.ended)
    assert first.code == 200
    assert second.code == 200
    assert len(env.fake.chat_requests()) == 2


@pytest_twisted.ensureDeferred
async def test_slow_header_dribble_is_dropped(loopback: Loopback) -> None:
    """A client that never finishes its headers is disconnected within header_timeout, with no response."""
    client = await raw_connect(loopback.shim.url, b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n")
    started = reactor.seconds()
    await timeout(client.closed, 5)
    assert reactor.seconds() - started < 2
    assert client.received == b""


def test_metrics(shims: ShimFixture) -> None:
    """/metrics serves Prometheus text counting requests by dialect, route and status, tokens, streams and TTFB."""
    env = shims.start()
    env.fake.content = ["a", "b"]
    env.post("/v1/chat/completions", {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                                      "messages": []})
    env.post("/v1/chat/completions", CHAT)
    env.get("/api/version")
    status, headers, body = env.get("/metrics")
    assert status == 200 and (headers.getRawHeaders(b"content-type") or [b""])[0].startswith(b"text/plain")
    text = body.decode()
    assert 'llamashim_requests_total{dialect="openai",route="chat",status="200"} 2.0' in text
    assert 'llamashim_requests_total{dialect="ollama",route="ollama_version",status="200"} 1.0' in text
    assert 'llamashim_tokens_total{kind="completion"}' in text and "llamashim_active_streams 0.0" in text
    assert "llamashim_time_to_first_byte_seconds_count" in text


def test_metrics_can_be_turned_off(shims: ShimFixture) -> None:
    """With metrics disabled, /metrics is a 404."""
    env = shims.start(settings={"metrics": {"enabled": False}})
    status, _, _ = env.get("/metrics")
    assert status == 404


def test_json_log_observer_writes_one_object_per_line() -> None:
    """The json observer writes one JSON object per event at or above its level; text format needs no observer."""
    import io

    from twisted.logger import Logger

    from llamashim.ops.logs import observer_for

    stream = io.StringIO()
    observer = observer_for("json", "info", stream)
    assert observer is not None
    log = Logger(namespace="llamashim.access", observer=observer)
    log.info("GET {path} {status}", path="/v1/models", status=200, request_id="abc")
    log.debug("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["path"] == "/v1/models" and event["request_id"] == "abc"
    assert event["log_namespace"] == "llamashim.access"
    assert observer_for("text", "info") is None


@pytest_twisted.ensureDeferred
async def test_raw_request_is_parsed_by_our_request_class(loopback: Loopback) -> None:
    """A request with an absurd header set still gets a JSON answer, not an HTML page."""
    client = await raw_connect(loopback.shim.url, http_request("GET", "/nope/%zz", headers={"Host": "localhost"}))
    await timeout(client.wait_for(lambda b: b"\r\n\r\n" in b))
    assert b"<html" not in client.received.lower()
