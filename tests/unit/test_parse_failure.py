"""llama-server's chat-parse failure: recognised by its message, its text recovered and rescued."""

from __future__ import annotations

import json
from typing import Any

from llamashim.stream.items import Chunk, Done, StreamError
from llamashim.stream.parse_failure import (
    ParseFailure,
    ParseFailureRecovery,
    from_error_body,
    from_stream_error,
    known_text,
    parse_failure,
    raw_completion_body,
    recovered_reply,
)

TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def ids() -> Any:
    n = iter(range(100))
    return lambda: f"call_{next(n)}"


def test_the_message_with_pos_and_text_is_recognised() -> None:
    """"Failed to parse input at pos N: TEXT" gives N and TEXT exactly (newlines included), also after "got
    exception: "."""
    assert parse_failure(f"Failed to parse input at pos 0: {CALL}") == ParseFailure(0, CALL)
    assert parse_failure("got exception: Failed to parse input at pos 12: a\nb") == ParseFailure(12, "a\nb")
    assert parse_failure("Failed to parse input at pos 4209: ") == ParseFailure(4209, "")


def test_the_messages_without_text_are_recognised() -> None:
    """The oldest builds' "… at pos N" and the newest builds' "does not match the expected … format" carry no text."""
    assert parse_failure("Failed to parse input at pos 7") == ParseFailure(7, None)
    assert parse_failure("The model produced output that does not match the expected peg-native format") == (
        ParseFailure(None, None))


def test_other_errors_are_not_parse_failures() -> None:
    """Other 500s, other statuses and other mid-stream errors are not recognised."""
    body = json.dumps({"error": {"code": 500, "message": "fake internal error", "type": "server_error"}}).encode()
    assert from_error_body(500, body) is None
    failed = json.dumps({"error": {"code": 500, "message": "Failed to parse input at pos 0: x"}}).encode()
    assert from_error_body(500, failed) == ParseFailure(0, "x")
    assert from_error_body(400, failed) is None
    assert from_error_body(500, b"not json") is None
    assert from_stream_error(StreamError("Failed to parse input at pos 0: x", "server_error", 500)) is not None
    assert from_stream_error(StreamError("upstream closed the stream", "upstream_error", 502)) is None
    assert parse_failure("Failed to parse messages: bad role") is None


def test_a_reply_with_a_hermes_call_becomes_tool_calls() -> None:
    """Recovered text holding a Hermes call of an offered tool: a chat.completion with that call, finish_reason
    tool_calls, the prose as content."""
    reply = recovered_reply("Let me check.\n" + CALL, TOOLS, model="m", created=1, new_id=ids())
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_text_without_a_call_stays_content() -> None:
    """Recovered text with no call (or a call of a tool not offered) is content, finish_reason stop."""
    for tools in (TOOLS, []):
        text = "It is sunny." if tools else CALL
        reply = recovered_reply(text, tools, model="m", created=1)
        assert reply["choices"][0] == {"finish_reason": "stop", "index": 0,
                                       "message": {"role": "assistant", "content": text}}


def test_what_is_known_and_what_must_be_asked_again() -> None:
    """The whole text (pos 0) is answered from; a tail after pos > 0 only when it holds a call; otherwise (no text,
    or a tail with no call) the generation is asked again."""
    assert known_text(ParseFailure(0, "hi"), TOOLS) == "hi"
    assert known_text(ParseFailure(30, CALL), TOOLS) == CALL
    assert known_text(ParseFailure(30, "and so on"), TOOLS) is None
    assert known_text(ParseFailure(None, None), TOOLS) is None


def test_the_raw_request_keeps_sampling_and_drops_chat_fields() -> None:
    """/completion gets the rendered prompt, the request's sampling and its max_tokens as n_predict, not streamed;
    no messages, tools or stream options."""
    body = raw_completion_body("<prompt>", {"messages": [], "tools": TOOLS, "temperature": 0, "seed": 4,
                                            "max_tokens": 60, "stream": True, "stream_options": {}, "model": "x"})
    assert body == {"prompt": "<prompt>", "temperature": 0, "seed": 4, "n_predict": 60, "stream": False}


def data(item: Any) -> Any:
    """The chunk data of a pipeline item that must be a chunk."""
    assert isinstance(item, Chunk)
    return item.data


def stream_of(stage: ParseFailureRecovery, *contents: str) -> list[Any]:
    out: list[Any] = []
    for text in contents:
        out += stage.feed(Chunk({"id": "c1", "created": 5, "model": "m",
                                 "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}))
    return out


def test_the_stage_turns_the_error_event_into_the_rescued_call() -> None:
    """Content streamed, then the error event carrying a Hermes call: a tool-call chunk (index 0, id, name,
    arguments), a tool_calls finish chunk and Done; no error item; the recovery is reported."""
    told: list[str] = []
    stage = ParseFailureRecovery(TOOLS, told.append, new_id=ids())
    stream_of(stage, "Let me ", "check.\n")
    out = stage.feed(StreamError(f"Failed to parse input at pos 14: {CALL}", "server_error", 500))
    assert [type(i) for i in out] == [Chunk, Chunk, Done]
    call = data(out[0])["choices"][0]["delta"]["tool_calls"][0]
    assert json.loads(call["function"].pop("arguments")) == {"city": "Paris"}
    assert call == {"index": 0, "id": "call_0", "type": "function", "function": {"name": "get_weather"}}
    assert data(out[1])["choices"][0]["finish_reason"] == "tool_calls" and data(out[1])["id"] == "c1"
    assert told and "1 tool call" in told[0]


def test_a_call_straddling_the_failure_point_is_rescued() -> None:
    """The opener went out as content before the failure and the rest is in the error's text: the call is rescued
    from both, nothing already streamed is sent again."""
    stage = ParseFailureRecovery(TOOLS, new_id=ids())
    stream_of(stage, "Sure. ", CALL[:12])
    out = stage.feed(StreamError(f"Failed to parse input at pos 18: {CALL[12:]}", "server_error", 500))
    assert [type(i) for i in out] == [Chunk, Chunk, Done]
    assert data(out[0])["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_the_stage_releases_plain_text_and_passes_other_errors() -> None:
    """An error event whose text holds no call: that text as content, finish stop, Done. Any other error passes."""
    stage = ParseFailureRecovery(TOOLS)
    out = stage.feed(StreamError("Failed to parse input at pos 3: and more", "server_error", 500))
    assert data(out[0])["choices"][0]["delta"] == {"content": "and more"}
    assert data(out[1])["choices"][0]["finish_reason"] == "stop" and isinstance(out[2], Done)
    other = StreamError("fake failure mid-stream", "server_error", 500)
    assert ParseFailureRecovery(TOOLS).feed(other) == [other]


def test_calls_already_streamed_keep_their_indices() -> None:
    """A call the upstream already streamed keeps index 0; the rescued one is index 1."""
    stage = ParseFailureRecovery(TOOLS, new_id=ids())
    stage.feed(Chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "x", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}}]}))
    out = stage.feed(StreamError(f"Failed to parse input at pos 40: {CALL}", "server_error", 500))
    assert data(out[0])["choices"][0]["delta"]["tool_calls"][0]["index"] == 1
