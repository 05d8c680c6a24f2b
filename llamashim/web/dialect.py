"""The dialect contract, at the edge that uses it: :class:`Dialect` (the wire shapes of one client API) and
:class:`~llamashim.web.routing.DialectRoutes` (the base every dialect's routes class extends, beside the
route decorator).

A dialect states its whole contract in a routes class of three lines::

    class EchoRoutes(DialectRoutes):
        app = Klein()                      # its Klein app (error handlers are registered on it by the base)
        dialect = ECHO                     # its Dialect: name, error shapes, key headers, open paths, stream type
        prefixes = (b"/v1/echo",)          # where it is mounted — and whose errors are shaped its way before routing

and one line in :data:`llamashim.dialects.registry.ROUTES`. The composition root builds a
:class:`~llamashim.web.root.Root` over the routes the registry lists: the one place that maps a path to its routes
object, used both to dispatch and to answer in the right dialect before routing (401, 403, 413, 429, 503, drain).
"""

from __future__ import annotations

from llamashim import jsonutil
from llamashim.errors import ShimError
from llamashim.stream.items import StreamError
from llamashim.stream.sse import encode_data

EVENT_STREAM = b"text/event-stream; charset=utf-8"


class Dialect:
    """The wire shapes of one client API that do not depend on a running stream.

    The base answers in the generic ``{"error": {"message", "type", "code"}}`` shape (llama-server's own, used for
    paths no dialect claims when no fallback is given); a dialect overrides what differs.
    """

    name: str = "generic"
    stream_content_type: bytes = EVENT_STREAM
    # Headers that carry this dialect's API key, besides ``Authorization: Bearer`` and ``X-Api-Key`` (llama-server's
    # own pair, accepted on every path): e.g. Gemini's ``x-goog-api-key``.
    key_headers: tuple[bytes, ...] = ()
    # A query parameter that carries the key (Gemini's ``?key=``), or ``None``.
    key_query: bytes | None = None
    # Paths its clients read before they send a key (``"/api/tags"``, or ``"GET /"`` for one method); the default of
    # ``auth.open_paths`` is every dialect's.
    open_paths: tuple[str, ...] = ()

    def error_body(self, err: ShimError) -> bytes:
        """The JSON body of an error answered before the first byte."""
        return jsonutil.dumps({"error": {"message": err.message, "type": err.type, "code": err.code}})

    def error_status(self, err: ShimError) -> int:
        """The HTTP status of that answer (a dialect may word a status its own way, e.g. Anthropic's 529)."""
        return err.status

    def stream_error(self, err: StreamError) -> bytes:
        """The terminal frame that ends a started stream (for streams whose encoder has no state of its own)."""
        return encode_data({"error": {"message": err.message, "type": err.type, "code": err.code}})

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"
