"""End-to-end: the real daemon in front of a real llama-server, driven by the real ``openai`` package."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from typing import Any, cast

import openai
import pytest

from tests.e2e.daemon import Daemon


def client(d: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=d.url + "/v1", api_key="sk-test", timeout=60, max_retries=0)


def test_non_streamed_chat(shim: Daemon) -> None:
    """A plain chat completion comes back through llamashim with content, usage and the finish reason."""
    reply = client(shim).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_streamed_chat_matches_direct(shim: Daemon, real_llama: Any) -> None:
    """A streamed chat through llamashim yields the same text as the same request sent directly (temperature 0)."""
    kwargs: dict[str, Any] = dict(
        model="any",
        messages=[{"role": "user", "content": "Count: one, two,"}],
        max_tokens=12,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )

    def collect(c: openai.OpenAI) -> tuple[str, Any, Any]:
        text, finish, usage = "", None, None
        for chunk in c.chat.completions.create(**kwargs):
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        return text, finish, usage

    via_shim = collect(client(shim))
    direct = collect(openai.OpenAI(base_url=real_llama.url + "/v1", api_key="x", timeout=60, max_retries=0))
    assert via_shim[0] == direct[0] and via_shim[0]
    assert via_shim[1] == direct[1] == "length"
    assert via_shim[2] is not None and via_shim[2].completion_tokens == 12


def test_models_list_shape(shim: Daemon) -> None:
    """GET /v1/models answers OpenAI's list shape, which the SDK parses: the model by its friendly name, the
    upstream's .gguf id kept among its aliases."""
    models = client(shim).models.list()
    assert len(models.data) >= 1 and models.data[0].id == "SmolLM2-135M-Instruct.Q4_1"
    assert any(a.endswith(".gguf") for a in (models.data[0].model_extra or {})["aliases"])


def _slots_busy(url: str) -> bool:
    with urllib.request.urlopen(url + "/slots", timeout=5) as r:
        return any(s.get("is_processing") for s in json.load(r))


def test_client_abort_frees_the_upstream_slot(shim: Daemon, real_llama: Any) -> None:
    """A client that disconnects mid-stream makes llama-server stop generating within a second."""
    body = json.dumps(
        {"messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 3000, "stream": True}
    )
    conn = http.client.HTTPConnection("127.0.0.1", shim.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.read(6)  # decoded from the chunked body
    assert first == b"data: "
    assert _slots_busy(real_llama.url)
    conn.sock.close() if conn.sock else None
    resp.close()
    conn.close()
    closed_at = time.monotonic()
    while _slots_busy(real_llama.url):
        assert time.monotonic() - closed_at < 1.0, "llama-server still generating 1 s after the client left"
        time.sleep(0.02)  # polling the upstream's /slots against a deadline


def test_upstream_error_status_is_passed_on(shim: Daemon) -> None:
    """An upstream 400 (bad parameter type) reaches the SDK as a 400 with llama-server's message."""
    with pytest.raises(openai.BadRequestError) as e:
        client(shim).chat.completions.create(
            model="any", messages=[{"role": "user", "content": "x"}], max_tokens=cast(Any, "x")
        )
    assert "max_tokens" in str(e.value)
