"""The Anthropic Messages event encoder, read by the anthropic SDK's own types, accumulator and client."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic._streaming import SSEDecoder
from anthropic.types import Message
from anthropic.types.shared import ErrorResponse
from hypothesis import given
from hypothesis import strategies as st

from llamashim.dialects.anthropic.events import PING, SIGNATURE, MessagesEncoder, message_object, new_message_id
from llamashim.stream.items import Chunk, Done, Item, StreamError
from llamashim.stream.pipeline import StreamPipeline
from llamashim.stream.tools import ToolCallConformance
from tests.support import accumulate_message

JSON = dict[str, Any]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = "claude-sonnet-4-5-20250929"
MSG_ID = "msg_0123456789abcdef01234567"
USAGE = {"prompt_tokens": 120, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 100}}


# -- helpers ----------------------------------------------------------------------------------------------------


def chunk(content: str | None = None, reasoning: str | None = None, tools: list[JSON] | None = None,
          finish: str | None = None) -> Chunk:
    delta: JSON = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    if tools is not None:
        delta["tool_calls"] = tools
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return Chunk({"object": "chat.completion.chunk", "choices": [choice]})


def usage_chunk(usage: JSON = USAGE) -> Chunk:
    return Chunk({"object": "chat.completion.chunk", "choices": [], "usage": usage})


def call(index: int, args: str, call_id: str | None = None, name: str | None = None) -> JSON:
    fragment: JSON = {"index": index, "function": {"arguments": args}}
    if call_id is not None:
        fragment["id"] = call_id
        fragment["type"] = "function"
        fragment["function"]["name"] = name
    return fragment


def encode(items: list[Item], input_tokens: int = 42) -> tuple[MessagesEncoder, bytes]:
    """Run items through a fresh encoder one at a time (as separate upstream reads)."""
    enc = MessagesEncoder(MODEL, MSG_ID, input_tokens)
    return enc, b"".join(enc([item]) for item in items)


def frames(data: bytes) -> list[tuple[str | None, JSON]]:
    """The SSE frames as the SDK's own decoder splits them."""
    return [(sse.event, sse.json()) for sse in SSEDecoder().iter_bytes(iter([data]))]


