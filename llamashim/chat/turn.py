"""One client exchange as the chat flow sees it: :class:`Turn`, implemented by the web edge
(:class:`llamashim.web.turn.RequestTurn`).

The flow never writes HTTP itself. It tells the turn what happened (which upstream was chosen, when it answered,
how far it is with the prompt and the answer, the tokens used) and hands it bytes: a JSON reply, or a stream —
prepared with its terminal frame and keep-alive interval, written piece by piece or relayed from an upstream response
with backpressure and cancellation. What the flow knows about a turn, and what it may do to it, is this one
interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from llamashim.errors import ShimError
from llamashim.stream.transform import StreamTransform
from llamashim.stream.usage import Usage

TerminalFrame = Callable[[ShimError], bytes]
"""The bytes that end a started stream with an error, in its dialect (the running encoder's own)."""


class Turn(Protocol):
    @property
    def request_id(self) -> str:
        """The request's id (for log lines)."""

    @property
    def owner(self) -> str:
        """Whose request: a hash of the API key that passed the gate (``""`` without keys); what is kept for one
        owner never serves another."""

    # -- what the flow tells the turn -----------------------------------------------------------------------------

    def chose(self, upstream: str, model: str) -> None:
        """The upstream the request goes to (again on failover), for ``model`` (its one friendly name)."""

    def upstream_answered(self, seconds: float) -> None:
        """The first upstream answered its headers ``seconds`` after it was asked."""

    def counted(self, usage: Usage | None) -> None:
        """The tokens the answer used."""

    def cut(self, limit: str) -> None:
        """A reply was cut at a runaway limit (``tools.max_calls`` / ``tools.max_repeats``); a stream's relay says
        it itself."""

    def progressed(self, total: int, cache: int, processed: int, generated: int) -> None:
        """How far the upstream is (:mod:`llamashim.stream.progress`): ``processed`` of the prompt's ``total`` tokens
        (``cache`` of them from its prompt cache; all 0 when it does not say), and ``generated`` answer tokens."""

    # -- what the flow asks ---------------------------------------------------------------------------------------

    def started(self) -> bool:
        """Whether anything reached the client (after that, a failure is the stream's: no failover)."""

    def gone(self) -> bool:
        """Whether the client went away."""

    def upstream_headers(self) -> Headers:
        """The headers a JSON request to the upstream carries (content type; the client's request id)."""

    # -- answering ------------------------------------------------------------------------------------------------

    def reply(self, body: bytes) -> bytes:
        """A JSON answer: set its headers; the returned body is the route's result."""

    def prepare_stream(
        self,
        terminal_frame: TerminalFrame,
        keepalive: float,
        beat: Callable[[], bytes],
        content_type: bytes | None = None,
    ) -> None:
        """The answer will be a stream ending in ``terminal_frame`` on failure. Until its output starts, every
        ``keepalive`` seconds that nothing went out, ``beat()`` goes out (the dialect's opening events, then its
        keep-alive event); the first one starts the stream. Called again, it replaces them (the timer goes on)."""

    def write(self, data: bytes) -> None:
        """Stream output to the client (starting the stream; keep-alives stop)."""

    def finish(self) -> None:
        """End the stream."""

    def relay(self, response: IResponse, transform: StreamTransform, idle_timeout: float | None,
              finish: bool = True) -> Deferred[None]:
        """Stream ``response``'s body through ``transform`` to the client and end the stream: a slow client pauses
        the upstream read; a client that leaves closes the upstream connection. With ``finish`` false the stream is
        left open when the body ended: the flow has more to write (an end it kept back) and calls :meth:`finish`."""
