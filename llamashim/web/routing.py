"""How a route is declared: :class:`DialectRoutes` (the base of every routes class), :func:`api_route` (the
cross-cutting parts every API route shares) and :func:`answer_errors` (exception → the dialect's error answer,
registered once per Klein app — by :class:`DialectRoutes` for its subclasses).

``@api_route(app, "/v1/messages", route="messages")`` sets the request context's route label (the bounded
``/metrics`` label), runs the handler as a coroutine, and — for routes that go to the upstream — holds an upstream
slot (:class:`llamashim.upstream.limiter.UpstreamSlots`) while it runs. Errors are Klein's business:
``answer_errors(app)`` turns a :class:`ShimError` into the dialect's error body before the first byte, or the
stream's terminal frame after it, and a routing miss (404/405) into the same JSON shapes — never an HTML page.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, Protocol, TypeVar, cast

from klein import Klein
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from llamashim.errors import ShimError
from llamashim.upstream.limiter import UpstreamSlots
from llamashim.web.context import context_of
from llamashim.web.dialect import Dialect
from llamashim.web.respond import end_with_error, send_json

if TYPE_CHECKING:
    from twisted.web.resource import IResource

    from llamashim.chat.deps import RouteDeps

log = Logger(namespace="llamashim.routes")
T = TypeVar("T")
P = ParamSpec("P")


class HasSlots(Protocol):
    """A routes object: what :func:`api_route` needs of it."""

    slots: UpstreamSlots


R = TypeVar("R", bound=HasSlots)


def api_route(
    app: Klein,
    path: str,
    *,
    route: str,
    methods: Sequence[str] = ("POST",),
    upstream: bool = True,
    branch: bool = False,
) -> Callable[[Callable[Concatenate[R, Request, P], Awaitable[T]]], Callable[Concatenate[R, Request, P], Deferred[T]]]:
    """Declare an API route (see the module docstring). Typed like Tahoe's ``_authorized_route``: mypy checks each
    handler's signature (the routes object, the request, then the path's keyword arguments)."""

    def decorate(
        fn: Callable[Concatenate[R, Request, P], Awaitable[T]],
    ) -> Callable[Concatenate[R, Request, P], Deferred[T]]:
        @functools.wraps(fn)
        def handler(self: R, request: Request, /, *args: P.args, **kw: P.kwargs) -> Deferred[T]:
            context_of(request).route = route

            async def run() -> T:
                return await fn(self, request, *args, **kw)

            if not upstream:
                return Deferred.fromCoroutine(run())
            return Deferred.fromCoroutine(self.slots.run(run))

        app.route(path, methods=list(methods), branch=branch)(cast(Any, handler))  # Klein's handler type is loose
        return handler

    return decorate


class DialectRoutes:
    """What every dialect's routes class shares: its Klein app with the error handlers on it, its
    :class:`~llamashim.web.dialect.Dialect`, the prefixes it is mounted at (the same tuple shapes its errors before
    routing), the collaborators it is built with (:class:`~llamashim.chat.deps.RouteDeps`), the upstream slots
    :func:`api_route` holds, and the services it owns (started and stopped with the daemon).

    A subclass states ``app = Klein()``, ``dialect`` and ``prefixes``; the base registers :func:`answer_errors`."""

    app: ClassVar[Klein]
    dialect: ClassVar[Dialect]
    prefixes: ClassVar[tuple[bytes, ...]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "app" in cls.__dict__:  # each routes class has an app of its own: errors answered in its dialect
            answer_errors(cls.app)

    def __init__(self, deps: RouteDeps) -> None:
        self.deps = deps
        self.slots: UpstreamSlots = deps.slots

    def resource(self) -> IResource:
        resource: IResource = self.app.resource()
        return resource

    def claims(self, path: bytes) -> bool:
        """Whether a path under one of its prefixes is its own: every one, unless a dialect shares a prefix with
        another API and says which of its paths are its own (Gemini's ``/v1/models/{model}:{method}`` under ``/v1``,
        beside OpenAI's ``/v1/models``); the paths it does not claim go where they would go without it."""
        return True

    def services(self) -> list[IService]:
        """Services this routes object owns (a store, say); none by default."""
        return []


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
