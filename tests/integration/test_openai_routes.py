"""The OpenAI routes, the pass-through and the error contract, in memory against a scripted upstream (the daemon's
start-up log on loopback)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import maybeDeferred

from llamashim import jsonutil
from tests.integration.support import Env, Scripted, ShimFixture, config, fetch, listen, start_shim
from tests.support import logged
from tests.support import openai_error as error_of

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


@pytest.fixture
def up() -> Scripted:
    return Scripted()


@pytest.fixture
def env(shims: ShimFixture, up: Scripted) -> Env:
    return shims.start("native", upstream=up)


def test_well_formed_stream_passes_byte_for_byte(env: Env, up: Scripted) -> None:
    """A well-formed stream reaches the client byte for byte with SSE headers; upstream gets compact JSON."""
    up.frames = [CHUNK, CHUNK, FINISH, DONE]
    status, headers, body = env.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert body == CHUNK + CHUNK + FINISH + DONE
    assert headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert headers.getRawHeaders(b"cache-control") == [b"no-cache, no-transform"]
    assert headers.getRawHeaders(b"x-accel-buffering") == [b"no"]
    assert headers.getRawHeaders(b"content-encoding", [b""]) == [b""]
    # The upstream got compact JSON with the client's fields.
    method, uri, _, sent = up.posts()[-1]
    assert (method, uri) == (b"POST", b"/v1/chat/completions")
    assert sent == jsonutil.dumps({**CHAT, "stream": True, "return_progress": True})


def test_alias_route_and_non_streamed(env: Env, up: Scripted) -> None:
    """/chat/completions serves a non-streamed reply; upstream gets compact JSON with stream false added."""
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
    up.body = jsonutil.dumps(reply)
    status, _, body = env.post("/chat/completions", b'{ "model" : "m",\n "messages": [] }')
    assert status == 200
    assert jsonutil.loads(body)["choices"][0]["message"]["content"] == "Hi"
    assert up.posts()[-1][3] == b'{"model":"m","messages":[],"stream":false}'


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
def test_mid_stream_failures_end_with_a_terminal_error_frame(
    env: Env, up: Scripted, frames: list[bytes], needle: str
) -> None:
    """Errors, truncation or garbage mid-stream end in an OpenAI error frame naming the cause, without [DONE]."""
    up.frames = frames
    status, _, body = env.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert body.startswith(CHUNK)
    last = body.rstrip(b"\n").split(b"\n\n")[-1]
    assert last.startswith(b"data: ")
    err = error_of(last[len(b"data: ") :])
    assert needle in err["message"]
    assert b"[DONE]" not in body


def test_upstream_dropping_the_connection_mid_stream(env: Env, up: Scripted) -> None:
    """An upstream that aborts the connection mid-stream gives a final error frame and no [DONE]."""
    up.frames = [CHUNK]
    up.abort_after_frames = True
    status, _, body = env.post("/v1/chat/completions", {**CHAT, "stream": True})
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
def test_bad_client_json_is_a_400(env: Env, up: Scripted, body: bytes, needle: str) -> None:
    """Invalid, empty, non-object or too deep JSON is a JSON 400 naming the problem and is not sent upstream."""
    status, headers, data = env.post("/v1/chat/completions", body)
    assert status == 400
    assert (headers.getRawHeaders(b"content-type") or [b""])[0].startswith(b"application/json")
    assert needle.lower() in error_of(data)["message"].lower()
    assert up.posts() == []


def test_upstream_error_status_is_passed_on_in_openai_shape(env: Env, up: Scripted) -> None:
    """An upstream 400 reaches the client as a 400 in OpenAI error shape with llama-server's message."""
    up.status = 400
    up.body = b'{"error":{"code":400,"message":"the request exceeds the context size","type":"exceed_context"}}'
    status, _, data = env.post("/v1/chat/completions", CHAT)
    assert status == 400
    err = error_of(data)
    assert err["message"] == "the request exceeds the context size"


