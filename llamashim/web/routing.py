"""How a route is declared: :func:`api_route` (the cross-cutting parts every API route shares) and
:func:`answer_errors` (exception → the dialect's error answer, registered once per Klein app).

``@api_route(app, "/v1/messages", route="messages")`` sets the request context's route label (the bounded
``/metrics`` label), runs the handler as a coroutine, and — for routes that go to the upstream — holds an upstream
slot (:class:`llamashim.upstream.limiter.UpstreamSlots`) while it runs. Errors are Klein's business:
``answer_errors(app)`` turns a :class:`ShimError` into the dialect's error body before the first byte, or the
stream's terminal frame after it, and a routing miss (404/405) into the same JSON shapes — never an HTML page.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from llamashim.errors import ShimError
from llamashim.upstream.limiter import UpstreamSlots
from llamashim.web.context import context_of
from llamashim.web.respond import end_with_error, send_json

log = Logger(namespace="llamashim.routes")
T = TypeVar("T")
Handler = Callable[..., Awaitable[Any]]


def api_route(
    app: Klein,
    path: str,
    *,
    route: str,
    methods: Sequence[str] = ("POST",),
    upstream: bool = True,
    branch: bool = False,
) -> Callable[[Handler], Handler]:
    """Declare an API route (see the module docstring). The routes object must have ``slots: UpstreamSlots``."""

    def decorate(fn: Handler) -> Handler:
        @app.route(path, methods=list(methods), branch=branch)
        @functools.wraps(fn)
        def handler(self: Any, request: Request, **kw: Any) -> Deferred[Any]:
            context_of(request).route = route
            if not upstream:
                return Deferred.fromCoroutine(_call(fn, self, request, kw))
            slots: UpstreamSlots = self.slots
            return Deferred.fromCoroutine(slots.run(lambda: fn(self, request, **kw)))

        return handler  # type: ignore[no-any-return]

    return decorate


async def _call(fn: Handler, self: Any, request: Request, kw: dict[str, Any]) -> Any:
    return await fn(self, request, **kw)


def answer_error(request: Request, err: ShimError) -> None:
    """Log ``err`` (server-side failures and anything after the first byte, with the request id) and end
    ``request`` with it in its dialect's shape."""
    ctx = context_of(request)
    if err.status >= 500 or request.startedWriting:
        log.warn(
            "{method} {path}: {status} {message} (id={request_id})",
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            status=err.status,
            message=err.message,
            request_id=ctx.request_id.decode("ascii", "replace"),
        )
    end_with_error(request, err)


def answer_errors(app: Klein) -> None:
    """Register the error handlers on ``app`` (call once per routes class, below its ``app = Klein()``)."""

    @app.handle_errors(ShimError)  # type: ignore[arg-type]  # Klein's stubs want the unbound form
    def shim_error(_instance: Any, request: Request, failure: Failure) -> None:
        assert isinstance(failure.value, ShimError)
        answer_error(request, failure.value)

    @app.handle_errors(HTTPException)  # type: ignore[arg-type]
    def routing_miss(_instance: Any, request: Request, failure: Failure) -> bytes:
        miss = failure.value
        assert isinstance(miss, HTTPException)
        if isinstance(miss, MethodNotAllowed):
            allowed = ", ".join(sorted(miss.valid_methods or ()))
            err = ShimError(405, f"method {request.method.decode('latin-1')} not allowed for "
                            f"{request.path.decode('latin-1')} (allowed: {allowed})")
        else:
            err = ShimError(miss.code or 404, f"no route for {request.path.decode('latin-1')}")
        # A miss is raised before Klein watches notifyFinish, so Klein finishes the request after this handler
        # whatever it did: return the body and let Klein write it (finishing here too finishes twice).
        return send_json(request, context_of(request).dialect.error_body(err), err.status)
