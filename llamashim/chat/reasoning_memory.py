"""Reasoning carried across turns (``thinking.replay``): what a model thought before it called tools, put back when
the client sends that assistant turn again without it.

Reasoning models that think between tool calls (Qwen3.5/3.6, gpt-oss, GLM, MiniMax) read their earlier reasoning
from the conversation — their chat templates render an assistant message's ``reasoning_content`` — and most clients
(VS Code Copilot, opencode, the chat-completions SDKs) drop it, so the model loses its plan. :class:`ReasoningMemory`
keeps the reasoning of each answer that ended in tool calls, keyed by the owner (a hash of the API key: it never
crosses keys) and by the calls — each call id, and a digest of the calls' names and arguments for clients that do
not keep ids (Ollama's) — bounded in entries, bytes and age. :meth:`ReasoningMemory.restore` gives a chat request
whose assistant turns with tool calls lack ``reasoning_content`` the remembered one. Pure apart from the injected
clock; never logged.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from llamashim.modes import ReplayMode
from llamashim.stream.items import Chunk, Done, Item

MAX_ENTRIES = 4096
MAX_BYTES = 32 * 1024 * 1024
MAX_AGE = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class _Kept:
    reasoning: str
    at: float
    owner: str
    keys: tuple[str, ...]


def calls_digest(calls: Iterable[Any]) -> str | None:
    """A digest of tool calls' names and arguments (arguments compared as JSON values, so ``{"a": 1}`` and
    ``{"a":1}`` match); ``None`` for no usable call."""
    parts = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        parts.append([fn.get("name"), args])
    if not parts:
        return None
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "calls:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _keys(calls: list[Any]) -> list[str]:
    keys = [f"id:{c['id']}" for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]]
    digest = calls_digest(calls)
    return [*keys, digest] if digest else keys


Row = tuple[str, list[str], str, float]
"""A remembered answer as a persistence keeps it: (owner, keys, reasoning, when)."""


class Persistence(Protocol):
    """Where remembered reasoning survives a restart (the Responses store, when it is on)."""

    def save_reasoning(self, owner: str, keys: list[str], reasoning: str, at: float) -> None:
        """Keep one remembered answer (written in the background; a failure is logged there)."""

    def load_reasoning(self) -> Deferred[list[Row]]:
        """Fires with what was kept, oldest first, once the persistence is running."""


class ReasoningMemory:
    """The remembered reasoning, per owner, least recently stored first."""

    def __init__(self, clock: IReactorTime, mode: ReplayMode = ReplayMode.AUTO, max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_BYTES, max_age: float = MAX_AGE) -> None:
        self.clock = clock
        self.mode = mode
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._entries: OrderedDict[int, _Kept] = OrderedDict()
        self._index: dict[tuple[str, str], int] = {}
        self._bytes = 0
        self._next = 0
        self.persistence: Persistence | None = None

    def attach(self, persistence: Persistence) -> None:
        """Keep every remembered answer in ``persistence`` too, and take back what it kept (a restart)."""
        self.persistence = persistence
        persistence.load_reasoning().addCallback(self._loaded)

    def _loaded(self, rows: list[Row]) -> None:
        for owner, keys, reasoning, at in rows:
            self._keep(owner, keys, reasoning, at)

    def applies(self, chat_template: str | None) -> bool:
        """Whether to remember and restore for an upstream whose chat template is ``chat_template``: ``always``,
        never with ``off``; ``auto`` when the template reads earlier reasoning (it names ``reasoning_content``)."""
        if self.mode == ReplayMode.OFF:
            return False
        return self.mode == ReplayMode.ALWAYS or (chat_template is not None and "reasoning_content" in chat_template)

    def remember(self, owner: str, calls: list[Any], reasoning: str) -> None:
        """Keep ``reasoning`` for the answer that made ``calls`` (nothing when either is empty)."""
        keys = _keys(calls)
        if not reasoning or not keys:
            return
        at = self.clock.seconds()
        self._keep(owner, keys, reasoning, at)
        if self.persistence is not None:
            self.persistence.save_reasoning(owner, keys, reasoning, at)

    def _keep(self, owner: str, keys: list[str], reasoning: str, at: float) -> None:
        self._expire()
        if at < self.clock.seconds() - self.max_age:
            return
        self._next += 1
        kept = _Kept(reasoning, at, owner, tuple(keys))
        self._entries[self._next] = kept
        self._bytes += len(reasoning)
        for key in keys:
            self._index[(owner, key)] = self._next
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            self._drop_oldest()

    def recall(self, owner: str, calls: list[Any]) -> str | None:
        """The reasoning remembered for ``calls`` by ``owner``, if any (and not expired)."""
        self._expire()
        number = self._find(owner, calls)
        return None if number is None else self._entries[number].reasoning

    def _find(self, owner: str, calls: list[Any]) -> int | None:
        for key in _keys(calls):
            number = self._index.get((owner, key))
            if number is not None and number in self._entries:
                return number
        return None

    def restore(self, body: dict[str, Any], owner: str) -> tuple[dict[str, Any], int]:
        """``body`` with remembered reasoning put back into its assistant turns that have tool calls and no
        ``reasoning_content``, and how many got it (``body`` itself when none did). One answer's reasoning goes to
        one turn, the latest with its calls: an earlier turn that made the same calls (same names and arguments,
        another id or none) was another answer."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not self._entries:
            return body, 0
        self._expire()
        out = list(messages)
        used: set[int] = set()
        for i in range(len(messages) - 1, -1, -1):
            msg = messages[i]
            calls = msg.get("tool_calls") if isinstance(msg, dict) and msg.get("role") == "assistant" else None
            number = self._find(owner, calls) if isinstance(calls, list) and calls else None
            if number is None or number in used:
                continue
            used.add(number)
            if not msg.get("reasoning_content"):
                out[i] = {**msg, "reasoning_content": self._entries[number].reasoning}
        restored = sum(1 for a, b in zip(out, messages, strict=True) if a is not b)
        return ({**body, "messages": out}, restored) if restored else (body, 0)

    def _expire(self) -> None:
        horizon = self.clock.seconds() - self.max_age
        while self._entries and next(iter(self._entries.values())).at < horizon:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        number, kept = self._entries.popitem(last=False)
        self._bytes -= len(kept.reasoning)
        for key in kept.keys:
            if self._index.get((kept.owner, key)) == number:
                del self._index[(kept.owner, key)]


