"""Every streamed request is counted: against the real llama-server, a stream in each dialect whose client did not
ask for usage still shows its prompt and completion tokens on the status page, in the access line and in /metrics
(llamashim reads llama-server's ``timings`` whatever the client asked for)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable

import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from tests.e2e.daemon import Daemon

SAY = "Say hello."
MAX = 8


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        body: bytes = r.read()
        return body


def _tokens_metric(d: Daemon, kind: str) -> float:
    for line in _get(d.url + "/metrics").decode().splitlines():
        if line.startswith(f'llamashim_tokens_total{{kind="{kind}"}}'):
            return float(line.split()[-1])
    return 0.0


def _openai(d: Daemon) -> None:
    client = openai.OpenAI(base_url=d.url + "/v1", api_key="sk-x", timeout=120, max_retries=0)
    chunks = list(client.chat.completions.create(model="any", messages=[{"role": "user", "content": SAY}],
                                                 max_tokens=MAX, stream=True))
    assert chunks and all(c.usage is None for c in chunks)  # the client did not ask for usage, and got none


def _responses(d: Daemon) -> None:
    client = openai.OpenAI(base_url=d.url + "/v1", api_key="sk-x", timeout=120, max_retries=0)
    events = list(client.responses.create(model="any", input=SAY, max_output_tokens=MAX, stream=True, store=False))
    assert events[-1].type in ("response.completed", "response.incomplete")


def _anthropic(d: Daemon) -> None:
    client = anthropic.Anthropic(base_url=d.url, api_key="sk-x", timeout=120, max_retries=0)
    with client.messages.stream(model="any", max_tokens=MAX, messages=[{"role": "user", "content": SAY}]) as s:
        s.get_final_message()


def _ollama(d: Daemon) -> None:
    client = ollama.Client(host=d.url, timeout=120)
    parts = list(client.chat(model="any", messages=[{"role": "user", "content": SAY}], stream=True,
                             options={"num_predict": MAX}))
    assert parts[-1].done


def _gemini(d: Daemon) -> None:
    client = genai.Client(api_key="sk-x", http_options=genai_types.HttpOptions(base_url=d.url, timeout=120_000))
    parts = list(client.models.generate_content_stream(
        model="any", contents=SAY, config=genai_types.GenerateContentConfig(max_output_tokens=MAX)))
    assert parts and parts[-1].candidates and parts[-1].candidates[0].finish_reason is not None


DIALECTS: dict[str, tuple[str, str, Callable[[Daemon], None]]] = {
    "openai": ("chat", "POST /v1/chat/completions", _openai),
    "responses": ("responses", "POST /v1/responses", _responses),
    "anthropic": ("messages", "POST /v1/messages", _anthropic),
    "ollama": ("ollama_chat", "POST /api/chat", _ollama),
    "gemini": ("gemini_stream", "POST /v1/models/any:streamGenerateContent", _gemini),
}


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_a_stream_is_counted_without_include_usage(shim: Daemon, dialect: str) -> None:
    """A streamed request of this dialect, its client asking no usage, shows prompt and completion tokens on the
    status page, in its access line and in /metrics."""
    route, request_line, run = DIALECTS[dialect]
    prompt_before, completion_before = _tokens_metric(shim, "prompt"), _tokens_metric(shim, "completion")
    run(shim)
    recent = [r for r in json.loads(_get(shim.url + "/status.json"))["recent"] if r["route"] == route]
    assert recent, "the stream is not among the status page's recent requests"
    latest = max(recent, key=lambda r: float(r["at"]))
    assert latest["streamed"] is True
    assert latest["prompt_tokens"] and latest["prompt_tokens"] > 0, latest
    assert latest["completion_tokens"] and latest["completion_tokens"] > 0, latest
    assert _tokens_metric(shim, "prompt") > prompt_before
    assert _tokens_metric(shim, "completion") > completion_before
    lines = [line for line in shim.log().splitlines() if f"{request_line} 200 " in line]
    assert lines and re.search(r"tokens=\d+/\d+", lines[-1]), lines[-1:]
