"""The Responses event encoder, checked with the openai SDK's own event types and stream accumulator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseOutputMessage, ResponseStreamEvent
from pydantic import TypeAdapter

from llamashim.dialects.responses.events import (
    ResponsesEncoder,
    error_body,
    previous_response_not_found,
    response_object,
)
from llamashim.dialects.responses.routes import new_response_id, upstream_tag_of, with_upstream_tag
from llamashim.dialects.responses.translate import ResponsesRequest, decrypt_reasoning, request_to_chat
from llamashim.errors import ShimError
from llamashim.stream.items import Chunk, Done, Item, StreamError, Thinking
from llamashim.stream.sse import SSEEvent, SSEParser
from llamashim.upstream.choice import upstream_tag
from tests.support import accumulate_response as accumulate

EVENT = TypeAdapter(ResponseStreamEvent)
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 4}}
TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    {"type": "custom", "name": "apply_patch", "description": "Patch files."},
    {"type": "local_shell"},
    {"type": "namespace", "name": "agents", "description": "sub-agents",
     "tools": [{"type": "function", "name": "spawn"}]},
]


def quiet(*_args: Any, **_fields: Any) -> None:
    return None


def make_request(**body: Any) -> ResponsesRequest:
    return request_to_chat({"model": "m", "input": "hi", "stream": True, **body}, None, quiet)


class Ids:
    """A deterministic id factory: ``msg_1``, ``fc_2``, ..."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"


def encoder(req: ResponsesRequest | None = None) -> ResponsesEncoder:
    return ResponsesEncoder(req or make_request(), "resp_1", 1_700_000_000, Ids())


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> Chunk:
    return Chunk({"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta or {}, "finish_reason": finish}
    ]})


