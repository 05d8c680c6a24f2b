"""The OpenAI dialect's wire shapes (pure): error bodies, the terminal stream frame, the SSE encoder.

OpenAI chat completions stream as SSE ``data:`` chunks ending in ``data: [DONE]``; an error after the first byte is
``data: {"error": {...}}`` and the stream ends without ``[DONE]``. The encoder writes an upstream chunk's exact bytes
when no stage changed it (``Chunk.raw``), so a well-formed upstream stream passes byte for byte.
"""

from __future__ import annotations

import uuid
from typing import Any

from llamashim import jsonutil
from llamashim.errors import CONTEXT_CODE, ShimError, context_overflow, is_context_error
from llamashim.stream.items import Chunk, Done, Item, Passthrough, StreamError, Thinking
from llamashim.stream.sse import encode_data, encode_event
from llamashim.web.dialect import Dialect

_DONE = b"data: [DONE]\n\n"


def error_json(err: ShimError | StreamError) -> bytes:
    """``{"error": {"message", "type", "code"}}`` as compact JSON; a context overflow (llamashim's pre-check or
    llama-server's own refusal) as OpenAI words it: ``invalid_request_error``, ``param: "messages"``, code
    ``context_length_exceeded``, "This model's maximum context length is N tokens. However, your messages resulted
    in M tokens. …" (:class:`~llamashim.errors.ContextOverflow`'s message)."""
    if is_context_error(err):
        overflow = context_overflow(err)
        message = overflow.message if overflow is not None else err.message
        return jsonutil.dumps({"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                                         "code": CONTEXT_CODE}})
    return jsonutil.dumps({"error": {"message": err.message, "type": err.type, "code": err.code}})


def encode_error(err: StreamError) -> bytes:
    return b"data: " + error_json(err) + b"\n\n"


def encode_openai_items(items: list[Item]) -> bytes:
    """The OpenAI-dialect SSE bytes for ``items``, all in one buffer (one write per upstream read)."""
    out: list[bytes] = []
    for item in items:
        if isinstance(item, Chunk):
            out.append(item.raw if item.raw is not None else encode_data(item.data))
        elif isinstance(item, Thinking):
            # "choices": [] makes the frame a harmless empty chunk for clients that ignore the event name (the
            # openai SDKs do: they parse every event's data as a chunk).
            out.append(encode_event("thinking", {"content": item.text, "choices": []}))
        elif isinstance(item, Done):
            out.append(_DONE)
        elif isinstance(item, StreamError):
            out.append(encode_error(item))
        elif isinstance(item, Passthrough):
            out.append(item.raw)
    return b"".join(out)


class OpenAIChatEncoder:
    """A stream's encoder: :func:`encode_openai_items`, and the chunks that keep a client waiting before the answer —
    the role chunk first (as llama-server's own first chunk), then chunks with an empty delta. Every OpenAI client
    parses them as chunks that add no text, and each one is an event that resets a stream watchdog."""

    def __init__(self, model: str, created: int) -> None:
        self.model = model
        self.created = created
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]

    def __call__(self, items: list[Item]) -> bytes:
        return encode_openai_items(items)

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        return encode_data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    def opening(self) -> bytes:
        return self._chunk({"role": "assistant", "content": None})

    def keepalive(self) -> bytes:
        return self._chunk({})


class OpenAIChatDialect(Dialect):
    name = "openai"
    stream_content_type = b"text/event-stream"

    def error_body(self, err: ShimError) -> bytes:
        return error_json(err)

    def stream_error(self, err: StreamError) -> bytes:
        return encode_error(err)


OPENAI = OpenAIChatDialect()
