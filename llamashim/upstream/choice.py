"""Choosing an upstream for one request (pure): a conversation's own upstream by rendezvous hashing, the least busy
otherwise, spilling over when full.

The signals, per upstream that serves the model: whether it is up (its ``/health``, the last request's outcome,
a supervised llama-server's readiness), whether it is loading (503), llamashim's own count of requests in flight
to it, its ``max_concurrent`` (when configured) and, where it exposes ``/slots``, how many slots are idle.

* **A conversation's upstream** — requests of one conversation (same model, same system prompt and first user turn:
  see :func:`conversation_key`) go to the upstream first in that conversation's rendezvous order (highest random
  weight: a hash of the key and each upstream's name), so its prompt cache (llama-server keeps each slot's last
  prompt) is reused instead of reprocessed. The order is a function of the key and the names alone: every worker and
  every llamashim instance with the same upstreams sends a conversation to the same place with nothing shared, and
  an upstream joining or leaving moves only its own share of conversations. Bounded load: an upstream that is full
  (or down) is skipped for the next in the conversation's order.
* **The previous turn's upstream** — a turn that names the upstream its previous turn was served by (a Responses
  ``previous_response_id``: the id carries that upstream's :func:`upstream_tag`) goes back there while it serves the
  model, is up and has room: its prompt is cached there even when the first turn spilled over to it, or when the
  conversation key differs. Otherwise the choice is made as if it named none (and its reason says why not).
* **Least busy** for requests without a conversation key, and when every upstream is full: the fewest requests in
  flight, then the most idle slots, then configuration order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamashim import jsonutil


@dataclass(slots=True)  # not frozen: one is made per candidate per request, and frozen ones cost twice as much
class Load:
    """What is known about one candidate upstream right now."""

    name: str
    up: bool = True
    loading: bool = False
    ready: bool = True  # False: cannot take requests at all (a supervised llama-server still starting)
    in_flight: int = 0
    max_concurrent: int | None = None
    idle_slots: int | None = None
    total_slots: int | None = None

    @property
    def usable(self) -> bool:
        return self.ready and self.up and not self.loading

    @property
    def full(self) -> bool:
        if self.max_concurrent is not None:
            return self.in_flight >= self.max_concurrent
        if self.total_slots is not None:
            return self.in_flight >= self.total_slots
        return False


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose(candidates: Sequence[Load], key: str | None = None, preferred: str | None = None) -> Choice | None:
    """The upstream to send a request to, and why; ``None`` when no candidate is usable. ``key``: the request's
    conversation key (:func:`conversation_key`), if it has one; ``preferred``: the name of the upstream that served
    the conversation's previous turn, if it is known."""
    usable = [c for c in candidates if c.usable]
    if not usable:
        # Every upstream of the model is marked down or loading: try one anyway (it may be back; if not, the
        # client gets its real error rather than a guess), the first in configuration order.
        fallback = [c for c in candidates if c.ready]
        return Choice(fallback[0].name, "every upstream of the model is down or loading; trying it anyway") \
            if fallback else None
    if preferred is None:
        return _by_load(candidates, usable, key)
    previous = next((c for c in candidates if c.name == preferred), None)
    if previous is not None and previous.usable and not previous.full:
        return Choice(previous.name, "the upstream of the previous response (its prompt cache)")
    why = "does not serve the model" if previous is None else "is full" if previous.usable else "is down or loading"
    choice = _by_load(candidates, usable, key)
    return Choice(choice.name, f"{choice.reason}; the previous response's upstream {preferred} {why}")


def _by_load(candidates: Sequence[Load], usable: list[Load], key: str | None) -> Choice:
    """The choice among ``usable`` (not empty) by the conversation's order, else by load."""
    if key is not None and len(candidates) > 1:
        ranked = sorted(candidates, key=lambda c: weight(key, c.name), reverse=True)
        for rank, c in enumerate(ranked):
            if c.usable and not c.full:
                return Choice(c.name, "conversation affinity (its prompt cache)" if rank == 0 else
                              f"next in the conversation's order ({', '.join(r.name for r in ranked[:rank])} "
                              "full or down)")
    order = {c.name: i for i, c in enumerate(candidates)}
    best = min(usable, key=lambda c: (c.full, c.in_flight, -(c.idle_slots or 0), order[c.name]))
    if len(usable) == 1:
        reason = "the only upstream up for the model"
    elif key is not None:
        reason = f"least busy ({best.in_flight} in flight); every upstream of the conversation is full"
    else:
        reason = f"least busy ({best.in_flight} in flight, {best.idle_slots if best.idle_slots is not None else '?'} " \
                 "idle slots)"
    return Choice(best.name, reason)


def upstream_tag(name: str) -> str:
    """A short tag for the upstream configured as ``name`` (8 hex digits: a 4-byte BLAKE2b of the name, never of its
    URL or key), which a Responses id carries so that its ``previous_response_id`` turn comes back to it. Not a
    secret: it names nothing an operator did not choose as a label."""
    return hashlib.blake2b(name.encode(), digest_size=4).hexdigest()


def weight(key: str, name: str) -> int:
    """Upstream ``name``'s rendezvous weight for conversation ``key`` (the highest is the conversation's upstream)."""
    return int.from_bytes(hashlib.blake2b(f"{key}\0{name}".encode(), digest_size=8).digest(), "big")


def conversation_key(model: str, messages: Any) -> str | None:
    """A key shared by the turns of one conversation: the model, the first system message and the first user
    message (what stays the same as a conversation grows). ``None`` when there is no user message yet."""
    if not isinstance(messages, list):
        return None
    system = next((m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "system"), None)
    user = next((m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
    if user is None:
        return None
    digest = hashlib.blake2b(jsonutil.dumps([model, system, user]), digest_size=12)
    return digest.hexdigest()