def usage_chunk() -> Chunk:
    return Chunk({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": USAGE})


def call(index: int, args: str, call_id: str | None = None, name: str | None = None) -> Chunk:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id:
        fragment.update(id=call_id, type="function")
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


def run(items: list[Item], enc: ResponsesEncoder | None = None) -> tuple[ResponsesEncoder, bytes]:
    """Feed the items one per call, as the relay does per upstream read."""
    enc = enc or encoder()
    return enc, b"".join(enc([item]) for item in items)


def parse(data: bytes) -> list[dict[str, Any]]:
    """The SSE frames' data objects; each frame is ``event: <type>`` + ``data: <json>`` naming the same type."""
    parser = SSEParser()
    frames = parser.feed(data) + parser.finish()
    out = []
    for frame in frames:
        assert isinstance(frame, SSEEvent)
        value = json.loads(frame.data)
        assert frame.event == value["type"] and frame.raw == f"event: {frame.event}\ndata: {frame.data}\n\n".encode()
        out.append(value)
    assert b"".join(f.raw for f in frames if isinstance(f, SSEEvent)) == data
    return out


def validated(events: list[dict[str, Any]]) -> list[Any]:
    """Every event validates as one of the SDK's stream event types; sequence numbers are 0..n-1."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return [EVENT.validate_python(e) for e in events]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


TEXT_STREAM: list[Item] = [
    chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
    chunk(finish="stop"), usage_chunk(), Done(),
]


# -- text -------------------------------------------------------------------------------------------------------------


def test_text_answer_event_sequence() -> None:
    """A text answer is created/in_progress, one message item with its part and deltas, then completed."""
    enc, data = run(TEXT_STREAM)
    events = parse(data)
    assert types(events) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["object"] == "response"
    assert events[2]["item"] == {"id": "msg_1", "type": "message", "status": "in_progress", "content": [],
                                 "role": "assistant"}
    assert events[3]["part"] == {"type": "output_text", "text": "", "annotations": []}
    assert events[4] | {"sequence_number": 0} == {
        "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
        "delta": "Hel", "logprobs": [], "sequence_number": 0,
    }
    assert events[6]["text"] == "Hello" and events[8]["item"]["status"] == "completed"
    final = accumulate(events)
    assert final.output_text == "Hello" and final.status == "completed" and final.id == "resp_1"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (12, 5, 17)
    assert final.usage.input_tokens_details.cached_tokens == 4
    assert final.usage.output_tokens_details.reasoning_tokens == 0
    assert enc.response == events[-1]["response"]


def test_completed_response_echoes_the_request() -> None:
    """The final response object echoes model, instructions, tools, sampling, text, reasoning, metadata, store."""
    req = request_to_chat({
        "model": "qwen", "input": "hi", "stream": True, "instructions": "be brief", "temperature": 0.5, "top_p": 0.9,
        "max_output_tokens": 99, "parallel_tool_calls": False, "metadata": {"a": "b"}, "store": False,
        "previous_response_id": "resp_0", "tools": TOOLS[:1], "tool_choice": "required",
        "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "low"},
    }, [], quiet)
    enc, data = run(TEXT_STREAM, encoder(req))
    final = Response.model_validate(enc.response)
    assert (final.model, final.instructions, final.temperature, final.top_p) == ("qwen", "be brief", 0.5, 0.9)
    assert (final.max_output_tokens, final.parallel_tool_calls, final.metadata) == (99, False, {"a": "b"})
    assert (final.previous_response_id, final.tool_choice) == ("resp_0", "required")
    assert final.text is not None and final.text.format is not None and final.text.format.type == "json_object"
    assert final.reasoning is not None and final.reasoning.effort == "low"
    assert [t.type for t in final.tools] == ["function"] and final.created_at == 1_700_000_000
    assert enc.response is not None and enc.response["error"] is None and enc.response["incomplete_details"] is None
    assert enc.response["store"] is False  # OpenAI returns it; the SDK's model has no field for it


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1), min_size=1, max_size=12))
def test_any_text_split_accumulates_exactly(pieces: list[str]) -> None:
    """However the answer is split into chunks, the SDK's final response has exactly that text."""
    _, data = run([*(chunk({"content": p}) for p in pieces), chunk(finish="stop"), Done()])
    assert accumulate(parse(data)).output_text == "".join(pieces)


# -- reasoning --------------------------------------------------------------------------------------------------------


def test_reasoning_then_text() -> None:
    """Reasoning is a reasoning item (reasoning_text content, our encrypted blob on request) before the message."""
    req = make_request(include=["reasoning.encrypted_content"])
    enc, data = run([
        chunk({"reasoning_content": "Let me "}), chunk({"reasoning_content": "think."}), chunk({"content": "42"}),
        chunk(finish="stop"), usage_chunk(), Done(),
    ], encoder(req))
    events = parse(data)
    assert types(events)[2:10] == [
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done", "response.output_item.added",
    ]
    assert events[2]["item"] == {"id": "rs_1", "type": "reasoning", "summary": []}
    assert events[3]["part"] == {"type": "reasoning_text", "text": ""}
    assert events[6]["text"] == "Let me think."
    final = accumulate(events)
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "Let me think." and reasoning.summary == []
    assert decrypt_reasoning(reasoning.encrypted_content) == "Let me think."
    assert message.type == "message" and final.output_text == "42"
    assert events[9]["output_index"] == 1


def test_no_encrypted_content_unless_asked() -> None:
    """Without include: ["reasoning.encrypted_content"] the reasoning item carries no blob."""
    enc, _ = run([chunk({"reasoning_content": "hm"}), chunk(finish="stop"), Done()])
    assert enc.response is not None and "encrypted_content" not in enc.response["output"][0]


def test_thinking_items_count_as_reasoning() -> None:
    """Thinking items (the events/both reasoning modes) are reasoning too."""
    enc, data = run([Thinking("hmm"), chunk({"content": "a"}), chunk(finish="stop"), Done()])
    assert [i.type for i in accumulate(parse(data)).output] == ["reasoning", "message"]


# -- tool calls -------------------------------------------------------------------------------------------------------


def test_parallel_function_calls() -> None:
    """Each tool call is a function_call item (call_id = upstream id) with argument deltas, closed in order."""
    enc, data = run([
        chunk({"role": "assistant", "content": None}),
        call(0, "", "call_a", "get_weather"), call(0, '{"city":'), call(0, '"Paris"}'),
        call(1, '{"city":"Oslo"}', "call_b", "get_weather"),
        chunk(finish="tool_calls"), usage_chunk(), Done(),
    ], encoder(make_request(tools=TOOLS)))
    events = parse(data)
    assert types(events)[2:] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]
    assert events[2]["item"] == {"id": "fc_1", "type": "function_call", "status": "in_progress", "arguments": "",
                                 "call_id": "call_a", "name": "get_weather"}
    final = accumulate(events)
    calls = [(o.type, o.call_id, o.name, json.loads(o.arguments), o.status) for o in final.output]
    assert calls == [
        ("function_call", "call_a", "get_weather", {"city": "Paris"}, "completed"),
        ("function_call", "call_b", "get_weather", {"city": "Oslo"}, "completed"),
    ]
    assert final.status == "completed"


def test_text_then_tool_call_items_in_order() -> None:
    """Text before a tool call is closed (message done) before the call's item is added."""
    _, data = run([chunk({"content": "Checking."}), call(0, "{}", "call_a", "get_weather"),
                   chunk(finish="tool_calls"), Done()], encoder(make_request(tools=TOOLS)))
    events = parse(data)
    added = [i for i, e in enumerate(events) if e["type"] == "response.output_item.added"]
    done = [i for i, e in enumerate(events) if e["type"] == "response.output_item.done"]
    assert len(added) == 2 and done[0] < added[1]
    assert [o.type for o in accumulate(events).output] == ["message", "function_call"]


def test_custom_tool_call() -> None:
    """A call to a custom tool is a custom_tool_call item whose input is the decoded "input" argument."""
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"
    args = json.dumps({"input": patch})
    _, data = run([call(0, args[:10], "call_p", "apply_patch"), call(0, args[10:]), chunk(finish="tool_calls"),
                   Done()], encoder(make_request(tools=TOOLS)))
    events = parse(data)
    assert types(events)[2:] == [
        "response.output_item.added", "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
        "response.output_item.done", "response.completed",
    ]
    assert events[2]["item"] == {"id": "ctc_1", "type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch",
                                 "input": ""}
    assert events[3]["delta"] == patch and events[4]["input"] == patch
    (item,) = accumulate(events).output
    assert (item.type, item.call_id, item.name, item.input) == ("custom_tool_call", "call_p", "apply_patch", patch)


def test_local_shell_call() -> None:
    """A call to local_shell is a local_shell_call item with an exec action."""
    args = json.dumps({"command": ["ls", "-la"], "workdir": "/tmp", "timeout_ms": 1000})
    _, data = run([call(0, args, "call_s", "local_shell"), chunk(finish="tool_calls"), Done()],
                  encoder(make_request(tools=TOOLS)))
    events = parse(data)
    (item,) = accumulate(events).output
    assert item.type == "local_shell_call" and item.call_id == "call_s" and item.status == "completed"
    assert (item.action.command, item.action.working_directory, item.action.timeout_ms) == (["ls", "-la"], "/tmp", 1000)


def test_namespaced_function_call() -> None:
    """A call to a namespace's function carries the namespace and the client's own tool name."""
    _, data = run([call(0, "{}", "call_n", "spawn"), chunk(finish="tool_calls"), Done()],
                  encoder(make_request(tools=TOOLS)))
    (item,) = accumulate(parse(data)).output
    assert (item.type, item.name, item.namespace) == ("function_call", "spawn", "agents")


def test_late_interleaved_fragment_reaches_the_final_response() -> None:
    """A fragment for a call already closed sends no event but is in the completed response."""
    enc, data = run([call(0, '{"a":', "c0", "get_weather"), call(1, "{}", "c1", "get_weather"), call(0, "1}"),
                     chunk(finish="tool_calls"), Done()], encoder(make_request(tools=TOOLS)))
    assert enc.response is not None
    assert [o["arguments"] for o in enc.response["output"]] == ['{"a":1}', "{}"]
    validated(parse(data))


# -- endings ----------------------------------------------------------------------------------------------------------


def test_length_finish_is_incomplete() -> None:
    """finish_reason length ends with response.incomplete (reason max_output_tokens), the message incomplete."""
    enc, data = run([chunk({"content": "Once upon"}), chunk(finish="length"), usage_chunk(), Done()])
    events = parse(data)
    validated(events)
    assert events[-1]["type"] == "response.incomplete" and "response.completed" not in types(events)
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.output_text == "Once upon"
    assert isinstance(final.output[0], ResponseOutputMessage) and final.output[0].status == "incomplete"
    assert final.usage is not None and final.usage.output_tokens == 5


def test_mid_stream_error_fails_the_response() -> None:
    """An error after the start is an error event then response.failed, and nothing after."""
    enc, data = run([chunk({"content": "par"}), StreamError("upstream went away", "upstream_error", 502)])
    events = parse(data)
    validated(events)
    assert types(events)[-2:] == ["error", "response.failed"]
    assert events[-2] == {"type": "error", "code": "server_error", "message": "upstream went away", "param": None,
                          "sequence_number": len(events) - 2}
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert failed.error.message == "upstream went away" and failed.output_text == "par"
    assert isinstance(failed.output[0], ResponseOutputMessage) and failed.output[0].status == "incomplete"
    assert enc([chunk({"content": "more"}), Done()]) == b"" and enc.response == events[-1]["response"]


def test_error_before_any_output_still_creates_the_response() -> None:
    """An error as the very first item is still preceded by response.created (the SDK requires it)."""
    _, data = run([StreamError("boom")])
    events = parse(data)
    assert types(events) == ["response.created", "response.in_progress", "error", "response.failed"]
    validated(events)


def test_context_errors_use_openais_code() -> None:
    """llama-server's context-size error is context_length_exceeded (Codex acts on that code)."""
    enc, data = run([StreamError("too long", "exceed_context_size_error", 400)])
    assert parse(data)[-2]["code"] == "context_length_exceeded"
    assert enc.response is not None and enc.response["error"]["code"] == "context_length_exceeded"


def test_done_without_finish_completes() -> None:
    """A stream that ends without a finish_reason still closes its item and completes."""
    _, data = run([chunk({"content": "x"}), Done()])
    assert accumulate(parse(data)).output_text == "x"


# -- non-streamed -----------------------------------------------------------------------------------------------------


def test_non_streamed_object_equals_the_streamed_one() -> None:
    """response_object() of a chat.completion is the streamed final response of the same answer."""
    req = make_request(tools=TOOLS, include=["reasoning.encrypted_content"])
    enc, data = run([
        chunk({"reasoning_content": "think"}), chunk({"content": "Sure."}),
        call(0, '{"city":"Paris"}', "call_a", "get_weather"), call(1, '{"input":"P"}', "call_b", "apply_patch"),
        chunk(finish="tool_calls"), usage_chunk(), Done(),
    ], encoder(req))
    reply = {"id": "x", "object": "chat.completion", "usage": USAGE, "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Sure.", "reasoning_content": "think", "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input":"P"}'}},
            ],
        },
    }]}
    body = response_object(req, reply, "resp_1", 1_700_000_000, Ids())
    assert body == enc.response
    assert body["status"] == "completed" and "output_text" not in body
    parsed = Response.model_validate(body)
    assert [o.type for o in parsed.output] == ["reasoning", "message", "function_call", "custom_tool_call"]
    streamed = accumulate(parse(data)).model_dump(exclude_none=True)
    for item in streamed["output"]:  # the SDK's parsed extras (parsed_arguments, content[].parsed)
        item.pop("parsed_arguments", None)
        for part in item.get("content") or ():
            part.pop("parsed", None)
    assert streamed == parsed.model_dump(exclude_none=True)


