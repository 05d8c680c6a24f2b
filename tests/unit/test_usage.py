"""Token usage: the one ``Usage`` value, and the pipeline learning it from every stream (native, synthesized, Ollama's
raw completion) whether or not the client asked for usage in its own stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llamashim import jsonutil
from llamashim.dialects.ollama.completion import CompletionStream, completion_usage
from llamashim.dialects.openai_chat.dialect import OpenAIChatEncoder
from llamashim.stream.deltas import deltas, reply_deltas
from llamashim.stream.items import Chunk
from llamashim.stream.pipeline import StreamPipeline
from llamashim.stream.reasoning import ReasoningRouter
from llamashim.stream.tools import ToolCallConformance, synthesize_items
from llamashim.stream.usage import Usage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TIMINGS = {"cache_n": 334, "prompt_n": 1, "prompt_ms": 16.8, "predicted_n": 31, "predicted_ms": 296.0}


def pipeline(include_usage: bool) -> StreamPipeline:
    return StreamPipeline([ToolCallConformance(include_usage), ReasoningRouter("events")], OpenAIChatEncoder("m", 0))


def chunks(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]


def test_usage_from_timings_counts_the_cached_prompt() -> None:
    """llama-server's timings: the prompt is prompt_n + cache_n, cache_n the cached part; no timings, no usage."""
    assert Usage.from_timings(TIMINGS) == Usage(335, 31, 334, 16.8, 296.0)
    assert Usage.from_timings({"prompt_n": 4, "predicted_n": 2}) == Usage(4, 2)
    assert Usage.from_timings(None) is None and Usage.from_timings({}) is None


def test_usage_from_openai_takes_the_cache_and_durations_it_lacks_from_timings() -> None:
    """An OpenAI usage object gives the counts; its cached_tokens win over cache_n; durations come from timings."""
    usage = {"prompt_tokens": 34, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 33}}
    assert Usage.from_openai(usage) == Usage(34, 5, 33)
    assert Usage.from_openai({"prompt_tokens": 3, "completion_tokens": 1}, TIMINGS) == Usage(3, 1, 334, 16.8, 296.0)
    assert Usage.from_openai({}) is None and Usage.from_openai(None, TIMINGS) is None


def test_usage_of_a_chunk_prefers_usage_to_timings_and_round_trips_to_openai() -> None:
    """Usage.of reads usage first, timings second; to_openai is OpenAI's object with total and cached tokens."""
    assert Usage.of({"usage": {"prompt_tokens": 9, "completion_tokens": 1}, "timings": TIMINGS}) == Usage(
        9, 1, 334, 16.8, 296.0)
    assert Usage.of({"timings": TIMINGS}) == Usage.from_timings(TIMINGS)
    assert Usage.of({"choices": []}) is None
    assert Usage(335, 31, 334).to_openai() == {"prompt_tokens": 335, "completion_tokens": 31, "total_tokens": 366,
                                               "prompt_tokens_details": {"cached_tokens": 334}}
    assert Usage(2, 1).to_openai() == {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}


def test_a_native_stream_without_include_usage_is_counted_from_its_timings() -> None:
    """A real llama-server stream whose client asked no usage: the pipeline knows its tokens from the last chunk's
    timings, the client gets no usage chunk, and every byte passes unchanged."""
    raw = (FIXTURES / "real_tool_stream.sse").read_bytes()
    pipe = pipeline(include_usage=False)
    out = b"".join(pipe.feed(raw[i : i + 13]) for i in range(0, len(raw), 13)) + pipe.finish()
    assert out == raw
    assert not any("usage" in c for c in chunks(out))
    assert pipe.usage == Usage(335, 31, 334, 16.824, 295.976)


