"""Error values (pure): what went wrong and its HTTP status; each dialect words it in its own shape."""

from __future__ import annotations

import re
from typing import Protocol

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "unavailable_error",
    504: "timeout_error",
}


class ShimError(Exception):
    """An error answered to the client in the dialect's shape, with an HTTP status."""

    def __init__(self, status: int, message: str, type: str | None = None, code: int | str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.code = code if code is not None else status


class ContextOverflow(ShimError):
    """A prompt that cannot fit the model's context window: llama-server refuses ``prompt_tokens >= window``
    (``tools/server/server-context.cpp``). A 400 in OpenAI chat's words; every dialect words it from the numbers."""

    def __init__(self, prompt_tokens: int, window: int) -> None:
        super().__init__(400, f"This model's maximum context length is {window} tokens. However, your messages "
                         f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
                         "invalid_request_error", CONTEXT_CODE)
        self.prompt_tokens = prompt_tokens
        self.window = window


class Described(Protocol):
    """What an error says: a :class:`ShimError`, or a stream's terminal ``StreamError``."""

    @property
    def message(self) -> str: ...

    @property
    def type(self) -> str: ...


CONTEXT_CODE = "context_length_exceeded"  # OpenAI's code (Aider, Cline, LangChain and Codex act on it)
CONTEXT_TYPES = frozenset({"exceed_context_size_error", CONTEXT_CODE})  # llama-server's type, OpenAI's code
# (prompt tokens, window) in llama-server's refusals (the chat path's, and the one for inputs it cannot split) and in
# OpenAI's words (a ContextOverflow's message, as a started stream's error carries it)
_WORDINGS = (
    (re.compile(r"(?:request|input) \((\d+) tokens\) (?:exceeds the available context size|is larger than the max "
                r"context size) \((\d+) tokens\)"), 1, 2),
    (re.compile(r"maximum context length is (\d+) tokens\. However, your messages resulted in (\d+) tokens"), 2, 1),
)
_FIELD = re.compile(r'"(n_prompt_tokens|n_ctx)"\s*:\s*(\d+)')


def context_overflow(err: Described) -> ContextOverflow | None:
    """The overflow ``err`` stands for, with its numbers: itself, llama-server's refusal (its message, or its
    ``n_prompt_tokens``/``n_ctx`` in a whole error body) or OpenAI's words; ``None`` otherwise (a refusal without
    numbers included: :func:`is_context_error` tells those)."""
    return err if isinstance(err, ContextOverflow) else overflow_in(err.message)


def overflow_in(message: str) -> ContextOverflow | None:
    """The overflow an error message (or a whole upstream error body) states with its numbers, or ``None``."""
    for pattern, prompt, window in _WORDINGS:
        found = pattern.search(message)
        if found is not None:
            return ContextOverflow(int(found.group(prompt)), int(found.group(window)))
    if "exceed_context_size_error" in message:
        fields = {k: int(v) for k, v in _FIELD.findall(message)}
        if "n_prompt_tokens" in fields and "n_ctx" in fields:
            return ContextOverflow(fields["n_prompt_tokens"], fields["n_ctx"])
    return None


def is_context_error(err: Described) -> bool:
    """A context overflow, with or without numbers (an older build's bare ``exceed_context_size_error``)."""
    return err.type in CONTEXT_TYPES or context_overflow(err) is not None


class BadRequest(ShimError):
    def __init__(self, message: str):
        super().__init__(400, message)


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"
