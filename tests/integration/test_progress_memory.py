"""Prefill progress, in memory: llamashim asks the fake llama-server for prompt-processing progress
(``return_progress``), no dialect's client ever sees a progress event, keep-alives go on while they arrive, the status
page shows each running request's phase, and ``/metrics`` and the access line have the prefill and the time to first
token."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from llamashim.testing.memory import MemoryShim, memory_shim
from tests.support import (
    accumulate_chat,
    accumulate_message,
    accumulate_response,
    logged,
    ndjson,
    sse_chunks,
    sse_events,
)

HEARTBEAT = 15.0
MESSAGES = [{"role": "user", "content": "hi"}]
ANSWER = "Hello, world!"  # what the fake says
REQUESTS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "m", "messages": MESSAGES, "stream": True},
    "/v1/messages": {"model": "m", "max_tokens": 16, "messages": MESSAGES, "stream": True},
    "/v1/responses": {"model": "m", "input": "hi", "stream": True, "store": False},
    "/api/chat": {"model": "m", "messages": MESSAGES},
    "/api/generate": {"model": "m", "prompt": "hi"},
}


def prefilling_shim(prefill: float, steps: int = 3, **sections: Any) -> MemoryShim:
    shim = memory_shim(server={"heartbeat": HEARTBEAT}, **sections)
    assert shim.fake is not None
    shim.fake.prefill = prefill
    shim.fake.prefill_steps = steps
    return shim


def answer_of(path: str, body: bytes) -> str:
    """The text the dialect's own client makes of the stream."""
    if path == "/v1/chat/completions":
        return str(accumulate_chat(body).choices[0].message.content)
    if path == "/v1/messages":
        events = [data for _, data in sse_events(body) if data["type"] != "ping"]
        return "".join(b.text for b in accumulate_message(events).content)
    if path == "/v1/responses":
        return str(accumulate_response([data for _, data in sse_events(body)]).output_text)
    key = "message" if path == "/api/chat" else None
    return "".join((line[key]["content"] if key else line["response"]) for line in ndjson(body) if "error" not in line)


def status_of(shim: MemoryShim) -> dict[str, Any]:
    exchange = shim.request("GET", "/status.json")
    assert exchange.code == 200
    value: dict[str, Any] = exchange.json()
    return value


@pytest.mark.parametrize("path", list(REQUESTS))
def test_progress_events_never_reach_the_client(path: str) -> None:
    """Every dialect: the upstream is asked for progress and sends it, and the client's stream has none of it —
    the text its own client makes of the stream is exactly the answer."""
    shim = prefilling_shim(prefill=30.0)
    exchange = shim.request("POST", path, REQUESTS[path])
    shim.advance(40.0)
    assert exchange.complete and exchange.code == 200
    assert shim.fake is not None and shim.fake.requests[-1].body["return_progress"] is True
    body = bytes(exchange.body)
    assert b"prompt_progress" not in body
    assert answer_of(path, body) == ANSWER
    if path == "/v1/chat/completions":  # of the upstream's role chunks only its real one, none of its progress chunks
        roles = [c for c in sse_chunks(body) if c["id"] == "chatcmpl-fake" and c["choices"][0]["delta"].get("role")]
        assert len(roles) == 1
    shim.stop()


def test_keepalives_go_on_while_progress_arrives() -> None:
    """Progress events every 10 s for two minutes are not the stream's first output: the client gets a keep-alive
    every heartbeat all the while, and the time to first token is the end of the prefill."""
    shim = prefilling_shim(prefill=120.0, steps=12)
    with logged() as events:
        exchange = shim.request("POST", "/v1/chat/completions", REQUESTS["/v1/chat/completions"])
        grew: list[float] = []
        for _ in range(24):
            size = len(exchange.body)
            shim.advance(5.0)
            if len(exchange.body) != size:
                grew.append(shim.clock.seconds())
        keepalives = bytes(exchange.body).count(b'"delta":{}')
        shim.advance(10.0)
    assert grew[0] <= HEARTBEAT + 5.0 and all(b - a <= HEARTBEAT + 5.0 for a, b in itertools.pairwise(grew))
    assert keepalives >= 120.0 // HEARTBEAT - 1
    assert exchange.complete and accumulate_chat(bytes(exchange.body)).choices[0].message.content == ANSWER
    line = next(e for e in events if e.get("log_namespace") == "llamashim.access")
    assert 120_000.0 <= float(line["ttft"].removesuffix("ms")) < 121_000.0
    shim.stop()


