"""Keep-alives every client's own parser accepts, in memory: an upstream silent for two minutes before its first
token (a long prompt processing; Clock-driven), and each dialect's stream — fed to the SDK's own accumulator — sees
data-bearing keep-alives every ``server.heartbeat`` seconds, then the normal answer, with nothing shown as text."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from ollama import ChatResponse

from llamashim.testing.memory import MemoryShim, memory_shim
from tests.support import (
    accumulate_chat,
    accumulate_message,
    accumulate_response,
    ndjson,
    sse_chunks,
    sse_events,
)

PREFILL = 120.0  # seconds before the upstream answers its headers (llama-server does so with the first token)
HEARTBEAT = 15.0
MESSAGES = [{"role": "user", "content": "hi"}]
ANSWER = "Hello, world!"  # what the fake says


def waiting_shim() -> MemoryShim:
    shim = memory_shim(server={"heartbeat": HEARTBEAT})
    assert shim.fake is not None
    shim.fake.fault = "slow_headers"
    shim.fake.slow_headers = PREFILL
    return shim


def run(path: str, body: dict[str, Any]) -> tuple[bytes, list[float]]:
    """The whole streamed body, and the clock times at which the client saw bytes before the answer."""
    shim = waiting_shim()
    exchange = shim.request("POST", path, body)
    seen: list[float] = []
    size = 0
    for _ in range(int(PREFILL / 5)):
        shim.advance(5.0)
        if len(exchange.body) != size:
            size = len(exchange.body)
            seen.append(shim.clock.seconds())
    shim.advance(10.0)
    assert exchange.complete and exchange.code == 200, bytes(exchange.body)[-300:]
    shim.stop()
    return bytes(exchange.body), seen


def assert_paced(seen: list[float]) -> None:
    """Something reached the client within every heartbeat interval of the wait."""
    assert seen and seen[0] <= HEARTBEAT + 5.0
    assert all(b - a <= HEARTBEAT + 5.0 for a, b in itertools.pairwise(seen)), seen
    assert len(seen) >= PREFILL // HEARTBEAT - 1, seen


def test_openai_chat_keepalives_are_empty_chunks_then_the_answer() -> None:
    """OpenAI chat: the role chunk, then empty-delta chunks while the prompt is processed; the SDK's accumulator
    gets exactly the answer."""
    body, seen = run("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True})
    assert_paced(seen)
    chunks = sse_chunks(body)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert chunks[1]["choices"][0]["delta"] == {} and chunks[1]["object"] == "chat.completion.chunk"
    assert body.count(b'"delta":{}') >= PREFILL // HEARTBEAT - 1
    assert accumulate_chat(body).choices[0].message.content == ANSWER


def test_anthropic_stream_opens_with_message_start_then_pings() -> None:
    """Anthropic: message_start is the first event, then pings while the prompt is processed; the SDK's accumulator
    (which drops pings, as the SDK's stream does) gets exactly the answer."""
    body, seen = run("/v1/messages", {"model": "m", "max_tokens": 16, "messages": MESSAGES, "stream": True})
    assert_paced(seen)
    events = [data for _, data in sse_events(body)]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds.count("message_start") == 1
    assert kinds[1] == "ping" and kinds.count("ping") >= PREFILL // HEARTBEAT - 2
    message = accumulate_message([e for e in events if e["type"] != "ping"])
    assert [b.text for b in message.content] == [ANSWER]


def test_responses_keepalives_are_in_progress_events() -> None:
    """Responses: response.created and response.in_progress open the stream, then more response.in_progress events
    (each with its sequence number) while the prompt is processed; the SDK's accumulator gets exactly the answer."""
    body, seen = run("/v1/responses", {"model": "m", "input": "hi", "stream": True, "store": False})
    assert_paced(seen)
    events = [data for _, data in sse_events(body)]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.in_progress") >= PREFILL // HEARTBEAT - 1
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    assert accumulate_response(events).output_text == ANSWER


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_ollama_keepalives_are_empty_lines(path: str) -> None:
    """Ollama: lines with no text and done: false while the prompt is processed; the ollama client's models parse
    every line and the text adds up to exactly the answer."""
    body_in: dict[str, Any] = {"model": "m", "messages": MESSAGES} if path == "/api/chat" else {
        "model": "m", "prompt": "hi"}
    body, seen = run(path, body_in)
    assert_paced(seen)
    lines = ndjson(body)
    if path == "/api/chat":
        parsed = [ChatResponse.model_validate(line) for line in lines]
        assert "".join(p.message.content or "" for p in parsed) == ANSWER
    else:
        assert "".join(line["response"] for line in lines) == ANSWER
    waiting = lines[: int(PREFILL // HEARTBEAT) - 1]
    assert all(not w["done"] for w in waiting) and lines[-1]["done"] is True


def test_no_keepalive_once_the_answer_streams() -> None:
    """Keep-alives stop the moment real output starts: a slow answer after a quick first token gets none."""
    shim = memory_shim(server={"heartbeat": HEARTBEAT})
    assert shim.fake is not None
    shim.fake.chunk_interval = 20.0  # 20 s between tokens, longer than the heartbeat
    exchange = shim.request("POST", "/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True})
    shim.advance(200.0)
    assert exchange.complete
    empty = [c for c in sse_chunks(bytes(exchange.body))
             if c["choices"] and c["choices"][0]["delta"] == {} and c["choices"][0]["finish_reason"] is None]
    assert empty == []
    assert accumulate_chat(bytes(exchange.body)).choices[0].message.content == ANSWER
    shim.stop()
