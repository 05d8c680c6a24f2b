"""A shared GPU box: API keys, Host allow-list, CORS, limits, metrics and request ids, over loopback."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from llamashim import jsonutil
from llamashim.config import Config
from llamashim.testing.fake_llama import FakeLlama
from tests.integration.support import (
    Shim,
    config,
    fetch,
    http_request,
    listen,
    raw_connect,
    reactor,
    start_shim,
    timeout,
)

CHAT = jsonutil.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def with_sections(cfg: Config, **sections: dict[str, Any]) -> Config:
    changes = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **changes)


async def setup(**sections: dict[str, Any]) -> tuple[FakeLlama, Shim, Any]:
    fake = FakeLlama(reactor)
    port, url = listen(fake.resource())
    shim = await start_shim(with_sections(config(url), **sections))
    return fake, shim, port


async def teardown(shim: Shim, port: Any) -> None:
    await shim.stop()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_api_keys(tmp_path: Path) -> None:
    """Chat needs a configured key (401 per dialect); metadata paths do not, /metrics does; upstream gets its key."""
    keys = tmp_path / "keys"
    keys.write_text("sk-from-file-9999\n")
    fake, shim, port = await setup(auth={"api_keys": ("sk-alpha-1234",), "api_keys_file": str(keys)},
                                   upstream={"api_key": "upstream-secret"})
    try:
        status, headers, body = await fetch(shim.url + "/v1/chat/completions", "POST", CHAT)
        assert status == 401 and jsonutil.loads(body)["error"]["type"] == "authentication_error"
        assert headers.getRawHeaders(b"www-authenticate") == [b"Bearer"]
        status, _, body = await fetch(shim.url + "/api/chat", "POST", CHAT)
        assert status == 401 and isinstance(jsonutil.loads(body)["error"], str)  # Ollama shape
        status, _, _ = await fetch(shim.url + "/v1/chat/completions", "POST", CHAT,
                                   {"Authorization": "Bearer sk-alpha-1234"})
        assert status == 200
        # the client's key stays here; llama-server gets upstream.api_key
        assert fake.last.headers["authorization"] == ["Bearer upstream-secret"]
        status, _, _ = await fetch(shim.url + "/v1/models", "GET", None, {"x-api-key": "sk-from-file-9999"})
        assert status == 200
        for path in ("/health", "/api/version", "/api/tags", "/"):
            status, _, _ = await fetch(shim.url + path)
            assert status == 200, path
        status, _, _ = await fetch(shim.url + "/api/show", "POST", b'{"model":"x"}')
        assert status == 200
        status, _, _ = await fetch(shim.url + "/metrics")
        assert status == 401
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_keys_never_reach_the_log() -> None:
    """Neither a valid nor a wrong client key appears in any log event, while access events are logged."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    fake, shim, port = await setup(auth={"api_keys": ("sk-secret-value-abcd",)})
    try:
        await fetch(shim.url + "/v1/chat/completions", "POST", CHAT, {"Authorization": "Bearer sk-secret-value-abcd"})
        await fetch(shim.url + "/v1/chat/completions", "POST", CHAT, {"Authorization": "Bearer sk-wrong-guess"})
    finally:
        globalLogPublisher.removeObserver(events.append)
        await teardown(shim, port)
    text = repr(events)
    assert "sk-secret-value-abcd" not in text and "sk-wrong-guess" not in text
    assert any(e.get("log_namespace") == "llamashim.access" for e in events), {e.get("log_namespace") for e in events}


