"""``/status`` and ``/status.json`` over loopback in front of the fake llama-server: upstream health and models,
running streams, recent requests with tokens, the samples the chart draws, the API keys, and nothing secret."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted

from llamashim import jsonutil
from llamashim.testing.fake_llama import MODEL, FakeLlama
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

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
JSON = {"Content-Type": "application/json"}


class Env:
    def __init__(self, fake: FakeLlama, shim: Shim) -> None:
        self.fake = fake
        self.shim = shim

    async def status(self, headers: dict[str, str] | None = None) -> Any:
        code, _, body = await fetch(self.shim.url + "/status.json", headers=headers)
        assert code == 200, body
        return jsonutil.loads(body)


async def _env(cli: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> tuple[Env, Any]:
    fake = FakeLlama(reactor)
    port, url = listen(fake.resource())
    shim = await start_shim(config(url, cli, environ))
    return Env(fake, shim), port


@pytest_twisted.async_yield_fixture
async def env() -> AsyncIterator[Env]:
    e, port = await _env()
    yield e
    await e.shim.stop()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_status_json_has_upstreams_recent_requests_and_samples(env: Env) -> None:
    """After a chat request: the upstream (ok, its URL and model), the request with its tokens, and the samples."""
    code, _, _ = await fetch(env.shim.url + "/v1/chat/completions", "POST", jsonutil.dumps(CHAT), JSON)
    assert code == 200
    status = await env.status()
    [upstream] = status["upstreams"]
    assert upstream["name"] == "default" and upstream["state"] == "ok" and upstream["url"].startswith("http://127.")
    assert MODEL in upstream["models"] and upstream["total_slots"] == 4
    chat = next(r for r in status["recent"] if r["route"] == "chat")
    assert (chat["method"], chat["dialect"], chat["status"], chat["upstream"]) == ("POST", "openai", "200", "default")
    assert (chat["prompt_tokens"], chat["completion_tokens"]) == (12, 4) and chat["duration_ms"] >= 0
    series = status["series"]
    assert sum(series["requests"]) >= 1 and sum(series["completion_tokens_per_s"]) > 0
    assert len(series["requests"]) == len(series["completion_tokens_per_s"]) == 120
    assert all(r["route"] != "status" for r in status["recent"])  # its own polls are not listed
    assert status["llamashim"]["requests"] >= 1 and status["active"] == []


@pytest_twisted.ensureDeferred
async def test_a_running_stream_is_listed_while_it_runs(env: Env) -> None:
    """A stream in progress is an active request (route, dialect, streaming, bytes so far); once its client leaves
    it is a recent request with status `aborted`."""
    env.fake.content = [f"tok{i} " for i in range(200)]
    env.fake.chunk_interval = 0.05  # the fake paces its stream: ~10 s, far longer than this test needs
    body = jsonutil.dumps({**CHAT, "stream": True})
    client = await raw_connect(env.shim.url, http_request("POST", "/v1/chat/completions", body, JSON))
    await timeout(client.wait_for(lambda data: data.count(b"data: ") >= 2))
    status = await env.status()
    [running] = status["active"]
    assert (running["route"], running["dialect"], running["method"], running["streaming"]) == ("chat", "openai",
                                                                                               "POST", True)
    assert running["bytes_sent"] > 0 and running["upstream"] == "default" and len(running["id"]) == 32
    client.transport.loseConnection()  # type: ignore[union-attr]
    await timeout(env.fake.chat_requests()[-1].lost)  # the shim logs the abort, then closes its upstream request
    status = await env.status()
    assert status["active"] == []
    assert status["recent"][0]["status"] == "aborted" and status["recent"][0]["streamed"] is True


@pytest_twisted.ensureDeferred
async def test_the_page_is_static_html_under_a_strict_policy(env: Env) -> None:
    """GET /status: the page (no framework), its inline script and style allowed by hash and nothing else."""
    code, headers, body = await fetch(env.shim.url + "/status")
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    csp = (headers.getRawHeaders(b"content-security-policy") or [b""])[0].decode()
    script = re.search(rb"<script>(.*?)</script>", body, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1)).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert b'id="chart"' in body and b'fetch("status.json"' in body and b"<script src" not in body


@pytest_twisted.ensureDeferred
async def test_nothing_secret_reaches_the_status(env: Env) -> None:
    """Bodies, paths with their queries and keys never appear in /status.json."""
    secret_body = {**CHAT, "messages": [{"role": "user", "content": "my password is swordfish-42"}]}
    await fetch(env.shim.url + "/v1/chat/completions", "POST", jsonutil.dumps(secret_body),
                {**JSON, "Authorization": "Bearer sk-very-secret-9876"})
    await fetch(env.shim.url + "/props?token=hunter2-query")
    code, _, raw = await fetch(env.shim.url + "/status.json")
    assert code == 200
    for secret in (b"swordfish", b"sk-very-secret", b"hunter2", b"/props", b"password"):
        assert secret not in raw


@pytest_twisted.ensureDeferred
async def test_status_is_behind_the_api_keys() -> None:
    """With API keys set, /status and /status.json answer 401 without a key and 200 with one."""
    e, port = await _env(environ={"LLAMASHIM_API_KEYS": "sk-status-key-1234"})
    try:
        for path in ("/status", "/status.json"):
            code, _, _ = await fetch(e.shim.url + path)
            assert code == 401
            code, _, _ = await fetch(e.shim.url + path, headers={"Authorization": "Bearer sk-status-key-1234"})
            assert code == 200
        status = await e.status({"Authorization": "Bearer sk-status-key-1234"})
        assert b"sk-status-key" not in jsonutil.dumps(status)
    finally:
        await e.shim.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_open_paths_can_open_the_status(tmp_path: Path) -> None:
    """auth.open_paths opens the status routes to requests without a key (the rest stays closed)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("auth:\n  api_keys: [sk-status-key-1234]\n  open_paths: [/health, /status, /status.json]\n")
    e, port = await _env({"config": str(cfg)})
    try:
        for path in ("/status", "/status.json"):
            code, _, _ = await fetch(e.shim.url + path)
            assert code == 200
        code, _, _ = await fetch(e.shim.url + "/v1/models")
        assert code == 401
    finally:
        await e.shim.stop()
        await port.stopListening()