def test_unreachable_upstream_is_a_502(shims: ShimFixture) -> None:
    """With the upstream refusing connections, chat is a 502 and /health a 503, both saying refused."""
    env = shims.start(unreachable=True)
    status, _, data = env.post("/v1/chat/completions", CHAT)
    assert status == 502
    assert "refused" in error_of(data)["message"]
    status, _, data = env.get("/health")
    assert status == 503
    assert "refused" in jsonutil.loads(data)["reason"]


def test_body_over_the_limit_is_a_413(shims: ShimFixture, up: Scripted) -> None:
    """A body over max_body_bytes is a 413 'too large' in OpenAI and Ollama shape and never reaches upstream."""
    env = shims.start(upstream=up, settings={"limits": {"max_body_bytes": 1000}})
    status, _, data = env.post("/v1/chat/completions", b"x" * 5000)
    assert status == 413
    assert "too large" in error_of(data)["message"]
    status, _, data = env.post("/api/chat", b"x" * 5000)
    assert status == 413
    assert "too large" in jsonutil.loads(data)["error"]
    assert up.posts() == []


def test_passthrough_keeps_method_query_body_and_end_to_end_headers(env: Env, up: Scripted) -> None:
    """Pass-through keeps status, method, query, body and end-to-end headers; hop-by-hop ones are dropped."""
    up.status = 201
    up.headers = {b"content-type": b"application/json", b"x-upstream": b"yes", b"keep-alive": b"timeout=5"}
    up.body = b'{"tokens":[1,2]}'
    status, headers, body = env.call(
        "POST",
        "/tokenize?with_pieces=true",
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
    method, uri, seen, sent = up.posts()[-1]
    assert (method, uri, sent) == (b"POST", b"/tokenize?with_pieces=true", b'{"content":"hi"}')
    assert seen[b"authorization"] == [b"Bearer sk-123"]
    assert seen[b"x-custom"] == [b"keep me"]
    assert b"x-hop" not in seen and b"te" not in seen


def test_models_always_in_openai_list_shape(env: Env, up: Scripted) -> None:
    """A bare model array from upstream is served as an OpenAI list under the friendly name, its extra fields and
    the upstream id (as an alias) kept."""
    up.body = b'[{"id":"a.gguf","meta":{"n_ctx":1}}]'
    status, _, body = env.get("/v1/models")
    assert status == 200
    value = jsonutil.loads(body)
    assert value["object"] == "list"
    assert value["data"][0]["id"] == "a" and value["data"][0]["meta"] == {"n_ctx": 1}
    assert value["data"][0]["aliases"] == ["a.gguf"]


def test_health_and_debug_json(env: Env, up: Scripted) -> None:
    """/health reports ok or the upstream's 503 reason; /debug/json answers the body as compact JSON."""
    up.body = b'{"status":"ok"}'
    status, _, body = env.get("/health")
    assert status == 200 and jsonutil.loads(body)["status"] == "ok"
    up.status = 503
    up.body = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
    status, _, body = env.get("/health")
    assert status == 503 and "Loading model" in jsonutil.loads(body)["reason"]
    status, _, body = env.post("/debug/json", b'{ "a" : [1, 2,\n 3] }')
    assert status == 200 and body == b'{"a":[1,2,3]}'


def test_ollama_chat_dialect_openai_is_an_alias(shims: ShimFixture, up: Scripted) -> None:
    """``ollama.chat_dialect: openai``: /api/chat answers exactly like /v1/chat/completions (the seed's behaviour)."""
    up.frames = [CHUNK, FINISH, DONE]
    env = shims.start("native", upstream=up, settings={"ollama": {"chat_dialect": "openai"}})
    status, headers, body = env.post("/api/chat", {**CHAT, "stream": True})
    assert status == 200 and body == CHUNK + FINISH + DONE
    assert headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert up.posts()[-1][1] == b"/v1/chat/completions"


# -- on loopback: the daemon's own start-up log --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_verbose_logs_bodies_and_says_so_and_quiet_does_not() -> None:
    """Verbose logs request and reply bodies and announces itself; quiet does neither; keys never appear."""
    up = Scripted()
    up.body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"SECRET-ANSWER"}}]}'
    port, url = listen(up)
    try:
        for verbose in (False, True):
            with logged() as events:
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
        await maybeDeferred(port.stopListening)
