"""One chat request as the shared flow runs it: :class:`ChatCall`, built by a dialect, run by ``ChatFlow``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from llamashim.stream.items import Item
from llamashim.web.dialect import Dialect

Encoder = Callable[[list[Item]], bytes]
"""Pipeline items → the dialect's wire bytes. Stateful: one per request."""

Reply = Callable[[dict[str, Any]], Any]
"""A non-streamed upstream ``chat.completion`` (normalised, reasoning routed) → the dialect's JSON body (a value
to serialise, or bytes)."""


@dataclass
class ChatCall:
    """What a dialect hands the shared chat flow.

    ``body`` is the internal chat request: an OpenAI chat-completions body (tools repaired, ``stream`` set, a
    ``stream_options.include_usage`` when the dialect wants usage). ``reasoning_mode`` is the reasoning router's
    mode for this request (``separate`` keeps reasoning as ``reasoning_content``, which the typed deltas carry as
    reasoning). ``on_complete`` runs once the whole answer is known (the Responses store writes there; it answers
    reads of a write still in flight from memory, so a follow-up turn never races it).
    """

    dialect: Dialect
    body: dict[str, Any]
    encoder: Encoder
    reply: Reply
    reasoning_mode: str
    include_usage: bool = True
    model: str | None = None
    path: bytes = b"/v1/chat/completions"
    on_complete: Callable[[], Deferred[None] | None] | None = None

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))