def check_grammar(events: list[JSON]) -> None:
    """message_start first, one block open at a time with consecutive indexes, message_delta + message_stop last."""
    types = [e["type"] for e in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    open_index: int | None = None
    next_index = 0
    for event in events[1:-2]:
        kind = event["type"]
        assert kind in ("content_block_start", "content_block_delta", "content_block_stop"), kind
        if kind == "content_block_start":
            assert open_index is None, "a block opened before the previous one closed"
            assert event["index"] == next_index
            open_index, next_index = next_index, next_index + 1
        else:
            assert event["index"] == open_index
            if kind == "content_block_stop":
                open_index = None
    assert open_index is None, "a block was left open"


def accumulate(data: bytes) -> tuple[Message, list[JSON]]:
    """Validate every frame with the SDK's event types and fold them with the SDK's accumulator."""
    events = []
    for name, payload in frames(data):
        if name == "ping":
            continue
        assert name == payload["type"], "the SSE event name must be the payload's type"
        events.append(payload)
    check_grammar(events)
    return accumulate_message(events), events


def same(a: Message | JSON, b: Message | JSON) -> bool:
    """Equal as Anthropic messages (nulls and unset optional fields ignored)."""
    def norm(m: Message | JSON) -> JSON:
        return (m if isinstance(m, Message) else Message.model_validate(m)).model_dump(exclude_none=True)
    return norm(a) == norm(b)


def sdk_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", base_url="http://shim.test", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


REQUEST: JSON = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


# -- the headline cases -----------------------------------------------------------------------------------------


def test_text_stream() -> None:
    """A text answer: the documented event sequence, the SDK's final message, Anthropic-style cached usage."""
    enc, data = encode([chunk("Hel"), chunk("lo"), chunk(", world", finish="stop"), usage_chunk(), Done()])
    message, events = accumulate(data)
    assert [e["type"] for e in events] == ["message_start", "content_block_start", "content_block_delta",
                                           "content_block_delta", "content_block_delta", "content_block_stop",
                                           "message_delta", "message_stop"]
    start = events[0]["message"]
    assert start["usage"]["input_tokens"] == 42 and start["content"] == [] and start["stop_reason"] is None
    assert start["model"] == MODEL and start["id"] == MSG_ID
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello, world"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        20, 100, 7)
    assert same(message, enc.message)


def test_reasoning_then_text() -> None:
    """Reasoning becomes a thinking block, signed (signature_delta right before its stop), then a text block."""
    enc, data = encode([chunk(reasoning="Let me "), chunk(reasoning="think."), chunk("Answer."),
                        chunk(finish="stop"), usage_chunk(), Done()])
    message, events = accumulate(data)
    assert [b.type for b in message.content] == ["thinking", "text"]
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "Let me think." and thinking.signature == SIGNATURE
    assert message.content[1].text == "Answer."  # type: ignore[union-attr]
    stop0 = next(i for i, e in enumerate(events) if e["type"] == "content_block_stop")
    assert events[stop0 - 1]["delta"] == {"type": "signature_delta", "signature": SIGNATURE}
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert same(message, enc.message)


def test_parallel_tool_calls() -> None:
    """Two streamed calls become two tool_use blocks with parsed inputs; an upstream "stop" still says tool_use."""
    enc, data = encode([
        chunk("Checking both."),
        chunk(tools=[call(0, '{"city": ', "call_a", "get_weather")]),
        chunk(tools=[call(0, '"Paris"}')]),
        chunk(tools=[call(1, "", "call_b", "get_time")]),
        chunk(tools=[call(1, '{"tz": "CET"}')]),
        chunk(finish="stop"), usage_chunk(), Done(),
    ])
    message, events = accumulate(data)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    first, second = message.content[1], message.content[2]
    assert first.type == "tool_use" and (first.id, first.name, first.input) == ("call_a", "get_weather",
                                                                                {"city": "Paris"})
    assert second.type == "tool_use" and (second.id, second.name, second.input) == ("call_b", "get_time",
                                                                                    {"tz": "CET"})
    assert message.stop_reason == "tool_use"
    assert events[4]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    assert same(message, enc.message)


def test_tool_call_without_arguments() -> None:
    """A call with no arguments still gives input {} — in the SDK's accumulation and in the stream's JSON."""
    enc, data = encode([chunk(tools=[call(0, "", "call_x", "list_files")]), chunk(finish="tool_calls"), Done()])
    message, events = accumulate(data)
    block = message.content[0]
    assert block.type == "tool_use" and block.input == {} and message.stop_reason == "tool_use"
    partial = "".join(e["delta"]["partial_json"] for e in events
                      if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta")
    assert json.loads(partial) == {}
    assert enc.message["content"][0]["input"] == {}


def test_length_finish() -> None:
    """finish_reason length → stop_reason max_tokens (even mid tool call)."""
    _, data = encode([chunk("It was a dark and"), chunk(finish="length"), Done()])
    assert accumulate(data)[0].stop_reason == "max_tokens"
    _, data = encode([chunk(tools=[call(0, '{"a": 1}', "c", "f")]), chunk(finish="length"), Done()])
    assert accumulate(data)[0].stop_reason == "max_tokens"


def test_mid_stream_error() -> None:
    """A terminal error is one SDK-valid ``event: error`` frame, the last thing written; later items are ignored."""
    enc = MessagesEncoder(MODEL, MSG_ID)
    data = enc([chunk("partial")])
    data += enc([StreamError("upstream went away", "upstream_error", 502), chunk(" more"), Done()])
    data += enc([chunk(" and more")])
    name, payload = frames(data)[-1]
    assert name == "error"
    assert ErrorResponse.model_validate(payload).error.type == "api_error"
    assert payload == {"type": "error", "error": {"type": "api_error", "message": "upstream went away"}}
    assert data.endswith(b'"message":"upstream went away"}}\n\n')
    assert b"message_stop" not in data and b"more" not in data
    assert enc.message["stop_reason"] is None and enc.message["content"][0]["text"] == "partial"
    assert enc.on_error(StreamError("again")) == b"" and enc.on_done() == b""


def test_sdk_stream_reads_it_end_to_end() -> None:
    """The SDK's MessageStream (client.messages.stream) gets the same final message and text; an error raises."""
    enc, data = encode([chunk(reasoning="hmm"), chunk("Hi "), chunk("there"), chunk(finish="stop"), usage_chunk(),
                        Done()])
    first, rest = data.split(b"\n\n", 1)
    body = PING + first + b"\n\n" + PING + rest  # heartbeats before and between events

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with sdk_client(handler).messages.stream(**REQUEST) as stream:
        final = stream.get_final_message()
        assert stream.get_final_text() == "Hi there"
    assert same(final, enc.message)

    bad = MessagesEncoder(MODEL, MSG_ID)
    broken = bad([chunk("Hi")]) + bad([StreamError("request (9 tokens) exceeds the available context size "
                                                   "(4 tokens), try increasing it", "exceed_context_size_error", 400)])
    client = sdk_client(lambda _: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=broken))
    with pytest.raises(anthropic.APIStatusError, match="prompt is too long: 9 tokens > 4 maximum"):
        with client.messages.stream(**REQUEST) as stream:
            stream.get_final_message()


# -- the non-streamed message -----------------------------------------------------------------------------------


def reply(message: JSON, finish: str, usage: JSON = USAGE) -> JSON:
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage}


