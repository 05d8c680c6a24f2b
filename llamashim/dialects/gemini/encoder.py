"""The shared stream → Gemini ``GenerateContentResponse`` objects (pure), streamed or whole.

A stream is one response object per upstream chunk that said something (its text and thought parts), then a last one
with the function calls (whole: Gemini sends a call's ``args`` as one object, never in fragments), the
``finishReason`` and the ``usageMetadata``. Every object carries ``modelVersion`` and ``responseId``. Two framings:

* ``?alt=sse`` (what the SDKs and Gemini CLI ask for): ``data: {json}\\r\\n\\r\\n`` frames; a failure after the first
  byte is a last ``data: {"error": {"code", "message", "status"}}`` frame, which the SDKs raise as their own error.
  Keep-alives are a frame with an empty text part: the google-genai SDKs read every line that is not ``data:`` as
  JSON, so an SSE comment would end their stream with a parse error.
* without ``alt``: one JSON array written as it grows, ``[{...}\\n,{...}\\n]``; a failure is a last ``{"error": …}``
  element; keep-alives are whitespace inside the array.

A non-streamed reply runs the same encoder without framing (:func:`response_object`), so both give the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from llamashim import jsonutil
from llamashim.dialects.gemini.dialect import SSE_END, stream_error_object
from llamashim.stream.deltas import DeltaEncoder, ToolCallDelta, reply_deltas
from llamashim.stream.items import StreamError
from llamashim.stream.usage import Usage

JSON = dict[str, Any]

FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP",
                  "content_filter": "SAFETY"}
ARRAY_CONTENT_TYPE = b"application/json; charset=UTF-8"
SSE_CONTENT_TYPE = b"text/event-stream"


class Framing(StrEnum):
    SSE = "sse"  # ?alt=sse
    ARRAY = "array"  # a streamed JSON array
    WHOLE = "whole"  # one response object (not streamed)


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def part(self) -> JSON:
        return {"functionCall": {"id": self.id, "name": self.name, "args": jsonutil.object_in("".join(self.arguments))}}


class GeminiEncoder(DeltaEncoder):
    """Deltas → Gemini response objects in ``framing``; the whole answer in :meth:`response` (for ``WHOLE``)."""

    def __init__(self, model: str, response_id: str, framing: Framing) -> None:
        super().__init__()
        self.model = model
        self.response_id = response_id
        self.framing = framing
        self._pending: list[JSON] = []  # parts of the current chunk (of the whole answer, unframed)
        self._calls: dict[int, _Call] = {}
        self._reason: str | None = None
        self._usage: Usage | None = None
        self._thought_chars = 0
        self._answer_chars = 0
        self._opened = False  # ARRAY: "[" went out
        self._elements = 0  # ARRAY: objects written

    # -- frames the flow asks for ------------------------------------------------------------------------------

    def opening(self) -> bytes:
        if self.framing is Framing.ARRAY and not self._opened:
            self._opened = True
            return b"["
        return b""

    def keepalive(self) -> bytes:
        """A frame the SDKs parse and that adds no text (an empty text part), or whitespace inside the array."""
        if self.ended:
            return b""
        if self.framing is Framing.SSE:
            return self._frame(self._object([{"text": ""}]))
        return b"\n" if self.framing is Framing.ARRAY else b""

    # -- deltas ------------------------------------------------------------------------------------------------

    def on_text(self, text: str) -> bytes:
        self._answer_chars += len(text)
        return self._add({"text": text})

    def on_reasoning(self, text: str) -> bytes:
        self._thought_chars += len(text)
        return self._add({"text": text, "thought": True})

    def on_tool_call(self, d: ToolCallDelta) -> bytes:
        call = self._calls.get(d.index)
        if call is None:
            call = self._calls[d.index] = _Call(d.id or f"call_{self.response_id}_{d.index}", d.name or "")
        call.arguments.append(d.arguments)
        self._answer_chars += len(d.arguments)
        return b""

    def on_finish(self, reason: str) -> bytes:
        self._reason = reason
        return b""

    def on_usage(self, usage: Usage) -> bytes:
        """The last counts win, except that all-zero counts (a placeholder usage chunk) never replace real ones."""
        if self._usage is None or usage.prompt_tokens or usage.completion_tokens:
            self._usage = usage
        return b""

    def on_chunk_end(self) -> bytes:
        if self.framing is Framing.WHOLE or not self._pending:
            return b""
        parts, self._pending = self._pending, []
        return self._frame(self._object(parts))

    def on_done(self) -> bytes:
        if self.framing is Framing.WHOLE:
            return b""
        parts, self._pending = self._pending, []
        parts += [call.part() for call in self._calls.values()]
        out = self._frame(self._object(parts or [{"text": ""}], final=True))
        return out + (b"]" if self.framing is Framing.ARRAY else b"")

    def on_error(self, err: StreamError) -> bytes:
        if self.framing is Framing.WHOLE:
            return b""
        out = self._frame(stream_error_object(err))
        return out + (b"]" if self.framing is Framing.ARRAY else b"")

    # -- the answer --------------------------------------------------------------------------------------------

    def response(self) -> JSON:
        """The whole answer as one response object (after every delta went in)."""
        return self._object(self._pending + [call.part() for call in self._calls.values()], final=True)

    def finish_reason(self) -> str:
        return FINISH_REASONS.get(self._reason or "stop", "OTHER")

    def usage_metadata(self) -> JSON | None:
        """Gemini's counts: the prompt (cached tokens included, as Gemini counts them), the answer and the thinking
        apart — llama-server counts them together, so the thoughts' share is estimated from their share of the
        characters generated — and the total."""
        u = self._usage
        if u is None:
            return None
        thoughts = 0
        generated = self._thought_chars + self._answer_chars
        if self._thought_chars and generated:
            thoughts = min(u.completion_tokens, max(1, round(u.completion_tokens * self._thought_chars / generated)))
        out: JSON = {"promptTokenCount": u.prompt_tokens, "candidatesTokenCount": u.completion_tokens - thoughts,
                     "totalTokenCount": u.prompt_tokens + u.completion_tokens}
        if thoughts:
            out["thoughtsTokenCount"] = thoughts
        if u.cached_tokens:
            out["cachedContentTokenCount"] = min(u.cached_tokens, u.prompt_tokens)
        return out

    # -- internals ---------------------------------------------------------------------------------------------

    def _add(self, part: JSON) -> bytes:
        """A text or thought part, merged into the previous one of the same kind."""
        last = self._pending[-1] if self._pending else None
        if last is not None and "text" in last and last.get("thought") == part.get("thought"):
            last["text"] += part["text"]
        else:
            self._pending.append(part)
        return b""

    def _object(self, parts: list[JSON], final: bool = False) -> JSON:
        candidate: JSON = {"content": {"role": "model", "parts": parts}, "index": 0}
        out: JSON = {"candidates": [candidate]}
        if final:
            candidate["finishReason"] = self.finish_reason()
            usage = self.usage_metadata()
            if usage is not None:
                out["usageMetadata"] = usage
        out["modelVersion"] = self.model
        out["responseId"] = self.response_id
        return out

    def _frame(self, value: JSON) -> bytes:
        data = jsonutil.dumps(value)
        if self.framing is Framing.SSE:
            return b"data: " + data + SSE_END
        lead = b"," if self._elements else (b"" if self._opened else b"[")
        self._opened = True
        self._elements += 1
        return lead + data + b"\n"


def response_object(reply: JSON, model: str, response_id: str) -> JSON:
    """A non-streamed ``chat.completion`` → the Gemini response, by the streaming encoder's own accumulation."""
    encoder = GeminiEncoder(model, response_id, Framing.WHOLE)
    encoder.feed_deltas(reply_deltas(reply))
    return encoder.response()

