"""The items that flow through the stream pipeline, and the stage protocol.

Everything here is pure: no I/O, no reactor. The pipeline for one response is

    SSE bytes --sse.SSEParser--> SSEEvent --items_from_event--> Item
        --> tools.ToolCallConformance --> reasoning.ReasoningRouter --> the dialect's encoder --> bytes

where the encoder is the dialect's (OpenAI chat writes chunks verbatim; the others consume the typed deltas of
:mod:`llamashim.stream.deltas`). Stream synthesis (``tools.streaming: synthesize``) produces the same items from
one non-streamed reply, so every later stage serves both paths.

A :class:`Chunk` keeps the exact SSE frame the upstream sent in ``raw`` for as long as no stage changed it; the
OpenAI encoder writes ``raw`` verbatim, so a well-formed upstream stream passes byte-for-byte and is never
re-serialised. A stage that changes ``data`` must set ``raw`` to ``None`` (or build a new ``Chunk``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

JSONDict = dict[str, Any]


@dataclass(slots=True)
class Chunk:
    """One OpenAI ``chat.completion.chunk`` object."""

    data: JSONDict
    raw: bytes | None = None


@dataclass(slots=True)
class Thinking:
    """Reasoning text routed out of the data stream, sent as an ``event: thinking`` SSE frame."""

    text: str


@dataclass(slots=True)
class Done:
    """The end-of-stream marker (``data: [DONE]``); ``cut`` says why a stage ended the stream early (the relay then
    stops reading the upstream)."""

    cut: str | None = None


@dataclass(slots=True)
class StreamError:
    """A terminal error: encoded as the dialect's error frame, after which the stream ends (no ``[DONE]``)."""

    message: str
    type: str = "server_error"
    code: int | str | None = None


@dataclass(slots=True)
class Passthrough:
    """An upstream SSE event the pipeline does not interpret (unknown ``event:`` type): forwarded verbatim."""

    raw: bytes
    event: str | None = None
    data: str = ""


Item = Chunk | Thinking | Done | StreamError | Passthrough


class Stage(Protocol):
    """One incremental, pure step of the pipeline."""

    def feed(self, item: Item) -> list[Item]:
        """Take one item, return the items to pass on now (possibly none, possibly several)."""

    def finish(self) -> list[Item]:
        """The upstream stream ended cleanly: return whatever is still held back."""
