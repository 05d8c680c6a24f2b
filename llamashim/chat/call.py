"""What a dialect hands the shared flow: :class:`ChatCall` (a chat request) or :class:`CompletionCall` (a raw or
fill-in-the-middle generation on llama-server's own completion endpoints), both run by
:class:`~llamashim.chat.flow.ChatFlow` on the same failover, the same turn and the same relay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from llamashim.errors import ShimError
from llamashim.modes import ThinkingMode
from llamashim.stream.pipeline import Encoder
from llamashim.stream.transform import StreamTransform
from llamashim.stream.usage import Usage

Reply = Callable[[dict[str, Any]], Any]
"""A non-streamed upstream answer (for chat: a normalised ``chat.completion`` with its reasoning routed) → the
dialect's JSON body (a value to serialise, or bytes)."""


@dataclass(kw_only=True)
class ChatCall:
    """A chat request in the internal form.

    ``body`` is an OpenAI chat-completions body (tools repaired by the flow, ``stream`` set, a
    ``stream_options.include_usage`` when the dialect wants usage in its stream). ``reasoning_mode`` is the
    reasoning router's mode for this request (``separate`` keeps reasoning as ``reasoning_content``, which the typed
    deltas carry as reasoning). ``stream_content_type`` overrides the dialect's (a dialect whose stream format
    depends on the request). ``on_complete`` runs once the whole answer is known (the Responses store writes there);
    the answer's end — a stream's last event, a reply — waits for the Deferred it returns, at most
    ``COMPLETE_TIMEOUT`` seconds, so a client that has the end finds the answer kept, from any instance.
    ``on_window`` is told the chosen upstream's context window for the model (``Pick.window``; ``None`` when
    unknown) before the answer is shaped, again on failover (the Anthropic dialect scales its reported usage by it).
    ``prefer`` is the
    tag of the upstream that served the conversation's previous turn (:func:`~llamashim.upstream.choice.upstream_tag`;
    a Responses id carries it): the choice goes there while it serves the model, is up and has room. ``on_upstream``
    is told the chosen upstream's tag before anything goes out, again on failover (a Responses id carries it).
    """

    body: dict[str, Any]
    encoder: Encoder
    reply: Reply
    reasoning_mode: ThinkingMode
    include_usage: bool = True
    path: bytes = b"/v1/chat/completions"
    stream_content_type: bytes | None = None
    on_complete: Callable[[], Deferred[None] | None] | None = None
    on_window: Callable[[int | None], None] | None = None
    prefer: str | None = None
    on_upstream: Callable[[str], None] | None = None

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def model(self) -> str | None:
        """The model the request names (what the upstream is chosen by)."""
        model = self.body.get("model")
        return model if isinstance(model, str) and model else None


@dataclass(kw_only=True)
class CompletionCall:
    """A generation on llama-server's own ``/completion`` or ``/infill`` (no chat template), streamed through
    ``transform`` (one per attempt) or answered as one reply."""

    model: str
    path: bytes
    body: dict[str, Any]
    stream: bool
    transform: Callable[[], StreamTransform]
    reply: Reply  # the whole answer → the client's JSON body
    whole: Callable[[dict[str, Any]], bytes]  # a stream request answered with one reply → its stream's bytes
    usage: Callable[[dict[str, Any]], Usage | None]  # the token usage of a whole answer
    failure: Callable[[int, bytes], ShimError]  # an upstream error answer → the client's error