def test_message_object_equals_streamed_message() -> None:
    """A non-streamed reply gives exactly the message the stream of the same answer accumulates to."""
    enc, data = encode([
        chunk(reasoning="Plan."), chunk("Sure"), chunk(", calling."),
        chunk(tools=[call(0, '{"q": ', "call_1", "search")]), chunk(tools=[call(0, '"llamas"}')]),
        chunk(tools=[call(1, "", "call_2", "noop")]),
        chunk(finish="tool_calls"), usage_chunk(), Done(),
    ])
    whole = reply({"role": "assistant", "reasoning_content": "Plan.", "content": "Sure, calling.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "llamas"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
    ]}, "tool_calls")
    built = message_object(whole, MODEL, MSG_ID)
    assert built == enc.message
    assert same(built, accumulate(data)[0])
    assert Message.model_validate(built).stop_reason == "tool_use"


def test_message_object_real_reply_and_sdk_create() -> None:
    """llama-server's real tool reply → an SDK-valid Message, which client.messages.create parses."""
    whole = json.loads((FIXTURES / "real_tool_reply.json").read_text())
    built = message_object(whole, MODEL, MSG_ID)
    assert built["content"][-1]["type"] == "tool_use" and built["content"][-1]["input"] == {"city": "Paris"}
    assert built["stop_reason"] == "tool_use" and built["usage"]["input_tokens"] == 335
    client = sdk_client(lambda _: httpx2.Response(200, json=built))
    assert same(client.messages.create(**REQUEST), built)


def test_message_object_bad_arguments_and_defaults() -> None:
    """Invalid or non-object tool arguments give input {}; no usage and no finish_reason still give a message."""
    whole = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": "{not json"}},
        {"id": "b", "function": {"name": "g", "arguments": "[1, 2]"}},
    ]}}]}
    built = message_object(whole, MODEL, MSG_ID)
    assert [b["input"] for b in built["content"]] == [{}, {}]
    assert built["usage"] == {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                              "output_tokens": 0}
    assert Message.model_validate(built).stop_reason == "tool_use"
    empty = message_object({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]}, MODEL, MSG_ID)
    assert empty["content"] == [] and empty["stop_reason"] == "end_turn"


# -- details ----------------------------------------------------------------------------------------------------