class ReplayTap:
    """A pipeline stage (after tool-call conformance) that watches a streamed answer go by, keeps its reasoning and
    its tool calls, and hands them to ``keep`` when the stream ends well (``Done``). Passes every item as is."""

    def __init__(self, keep: Callable[[list[dict[str, Any]], str], None]) -> None:
        self.keep = keep
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._arguments: dict[int, list[str]] = {}

    def feed(self, item: Item) -> list[Item]:
        if isinstance(item, Chunk):
            for choice in item.data.get("choices") or ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    self._delta(delta)
        elif isinstance(item, Done) and self._calls:
            self.keep(self.calls(), self.reasoning)
        return [item]

    def finish(self) -> list[Item]:
        return []

    def _delta(self, delta: dict[str, Any]) -> None:
        text = delta.get("reasoning_content")
        if isinstance(text, str) and text:
            self._reasoning.append(text)
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict) or not isinstance(call.get("index"), int):
                continue
            index = call["index"]
            fn = call.get("function")
            fn = fn if isinstance(fn, dict) else {}
            if index not in self._calls:
                self._calls[index] = {"id": call.get("id"), "name": fn.get("name")}
                self._arguments[index] = []
            if isinstance(fn.get("arguments"), str):
                self._arguments[index].append(fn["arguments"])

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    def calls(self) -> list[dict[str, Any]]:
        """The answer's tool calls in the chat-completions message shape."""
        return [{"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": "".join(self._arguments[i])}}
                for i, c in sorted(self._calls.items())]