def test_non_streamed_length_is_incomplete() -> None:
    """A non-streamed reply cut at the token limit is an incomplete response."""
    reply = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "ab"}}]}
    body = response_object(make_request(), reply, "resp_2", 1, Ids())
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"] is None and Response.model_validate(body).output_text == "ab"


# -- errors before the stream -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (ShimError(400, "bad input"), {"message": "bad input", "type": "invalid_request_error", "code": None,
                                       "param": None}),
        (ShimError(400, "too long", "exceed_context_size_error"),
         {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded", "param": None}),
        (ShimError(429, "slow down"), {"message": "slow down", "type": "rate_limit_error",
                                       "code": "rate_limit_exceeded", "param": None}),
        (previous_response_not_found("resp_x"),
         {"message": "Previous response with id 'resp_x' not found.", "type": "invalid_request_error",
          "code": "previous_response_not_found", "param": "previous_response_id"}),
    ],
)
def test_error_body(err: ShimError, expected: dict[str, Any]) -> None:
    """Errors before the stream are OpenAI's {"error": {message, type, code, param}} (code a string or null)."""
    assert json.loads(error_body(err)) == {"error": expected}


def test_previous_response_not_found_is_a_404() -> None:
    """An unknown previous_response_id is a 404 with OpenAI's code."""
    err = previous_response_not_found("resp_x")
    assert (err.status, err.code) == (404, "previous_response_not_found")


def test_a_response_id_carries_the_tag_of_its_upstream() -> None:
    """A new id has no tag; tagged, it carries the upstream's (a failover's replaces it) and reads back; an id minted
    before ids carried one, or not ours, reads as none."""
    untagged = new_response_id()
    assert upstream_tag_of(untagged) is None and len(untagged) == 37
    tagged = with_upstream_tag(untagged, upstream_tag("a"))
    assert tagged.startswith(untagged) and upstream_tag_of(tagged) == upstream_tag("a")
    again = with_upstream_tag(tagged, upstream_tag("b"))
    assert again[:37] == untagged and upstream_tag_of(again) == upstream_tag("b")
    for other in ("resp_" + "g" * 40, "msg_" + "0" * 40, "resp_" + "0" * 39, "resp_" + "0" * 41, 42, None):
        assert upstream_tag_of(other) is None
