"""llamashim's own endpoints — ``/health``, ``/metrics``, ``/debug/json``, ``/v1/models``, ``/status`` and
``/status.json`` — and, for every path nothing else routes, the pass-through. Mounted as the tree's fallback, so its
routes see whole paths, and its errors are in the fallback dialect the composition root injects."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.resource import IResource
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat.deps import RouteDeps
from llamashim.errors import ShimError
from llamashim.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from llamashim.ops.metrics import Metrics
from llamashim.upstream.models import listing
from llamashim.web.context import context_of
from llamashim.web.passthrough import pass_through
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import answer_errors, api_route
from llamashim.web.status import StatusPage

MODELS_TTL = 0.0  # GET /v1/models reads the upstreams' lists afresh (the index refreshes itself too)
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class OwnRoutes:
    app = Klein()
    answer_errors(app)
    # Open without a key by default (``auth.open_paths``): what load balancers and the root's greeting need.
    open_paths = ("/health", "GET /", "HEAD /")

    def __init__(self, deps: RouteDeps, metrics: Metrics | None, status: StatusPage) -> None:
        self.deps = deps
        self.slots = deps.slots
        self.metrics = metrics
        self.status = status

    def resource(self) -> IResource:
        resource: IResource = self.app.resource()
        return resource

    @api_route(app, "/health", route="health", methods=("GET", "HEAD"), upstream=False)
    async def health(self, request: Request) -> bytes:
        """200 when every model has an upstream that is up; 503 naming what is not, and why."""
        upstreams = self.deps.upstreams
        states = await upstreams.check_health()
        if len(states) == 1:
            (name, reason), = states.items()
            if reason is not None:
                return send_json(request, {"status": "error", "reason": reason}, 503)
            return send_json(request, {"status": "ok", "upstream": upstreams.members[name].client.base_url})
        await upstreams.ensure_index()
        without = [m.name for m in upstreams.index.models()
                   if all(states.get(s.upstream) is not None for s in m.served)]
        body = {"upstreams": {n: r or "ok" for n, r in states.items()}}
        if without or all(r is not None for r in states.values()):
            return send_json(request, {"status": "error", "reason": "no upstream is up for: " + (
                ", ".join(without) or "any model"), "models_without_upstream": without, **body}, 503)
        return send_json(request, {"status": "ok", **body})

    @api_route(app, "/metrics", route="metrics", methods=("GET",), upstream=False)
    async def metrics_route(self, request: Request) -> bytes:
        if self.metrics is None:
            raise ShimError(404, "metrics are off (metrics.enabled: false)")
        request.setHeader(b"content-type", METRICS_CONTENT_TYPE)
        return self.metrics.render()

    @api_route(app, "/debug/json", route="debug_json", upstream=False)
    async def debug_json(self, request: Request) -> bytes:
        value = read_json_object(request, self.deps.config.limits.max_json_depth)
        return send_json(request, jsonutil.dumps(value))

    @api_route(app, "/v1/models", route="models", methods=("GET",))
    async def models(self, request: Request) -> bytes:
        """OpenAI's list shape over every upstream: one entry per model (its friendly name; upstream ids as
        ``aliases``)."""
        upstreams = self.deps.upstreams
        await upstreams.ensure_index(max_age=MODELS_TTL)
        return send_json(request, listing(upstreams.index.models()))

    @api_route(app, "/status", route="status", methods=("GET", "HEAD"), upstream=False)
    async def status_page(self, request: Request) -> bytes:
        return self.status.page(request)

    @api_route(app, "/status.json", route="status", methods=("GET", "HEAD"), upstream=False)
    async def status_data(self, request: Request) -> bytes:
        return self.status.data(request)

    @api_route(app, "/", route="root", methods=("GET", "HEAD"), upstream=False)
    async def root(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Ollama is running"

    @api_route(app, "/", route="passthrough", methods=ALL_METHODS, branch=True)
    async def passthrough(self, request: Request, /, **_: Any) -> None:
        context_of(request).upstream = self.deps.upstreams.default.name
        await pass_through(request, self.deps.upstream, self.deps.clock)
