"""Anthropic error bodies, statuses and llama-server's context-overflow rewrite, read by the anthropic SDK."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types.shared import ErrorResponse

from llamashim.dialects.anthropic.errors import (
    context_error,
    error_body,
    error_response,
    error_type,
    status_for,
    stream_error_event,
)
from llamashim.stream.items import StreamError

LLAMA_OVERFLOW = "request (21157 tokens) exceeds the available context size (8192 tokens), try increasing it"
LLAMA_BODY = {"error": {"code": 400, "message": LLAMA_OVERFLOW, "type": "exceed_context_size_error",
                        "n_prompt_tokens": 21157, "n_ctx": 8192}}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (507, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_body_per_status(status: int, kind: str) -> None:
    """Each status gets Anthropic's error type in {"type":"error","error":{"type","message"}} (compact JSON)."""
    body = error_body(status, "nope")
    assert error_type(status) == kind
    assert body == b'{"type":"error","error":{"type":"' + kind.encode() + b'","message":"nope"}}'
    if kind != "request_too_large":  # documented by Anthropic, but not (yet) in the SDK's ErrorObject union
        assert ErrorResponse.model_validate_json(body).error.type == kind


def test_status_for() -> None:
    """503 (upstream busy or loading) is answered as 529; every other status is kept."""
    assert status_for(503) == 529
    assert [status_for(s) for s in (400, 401, 404, 413, 429, 500, 502, 504)] == [400, 401, 404, 413, 429, 500, 502,
                                                                                   504]


@pytest.mark.parametrize(
    ("message", "error", "expected"),
    [
        (LLAMA_OVERFLOW, None, "prompt is too long: 21157 tokens > 8192 maximum"),
        (json.dumps(LLAMA_BODY), None, "prompt is too long: 21157 tokens > 8192 maximum"),
        ('{"error":{"type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":4096,"message":"x"}}', None,
         "prompt is too long: 9000 tokens > 4096 maximum"),
        ("the prompt did not fit", LLAMA_BODY["error"], "prompt is too long: 21157 tokens > 8192 maximum"),
        ("input (600 tokens) is larger than the max context size (512 tokens)", None,
         "prompt is too long: 600 tokens > 512 maximum"),
        ("the request exceeds the available context size, try increasing it", None,
         "prompt is too long: the request exceeds the available context size, try increasing it"),
        ("Jinja Exception: System message must be at the beginning", None, None),
        ("model 'x' not found", {"type": "not_found_error", "message": "model 'x' not found"}, None),
        ("", None, None),
    ],
)
def test_context_error(message: str, error: dict[str, Any] | None, expected: str | None) -> None:
    """llama-server's context overflow (message, JSON body or error object) → Anthropic's "prompt is too long"."""
    assert context_error(message, error) == expected


def test_error_response_applies_both_rewrites() -> None:
    """error_response: a context overflow is a 400 "prompt is too long"; a 503 is a 529 overloaded_error."""
    status, body = error_response(400, LLAMA_OVERFLOW, LLAMA_BODY["error"])
    assert status == 400 and json.loads(body)["error"] == {"type": "invalid_request_error",
                                                           "message": "prompt is too long: 21157 tokens > 8192 maximum"}
    status, body = error_response(503, "Loading model")
    assert status == 529 and json.loads(body)["error"] == {"type": "overloaded_error", "message": "Loading model"}
    assert error_response(401, "bad key") == (401, error_body(401, "bad key"))


@pytest.mark.parametrize(
    ("err", "kind", "message"),
    [
        (StreamError("boom", "server_error", 500), "api_error", "boom"),
        (StreamError("busy", "unavailable_error", 503), "overloaded_error", "busy"),
        (StreamError("gone", "upstream_error", None), "api_error", "gone"),
        (StreamError("slow", "timeout_error", "timeout"), "timeout_error", "slow"),
        (StreamError(LLAMA_OVERFLOW, "exceed_context_size_error", 400), "invalid_request_error",
         "prompt is too long: 21157 tokens > 8192 maximum"),
    ],
)
def test_stream_error_event(err: StreamError, kind: str, message: str) -> None:
    """A terminal stream error → one SDK-valid ``event: error`` frame with the mapped type."""
    frame = stream_error_event(err)
    head, data = frame.split(b"\n", 1)
    assert head == b"event: error" and data.startswith(b"data: ") and frame.endswith(b"}}\n\n")
    parsed = ErrorResponse.model_validate_json(data[6:].strip())
    assert (parsed.error.type, parsed.error.message) == (kind, message)


@pytest.mark.parametrize(
    ("status", "message", "exception"),
    [
        (400, LLAMA_OVERFLOW, anthropic.BadRequestError),
        (401, "bad key", anthropic.AuthenticationError),
        (404, "no such model", anthropic.NotFoundError),
        (413, "too big", anthropic.RequestTooLargeError),
        (429, "slow down", anthropic.RateLimitError),
        (500, "boom", anthropic.InternalServerError),
        (503, "loading model", anthropic.OverloadedError),
    ],
)
def test_sdk_raises_the_matching_exception(status: int, message: str,
                                          exception: type[anthropic.APIStatusError]) -> None:
    """The SDK maps each answered status and body to its own exception class, with our message in it."""
    answered, body = error_response(status, message)
    transport = httpx2.MockTransport(lambda _: httpx2.Response(answered, content=body,
                                                               headers={"content-type": "application/json"}))
    client = anthropic.Anthropic(api_key="test", base_url="http://shim.test", max_retries=0,
                                 http_client=httpx2.Client(transport=transport))
    with pytest.raises(exception) as caught:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    expected = "prompt is too long: 21157 tokens > 8192 maximum" if status == 400 else message
    assert caught.value.body == {"type": "error", "error": {"type": error_type(answered), "message": expected}}
