"""``POST /v1/responses/compact`` (pure): a conversation → the compacted window the Open Responses spec defines.

The conversation (the request's ``input``, after the stored conversation of its ``previous_response_id``) goes to
the model with one more user turn asking for a summary; the answer becomes one ``compaction`` item, whose
``encrypted_content`` is an opaque blob only this server reads back (:func:`~.translate.encrypt_summary`). As OpenAI's
endpoint does, the compacted window keeps the conversation's user messages, followed by that item:
``{"id", "object": "response.compaction", "created_at", "output": [...user messages, compaction], "usage"}``.
A client passes ``output`` back as-is as the next turn's ``input`` (or the start of it): the compaction item reads
as a user message holding the summary (:meth:`~.translate._Builder.compaction`). An earlier summary is folded into
the new one rather than kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamashim.errors import BadRequest, ShimError
from llamashim.jsonutil import arr, obj
from llamashim.stream.usage import Usage

from .events import usage_object
from .translate import SUMMARY_HEADING, Log, ResponsesRequest, encrypt_summary, request_to_chat

JSON = dict[str, Any]
IdFactory = Callable[[str], str]

SUMMARY_REQUEST = (
    "Compact the conversation above so that it can continue in a fresh context window. Write a concise summary "
    "that keeps everything needed to carry on: the user's goals and constraints, decisions and agreements, facts "
    "learnt, the state of the work (files changed, commands run and what they showed, tool calls still open) and "
    "what is left to do. Write it as notes for whoever continues; do not answer anything from the conversation and "
    "do not address the user."
)
_FIELDS = ("model", "input", "instructions", "previous_response_id")


@dataclass
class CompactRequest:
    """One translated compaction: the chat request that asks for the summary, and the user messages kept."""

    chat_body: JSON
    translated: ResponsesRequest
    kept: list[JSON]

    def compacted(self, reply: JSON, ids: IdFactory, created_at: int) -> JSON:
        """The compacted window from the model's (normalised, non-streamed) answer."""
        summary = _answer_text(reply).strip()
        if not summary:
            raise ShimError(502, "the model answered the compaction request with no summary", "upstream_error")
        usage = Usage.of(reply) or Usage(0, 0)
        item = {"type": "compaction", "id": ids("cmp"), "encrypted_content": encrypt_summary(summary)}
        return {"id": ids("resp"), "object": "response.compaction", "created_at": created_at,
                "output": [*(_message_item(m, ids) for m in self.kept), item], "usage": usage_object(usage)}


def compact_request(body: JSON, history: list[JSON], log: Log) -> CompactRequest:
    """Translate a ``/responses/compact`` body (``model`` required, as the spec says) continuing ``history``."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required: the model whose context the conversation is compacted for")
    translated = request_to_chat({k: body[k] for k in _FIELDS if k in body}, history, log)
    chat = {**translated.chat_body, "stream": False}
    chat.pop("stream_options", None)
    messages = arr(chat.get("messages"))
    if not any(m.get("role") != "system" for m in messages if isinstance(m, dict)):
        raise BadRequest("there is no conversation to compact: give input or previous_response_id")
    chat["messages"] = [*messages, {"role": "user", "content": SUMMARY_REQUEST}]
    kept = [m for m in [*history, *translated.input_messages] if _kept(m)]
    return CompactRequest(chat, translated, kept)


def _kept(message: JSON) -> bool:
    """A user message the compacted window keeps (an earlier summary is folded into the new one instead)."""
    if message.get("role") != "user":
        return False
    content = message.get("content")
    return not (isinstance(content, str) and content.startswith(SUMMARY_HEADING))


def _message_item(message: JSON, ids: IdFactory) -> JSON:
    """A chat user message as a Responses ``message`` item (text as ``input_text``, images as ``input_image``)."""
    content = message.get("content")
    parts: list[JSON] = []
    for part in [content] if isinstance(content, str) else arr(content):
        if isinstance(part, str):
            parts.append({"type": "input_text", "text": part})
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append({"type": "input_text", "text": str(part.get("text", ""))})
        elif isinstance(part, dict) and part.get("type") == "image_url":
            image = obj(part.get("image_url"))
            parts.append({"type": "input_image", "image_url": image.get("url"),
                          "detail": image.get("detail", "auto")})
    return {"type": "message", "id": ids("msg"), "status": "completed", "role": "user", "content": parts}


def _answer_text(reply: JSON) -> str:
    choices = arr(reply.get("choices"))
    message = obj(obj(choices[0]).get("message")) if choices else {}
    content = message.get("content")
    return content if isinstance(content, str) else ""
