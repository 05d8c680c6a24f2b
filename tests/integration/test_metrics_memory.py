"""What /metrics counts, in memory (llamashim.testing.memory): upstream failures after the first byte by kind,
clients that leave mid-stream by route, and every request with its route label and dialect name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamashim.testing.fake_llama import FakeLlama
from llamashim.testing.memory import MemoryShim, memory_shim
from tests.support import logged

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def streaming_shim(**sections: Any) -> MemoryShim:
    return memory_shim(tools={"streaming": "native"}, **sections)


def test_upstream_drop_after_the_first_byte_counts_as_upstream_error() -> None:
    """An upstream that drops a stream after it started is counted in llamashim_upstream_errors{kind=upstream_error}."""
    shim = streaming_shim()
    assert shim.fake is not None
    shim.fake.fault = "drop_mid_stream"
    exchange = shim.request("POST", "/v1/chat/completions", {**CHAT, "stream": True})
    assert exchange.code == 200 and exchange.complete
    assert shim.metric("llamashim_upstream_errors_total", kind="upstream_error") == 1
    assert shim.metric("llamashim_upstream_errors_total", kind="timeout_error") == 0
    assert shim.metric("llamashim_requests_total", route="chat", status="200", dialect="openai") == 1


class Stall(Resource):
    """A fake llama-server whose chat stream sends its first ``frames`` frames, then nothing, ever."""

    isLeaf = True

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.fake = FakeLlama(Clock())
        self.frames = frames

    def render(self, request: Request) -> bytes | int:
        if request.path != b"/v1/chat/completions":
            result: bytes | int = self.fake.resource().render(request)
            return result
        request.setHeader(b"content-type", b"text/event-stream")
        for frame in self.fake.frames(include_usage=False)[: self.frames]:
            request.write(frame)
        return NOT_DONE_YET


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_upstream_silence_after_the_first_byte_counts_as_timeout_error(path: str) -> None:
    """A stream whose upstream goes silent past upstream.idle_timeout is counted as kind=timeout_error."""
    shim = memory_shim(upstream_resource=Stall(frames=3), tools={"streaming": "native"},
                       upstream={"idle_timeout": 5.0})
    exchange = shim.request("POST", path, {**CHAT, "stream": True})
    assert exchange.code == 200 and exchange.body and not exchange.ended
    shim.advance(4.9)
    assert not exchange.ended
    shim.advance(0.2)
    assert exchange.complete
    assert b"upstream.idle_timeout" in bytes(exchange.body)
    assert shim.metric("llamashim_upstream_errors_total", kind="timeout_error") == 1
    assert shim.metric("llamashim_upstream_errors_total", kind="upstream_error") == 0


def test_upstream_error_before_the_first_byte_counts_by_kind() -> None:
    """An upstream gone unreachable (502 before any byte) is counted as kind=upstream_error too."""
    shim = memory_shim()
    shim.plug.pull()
    assert shim.request("POST", "/v1/chat/completions", CHAT).code == 502
    assert shim.metric("llamashim_upstream_errors_total", kind="upstream_error") == 1


@pytest.mark.parametrize(("path", "route", "dialect"), [
    ("/v1/chat/completions", "chat", "openai"),
    ("/api/chat", "ollama_chat", "ollama"),
])
def test_client_leaving_mid_stream_counts_as_client_abort(path: str, route: str, dialect: str) -> None:
    """A client that leaves mid-stream is counted in llamashim_client_aborts{route} and as status "aborted"."""
    shim = streaming_shim()
    assert shim.fake is not None
    shim.fake.chunk_interval = 1.0
    exchange = shim.request("POST", path, {**CHAT, "stream": True})
    shim.advance(2.0)
    assert exchange.code == 200 and not exchange.ended and exchange.body
    assert shim.metric("llamashim_active_streams") == 1
    exchange.abort()
    shim.flush()
    assert shim.metric("llamashim_client_aborts_total", route=route) == 1
    assert shim.metric("llamashim_requests_total", route=route, status="aborted", dialect=dialect) == 1
    assert shim.metric("llamashim_active_streams") == 0
    assert shim.metric("llamashim_upstream_errors_total", kind="upstream_error") == 0  # the client's doing


@pytest.mark.parametrize(("path", "route", "dialect"), [
    ("/v1/chat/completions", "chat", "openai"),
    ("/chat/completions", "chat", "openai"),
    ("/api/chat", "ollama_chat", "ollama"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_requests_carry_route_and_dialect(path: str, route: str, dialect: str, stream: bool) -> None:
    """A chat request is counted in llamashim_requests{route, status, dialect} under its route and dialect."""
    shim = streaming_shim()
    exchange = shim.request("POST", path, {**CHAT, "stream": stream})
    assert exchange.code == 200 and exchange.complete
    assert shim.metric("llamashim_requests_total", route=route, status="200", dialect=dialect) == 1
    assert shim.metric("llamashim_request_duration_seconds_count", route=route) == 1


def test_unknown_path_counts_as_passthrough() -> None:
    """A path no route claims goes to the upstream as it came and is counted as route="passthrough"."""
    shim = memory_shim()
    exchange = shim.request("GET", "/slots")
    assert exchange.code == 200 and exchange.complete
    assert shim.fake is not None and shim.fake.last.path == "/slots"
    assert shim.metric("llamashim_requests_total", route="passthrough", status="200", dialect="openai") == 1


def test_metrics_endpoint_renders_what_was_counted() -> None:
    """GET /metrics through the site (here with treq on the memory client) shows the counters with their labels."""
    shim = streaming_shim()
    shim.request("POST", "/api/chat", {**CHAT, "stream": False})
    responses: list[Any] = []
    shim.treq.get("http://127.0.0.1/metrics").addCallback(responses.append)
    shim.flush()
    [response] = responses
    assert response.code == 200
    texts: list[str] = []
    response.text().addCallback(texts.append)
    shim.flush()
    assert 'llamashim_requests_total{dialect="ollama",route="ollama_chat",status="200"} 1.0' in texts[0]


def test_prompt_tokens_are_counted_cached_and_processed_per_upstream_and_model() -> None:
    """llama-server's cache_n vs prompt_n reach /metrics (llamashim_prompt_tokens_total{upstream,model,source}), the
    access line (cached=) and the status page's upstream (prompt_cache: the recent share), streamed and not."""
    shim = streaming_shim()
    assert shim.fake is not None
    shim.fake.prompt_cache = 9  # of its 12 prompt tokens
    with logged() as events:
        assert shim.request("POST", "/v1/chat/completions", CHAT).code == 200
        streamed = shim.request("POST", "/v1/chat/completions", {**CHAT, "stream": True})
        assert streamed.code == 200 and streamed.complete
        anthropic = shim.request("POST", "/v1/messages", {"model": "m", "max_tokens": 8, "messages": CHAT["messages"]})
        assert anthropic.code == 200
    labels = {"upstream": "default", "model": "fake-model-7B.Q4_K_M"}
    assert shim.metric("llamashim_prompt_tokens_total", source="cached", **labels) == 27
    assert shim.metric("llamashim_prompt_tokens_total", source="processed", **labels) == 9
    lines = [e for e in events if e.get("log_namespace") == "llamashim.access"]
    assert [e["cached"] for e in lines] == [9, 9, 9]
    assert " cached=9" in lines[0]["log_format"].format(**lines[0])
    status = json.loads(bytes(shim.request("GET", "/status.json").body))
    assert [u["prompt_cache"] for u in status["upstreams"]] == [0.75]
