"""Runaway tool calls end (pure): a looping model — a quant that streams hundreds of tool-call indices, or the same
call with the same arguments over and over — is cut, and the answer ends properly in the client's dialect.

:class:`RunawayGuard` is a pipeline stage after tool-call conformance (so every call has its index, id and name).
It ends the stream, with ``finish_reason: "tool_calls"`` and a :class:`~llamashim.stream.items.Done` naming why, when

* a call would start beyond ``max_calls`` (``tools.max_calls``), or
* a call completes that is the ``max_repeats``-th identical one (same name, same arguments; ``tools.max_repeats``).

The calls before the cut reach the client whole; nothing of the call that tripped the limit does, when it is the
one too many. A repeat is only known once the call is complete (the next one starts, or the choice finishes), so the
repeats up to the limit do go out. The relay stops reading the upstream when the pipeline was cut, so llama-server
stops generating. :func:`limit_reply_calls` is the same rule for a non-streamed reply.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llamashim.stream.items import Chunk, Done, Item

MAX_CALLS = 64
MAX_REPEATS = 8
# Why a stream was cut: the setting whose limit it reached (a bounded label for /metrics and the log line).
MAX_CALLS_KEY = "tools.max_calls"
MAX_REPEATS_KEY = "tools.max_repeats"


@dataclass
class _Calls:
    """One choice's tool calls so far."""

    names: dict[int, str] = field(default_factory=dict)
    arguments: dict[int, list[str]] = field(default_factory=dict)
    open: int | None = None  # the index whose arguments are still arriving
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)


class RunawayGuard:
    """The stage; ``cut`` names the limit it ended the stream at (``None``: it did not)."""

    def __init__(self, max_calls: int = MAX_CALLS, max_repeats: int = MAX_REPEATS) -> None:
        self.max_calls = max_calls
        self.max_repeats = max_repeats
        self.cut: str | None = None
        self._choices: dict[int, _Calls] = {}
        self._meta: dict[str, Any] = {}

    def feed(self, item: Item) -> list[Item]:
        if self.cut is not None:
            return []
        if not isinstance(item, Chunk):
            return [item]
        choices = item.data.get("choices")
        if not self._meta:
            self._meta = {k: item.data[k] for k in ("id", "object", "created", "model") if k in item.data}
        if not isinstance(choices, list):
            return [item]
        for choice in choices:
            if isinstance(choice, dict):
                reason = self._choice(choice)
                if reason is not None:
                    return self._end(choice.get("index", 0), reason)
        return [item]

    def finish(self) -> list[Item]:
        return []

    def _choice(self, choice: dict[str, Any]) -> str | None:
        index = choice.get("index", 0)
        state = self._choices.setdefault(index if isinstance(index, int) else 0, _Calls())
        delta = choice.get("delta")
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict) or not isinstance(call.get("index"), int):
                continue
            at = call["index"]
            if at not in state.names:
                reason = self._close(state)
                if reason is not None:
                    return reason
                if len(state.names) >= self.max_calls:
                    return MAX_CALLS_KEY
                fn = call.get("function")
                state.names[at] = str(fn.get("name") or "") if isinstance(fn, dict) else ""
                state.arguments[at] = []
                state.open = at
            fn = call.get("function")
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                state.arguments[at].append(fn["arguments"])
        if choice.get("finish_reason"):
            return self._close(state)
        return None

    def _close(self, state: _Calls) -> str | None:
        """The open call is complete: count it, and say so when it is one repeat too many."""
        if state.open is None:
            return None
        key = (state.names[state.open], "".join(state.arguments[state.open]))
        state.open = None
        state.seen[key] += 1
        if state.seen[key] >= self.max_repeats:
            return MAX_REPEATS_KEY
        return None

    def _end(self, index: Any, reason: str) -> list[Item]:
        self.cut = reason
        finish = {"index": index if isinstance(index, int) else 0, "delta": {}, "finish_reason": "tool_calls"}
        return [Chunk({**self._meta, "choices": [finish]}), Done(cut=reason)]


def limit_reply_calls(reply: dict[str, Any], max_calls: int = MAX_CALLS, max_repeats: int = MAX_REPEATS
                      ) -> tuple[dict[str, Any], str | None]:
    """A non-streamed reply with at most ``max_calls`` tool calls per choice, ending before the ``max_repeats``-th
    identical one's successor (as the stream would), and why it was cut (``None``: untouched, the same object)."""
    choices = reply.get("choices")
    if not isinstance(choices, list):
        return reply, None
    cut: str | None = None
    new_choices = list(choices)
    for pos, choice in enumerate(choices):
        msg = choice.get("message") if isinstance(choice, dict) else None
        calls = msg.get("tool_calls") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or not isinstance(calls, list):
            continue
        kept, reason = _kept(calls, max_calls, max_repeats)
        if reason is not None:
            cut = reason
            new_choices[pos] = {**choice, "message": {**msg, "tool_calls": kept}, "finish_reason": "tool_calls"}
    return ({**reply, "choices": new_choices}, cut) if cut is not None else (reply, None)


def _kept(calls: list[Any], max_calls: int, max_repeats: int) -> tuple[list[Any], str | None]:
    seen: Counter[tuple[str, str]] = Counter()
    for n, call in enumerate(calls):
        if n >= max_calls:
            return calls[:n], MAX_CALLS_KEY
        fn = call.get("function") if isinstance(call, dict) else None
        key = (str(fn.get("name")), str(fn.get("arguments"))) if isinstance(fn, dict) else ("", "")
        seen[key] += 1
        if seen[key] >= max_repeats:
            return calls[: n + 1], MAX_REPEATS_KEY
    return calls, None
