"""The OpenAI routes, the pass-through and the error contract, over loopback against a scripted upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from llamashim import jsonutil
from tests.integration.support import Scripted, Shim, config, fetch, listen, start_shim

CHUNK = (
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hi"}}],"created":1,'
    b'"id":"c1","model":"m","system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}\n\n'
)
FINISH = (
    b'data: {"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"created":1,'
    b'"id":"c1","model":"m","system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}\n\n'
)
DONE = b"data: [DONE]\n\n"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Env:
    def __init__(self, up: Scripted, shim: Shim) -> None:
        self.up = up
        self.shim = shim

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        data = body if isinstance(body, bytes) else jsonutil.dumps(body)
        h = {"Content-Type": "application/json", **(headers or {})}
        return await fetch(self.shim.url + path, "POST", data, h)


@pytest_twisted.async_yield_fixture
async def env() -> AsyncIterator[Env]:
    up = Scripted()
    port, url = listen(up)
    shim = await start_shim(config(url, {"tool_streaming": "native"}))
    yield Env(up, shim)
    await shim.stop()
    await port.stopListening()


def error_of(body: bytes) -> dict[str, Any]:
    value = jsonutil.loads(body)
    assert set(value) == {"error"}, value
    err: dict[str, Any] = value["error"]
    assert {"message", "type", "code"} <= set(err)
    return err


@pytest_twisted.ensureDeferred
async def test_well_formed_stream_passes_byte_for_byte(env: Env) -> None:
    """A well-formed stream reaches the client byte for byte with SSE headers; upstream gets compact JSON."""
    env.up.frames = [CHUNK, CHUNK, FINISH, DONE]
    status, headers, body = await env.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert body == CHUNK + CHUNK + FINISH + DONE
    assert headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert headers.getRawHeaders(b"cache-control") == [b"no-cache, no-transform"]
    assert headers.getRawHeaders(b"x-accel-buffering") == [b"no"]
    assert headers.getRawHeaders(b"content-encoding", [b""]) == [b""]  # (treq's decoder adds an empty one here)
    # The upstream got compact JSON with the client's fields.
    method, uri, _, sent = env.up.posts()[-1]
    assert (method, uri) == (b"POST", b"/v1/chat/completions")
    assert sent == jsonutil.dumps({**CHAT, "stream": True})


@pytest_twisted.ensureDeferred
async def test_alias_route_and_non_streamed(env: Env) -> None:
    """/chat/completions serves a non-streamed reply; upstream gets compact JSON with stream false added."""
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
    env.up.body = jsonutil.dumps(reply)
    status, _, body = await env.post("/chat/completions", b'{ "model" : "m",\n "messages": [] }')
    assert status == 200
    assert jsonutil.loads(body)["choices"][0]["message"]["content"] == "Hi"
    assert env.up.posts()[-1][3] == b'{"model":"m","messages":[],"stream":false}'


@pytest.mark.parametrize(
    ("frames", "needle"),
    [
        ([CHUNK, b'data: {"error":{"code":500,"message":"kv cache full","type":"server_error"}}\n\n'], "kv cache"),
        ([CHUNK, b'error: {"code":500,"message":"legacy failure"}\n\n'], "legacy failure"),
        ([CHUNK], "before it was complete"),
        ([CHUNK, b"data: garbage that is not json\n\n"], "not JSON"),
        ([CHUNK, b"garbage without any SSE field\n\n"], "before it was complete"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_mid_stream_failures_end_with_a_terminal_error_frame(
    env: Env, frames: list[bytes], needle: str
) -> None:
    """Errors, truncation or garbage mid-stream end in an OpenAI error frame naming the cause, without [DONE]."""
    env.up.frames = frames
    status, _, body = await env.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert body.startswith(CHUNK)
    last = body.rstrip(b"\n").split(b"\n\n")[-1]
    assert last.startswith(b"data: ")
    err = error_of(last[len(b"data: ") :])
    assert needle in err["message"]
    assert b"[DONE]" not in body


@pytest_twisted.ensureDeferred
async def test_upstream_dropping_the_connection_mid_stream(env: Env) -> None:
    """An upstream that aborts the connection mid-stream gives a final error frame and no [DONE]."""
    env.up.frames = [CHUNK]
    env.up.abort_after_frames = True
    status, _, body = await env.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    last = body.rstrip(b"\n").split(b"\n\n")[-1]
    assert b'"error"' in last and b"[DONE]" not in body


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1,2,3]", "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "deep"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "deep"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_client_json_is_a_400(env: Env, body: bytes, needle: str) -> None:
    """Invalid, empty, non-object or too deep JSON is a JSON 400 naming the problem and is not sent upstream."""
    status, headers, data = await env.post("/v1/chat/completions", body)
    assert status == 400
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"application/json")
    assert needle.lower() in error_of(data)["message"].lower()
    assert env.up.posts() == []


@pytest_twisted.ensureDeferred
async def test_upstream_error_status_is_passed_on_in_openai_shape(env: Env) -> None:
    """An upstream 400 reaches the client as a 400 in OpenAI error shape with llama-server's message."""
    env.up.status = 400
    env.up.body = b'{"error":{"code":400,"message":"the request exceeds the context size","type":"exceed_context"}}'
    status, _, data = await env.post("/v1/chat/completions", CHAT)
    assert status == 400
    err = error_of(data)
    assert err["message"] == "the request exceeds the context size"


@pytest_twisted.ensureDeferred
async def test_unreachable_upstream_is_a_502() -> None:
    """With the upstream refusing connections, chat is a 502 and /health a 503, both saying refused."""
    shim = await start_shim(config("http://127.0.0.1:1"))
    try:
        status, _, data = await fetch(shim.url + "/v1/chat/completions", "POST", jsonutil.dumps(CHAT))
        assert status == 502
        assert "refused" in error_of(data)["message"]
        status, _, data = await fetch(shim.url + "/health")
        assert status == 503
        assert "refused" in jsonutil.loads(data)["reason"]
    finally:
        await shim.stop()