def test_status_shows_queued_prefill_then_generating() -> None:
    """While a streamed request runs, /status.json gives its phase: queued for a slot, prefill N% of M tokens with
    the cache hit, then generating at a token rate."""
    shim = prefilling_shim(prefill=40.0, steps=4)
    fake = shim.fake
    assert fake is not None
    fake.fault, fake.slow_headers = "slow_headers", 10.0  # 10 s queued before the slot takes it
    fake.prompt_cache = 4
    fake.content = [f"t{i} " for i in range(20)]
    fake.chunk_interval = 0.5
    exchange = shim.request("POST", "/v1/chat/completions", REQUESTS["/v1/chat/completions"])
    shim.advance(5.0)
    [active] = status_of(shim)["active"]
    assert active["phase"] == {"phase": "queued"}
    shim.advance(10.0 + 20.0 + 1.0)  # the slot took it 21 s ago: 2 of 4 batches done
    [active] = status_of(shim)["active"]
    assert active["phase"] == {"phase": "prefill", "total": 12, "cache": 4, "processed": 8, "percent": 66.7}
    shim.advance(20.0 + 4.0)
    [active] = status_of(shim)["active"]
    assert active["phase"]["phase"] == "generating" and active["phase"]["tokens"] >= 6
    assert active["phase"]["tokens_per_s"] == pytest.approx(2.0, rel=0.2)
    shim.advance(20.0)
    assert exchange.complete and status_of(shim)["active"] == []
    shim.stop()


def test_completion_stream_reports_its_progress() -> None:
    """A raw /api/generate stream asks /completion for progress too: the status page shows its prefill."""
    shim = prefilling_shim(prefill=30.0, steps=3)
    exchange = shim.request("POST", "/api/generate", {**REQUESTS["/api/generate"], "raw": True})
    shim.advance(15.0)
    [active] = status_of(shim)["active"]
    assert active["phase"] == {"phase": "prefill", "total": 12, "cache": 0, "processed": 4, "percent": 33.3}
    shim.advance(20.0)
    assert exchange.complete and answer_of("/api/generate", bytes(exchange.body)) == ANSWER
    assert shim.fake is not None and shim.fake.requests[-1].path == "/completion"
    shim.stop()


def test_an_old_build_without_progress_still_works() -> None:
    """An upstream that ignores return_progress: the stream is the same, and the phase is queued until the answer."""
    shim = prefilling_shim(prefill=0.0)
    fake = shim.fake
    assert fake is not None
    fake.progress = False
    fake.fault, fake.slow_headers = "slow_headers", 30.0
    exchange = shim.request("POST", "/v1/chat/completions", REQUESTS["/v1/chat/completions"])
    shim.advance(20.0)
    assert status_of(shim)["active"][0]["phase"] == {"phase": "queued"}
    shim.advance(20.0)
    assert exchange.complete and accumulate_chat(bytes(exchange.body)).choices[0].message.content == ANSWER
    shim.stop()


def test_metrics_and_access_line_have_prefill_and_time_to_first_token() -> None:
    """/metrics has llamashim_prefill_seconds (llama-server's prompt_ms) and llamashim_time_to_first_token_seconds;
    the access line has ttft=, and ttft=- for a reply that is not a stream."""
    shim = prefilling_shim(prefill=8.0)
    with logged() as events:
        exchange = shim.request("POST", "/v1/chat/completions", {**REQUESTS["/v1/chat/completions"],
                                                                 "stream_options": {"include_usage": True}})
        shim.advance(10.0)
        assert exchange.complete
        assert shim.request("POST", "/v1/chat/completions", {"model": "m", "messages": MESSAGES}).code == 200
    assert shim.metric("llamashim_prefill_seconds_count", route="chat") == 2
    assert shim.metric("llamashim_prefill_seconds_sum", route="chat") == pytest.approx(2 * 0.024)
    assert shim.metric("llamashim_time_to_first_token_seconds_count", route="chat") == 1
    assert shim.metric("llamashim_time_to_first_token_seconds_sum", route="chat") == pytest.approx(8.0)
    lines = [e for e in events if e.get("log_namespace") == "llamashim.access"]
    assert [e["ttft"] for e in lines] == ["8000.0ms", "-"]
    text = lines[0]["log_format"].format(**lines[0])
    assert re.search(r" ttft=8000\.0ms .*upstream=(\S+) upstream_ttfb=\S+ tokens=\S+ id=", text), text
    shim.stop()