@pytest_twisted.ensureDeferred
async def test_host_allow_list_against_dns_rebinding() -> None:
    """A request with a foreign Host is a 403 naming the host; a localhost Host is served."""
    fake, shim, port = await setup()
    try:
        status, _, body = await fetch(shim.url + "/v1/models", "GET", None, {"Host": "evil.example:11434"})
        assert status == 403 and "evil.example" in jsonutil.loads(body)["error"]["message"]
        status, _, _ = await fetch(shim.url + "/v1/models", "GET", None, {"Host": "localhost:11434"})
        assert status == 200
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_cors_preflight_and_simple_requests() -> None:
    """A listed origin's preflight is a 204 with CORS headers; simple requests get them only for listed origins."""
    fake, shim, port = await setup(cors={"origins": ("https://app.example",)})
    try:
        status, headers, _ = await fetch(
            shim.url + "/v1/chat/completions", "OPTIONS", None,
            {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"},
        )
        assert status == 204
        assert headers.getRawHeaders(b"access-control-allow-origin") == [b"https://app.example"]
        assert headers.getRawHeaders(b"access-control-allow-headers") == [b"authorization, content-type"]
        status, headers, _ = await fetch(shim.url + "/v1/models", "GET", None, {"Origin": "https://app.example"})
        assert status == 200 and headers.getRawHeaders(b"access-control-allow-origin") == [b"https://app.example"]
        status, headers, _ = await fetch(shim.url + "/v1/models", "GET", None, {"Origin": "https://evil.example"})
        assert not headers.hasHeader(b"access-control-allow-origin")
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_cors_is_off_by_default() -> None:
    """With no origins configured, no Access-Control-Allow-Origin header is sent."""
    fake, shim, port = await setup()
    try:
        _, headers, _ = await fetch(shim.url + "/v1/models", "GET", None, {"Origin": "https://app.example"})
        assert not headers.hasHeader(b"access-control-allow-origin")
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_request_ids_are_kept_generated_and_forwarded() -> None:
    """A client's X-Request-Id is echoed and forwarded; without one a 32-char id is generated and forwarded."""
    fake, shim, port = await setup()
    try:
        _, headers, _ = await fetch(shim.url + "/v1/chat/completions", "POST", CHAT, {"X-Request-Id": "abc-123"})
        assert headers.getRawHeaders(b"x-request-id") == [b"abc-123"]
        assert fake.last.headers["x-request-id"] == ["abc-123"]
        _, headers, _ = await fetch(shim.url + "/v1/chat/completions", "POST", CHAT)
        generated = headers.getRawHeaders(b"x-request-id")[0]
        assert len(generated) == 32 and fake.last.headers["x-request-id"] == [generated.decode()]
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_concurrency_limit_queues_then_refuses() -> None:
    """With one slot and one queue place, a third request is a 429 with Retry-After; the first two succeed."""
    fake, shim, port = await setup(limits={"max_concurrent_upstream": 1, "max_queue": 1})
    fake.fault = "slow_headers"
    fake.slow_headers = 0.5
    try:
        arrived = fake.next_request()
        first = Deferred.fromCoroutine(fetch(shim.url + "/v1/chat/completions", "POST", CHAT))
        await timeout(arrived)  # the first holds the only slot (the fake answers after 0.5 s)
        queued = shim.service.slots.when_queued(1)
        second = Deferred.fromCoroutine(fetch(shim.url + "/v1/chat/completions", "POST", CHAT))
        await timeout(queued)
        status, headers, body = await fetch(shim.url + "/v1/chat/completions", "POST", CHAT)
        assert status == 429 and headers.getRawHeaders(b"retry-after") == [b"1"]
        assert "limit" in jsonutil.loads(body)["error"]["message"]
        assert (await timeout(first))[0] == 200
        assert (await timeout(second))[0] == 200
        assert len(fake.chat_requests()) == 2
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_slow_header_dribble_is_dropped() -> None:
    """A client that never finishes its headers is disconnected within header_timeout, with no response."""
    fake, shim, port = await setup(limits={"header_timeout": 0.3})
    try:
        client = await raw_connect(shim.url, b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n")
        started = reactor.seconds()
        await timeout(client.closed, 5)
        assert reactor.seconds() - started < 2
        assert client.received == b""
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_metrics() -> None:
    """/metrics serves Prometheus text counting requests by dialect, route and status, tokens, streams and TTFB."""
    fake, shim, port = await setup()
    fake.content = ["a", "b"]
    try:
        await fetch(shim.url + "/v1/chat/completions", "POST",
                    jsonutil.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True},
                                    "messages": []}))
        await fetch(shim.url + "/v1/chat/completions", "POST", CHAT)
        await fetch(shim.url + "/api/version")
        status, headers, body = await fetch(shim.url + "/metrics")
        assert status == 200 and headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
        text = body.decode()
        assert 'llamashim_requests_total{dialect="openai",route="chat",status="200"} 2.0' in text
        assert 'llamashim_requests_total{dialect="ollama",route="ollama_version",status="200"} 1.0' in text
        assert 'llamashim_tokens_total{kind="completion"}' in text and "llamashim_active_streams 0.0" in text
        assert "llamashim_time_to_first_byte_seconds_count" in text
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_metrics_can_be_turned_off() -> None:
    """With metrics disabled, /metrics is a 404."""
    fake, shim, port = await setup(metrics={"enabled": False})
    try:
        status, _, _ = await fetch(shim.url + "/metrics")
        assert status == 404
    finally:
        await teardown(shim, port)


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
async def test_raw_request_is_parsed_by_our_request_class() -> None:
    """A request with an absurd header set still gets a JSON answer, not an HTML page."""
    fake, shim, port = await setup()
    try:
        client = await raw_connect(shim.url, http_request("GET", "/nope/%zz", headers={"Host": "localhost"}))
        await timeout(client.wait_for(lambda b: b"\r\n\r\n" in b))
        assert b"<html" not in client.received.lower()
    finally:
        await teardown(shim, port)
