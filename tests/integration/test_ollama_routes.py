"""The Ollama routes' raw and fill-in-the-middle generation, in memory in front of the fake llama-server (on
loopback where TCP shows: a client that leaves or stops reading).

``/api/generate`` with a ``suffix`` goes to the fake's ``/infill``, with ``raw: true`` to its ``/completion``; the
answers come back as Ollama NDJSON. Continue's autocompletion is replayed as it sends it: ``/api/show`` first (it
turns fill-in-the-middle on only when the template has ``.Suffix``), then its exact ``/api/generate`` body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import ollama
import pytest
import pytest_twisted
import yaml
from ollama._types import GenerateResponse
from twisted.internet.defer import Deferred, maybeDeferred

from llamashim.config import load_config
from llamashim.testing.fake_llama import FakeLlama, Seen
from tests.integration.support import (
    Env,
    Loopback,
    ShimFixture,
    fetch,
    http_request,
    listen,
    raw_connect,
    reactor,
    start_loopback,
    start_shim,
)
from tests.integration.support import timeout as deadline
from tests.support import ndjson

MODEL = "fake-model-7B.Q4_K_M"

# Continue's request body, byte for byte as JSON.stringify writes it (core/llm/llms/Ollama.ts, _streamFim): no
# ``raw``, no ``stream`` (both undefined), keep_alive 1800, the Qwen coder template's stops plus Continue's own.
CONTINUE_STOPS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>", "/src/", "#- coding: utf-8", "```"]
CONTINUE_FIM = json.dumps(
    {"model": MODEL, "prompt": "def add(a, b):\n    return ", "suffix": "\n\nprint(add(1, 2))\n",
     "options": {"temperature": 0.01, "num_predict": 4096, "stop": CONTINUE_STOPS, "num_ctx": 8192},
     "keep_alive": 1800},
    separators=(",", ":"),
).encode()
CONTINUE_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-continue"}


def seen(fake: FakeLlama, path: str) -> list[Seen]:
    return [r for r in fake.requests if r.path == path]


@pytest.fixture
def env(shims: ShimFixture) -> Env:
    fake = FakeLlama(shims.clock)
    fake.content = ["a ", "+", " b"]
    return shims.start(fake=fake)


@pytest_twisted.async_yield_fixture
async def loopback() -> AsyncIterator[Loopback]:
    fake = FakeLlama(reactor)
    fake.content = ["a ", "+", " b"]
    env = await start_loopback(fake)
    yield env
    await env.close()


def test_continue_autocompletion_replayed(env: Env) -> None:
    """Continue's /api/show sees .Suffix and insert; its exact FIM request streams the fake's /infill as NDJSON."""
    status, _, body = env.post("/api/show", {"name": MODEL}, CONTINUE_HEADERS)
    shown = json.loads(body)
    assert status == 200 and ".Suffix" in shown["template"] and "insert" in shown["capabilities"]
    status, headers, body = env.post("/api/generate", CONTINUE_FIM, CONTINUE_HEADERS)
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"application/x-ndjson"]
    got = [GenerateResponse.model_validate(v) for v in ndjson(body)]
    assert "".join(g.response or "" for g in got) == "a + b" and [g.done for g in got] == [False] * 3 + [True]
    last = got[-1]
    assert last.done_reason == "stop" and (last.prompt_eval_count, last.eval_count) == (12, 3) and last.eval_duration
    assert last.model == MODEL
    infill = seen(env.fake, "/infill")
    assert len(infill) == 2  # the probe /api/show sent, then the completion
    assert infill[-1].body == {
        "model": env.fake.model, "input_prefix": "def add(a, b):\n    return ",
        "input_suffix": "\n\nprint(add(1, 2))\n", "stream": True,
        "temperature": 0.01, "n_predict": 4096, "stop": CONTINUE_STOPS, "return_progress": True,
    }
    assert infill[-1].headers["authorization"] == ["Bearer sk-continue"]
    assert seen(env.fake, "/v1/chat/completions") == []


def test_the_fim_probe_asks_once_per_model(env: Env) -> None:
    """/api/show probes /infill once with a body llama-server rejects before generating; later shows reuse it."""
    for _ in range(3):
        status, _, _ = env.post("/api/show", {"model": MODEL})
        assert status == 200
    probes = seen(env.fake, "/infill")
    assert len(probes) == 1 and probes[0].body["input_extra"] == 0 and probes[0].body["model"] == env.fake.model


def test_a_model_without_fim_tokens(env: Env) -> None:
    """Without FIM tokens show has no insert and a suffix request is Ollama's 400 with llama-server's reason."""
    env.fake.fim_tokens = False
    status, _, body = env.post("/api/show", {"model": MODEL})
    assert status == 200 and "insert" not in json.loads(body)["capabilities"]
    assert ".Suffix" not in json.loads(body)["template"]
    status, _, body = env.post("/api/generate", CONTINUE_FIM, CONTINUE_HEADERS)
    assert status == 400
    error = json.loads(body)
    assert set(error) == {"error"} and error["error"].startswith(f'"{MODEL}" does not support insert')
    assert "Infill is not supported by this model: prefix token is missing." in error["error"]
    client = env.ollama()
    with pytest.raises(ollama.ResponseError) as raised:
        client.generate(model=MODEL, prompt="a", suffix="b", stream=False)
    assert raised.value.status_code == 400 and "does not support insert" in raised.value.error


def test_raw_generate_goes_to_completion(env: Env) -> None:
    """raw: true streams /completion with the prompt verbatim; stream false is one object; no chat template."""
    prompt = "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>"
    status, _, body = env.post("/api/generate", {"model": MODEL, "prompt": prompt, "raw": True,
                                                 "options": {"num_predict": 16, "stop": ["\n"]}})
    assert status == 200 and "".join(v["response"] for v in ndjson(body)) == "a + b"
    sent = seen(env.fake, "/completion")[-1].body
    assert sent == {"model": env.fake.model, "prompt": prompt, "stream": True, "n_predict": 16, "stop": ["\n"],
                    "return_progress": True}
    env.fake.finish_reason = "length"
    status, _, body = env.post("/api/generate", {"model": MODEL, "prompt": prompt, "raw": True, "stream": False})
    reply = GenerateResponse.model_validate(json.loads(body))
    assert status == 200 and reply.response == "a + b" and reply.done and reply.done_reason == "length"
    assert seen(env.fake, "/v1/chat/completions") == []


def test_the_ollama_client_fills_in_the_middle(env: Env) -> None:
    """The ollama client's generate with suffix, streamed and not, and raw, get the fake's text."""
    client = env.ollama()
    parts = list(client.generate(model=MODEL, prompt="x = ", suffix="\n", stream=True))
    assert "".join(p.response or "" for p in parts) == "a + b" and parts[-1].done
    whole = client.generate(model=MODEL, prompt="x = ", suffix="\n")
    assert whole.response == "a + b" and whole.eval_count == 3
    raw = client.generate(model=MODEL, prompt="x = ", raw=True)
    assert raw.response == "a + b"
    assert [r.body["stream"] for r in seen(env.fake, "/infill")] == [True, False]


@pytest.mark.parametrize(("fault", "needle"), [("data_error", "fake failure mid-stream"),
                                               ("drop_mid_stream", "upstream"),
                                               ("garbage", "not JSON")])
def test_mid_stream_failures_end_with_an_error_line(env: Env, fault: str, needle: str) -> None:
    """An error event, a dropped connection or garbage after the first line ends the NDJSON with an error line."""
    env.fake.fault = fault
    status, _, body = env.post("/api/generate", CONTINUE_FIM)
    got = ndjson(body)
    assert status == 200 and got[0]["response"] == "a " and set(got[-1]) == {"error"}
    assert needle in got[-1]["error"] and not any(v.get("done") for v in got)


def test_upstream_failure_before_the_stream(env: Env) -> None:
    """An upstream error status before any byte is an Ollama error body with that status."""
    env.fake.status_override = 500
    status, _, body = env.post("/api/generate", CONTINUE_FIM)
    assert status == 500 and json.loads(body) == {"error": "scripted failure"}


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_stream_closes_the_upstream(loopback: Loopback) -> None:
    """A client that disconnects mid-infill makes llamashim close the upstream /infill connection at once."""
    loopback.fake.content = [f"tok{i} " for i in range(200)]
    loopback.fake.chunk_interval = 0.05
    client = await raw_connect(
        loopback.shim.url, http_request("POST", "/api/generate", CONTINUE_FIM, {"Content-Type": "application/json"})
    )
    await deadline(client.wait_for(lambda b: b.count(b'"done":false') >= 2))
    infill = seen(loopback.fake, "/infill")[-1]
    left = reactor.seconds()
    client.abort()
    closed_at = await deadline(infill.lost, 5)
    assert closed_at - left < 0.5 and not infill.done.called


def dechunk(raw: bytes) -> bytes:
    """The body of a raw chunked HTTP/1.1 response."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    out, pos = bytearray(), 0
    while True:
        end = rest.index(b"\r\n", pos)
        size = int(rest[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += rest[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


@pytest_twisted.ensureDeferred
async def test_slow_client_pauses_the_upstream_infill(loopback: Loopback) -> None:
    """A client that stops reading keeps the fake's /infill paused (llamashim holds < 2 MiB); then all arrives."""
    pieces = 20_000
    loopback.fake.content = ["x" * 1000] * pieces
    client = await raw_connect(
        loopback.shim.url,
        http_request("POST", "/api/generate", CONTINUE_FIM,
                     {"Content-Type": "application/json", "Connection": "close"}),
        rcvbuf=32 * 1024,
    )
    client.stop_reading()
    await deadline(loopback.fake.stream_paused(), 20)
    stream = loopback.fake.streams[-1]
    # Stays paused, measured on work, not time: a whole other request through llamashim (the reactor reading every
    # socket meanwhile) without one resume of the stream.
    for _ in range(50):
        assert stream.sent < len(stream.frames), "the upstream wrote everything to a client that was not reading"
        pauses, resumes = loopback.fake.pauses, loopback.fake.resumes
        status, _, _ = await fetch(loopback.shim.url + "/api/version")
        assert status == 200
        if stream.paused and (loopback.fake.pauses, loopback.fake.resumes) == (pauses, resumes):
            break
    else:
        raise AssertionError(f"the stream never stayed paused ({loopback.fake.pauses} pauses)")
    assert stream.sent < pieces // 2, stream.sent
    held = loopback.shim.site.buffered_bytes()
    assert held < 2 * 1024 * 1024, held
    client.read_again()
    await deadline(client.closed, 60)  # (Connection: close; waiting on the bytes would rescan 20 MB per read)
    got = ndjson(dechunk(bytes(client.received)))
    assert len(got) == pieces + 1 and got[-1]["done"] and got[-1]["eval_count"] == pieces
    assert all(v["response"] == "x" * 1000 for v in got[:-1])


@pytest_twisted.ensureDeferred
async def test_fill_in_the_middle_goes_to_the_upstream_serving_the_model(tmp_path: Path) -> None:
    """With two upstreams, a FIM request and the probe go to the one serving the model; the other sees none."""
    coder, chat = FakeLlama(reactor, "/models/coder-1.5B.gguf"), FakeLlama(reactor, "/models/chat-7B.gguf")
    coder.content, chat.fim_tokens = ["1", " + 2"], False
    (chat_port, chat_url), (coder_port, coder_url) = listen(chat.resource()), listen(coder.resource())
    path = tmp_path / "llamashim.yaml"
    path.write_text(yaml.safe_dump({"listen": ["tcp:0:interface=127.0.0.1"],
                                    "upstreams": [{"name": "chat", "url": chat_url},
                                                  {"name": "coder", "url": coder_url}]}))
    shim = await start_shim(load_config({"config": str(path)}, {}))
    try:
        upstreams = shim.service.upstreams
        for member in upstreams.members.values():  # the model index filled before the first request
            await deadline(Deferred.fromCoroutine(upstreams.refresh(member)))
        body = {**json.loads(CONTINUE_FIM), "model": "coder-1.5B:latest"}
        status, _, data = await fetch(shim.url + "/api/generate", "POST", json.dumps(body).encode(),
                                      {"Content-Type": "application/json"})
        assert status == 200 and "".join(v["response"] for v in ndjson(data)) == "1 + 2"
        assert [r.body["model"] for r in coder.requests if r.path == "/infill"] == ["/models/coder-1.5B.gguf"]
        assert not [r for r in chat.requests if r.method == "POST"]
        status, _, data = await fetch(shim.url + "/api/generate", "POST",
                                      json.dumps({**body, "model": "chat-7B"}).encode())
        assert status == 400 and "does not support insert" in json.loads(data)["error"]
    finally:
        await shim.stop()
        await maybeDeferred(chat_port.stopListening)
        await maybeDeferred(coder_port.stopListening)
