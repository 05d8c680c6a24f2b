"""Anthropic error shapes (pure): ``{"type": "error", "error": {"type", "message"}}``, per-status types, rewrites.

Two rewrites make llama-server's failures read the way Anthropic clients expect: a busy or loading upstream (503)
is answered as ``529 overloaded_error``, which the SDKs and Claude Code retry with backoff; and llama-server's
context overflow (``request (21157 tokens) exceeds the available context size (8192 tokens)``, type
``exceed_context_size_error``) — and llamashim's own pre-check (:class:`~llamashim.errors.ContextOverflow`) — is
answered as Anthropic's ``prompt is too long: 21157 tokens > 8192 maximum``, the words Claude Code reacts to by
compacting the conversation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamashim import jsonutil
from llamashim.errors import overflow_in
from llamashim.jsonutil import int_or
from llamashim.stream.items import StreamError
from llamashim.stream.sse import encode_event

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
KNOWN_TYPES = frozenset(ERROR_TYPES.values())
OVERLOADED = 529
CONTEXT_TYPE = "exceed_context_size_error"

_VAGUE = ("exceeds the available context size", "is larger than the max context size", CONTEXT_TYPE)


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for a status (other 4xx: ``invalid_request_error``, other 5xx: ``api_error``)."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def status_for(status: int) -> int:
    """The status to answer with: 503 (upstream busy or loading) becomes Anthropic's 529 ``overloaded_error``."""
    return OVERLOADED if status == 503 else status


def error_body(status: int, message: str) -> bytes:
    """The JSON error body for ``status`` (compact bytes)."""
    return jsonutil.dumps(_error(error_type(status), message))


def error_response(status: int, message: str, error: Mapping[str, Any] | None = None) -> tuple[int, bytes]:
    """Status and body with both rewrites applied (``error``: the upstream's error object, when there is one)."""
    rewritten = context_error(message, error)
    if rewritten is not None:
        return 400, error_body(400, rewritten)
    status = status_for(status)
    return status, error_body(status, message)


def context_error(message: str, error: Mapping[str, Any] | None = None) -> str | None:
    """llama-server's context-overflow error as Anthropic words it, or ``None`` when it is some other error.

    ``message`` may be the error's message or the whole upstream body; ``error`` the parsed error object, whose
    ``n_prompt_tokens`` and ``n_ctx`` are used when the message has no numbers.
    """
    found = overflow_in(message)  # llama-server's words or fields, or OpenAI's (llamashim's own pre-check)
    if found is not None:
        return _too_long(found.prompt_tokens, found.window)
    fields: dict[str, int] = {}
    if error is not None and (error.get("type") == CONTEXT_TYPE or "n_ctx" in error):
        fields = {k: int_or(error.get(k), -1) for k in ("n_prompt_tokens", "n_ctx")}
    if fields.get("n_prompt_tokens", -1) >= 0 and fields.get("n_ctx", -1) >= 0:
        return _too_long(fields["n_prompt_tokens"], fields["n_ctx"])
    if fields or any(phrase in message for phrase in _VAGUE):
        return f"prompt is too long: {message}"
    return None


def stream_error_event(err: StreamError) -> bytes:
    """The ``event: error`` frame that ends a started stream (nothing may follow it)."""
    rewritten = context_error(err.message)
    if rewritten is not None:
        value = _error("invalid_request_error", rewritten)
    elif isinstance(err.code, int) and not isinstance(err.code, bool) and 400 <= err.code < 600:
        value = _error(error_type(err.code), err.message)
    else:
        value = _error(err.type if err.type in KNOWN_TYPES else "api_error", err.message)
    return encode_event("error", value)


def _too_long(prompt: int, ctx: int) -> str:
    return f"prompt is too long: {prompt} tokens > {ctx} maximum"


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
