"""The Klein resource tree: which path goes where.

Handlers are thin: they parse, call the pure transforms, and hand the upstream exchange to :mod:`llamashim.chat`
(chat completions, both dialects), :mod:`llamashim.ollama_routes` (the rest of the Ollama API) or the pass-through.
Errors raised before the first byte become the dialect's error body here, in one place (:meth:`Routes._guard`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.resource import IResource
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat import ChatFlow, ChatPlan
from llamashim.config import Config
from llamashim.errors import ShimError
from llamashim.headers import end_to_end
from llamashim.http_util import BytesProducer, read_body, read_json_object, send_error, send_json
from llamashim.limiter import UpstreamLimiter
from llamashim.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from llamashim.metrics import Metrics
from llamashim.reasoning import ReasoningRouter, ReasoningStyle, apply_to_reply, mode_for_request
from llamashim.relay import Identity, collect_body, json_reply, relay
from llamashim.sse import encode_openai_items
from llamashim.tool_repair import repair_chat_request
from llamashim.tool_stream import ToolCallConformance, normalise_reply
from llamashim.upstream import UpstreamClient

THINKING_HEADER = b"x-llamashim-thinking"

Handler = Callable[[Request], Awaitable[bytes | None]]


class Routes:
    app = Klein()
    log = Logger()

    def __init__(self, config: Config, upstream: UpstreamClient) -> None:
        self.config = config
        self.upstream = upstream
        self.clock = upstream.reactor
        self.chat = ChatFlow(
            upstream,
            tools_mode=config.tools.streaming,
            chunk_size=config.tools.chunk_size,
            heartbeat_seconds=config.tools.heartbeat,
            max_reply_bytes=max(config.limits.max_body_bytes, 64 * 1024 * 1024),
            stream_heartbeat_seconds=config.server.heartbeat,
        )
        self.style = ReasoningStyle(prefix=config.thinking.prefix, separator=config.thinking.separator)
        # While a supervised llama-server is not ready, this says why (every upstream-bound route answers 503).
        self.unavailable: Callable[[], str | None] = lambda: None
        self.metrics: Metrics | None = None
        self.limiter = UpstreamLimiter(None)
        from llamashim.ollama_routes import OllamaRoutes

        self.ollama = OllamaRoutes(self)

    def resource(self) -> IResource:
        return self.app.resource()  # type: ignore[no-any-return]

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _guard(
        self, request: Request, dialect: str, handler: Handler, upstream_bound: bool = True
    ) -> Deferred[bytes | None]:
        """Run a handler; any error before the first byte becomes the dialect's error body. Handlers that go to the
        upstream are held to ``limits.max_concurrent_upstream`` and answer 503 while a supervised upstream is not
        ready."""

        async def run() -> bytes | None:
            acquired = False
            try:
                if upstream_bound:
                    reason = self.unavailable()
                    if reason is not None:
                        raise ShimError(503, reason, "unavailable_error")
                    await self.limiter.acquire()
                    acquired = True
                return await handler(request)
            except ShimError as e:
                if e.status in (502, 504):
                    request.upstream_error = e.type  # type: ignore[attr-defined]
                if request.startedWriting:
                    self.log.warn("error after the response started: {message}", message=e.message)
                    if not request.finished:
                        request.finish()
                    return None
                if e.status >= 500:
                    self.log.warn(
                        "{method} {path}: {status} {message}",
                        method=request.method.decode("latin-1"),
                        path=request.path.decode("latin-1"),
                        status=e.status,
                        message=e.message,
                    )
                if e.status == 429:
                    request.setHeader(b"retry-after", b"1")
                return send_error(request, e, dialect)
            finally:
                if acquired:
                    self.limiter.release()

        return Deferred.fromCoroutine(run())

    def thinking_debug(self, destination: str, fragment: str) -> None:
        self.log.info("thinking -> {destination}: {fragment!r}", destination=destination, fragment=fragment)

    def verbose_body(self, what: str, body: bytes) -> None:
        if self.config.log.verbose:
            self.log.info("{what}: {body}", what=what, body=body.decode("utf-8", "replace"))

    # -- OpenAI dialect ---------------------------------------------------------------------------------------

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: Request) -> Deferred[bytes | None]:
        return self._guard(request, "openai", self._openai_chat)

    @app.route("/chat/completions", methods=["POST"])
    def chat_completions_alias(self, request: Request) -> Deferred[bytes | None]:
        return self._guard(request, "openai", self._openai_chat)

    def repaired_chat_body(self, request: Request) -> dict[str, Any]:
        body = read_json_object(request, self.config.limits.max_json_depth)
        if self.config.log.verbose:
            self.verbose_body("request", jsonutil.dumps(body))
        return repair_chat_request(body, self.log.debug)

    async def _openai_chat(self, request: Request) -> bytes | None:
        body = self.repaired_chat_body(request)
        header = request.getHeader(THINKING_HEADER)
        mode = mode_for_request(self.config.thinking.mode, header)
        debug = self.thinking_debug if self.config.thinking.debug else None
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        style = self.style

        def on_reply(reply: dict[str, Any]) -> bytes:
            reply = normalise_reply(reply)
            reply, _ = apply_to_reply(reply, mode, style)
            out = jsonutil.dumps(reply)
            self.verbose_body("response", out)
            return send_json(request, out)

        plan = ChatPlan(
            body=body,
            stream=stream,
            stages=[ToolCallConformance(include_usage), ReasoningRouter(mode, style, debug)],
            encoder=encode_openai_items,
            on_reply=on_reply,
            headers=self.forwarded_auth(request),
        )
        return await self.chat.run(request, plan)

    def forwarded_auth(self, request: Request) -> Headers:
        headers = Headers()
        for name in (b"authorization", b"x-request-id"):
            value = request.requestHeaders.getRawHeaders(name)
            if value:
                headers.setRawHeaders(name, value)
        return headers

    @app.route("/v1/models", methods=["GET"])
    def models(self, request: Request) -> Deferred[bytes | None]:
        return self._guard(request, "openai", self._models)

    async def _models(self, request: Request) -> bytes:
        from llamashim.ollama import normalise_openai_models

        response = await self.upstream.get(b"/v1/models", self.forwarded_auth(request))
        value = await json_reply(response, self.clock, self.upstream.idle_timeout, "/v1/models")
        return send_json(request, normalise_openai_models(value))

    # -- own endpoints ----------------------------------------------------------------------------------------

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: Request) -> Deferred[bytes | None]:
        return Deferred.fromCoroutine(self._health(request))

    async def _health(self, request: Request) -> bytes:
        reason = self.unavailable()
        if reason is not None:
            return send_json(request, {"status": "error", "reason": reason}, 503)
        try:
            response = await self.upstream.get(b"/health")
            data = await collect_body(response, self.clock, self.upstream.idle_timeout, 1024 * 1024)
        except ShimError as e:
            return send_json(request, {"status": "error", "reason": e.message}, 503)
        if response.code == 200:
            return send_json(request, {"status": "ok", "upstream": self.upstream.base_url})
        reason = f"upstream /health answered HTTP {response.code}"
        try:
            value = jsonutil.loads(data)
            err = value.get("error") if isinstance(value, dict) else None
            if isinstance(err, dict) and err.get("message"):
                reason = f"upstream: {err['message']}"
        except jsonutil.JSONError:
            pass
        return send_json(request, {"status": "error", "reason": reason}, 503)

    @app.route("/metrics", methods=["GET"])
    def metrics_route(self, request: Request) -> bytes:
        if self.metrics is None:
            return send_error(request, ShimError(404, "metrics are off (metrics.enabled: false)"), "openai")
        body = self.metrics.render()
        request.setHeader(b"content-type", METRICS_CONTENT_TYPE)
        return body

    @app.route("/debug/json", methods=["POST"])
    def debug_json(self, request: Request) -> Deferred[bytes | None]:
        async def run(request: Request) -> bytes:
            value = read_json_object(request, self.config.limits.max_json_depth) if True else None
            return send_json(request, jsonutil.dumps(value))

        return self._guard(request, "openai", run, upstream_bound=False)

    # -- Ollama dialect (delegated) ---------------------------------------------------------------------------

    @app.route("/", methods=["GET", "HEAD"])
    def root(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Ollama is running"

    @app.route("/api/<path:name>", methods=["GET", "POST", "HEAD", "DELETE", "PUT"])
    def ollama_api(self, request: Request, name: str) -> Deferred[bytes | None]:
        return self._guard(request, "ollama", lambda r: self.ollama.dispatch(r, name))

    # -- everything else --------------------------------------------------------------------------------------

    @app.route("/", branch=True)
    def passthrough(self, request: Request) -> Deferred[bytes | None]:
        return self._guard(request, "openai", self._passthrough)

    async def _passthrough(self, request: Request) -> bytes | None:
        body = read_body(request)
        headers = end_to_end(request.requestHeaders)
        producer = BytesProducer(body) if body or request.method in (b"POST", b"PUT", b"PATCH") else None
        started = self.clock.seconds()
        response: IResponse = await self.upstream.request(request.method, request.uri, headers, producer)
        request.upstream_ttfb = self.clock.seconds() - started  # type: ignore[attr-defined]
        request.setResponseCode(response.code, response.phrase)
        for name, values in end_to_end(response.headers).getAllRawHeaders():
            request.responseHeaders.setRawHeaders(name, values)
        if response.length is not UNKNOWN_LENGTH:
            request.setHeader(b"content-length", b"%d" % response.length)
        try:
            await relay(request, response, Identity(), self.clock, self.upstream.idle_timeout)
        except CancelledError:
            raise
        return None
