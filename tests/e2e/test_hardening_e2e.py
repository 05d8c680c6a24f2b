"""End-to-end: a shared-box configuration (API keys, limits, metrics, JSON logs) in front of the real llama-server."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from tests.e2e.daemon import Daemon, StartShim

KEY = "sk-e2e-shared-box-7f3a"


@pytest.fixture(scope="module")
def shim(real_llama: Any, shim_daemon: StartShim) -> Iterator[Daemon]:
    sections = {"log": {"format": "json"}, "limits": {"max_concurrent_upstream": 2, "max_queue": 8},
                "cors": {"origins": ["https://app.example"]}}
    with shim_daemon(real_llama.url, sections=sections, env={"LLAMASHIM_API_KEYS": KEY}) as d:
        yield d


def raw(d: Daemon, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def test_keys_guard_the_real_model(shim: Daemon) -> None:
    """A wrong key makes the SDK raise AuthenticationError; the configured key gets a real answer."""
    bad = openai.OpenAI(base_url=shim.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    good = openai.OpenAI(base_url=shim.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    reply = good.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices[0].message.content


def test_copilot_metadata_calls_need_no_key_but_chat_does(shim: Daemon) -> None:
    """Ollama list and show work without a key; chat is a 401 without one and answers with it."""
    cl = ollama.Client(host=shim.url, timeout=60)
    model = cl.list().models[0].model
    assert model is not None
    assert "tools" in (cl.show(model).capabilities or [])
    with pytest.raises(ollama.ResponseError) as e:
        cl.chat(model=model, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    keyed = ollama.Client(host=shim.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"})
    assert keyed.chat(model=model, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 4}).done


def test_metrics_count_real_tokens_and_request_ids_round_trip(shim: Daemon) -> None:
    """A request id is echoed; /metrics needs the key and counts at least 3 completion tokens."""
    status, headers, _ = raw(shim, "POST", "/v1/chat/completions",
                             {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                              "X-Request-Id": "e2e-req-1"},
                             json.dumps({"model": "any", "messages": [{"role": "user", "content": "hi"}],
                                         "max_tokens": 3}).encode())
    assert status == 200 and headers["x-request-id"] == "e2e-req-1"
    status, _, body = raw(shim, "GET", "/metrics")
    assert status == 401
    status, _, body = raw(shim, "GET", "/metrics", {"Authorization": f"Bearer {KEY}"})
    text = body.decode()
    completion = [line for line in text.splitlines() if line.startswith('llamashim_tokens_total{kind="completion"}')]
    assert completion and float(completion[0].split()[-1]) >= 3


def test_hosts_cors_and_json_logs(shim: Daemon) -> None:
    """A foreign Host is a 403, a listed origin's preflight a 204; stdout has JSON access logs without the key."""
    status, _, _ = raw(shim, "GET", "/health", {"Host": "attacker.example"})
    assert status == 403
    status, headers, _ = raw(shim, "OPTIONS", "/v1/chat/completions",
                             {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert status == 204 and headers["access-control-allow-origin"] == "https://app.example"
    log = Path(shim.stdout_path).read_text()  # log.format: json goes to standard output (journald)
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [e for e in events if e.get("log_namespace") == "llamashim.access" and "request_id" in e]
    assert access, "log.format: json writes one JSON object per event"
    assert KEY not in log
