"""Typed deltas (pure): what one OpenAI ``chat.completion.chunk`` — or one whole non-streamed reply — says.

Every dialect encoder but OpenAI chat's (which writes the upstream's chunks verbatim) consumes these, produced once
per chunk by :func:`deltas`, instead of re-parsing chunk dicts of its own. Only choice 0 is read: every client API
llamashim speaks besides OpenAI chat has one answer per request.

By the time a chunk reaches an encoder the stages have run: tool-call fragments are conformant (the first fragment
of each call has ``id`` and ``name``; ``index`` is always there) and reasoning is in ``reasoning_content`` (the
``separate`` reasoning mode moves inline ``<think>`` there) or already folded into the text, per ``thinking.mode``.

:class:`DeltaEncoder` is the shared shape of such an encoder: it walks the pipeline's items, turns each chunk into
deltas and calls one method per kind; a dialect overrides the methods it needs and returns its own wire bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llamashim.jsonutil import int_or, obj
from llamashim.stream.items import Chunk, Done, Item, Passthrough, StreamError, Thinking
from llamashim.stream.reasoning import REASONING_KEYS
from llamashim.stream.usage import Usage


@dataclass(slots=True)
class TextDelta:
    """Answer text."""

    text: str


@dataclass(slots=True)
class ReasoningDelta:
    """Reasoning ("thinking") text."""

    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of tool call ``index``: its first fragment carries ``id`` and ``name``, later ones arguments."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class Finish:
    """The answer ended: OpenAI's ``finish_reason`` (``stop``, ``length``, ``tool_calls``, ``content_filter``)."""

    reason: str


Delta = TextDelta | ReasoningDelta | ToolCallDelta | Finish | Usage
"""A stream may carry more than one :class:`Usage` (llama-server's last chunk has ``timings``, the usage chunk
``usage``): the last one wins."""


def _choice0(choices: Any) -> dict[str, Any] | None:
    if not isinstance(choices, list):
        return None
    for pos, choice in enumerate(choices):
        if isinstance(choice, dict) and int_or(choice.get("index"), pos) == 0:
            return choice
    return None


def _tool_deltas(calls: Any, out: list[Delta]) -> None:
    if not isinstance(calls, list):
        return
    for pos, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        fn = obj(call.get("function"))
        name = fn.get("name")
        args = fn.get("arguments")
        call_id = call.get("id")
        out.append(
            ToolCallDelta(
                int_or(call.get("index"), pos),
                call_id if isinstance(call_id, str) and call_id else None,
                name if isinstance(name, str) and name else None,
                args if isinstance(args, str) else "",
            )
        )


def _text_deltas(holder: dict[str, Any], out: list[Delta]) -> None:
    for key in REASONING_KEYS:
        value = holder.get(key)
        if isinstance(value, str) and value:
            out.append(ReasoningDelta(value))
    content = holder.get("content")
    if isinstance(content, str) and content:
        out.append(TextDelta(content))


def deltas(chunk: Chunk) -> list[Delta]:
    """The deltas of one streamed chunk, in the order a client should see them."""
    data = chunk.data
    out: list[Delta] = []
    choice = _choice0(data.get("choices"))
    if choice is not None:
        delta = obj(choice.get("delta"))
        _text_deltas(delta, out)
        _tool_deltas(delta.get("tool_calls"), out)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            out.append(Finish(reason))
    if data.get("usage") or "timings" in data:
        usage = Usage.of(data)
        if usage is not None:
            out.append(usage)
    return out


def reply_deltas(reply: dict[str, Any]) -> list[Delta]:
    """A whole non-streamed ``chat.completion`` as the same deltas a stream of it would give."""
    out: list[Delta] = []
    choice = _choice0(reply.get("choices")) or {}
    message = obj(choice.get("message"))
    _text_deltas(message, out)
    _tool_deltas(message.get("tool_calls"), out)
    reason = choice.get("finish_reason")
    out.append(Finish(reason if isinstance(reason, str) and reason else "stop"))
    usage = Usage.of(reply)
    if usage is not None:
        out.append(usage)
    return out


class DeltaEncoder:
    """Pipeline items → a dialect's wire bytes, one method per delta kind (each returns the bytes to send).

    ``on_done`` is called once for the clean end (``[DONE]``), ``on_error`` once for a terminal error; after either
    the encoder ignores everything. ``Thinking`` items (the ``events``/``both`` reasoning modes) count as reasoning.
    """

    def __init__(self) -> None:
        self.ended = False

    def opening(self) -> bytes:
        """The events that open the stream before any output — the dialect's first event (Anthropic's
        ``message_start``, Responses' ``response.created``/``in_progress``), sent once; ``b""`` where there is none."""
        return b""

    def keepalive(self) -> bytes:
        """An event the dialect's clients parse, that resets their stream watchdog and adds nothing to the answer
        (after :meth:`opening`); ``b""`` where there is none."""
        return b""

    def __call__(self, items: list[Item]) -> bytes:
        out: list[bytes] = []
        for item in items:
            if self.ended:
                break
            if isinstance(item, Chunk):
                for d in deltas(item):
                    out.append(self.on_delta(d))
                out.append(self.on_chunk_end())
            elif isinstance(item, Thinking):
                out.append(self.on_reasoning(item.text))
            elif isinstance(item, Done):
                self.ended = True
                out.append(self.on_done())
            elif isinstance(item, StreamError):
                self.ended = True
                out.append(self.on_error(item))
            elif isinstance(item, Passthrough):
                continue
        return b"".join(out)

    def feed_deltas(self, items: Iterable[Delta]) -> bytes:
        """Run deltas through directly (a non-streamed reply, or a test)."""
        return b"".join(self.on_delta(d) for d in items)

    def on_delta(self, d: Delta) -> bytes:
        if isinstance(d, TextDelta):
            return self.on_text(d.text)
        if isinstance(d, ReasoningDelta):
            return self.on_reasoning(d.text)
        if isinstance(d, ToolCallDelta):
            return self.on_tool_call(d)
        if isinstance(d, Finish):
            return self.on_finish(d.reason)
        return self.on_usage(d)

    def on_text(self, text: str) -> bytes:
        return b""

    def on_reasoning(self, text: str) -> bytes:
        return b""

    def on_tool_call(self, d: ToolCallDelta) -> bytes:
        return b""

    def on_finish(self, reason: str) -> bytes:
        return b""

    def on_usage(self, usage: Usage) -> bytes:
        return b""

    def on_chunk_end(self) -> bytes:
        """All deltas of one upstream chunk went by (an encoder may write one frame per chunk)."""
        return b""

    def on_done(self) -> bytes:
        return b""

    def on_error(self, err: StreamError) -> bytes:
        return b""
