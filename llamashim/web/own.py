"""llamashim's own endpoints — ``/health``, ``/metrics``, ``/debug/json``, ``/v1/models`` — and, for every path
nothing else routes, the pass-through."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.dialects.ollama.mapping import normalise_openai_models
from llamashim.errors import ShimError
from llamashim.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from llamashim.ops.metrics import Metrics
from llamashim.stream.relay import collect_body, json_reply
from llamashim.upstream.body import error_message
from llamashim.web.deps import RouteDeps
from llamashim.web.passthrough import pass_through
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import answer_errors, api_route

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class OwnRoutes:
    app = Klein()
    answer_errors(app)

    def __init__(self, deps: RouteDeps, metrics: Metrics | None) -> None:
        self.deps = deps
        self.slots = deps.slots
        self.metrics = metrics

    def resource(self) -> Any:
        return self.app.resource()

    @api_route(app, "/health", route="health", methods=("GET", "HEAD"), upstream=False)
    async def health(self, request: Request) -> bytes:
        reason = self.slots.unavailable()
        if reason is not None:
            return send_json(request, {"status": "error", "reason": reason}, 503)
        upstream = self.deps.upstream
        try:
            response = await upstream.get(b"/health")
            data = await collect_body(response, self.deps.clock, upstream.idle_timeout, 1024 * 1024)
        except ShimError as e:
            return send_json(request, {"status": "error", "reason": e.message}, 503)
        if response.code == 200:
            return send_json(request, {"status": "ok", "upstream": upstream.base_url})
        message, _ = error_message(data)
        reason = f"upstream: {message}" if message else f"upstream /health answered HTTP {response.code}"
        return send_json(request, {"status": "error", "reason": reason}, 503)

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
        upstream = self.deps.upstream
        response = await upstream.get(b"/v1/models", _auth(request))
        value = await json_reply(response, self.deps.clock, upstream.idle_timeout, "/v1/models")
        return send_json(request, normalise_openai_models(value))

    @api_route(app, "/", route="root", methods=("GET", "HEAD"), upstream=False)
    async def root(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Ollama is running"

    @api_route(app, "/", route="passthrough", methods=ALL_METHODS, branch=True)
    async def passthrough(self, request: Request, **_: Any) -> None:
        await pass_through(request, self.deps.upstream, self.deps.clock)


def _auth(request: Request) -> Any:
    from llamashim.chat.flow import forwarded_headers

    return forwarded_headers(request)
