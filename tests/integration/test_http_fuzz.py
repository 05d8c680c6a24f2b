"""Property-based fuzzing of the whole HTTP API (what schemathesis would do, without needing a schema).

The real daemon (``twistd llamashim``) runs in front of the fake llama-server, both as subprocesses. Hypothesis sends
arbitrary methods, paths, headers and bodies — valid-looking chat and Ollama requests with broken parts, plain garbage
and deep JSON — and every answer must be a well-formed HTTP response that is never a 5xx from llamashim itself
(the fake upstream is healthy, so any 5xx would be ours), never HTML and never a traceback.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.daemon import Daemon, _wait_listening, free_port, running_daemon

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "llamashim.testing.fake_llama", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import time

        _wait_listening(port, fake, time.monotonic() + 30)
        with running_daemon(f"http://127.0.0.1:{port}", tmp=tmp_path_factory.mktemp("fuzz")) as d:
            yield d
    finally:
        fake.terminate()
        fake.wait(10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "bogus"])},
    optional={"content": json_values, "tool_calls": json_values, "images": json_values, "tool_name": json_values},
)
chat_body = st.fixed_dictionaries(
    {"model": st.one_of(st.just("m"), json_values)},
    optional={
        "messages": st.one_of(st.lists(message, max_size=3), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "tools": json_values,
        "functions": json_values,
        "tool_choice": json_values,
        "stream_options": json_values,
        "options": json_values,
        "format": json_values,
        "think": json_values,
        "prompt": json_values,
        "input": json_values,
    },
)
bodies = st.one_of(
    chat_body.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
)
paths = st.one_of(
    st.sampled_from([
        "/v1/chat/completions", "/chat/completions", "/api/chat", "/api/generate", "/api/show", "/api/tags",
        "/api/version", "/api/ps", "/api/embed", "/api/embeddings", "/api/nope", "/health", "/debug/json",
        "/metrics", "/v1/models", "/", "/props", "/tokenize",
    ]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(lambda s: "/" + s),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])

# -- the translating dialects: requests of their own shape with broken parts ---------------------------------------

texts = st.text(max_size=20)
responses_item = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "item_reference",
                              "custom_tool_call", "local_shell_call", "bogus"])},
    optional={"role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | json_values,
              "content": texts | json_values, "call_id": json_values, "name": json_values, "arguments": json_values,
              "output": json_values, "id": json_values, "summary": json_values, "encrypted_content": json_values},
)
responses_body = st.fixed_dictionaries(
    {"model": st.just("m") | json_values},
    optional={"input": texts | st.lists(responses_item, max_size=3) | json_values, "instructions": json_values,
              "tools": json_values, "tool_choice": json_values, "stream": st.booleans() | json_values,
              "previous_response_id": json_values, "store": json_values, "reasoning": json_values,
              "text": json_values, "max_output_tokens": json_values, "temperature": json_values,
              "include": json_values},
)
anthropic_block = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document",
                              "bogus"])},
    optional={"text": json_values, "source": json_values, "id": json_values, "name": json_values,
              "input": json_values, "tool_use_id": json_values, "content": json_values, "is_error": json_values,
              "thinking": json_values, "signature": json_values},
)
anthropic_body = st.fixed_dictionaries(
    {"model": st.just("m") | json_values, "max_tokens": st.integers(-2, 50) | json_values,
     "messages": st.lists(st.fixed_dictionaries({
         "role": st.sampled_from(["user", "assistant", "system", "bogus"]),
         "content": texts | st.lists(anthropic_block, max_size=3) | json_values}), max_size=3) | json_values},
    optional={"system": json_values, "tools": json_values, "tool_choice": json_values, "thinking": json_values,
              "stream": st.booleans() | json_values, "stop_sequences": json_values, "metadata": json_values},
)
gemini_part = st.fixed_dictionaries({}, optional={
    "text": json_values, "inlineData": json_values, "functionCall": json_values, "functionResponse": json_values,
    "thought": json_values, "fileData": json_values})
gemini_body = st.fixed_dictionaries(
    {"contents": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "model", "bogus"]) | json_values,
                                                  "parts": st.lists(gemini_part, max_size=3) | json_values}),
                          max_size=3) | json_values},
    optional={"systemInstruction": json_values, "tools": json_values, "toolConfig": json_values,
              "generationConfig": json_values, "requests": json_values},
)
dialect_requests = st.one_of(
    st.tuples(st.sampled_from(["/v1/responses", "/responses", "/v1/responses/input_tokens"]), responses_body),
    st.tuples(st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]), anthropic_body),
    st.tuples(st.sampled_from([
        "/v1beta/models/m:generateContent", "/v1beta/models/m:streamGenerateContent?alt=sse",
        "/v1beta/models/m:streamGenerateContent", "/v1beta/models/m:countTokens", "/v1beta/models/m:embedContent",
        "/v1beta/models/m:batchEmbedContents", "/v1/models/m:generateContent", "/v1beta/models/m:bogus"]),
        gemini_body),
)
thinking = st.sampled_from([None, "off", "events", "show_reasoning", "bogus", "\x7f"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, body=bodies, mode=thinking)
def test_no_5xx_from_llamashim(daemon: Daemon, method: str, path: str, body: bytes, mode: str | None) -> None:
    """Arbitrary methods, paths, headers and bodies never get a 5xx, HTML or a traceback; errors are JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if mode is not None:
        headers["X-Llamashim-Thinking"] = mode
    try:
        conn.request(method, path, body=body if method not in ("GET", "HEAD") else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except http.client.InvalidURL:
        return
    finally:
        conn.close()
    assert response.status < 500, (response.status, data[:300])
    assert b"Traceback" not in data and b"<html" not in data.lower()
    if response.status >= 400 and method != "HEAD":
        value = json.loads(data)
        assert "error" in value


def _exchange(port: int, method: str, path: str, body: bytes | None, headers: dict[str, Any]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=dialect_requests)
def test_no_5xx_from_the_translating_dialects(daemon: Daemon, request: tuple[str, Any]) -> None:
    """Responses, Anthropic Messages and Gemini requests of their own shape with arbitrary broken parts never get a
    5xx, HTML or a traceback; an error is JSON with an ``error`` in the dialect's shape."""
    path, body = request
    status, data = _exchange(daemon.port, "POST", path, json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
    assert status < 500, (status, data[:300])
    assert b"Traceback" not in data and b"<html" not in data.lower()
    if status >= 400:
        value = json.loads(data)
        assert "error" in value, value