def test_real_llama_server_stream_through_pipeline() -> None:
    """llama-server's real tool-call stream, through the conformance stage and the encoder, reads as tool_use."""
    enc = MessagesEncoder(MODEL, new_message_id())
    pipeline = StreamPipeline([ToolCallConformance(include_usage=True)], enc)
    raw = (FIXTURES / "real_tool_stream.sse").read_bytes()
    data = b"".join(pipeline.feed(raw[i : i + 97]) for i in range(0, len(raw), 97)) + pipeline.finish()
    message, _ = accumulate(data)
    block = message.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather" and isinstance(block.input, dict)
    assert message.stop_reason == "tool_use"
    # the fixture has timings but no usage chunk; the stage's zero placeholder must not wipe the timings' counts
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        1, 334, 31)
    assert same(message, enc.message)


def test_message_start_is_lazy_and_once() -> None:
    """message_start comes before the first block or at the end, exactly once; start() sends it early."""
    enc = MessagesEncoder(MODEL, MSG_ID, 7)
    assert enc.start().startswith(b"event: message_start\n") and enc.start() == b""
    assert b"message_start" not in enc([chunk("x")])
    _, data = encode([chunk(finish="stop"), Done()])
    message, events = accumulate(data)
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert message.content == [] and message.usage.input_tokens == 42


def test_text_after_tool_call_opens_a_new_block() -> None:
    """Text after a tool call closes the tool block and opens a new text block at the next index."""
    _, data = encode([chunk(tools=[call(0, "{}", "c", "f")]), chunk("after"), chunk(finish="tool_calls"), Done()])
    message, _ = accumulate(data)
    assert [b.type for b in message.content] == ["tool_use", "text"]


def test_late_fragment_reaches_the_message() -> None:
    """A fragment for a call whose block already closed is kept in the message (and nothing breaks)."""
    enc, data = encode([chunk(tools=[call(0, '{"a":', "c0", "f")]), chunk(tools=[call(1, "{}", "c1", "g")]),
                        chunk(tools=[call(0, " 1}")]), chunk(finish="tool_calls"), Done()])
    assert enc.message["content"][0]["input"] == {"a": 1}
    assert accumulate(data)[0].stop_reason == "tool_use"


def test_ping_and_frame_format() -> None:
    """The encoder's keep-alive is the documented ping, after message_start opened the stream; every frame is
    ``event: <type>\\ndata: <compact json>\\n\\n``."""
    _, data = encode([chunk("a"), chunk(finish="stop"), Done()])
    waiting = MessagesEncoder("m", "msg_1")
    assert waiting.opening().startswith(b"event: message_start\n")
    assert waiting.keepalive() == PING == b'event: ping\ndata: {"type":"ping"}\n\n'
    for frame in data.split(b"\n\n")[:-1]:
        event, payload = frame.split(b"\n")
        assert payload.startswith(b"data: {") and b'": ' not in payload
        assert event == b"event: " + json.loads(payload[6:])["type"].encode()
    assert data.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_usage_without_cache_and_message_delta_shape() -> None:
    """message_delta carries the cumulative usage the SDK reads: output_tokens, input_tokens, cache reads."""
    _, data = encode([chunk("a", finish="stop"), usage_chunk({"prompt_tokens": 9, "completion_tokens": 1}), Done()])
    message, events = accumulate(data)
    assert events[-2]["usage"] == {"input_tokens": 9, "cache_read_input_tokens": 0, "output_tokens": 1}
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 1)


@given(st.lists(st.text(min_size=1), min_size=1, max_size=30))
def test_any_text_split_accumulates_to_that_text(parts: list[str]) -> None:
    """Property: any text, split into any chunks, accumulates (in the SDK and in .message) to exactly that text."""
    enc, data = encode([*(chunk(p) for p in parts), chunk(finish="stop"), Done()])
    message, _ = accumulate(data)
    assert message.content[0].text == "".join(parts)  # type: ignore[union-attr]
    assert enc.message["content"][0]["text"] == "".join(parts)