def test_a_native_stream_with_include_usage_is_counted_from_its_usage_chunk() -> None:
    """A real stream that asked for usage: the pipeline's usage is the usage chunk's (cached tokens included)."""
    raw = (FIXTURES / "real_chat_stream.sse").read_bytes()
    pipe = pipeline(include_usage=True)
    assert pipe.feed(raw) + pipe.finish() == raw
    assert pipe.usage == Usage(34, 5, 33, 9.434, 40.07)


def test_a_stream_without_usage_or_timings_is_not_counted() -> None:
    """An upstream that states nothing leaves the usage unknown (None), not zero, even where conformance sends the
    client a zero usage chunk it asked for."""
    pipe = pipeline(include_usage=True)
    frames = [{"id": "c", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}]
    data = b"".join(b"data: " + jsonutil.dumps(f) + b"\n\n" for f in frames) + b"data: [DONE]\n\n"
    out = pipe.feed(data) + pipe.finish()
    assert chunks(out)[-1]["usage"]["total_tokens"] == 0
    assert pipe.usage is None


def _reply(**extra: Any) -> dict[str, Any]:
    return {"id": "x", "created": 1, "model": "m", **extra,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello"}}]}


def test_a_synthesized_stream_without_include_usage_is_counted() -> None:
    """Synthesis for a client that asked no usage: no usage chunk, the reply's timings on the last chunk (as
    llama-server's own stream has them), and the pipeline knows the tokens."""
    reply = _reply(usage={"prompt_tokens": 335, "completion_tokens": 31}, timings=TIMINGS)
    pipe = pipeline(include_usage=False)
    out = pipe.push(synthesize_items(reply, 2, include_usage=False))
    values = chunks(out)
    assert not any("usage" in v for v in values)
    assert values[-1]["timings"] == TIMINGS and values[-1]["choices"][0]["finish_reason"] == "stop"
    assert pipe.usage == Usage(335, 31, 334, 16.8, 296.0)


def test_a_synthesized_stream_with_include_usage_sends_and_counts_the_replys_usage() -> None:
    """Synthesis for a client that asked usage: one usage chunk with the reply's usage, the same usage counted;
    a reply with timings only gets its usage from them."""
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    pipe = pipeline(include_usage=True)
    values = chunks(pipe.push(synthesize_items(_reply(usage=usage), 50, include_usage=True)))
    assert [v["usage"] for v in values if "usage" in v] == [usage]
    assert pipe.usage == Usage(10, 20)
    pipe = pipeline(include_usage=True)
    values = chunks(pipe.push(synthesize_items(_reply(timings=TIMINGS), 50, include_usage=True)))
    assert values[-1]["usage"] == Usage.from_timings(TIMINGS).to_openai()  # type: ignore[union-attr]
    assert pipe.usage == Usage.from_timings(TIMINGS)


def test_the_other_dialects_encoders_see_the_timings_as_usage() -> None:
    """The typed deltas of a chunk with timings (every llama-server stream's last) and of a reply carry its Usage."""
    last = Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "timings": TIMINGS})
    assert deltas(last)[-1] == Usage.from_timings(TIMINGS)
    assert reply_deltas(_reply(timings=TIMINGS))[-1] == Usage.from_timings(TIMINGS)


def test_an_ollama_completion_stream_is_counted() -> None:
    """Ollama's raw/infill stream (llama-server's /completion SSE) knows its Usage once the stop event came."""
    stream = CompletionStream("m", lambda: 0.0)
    events = [{"content": "a", "stop": False},
              {"content": "", "stop": True, "stop_type": "eos", "tokens_evaluated": 335, "tokens_predicted": 31,
               "timings": TIMINGS}]
    data = b"".join(b"data: " + jsonutil.dumps(e) + b"\n\n" for e in events)
    stream.feed(data[:40])
    assert stream.usage is None
    stream.feed(data[40:])
    assert stream.ended and stream.usage == Usage(335, 31, 334, 16.8, 296.0)
    assert completion_usage({"tokens_evaluated": 7, "tokens_predicted": 2}) == Usage(7, 2)
