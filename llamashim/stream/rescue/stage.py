"""The streaming rescue (pure): a pipeline stage, before tool-call conformance, that watches the content deltas of a
request that offered tools and turns tool-call markup into proper ``delta.tool_calls``.

Content passes through untouched (the very chunk, its upstream bytes kept) until a possible opener appears; from
there it is held until the :class:`~llamashim.stream.rescue.detect.Scanner` decides: a call goes out as one
tool-call delta (``index``, ``id``, ``type``, ``function.name`` and all of ``arguments``), numbered after the
upstream's own calls, and the choice's ``finish_reason: "stop"`` becomes ``"tool_calls"``; text that proves not to be
a call is released unchanged. Holding is bounded (``max_hold``), and the end of the choice, of the stream, or an error
releases whatever is still undecided, so a false start never stalls the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llamashim.stream.items import Chunk, Done, Item, StreamError
from llamashim.stream.rescue.base import Offered, ToolCall
from llamashim.stream.rescue.detect import MAX_HOLD, Scanner
from llamashim.stream.tools import CHUNK_OBJECT, new_call_id

_SIDE = ("usage", "timings")  # carried by the last chunk made from an upstream chunk


@dataclass
class _Choice:
    scanner: Scanner
    next_index: int = 0  # the index the next rescued call gets (after the upstream's own calls)
    rescued: bool = False


@dataclass
class ToolCallRescue:
    """The stage (see the module docstring); ``tools`` is the request's ``tools``."""

    tools: Any
    max_hold: int = MAX_HOLD
    new_id: Callable[[], str] = new_call_id
    _offered: Offered = field(init=False)
    _choices: dict[int, _Choice] = field(default_factory=dict, init=False)
    _meta: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._offered = Offered(self.tools)

    def feed(self, item: Item) -> list[Item]:
        if isinstance(item, Chunk):
            return [item] if self._plain(item) else self._chunk(item)
        if isinstance(item, (Done, StreamError)):
            return [*self._flush(), item]
        return [item]

    def _plain(self, item: Chunk) -> bool:
        """The fast path: one choice, a content delta with no possible markup, passed as it came."""
        choices = item.data.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not self._meta:
            return False
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict) or len(delta) != 1 or choice.get("finish_reason") is not None:
            return False
        content = delta.get("content")
        state = self._choices.get(choice.get("index", 0))
        return isinstance(content, str) and state is not None and state.scanner.plain(content)

    def finish(self) -> list[Item]:
        return self._flush()

    def _state(self, index: int) -> _Choice:
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice(Scanner(self._offered, self.max_hold))
        return state

    def _chunk(self, item: Chunk) -> list[Item]:
        data = item.data
        if not self._meta:
            self._meta = {k: data[k] for k in ("id", "created", "model", "system_fingerprint") if k in data}
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return [item]
        base = {k: v for k, v in data.items() if k not in ("choices", *_SIDE)}
        out: list[dict[str, Any]] = []
        changed = False
        for choice in choices:
            made = self._choice(choice) if isinstance(choice, dict) else None
            changed = changed or made is not None
            out.extend([choice] if made is None else made)
        if not changed:
            return [item]
        chunks: list[Item] = [Chunk({**base, "choices": [c]}) for c in out]
        side = {k: data[k] for k in _SIDE if k in data}
        if side:
            if chunks:
                last = chunks[-1]
                assert isinstance(last, Chunk)
                chunks[-1] = Chunk({**last.data, **side})
            else:
                chunks.append(Chunk({**base, "choices": [], **side}))
        return chunks

    def _choice(self, choice: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The choices to send for one upstream choice, or ``None`` when it passes as it came."""
        index = choice.get("index")
        index = index if isinstance(index, int) else 0
        state = self._state(index)
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("index"), int):
                state.next_index = max(state.next_index, call["index"] + 1)
        content = delta.get("content")
        text, calls = state.scanner.feed(content) if isinstance(content, str) and content else (content, [])
        finish = choice.get("finish_reason")
        if finish:
            rest, more = state.scanner.finish()
            calls = [*calls, *more]
            if rest:
                text = (text or "") + rest
        if text == content and not calls and not (finish == "stop" and state.rescued):
            return None
        out: list[dict[str, Any]] = []
        new_delta = {k: v for k, v in delta.items() if k != "content"}
        if text:
            new_delta["content"] = text
        elif content is None and "content" in delta:
            new_delta["content"] = None
        if new_delta or (finish and not calls and not state.rescued):
            out.append({**choice, "delta": new_delta, "finish_reason": None if calls or state.rescued else finish})
        out.extend(self._calls(index, state, calls))
        if finish and (calls or state.rescued):
            out.append({"index": index, "delta": {}, "finish_reason": "tool_calls" if finish == "stop" else finish})
        return out

    def _calls(self, index: int, state: _Choice, calls: list[ToolCall]) -> list[dict[str, Any]]:
        out = []
        for call in calls:
            fn = {"name": call.name, "arguments": call.arguments}
            delta = {"tool_calls": [{"index": state.next_index, "id": self.new_id(), "type": "function",
                                     "function": fn}]}
            out.append({"index": index, "delta": delta, "finish_reason": None})
            state.next_index += 1
            state.rescued = True
        return out

    def _flush(self) -> list[Item]:
        """The stream ended (or failed) with text still held: decide it now."""
        items: list[Item] = []
        for index, state in self._choices.items():
            text, calls = state.scanner.finish()
            parts = ([{"index": index, "delta": {"content": text}, "finish_reason": None}] if text else [])
            parts.extend(self._calls(index, state, calls))
            items.extend(Chunk({**self._meta, "object": CHUNK_OBJECT, "choices": [p]}) for p in parts)
        return items
