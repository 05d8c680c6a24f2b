"""The shared stream → Anthropic Messages events (pure), and the same accumulation for non-streamed replies.

The event grammar (as Anthropic documents it and the SDKs' accumulators read it)::

    message_start  (content: [], stop_reason: null, usage with the input estimate)
    ( content_block_start  content_block_delta*  content_block_stop )*     one block open at a time
    message_delta  (stop_reason, stop_sequence, cumulative usage)
    message_stop

each as ``event: <type>`` / ``data: <json>`` SSE frames; ``ping`` frames may come at any time; an ``error`` frame
ends a stream with nothing after it. Deltas of a kind other than the open block's (text, thinking, a tool call)
close it and open the next block. A thinking block gets a ``signature_delta`` before it closes (clients keep and
send back the signature; llamashim ignores it on the way in), a tool call with no arguments an ``input_json_delta``
of ``{}``.

:class:`MessagesEncoder` keeps the message it streams (:attr:`MessagesEncoder.message`); :func:`message_object`
runs a non-streamed reply through the same encoder without writing events, so both paths give the same message.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llamashim import jsonutil
from llamashim.dialects.anthropic.errors import stream_error_event
from llamashim.dialects.anthropic.scaling import scaled, usage_factor
from llamashim.dialects.anthropic.translate import BlockKind
from llamashim.stream.deltas import DeltaEncoder, ToolCallDelta, reply_deltas
from llamashim.stream.items import StreamError
from llamashim.stream.sse import encode_event
from llamashim.stream.usage import Usage

JSON = dict[str, Any]

PING = b'event: ping\ndata: {"type":"ping"}\n\n'
SIGNATURE = "bGxhbWFzaGltOmxvY2FsLXJlYXNvbmluZw=="  # opaque to clients: base64 of "llamashim:local-reasoning"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}
_MESSAGE_STOP = encode_event("message_stop", {"type": "message_stop"})


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


@dataclass(slots=True)
class _Block:
    """One content block: its kind (``text``, ``thinking``, ``tool_use``) and the text fragments it got."""

    kind: BlockKind
    index: int
    parts: list[str] = field(default_factory=list)
    id: str = ""
    name: str = ""
    streamed: int = 0  # how many of ``parts`` went out as input_json_delta
    is_object: bool | None = None  # tool_use: do the arguments start like a JSON object? (None: not known yet)


class MessagesEncoder(DeltaEncoder):
    """Deltas → Anthropic Messages SSE events; the final message in :attr:`message`.

    ``input_tokens`` is the estimate ``message_start`` carries (Claude Code shows it before the answer ends);
    ``message_delta`` carries the upstream's real counts. With ``wire=False`` no events are built at all (the
    non-streamed path). With ``assumed_window`` (``anthropic.context_scaling``) every count is reported scaled from
    the chosen model's real window (:meth:`upstream_window`) to that one, so the client's compaction sees the real
    fill level (:mod:`.scaling`).

    Tool-call fragments are expected call by call (as llama-server and the conformance stage send them): a
    fragment for a call whose block has already closed still reaches :attr:`message`, but not the stream.
    """

    def __init__(self, model: str, message_id: str, input_tokens: int = 0, *, wire: bool = True,
                 assumed_window: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.message_id = message_id
        self.input_tokens = input_tokens
        self.wire = wire
        self.assumed_window = assumed_window
        self.usage_factor = 1.0  # reported counts = real counts × this (see upstream_window)
        self._blocks: list[_Block] = []
        self._open: _Block | None = None
        self._tools: dict[int, _Block] = {}
        self._started = False
        self._finished = False  # ended cleanly: the stop reason is known
        self._closed = False  # the terminal frame (message_stop or error) has been written
        self._reason: str | None = None
        self._usage: Usage | None = None

    # -- the message ------------------------------------------------------------------------------------------

    @property
    def message(self) -> JSON:
        """The message as streamed so far (its ``stop_reason`` is ``null`` until the stream ended cleanly)."""
        content = [_SHAPES[b.kind].final(b, "".join(b.parts)) for b in self._blocks]
        return self._envelope(content, self.stop_reason() if self._finished else None, self._usage_object())

    def stop_reason(self) -> str:
        """Anthropic's ``stop_reason``: a reply that called tools stopped for ``tool_use`` unless it ran out."""
        if self._reason == "length":
            return "max_tokens"
        if self._tools:
            return "tool_use"
        return STOP_REASONS.get(self._reason or "stop", "end_turn")

    def upstream_window(self, window: int | None) -> None:
        """The chosen upstream's real context window for the model (``None``: not known, nothing is scaled)."""
        self.usage_factor = usage_factor(window, self.assumed_window)

    # -- frames the flow asks for -----------------------------------------------------------------------------

    def opening(self) -> bytes:
        """``message_start``: Anthropic's stream always begins with it (Claude Code's watchdog counts from it)."""
        return self.start()

    def keepalive(self) -> bytes:
        """A ``ping`` event, as Anthropic itself sends them (after ``message_start``)."""
        return PING if self.wire and not self._closed else b""

    def start(self) -> bytes:
        """``message_start`` now, unless it went out already (it goes out by itself before the first block)."""
        if self._started:
            return b""
        self._started = True
        if not self.wire:
            return b""
        usage = {"input_tokens": scaled(self.input_tokens, self.usage_factor), "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "output_tokens": 0}
        message = self._envelope([], None, usage)
        return encode_event("message_start", {"type": "message_start", "message": message})

    # -- deltas -----------------------------------------------------------------------------------------------

    def on_text(self, text: str) -> bytes:
        return self._text(BlockKind.TEXT, text)

    def on_reasoning(self, text: str) -> bytes:
        return self._text(BlockKind.THINKING, text)

    def on_tool_call(self, d: ToolCallDelta) -> bytes:
        block = self._tools.get(d.index)
        out = b""
        if block is None:
            call_id = d.id or f"toolu_{self.message_id.removeprefix('msg_')}_{d.index}"
            block = _Block(BlockKind.TOOL_USE, len(self._blocks), id=call_id, name=d.name or "")
            self._tools[d.index] = block
            out = self._open_block(block)
        elif block is not self._open:
            block.parts.append(d.arguments)  # a late fragment: too late for the stream, kept for the message
            return b""
        if d.arguments:
            block.parts.append(d.arguments)
            if self.wire:
                out += self._stream_arguments(block)
        return out

    def _stream_arguments(self, block: _Block) -> bytes:
        """Send the argument text not sent yet — once it is known to start like a JSON object. Anything else (a
        model writing ``"Paris"`` or ``city=Paris``) is never streamed: the block's input is ``{}`` at its close,
        as in the non-streamed message, so the SDKs' partial-JSON accumulators never see what is not an object."""
        if block.is_object is None:
            text = "".join(block.parts).lstrip()
            if not text:
                return b""
            block.is_object = text.startswith("{")
        if not block.is_object:
            return b""
        pending = "".join(block.parts[block.streamed:])
        block.streamed = len(block.parts)
        return _delta(block.index, _SHAPES[block.kind].delta(pending)) if pending else b""

    def on_finish(self, reason: str) -> bytes:
        self._reason = reason
        return self._close()

    def on_usage(self, usage: Usage) -> bytes:
        """The last counts win, except that all-zero counts (a placeholder usage chunk) never replace real ones."""
        if self._usage is None or usage.prompt_tokens or usage.completion_tokens:
            self._usage = usage
        return b""

    def on_done(self) -> bytes:
        if self._closed:
            return b""
        out = self._close()
        self._finished = self._closed = self.ended = True
        if not self.wire:
            return out
        delta = {"stop_reason": self.stop_reason(), "stop_sequence": None}
        usage = self._usage_object()
        usage.pop("cache_creation_input_tokens")  # cumulative counts: the SDK keeps message_start's value
        event = {"type": "message_delta", "delta": delta, "usage": usage}
        return out + encode_event("message_delta", event) + _MESSAGE_STOP

    def on_error(self, err: StreamError) -> bytes:
        if self._closed:
            return b""
        self._closed = self.ended = True
        return stream_error_event(err) if self.wire else b""

    # -- blocks -----------------------------------------------------------------------------------------------

    def _text(self, kind: BlockKind, text: str) -> bytes:
        block = self._open
        out = b""
        if block is None or block.kind is not kind:
            block = _Block(kind, len(self._blocks))
            out = self._open_block(block)
        block.parts.append(text)
        if not self.wire:
            return out
        return out + _delta(block.index, _SHAPES[kind].delta(text))

    def _open_block(self, block: _Block) -> bytes:
        out = self._close()
        self._blocks.append(block)
        self._open = block
        if not self.wire:
            return out
        start = {"type": "content_block_start", "index": block.index, "content_block": _SHAPES[block.kind].start(block)}
        return out + encode_event("content_block_start", start)

    def _close(self) -> bytes:
        """Close the open block (after ``message_start``, which must come first)."""
        out = self.start()
        block = self._open
        if block is None:
            return out
        self._open = None
        if not self.wire:
            return out
        last = _SHAPES[block.kind].last(block)
        if last is not None:
            out += _delta(block.index, last)
        return out + encode_event("content_block_stop", {"type": "content_block_stop", "index": block.index})

    def _envelope(self, content: list[JSON], stop_reason: str | None, usage: JSON) -> JSON:
        return {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}

    def _usage_object(self) -> JSON:
        """Anthropic counts input without the cached part: input + cache reads = llama-server's prompt tokens
        (each scaled by :attr:`usage_factor`; ``output_tokens`` never is: clients hold it against ``max_tokens``)."""
        u, f = self._usage, self.usage_factor
        if u is None:
            return {"input_tokens": scaled(self.input_tokens, f), "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0, "output_tokens": 0}
        cached = min(u.cached_tokens or 0, u.prompt_tokens)
        # the prompt scaled as a whole, so input + cache reads is exactly what count_tokens says for it
        prompt, cache_read = scaled(u.prompt_tokens, f), scaled(cached, f)
        return {"input_tokens": prompt - cache_read, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cache_read, "output_tokens": u.completion_tokens}


def message_object(reply: JSON, model: str, message_id: str, factor: float = 1.0) -> JSON:
    """A non-streamed ``chat.completion`` → the Anthropic message, by the streaming encoder's own accumulation
    (its usage multiplied by ``factor``, as a stream's would be)."""
    encoder = MessagesEncoder(model, message_id, wire=False)
    encoder.usage_factor = factor
    encoder.feed_deltas(reply_deltas(reply))
    encoder.on_done()
    return encoder.message


def _delta(index: int, delta: JSON) -> bytes:
    return encode_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


@dataclass(frozen=True, slots=True)
class _Shape:
    """One block kind on the wire: its ``content_block_start`` object, the delta of a fragment of its text (a tool
    call's text is its arguments), the delta that goes out before ``content_block_stop`` (if any), and the block in
    the final message."""

    start: Callable[[_Block], JSON]
    delta: Callable[[str], JSON]
    last: Callable[[_Block], JSON | None]
    final: Callable[[_Block, str], JSON]


_SHAPES: dict[BlockKind, _Shape] = {
    BlockKind.TEXT: _Shape(
        start=lambda b: {"type": "text", "text": ""},
        delta=lambda text: {"type": "text_delta", "text": text},
        last=lambda b: None,
        final=lambda b, text: {"type": "text", "text": text},
    ),
    BlockKind.THINKING: _Shape(
        start=lambda b: {"type": "thinking", "thinking": "", "signature": ""},
        delta=lambda text: {"type": "thinking_delta", "thinking": text},
        last=lambda b: {"type": "signature_delta", "signature": SIGNATURE},
        final=lambda b, text: {"type": "thinking", "thinking": text, "signature": SIGNATURE},
    ),
    BlockKind.TOOL_USE: _Shape(
        start=lambda b: {"type": "tool_use", "id": b.id, "name": b.name, "input": {}},
        delta=lambda text: {"type": "input_json_delta", "partial_json": text},
        last=lambda b: None if b.streamed else {"type": "input_json_delta", "partial_json": "{}"},
        final=lambda b, text: {"type": "tool_use", "id": b.id, "name": b.name, "input": jsonutil.object_in(text)},
    ),
}