@pytest_twisted.ensureDeferred
async def test_body_over_the_limit_is_a_413() -> None:
    """A body over max_body_bytes is a 413 'too large' in OpenAI and Ollama shape and never reaches upstream."""
    up = Scripted()
    port, url = listen(up)
    cfg = config(url)
    import dataclasses

    cfg = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, max_body_bytes=1000))
    shim = await start_shim(cfg)
    try:
        status, _, data = await fetch(shim.url + "/v1/chat/completions", "POST", b"x" * 5000)
        assert status == 413
        assert "too large" in error_of(data)["message"]
        status, _, data = await fetch(shim.url + "/api/chat", "POST", b"x" * 5000)
        assert status == 413
        assert "too large" in jsonutil.loads(data)["error"]
        assert up.posts() == []
    finally:
        await shim.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_passthrough_keeps_method_query_body_and_end_to_end_headers(env: Env) -> None:
    """Pass-through keeps status, method, query, body and end-to-end headers; hop-by-hop ones are dropped."""
    env.up.status = 201
    env.up.headers = {b"content-type": b"application/json", b"x-upstream": b"yes", b"keep-alive": b"timeout=5"}
    env.up.body = b'{"tokens":[1,2]}'
    status, headers, body = await fetch(
        env.shim.url + "/tokenize?with_pieces=true",
        "POST",
        b'{"content":"hi"}',
        {
            "Authorization": "Bearer sk-123",
            "Content-Type": "application/json",
            "Connection": "close, X-Hop",
            "X-Hop": "drop me",
            "TE": "trailers",
            "X-Custom": "keep me",
        },
    )
    assert status == 201 and body == b'{"tokens":[1,2]}'
    assert headers.getRawHeaders(b"x-upstream") == [b"yes"]
    assert not headers.hasHeader(b"keep-alive")
    method, uri, seen, sent = env.up.posts()[-1]
    assert (method, uri, sent) == (b"POST", b"/tokenize?with_pieces=true", b'{"content":"hi"}')
    assert seen[b"authorization"] == [b"Bearer sk-123"]
    assert seen[b"x-custom"] == [b"keep me"]
    assert b"x-hop" not in seen and b"te" not in seen


@pytest_twisted.ensureDeferred
async def test_models_always_in_openai_list_shape(env: Env) -> None:
    """A bare model array from upstream is served as an OpenAI list under the friendly name, its extra fields and
    the upstream id (as an alias) kept."""
    env.up.body = b'[{"id":"a.gguf","meta":{"n_ctx":1}}]'
    status, _, body = await fetch(env.shim.url + "/v1/models")
    assert status == 200
    value = jsonutil.loads(body)
    assert value["object"] == "list"
    assert value["data"][0]["id"] == "a" and value["data"][0]["meta"] == {"n_ctx": 1}
    assert value["data"][0]["aliases"] == ["a.gguf"]


@pytest_twisted.ensureDeferred
async def test_health_and_debug_json(env: Env) -> None:
    """/health reports ok or the upstream's 503 reason; /debug/json answers the body as compact JSON."""
    env.up.body = b'{"status":"ok"}'
    status, _, body = await fetch(env.shim.url + "/health")
    assert status == 200 and jsonutil.loads(body)["status"] == "ok"
    env.up.status = 503
    env.up.body = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
    status, _, body = await fetch(env.shim.url + "/health")
    assert status == 503 and "Loading model" in jsonutil.loads(body)["reason"]
    status, _, body = await env.post("/debug/json", b'{ "a" : [1, 2,\n 3] }')
    assert status == 200 and body == b'{"a":[1,2,3]}'


@pytest_twisted.ensureDeferred
async def test_ollama_chat_dialect_openai_is_an_alias() -> None:
    """``ollama.chat_dialect: openai``: /api/chat answers exactly like /v1/chat/completions (the seed's behaviour)."""
    import dataclasses

    up = Scripted()
    up.frames = [CHUNK, FINISH, DONE]
    port, url = listen(up)
    cfg = config(url, {"tool_streaming": "native"})
    cfg = dataclasses.replace(cfg, ollama=dataclasses.replace(cfg.ollama, chat_dialect="openai"))
    shim = await start_shim(cfg)
    try:
        status, headers, body = await fetch(shim.url + "/api/chat", "POST", jsonutil.dumps({**CHAT, "stream": True}))
        assert status == 200 and body == CHUNK + FINISH + DONE
        assert headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
        assert up.posts()[-1][1] == b"/v1/chat/completions"
    finally:
        await shim.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_verbose_logs_bodies_and_says_so_and_quiet_does_not() -> None:
    """Verbose logs request and reply bodies and announces itself; quiet does neither; keys never appear."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    up = Scripted()
    up.body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"SECRET-ANSWER"}}]}'
    port, url = listen(up)
    try:
        for verbose in (False, True):
            events.clear()
            shim = await start_shim(config(url, {"verbose": verbose}))
            await fetch(shim.url + "/v1/chat/completions", "POST",
                        jsonutil.dumps({"model": "m", "messages": [{"role": "user", "content": "SECRET-PROMPT"}]}),
                        {"Authorization": "Bearer sk-never-logged-1234"})
            await shim.stop()
            text = repr(events)
            assert "sk-never-logged-1234" not in text
            assert ("SECRET-PROMPT" in text and "SECRET-ANSWER" in text) is verbose
            assert ("verbose logging is ON" in text) is verbose
    finally:
        globalLogPublisher.removeObserver(events.append)
        await port.stopListening()
