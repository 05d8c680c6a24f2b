"""The pure parts of the Responses WebSocket and of compaction: SSE events → socket messages, the error envelope,
``response.create`` parsing, a socket's memory, orphan tool outputs, the compaction blob and window."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamashim.dialects.responses.compact import SUMMARY_REQUEST, compact_request
from llamashim.dialects.responses.events import previous_response_not_found
from llamashim.dialects.responses.translate import (
    SUMMARY_HEADING,
    decrypt_reasoning,
    decrypt_summary,
    encrypt_reasoning,
    encrypt_summary,
    orphan_outputs,
    request_to_chat,
)
from llamashim.dialects.responses.websocket import LocalResponses, client_message, error_envelope, sse_events
from llamashim.errors import BadRequest, ContextOverflow, ShimError

JSON = dict[str, Any]


def quiet(*_a: Any, **_k: Any) -> None:
    return None


def test_sse_events_are_the_payloads_with_their_types() -> None:
    """Each whole SSE event the encoder wrote becomes (its event type, its JSON payload), in order."""
    data = b'event: response.created\ndata: {"a":1}\n\nevent: error\ndata: {"b":2}\n\n'
    assert sse_events(data) == [(b"response.created", b'{"a":1}'), (b"error", b'{"b":2}')]
    assert sse_events(b"") == []


@pytest.mark.parametrize(("err", "status", "code"), [
    (previous_response_not_found("resp_x"), 404, "previous_response_not_found"),
    (BadRequest("bad"), 400, "invalid_request_error"),
    (ShimError(502, "down", "upstream_error"), 502, "server_error"),
    (ContextOverflow(9000, 4096), 400, "context_length_exceeded"),
])
def test_the_error_envelope_always_has_a_string_code(err: ShimError, status: int, code: str) -> None:
    """The spec's WebSocket error: type error, the HTTP-style status, and error.code a string (the suite and Codex
    read it)."""
    event = json.loads(error_envelope(err))
    assert event["type"] == "error" and event["status"] == status
    assert event["error"]["code"] == code and isinstance(event["error"]["message"], str)


def test_a_create_message_drops_the_http_only_fields_and_always_streams() -> None:
    """response.create → the Responses body without type/stream_options/background, stream true."""
    message = client_message(b'{"type":"response.create","model":"m","stream":false,"background":false,'
                             b'"stream_options":{},"input":"hi"}', 64)
    assert message == ("response.create", {"model": "m", "input": "hi", "stream": True})
    assert client_message(b'{"type":"response.processed","response_id":"resp_1"}', 64) is None


def test_a_compact_message_is_the_compact_body() -> None:
    """response.compact → the body of POST /responses/compact (without type), not made a stream."""
    message = client_message(b'{"type":"response.compact","model":"m","input":"hi","previous_response_id":"r"}', 64)
    assert message == ("response.compact", {"model": "m", "input": "hi", "previous_response_id": "r"})


@pytest.mark.parametrize("message", [b"not json", b"[1]", b'{"type":"session.update"}', b'{"model":"m"}'])
def test_any_other_message_is_refused(message: bytes) -> None:
    """Invalid JSON, a non-object or an unknown message type is a 400."""
    with pytest.raises(BadRequest):
        client_message(message, 64)


def test_local_responses_remember_the_newest_and_forget() -> None:
    """A socket remembers its last few responses, newest last; forget drops one."""
    local = LocalResponses(size=2)
    for n in range(3):
        local.remember(f"r{n}", [{"role": "user", "content": str(n)}])
    assert local.get("r0") is None and local.get("r2") == [{"role": "user", "content": "2"}]
    local.forget("r2")
    assert local.get("r2") is None and local.get("r1") is not None


def test_orphan_outputs_are_tool_results_without_a_call_before_them() -> None:
    """A tool message answers a call only when an earlier assistant turn made it."""
    messages: list[JSON] = [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "a", "type": "function"}]},
        {"role": "tool", "tool_call_id": "a", "content": "ok"},
        {"role": "tool", "tool_call_id": "b", "content": "?"},
    ]
    assert orphan_outputs(messages) == ["b"]


def test_summary_blobs_are_their_own_kind() -> None:
    """A compaction blob reads back as its summary, never as reasoning (and a reasoning blob never as a summary)."""
    blob = encrypt_summary("notes ✓")
    assert decrypt_summary(blob) == "notes ✓" and decrypt_reasoning(blob) is None
    assert decrypt_summary(encrypt_reasoning("think")) is None and decrypt_summary("garbage!") is None


def test_a_compaction_item_reads_as_a_user_message_with_its_summary() -> None:
    """Input item compaction (and Codex's older compaction_summary) → a user message holding the summary; one this
    server did not make is skipped."""
    items = [{"type": "compaction", "id": "cmp_1", "encrypted_content": encrypt_summary("S")},
             {"type": "compaction_summary", "encrypted_content": encrypt_summary("T")},
             {"type": "compaction", "encrypted_content": "opaque-from-elsewhere"}]
    chat = request_to_chat({"model": "m", "input": items}, None, quiet).chat_body
    assert chat["messages"] == [{"role": "user", "content": f"{SUMMARY_HEADING}\n\nS"},
                                {"role": "user", "content": f"{SUMMARY_HEADING}\n\nT"}]


def test_compact_request_asks_for_a_summary_after_the_conversation() -> None:
    """The chat request: the history, the input, then the summary request; not streamed; user messages kept."""
    history = [{"role": "user", "content": "old"}, {"role": "assistant", "content": "ok"}]
    job = compact_request({"model": "m", "input": "new", "stream": True}, history, quiet)
    assert job.chat_body["stream"] is False and "stream_options" not in job.chat_body
    assert [m["content"] for m in job.chat_body["messages"]] == ["old", "ok", "new", SUMMARY_REQUEST]
    assert [m["content"] for m in job.kept] == ["old", "new"]
    ids = iter(["msg_1", "msg_2", "cmp_1", "resp_1"])
    out = job.compacted({"choices": [{"message": {"content": " sum "}}], "usage": {
        "prompt_tokens": 5, "completion_tokens": 1}}, lambda prefix: next(ids), 7)
    assert out["object"] == "response.compaction" and out["created_at"] == 7
    assert [i["type"] for i in out["output"]] == ["message", "message", "compaction"]
    assert out["output"][0]["content"] == [{"type": "input_text", "text": "old"}]
    assert decrypt_summary(out["output"][2]["encrypted_content"]) == "sum"
    assert out["usage"]["total_tokens"] == 6


def test_compact_request_needs_a_model_and_a_conversation() -> None:
    """No model, or no conversation at all, is a 400."""
    with pytest.raises(BadRequest, match="model is required"):
        compact_request({"input": "x"}, [], quiet)
    with pytest.raises(BadRequest, match="no conversation"):
        compact_request({"model": "m", "instructions": "sys"}, [], quiet)
