"""The Ollama API routes (``/api/*``): the I/O around :mod:`llamashim.dialects.ollama.mapping`'s pure mapping.

``/api/chat`` and ``/api/generate`` run through the shared :class:`llamashim.chat.flow.ChatFlow` — tool conformance,
stream synthesis and reasoning routing included — with the Ollama NDJSON encoder at the end.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat.call import ChatCall
from llamashim.chat.flow import forwarded_headers
from llamashim.dialects.ollama import mapping as ollama
from llamashim.dialects.ollama.dialect import OLLAMA
from llamashim.dialects.openai_chat.routes import chat_call
from llamashim.errors import ShimError
from llamashim.stream.reasoning import separate_mode
from llamashim.stream.relay import json_reply
from llamashim.upstream.body import BytesProducer
from llamashim.web.deps import RouteDeps
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import answer_errors, api_route

METADATA_TTL = 5.0  # seconds the upstream's /props and /v1/models are reused between metadata calls
READ = ("GET", "HEAD")


class OllamaRoutes:
    app = Klein()
    answer_errors(app)
    log = Logger()
    dialect = OLLAMA
    mounts = (b"/api",)

    def __init__(self, deps: RouteDeps) -> None:
        self.deps = deps
        self.slots = deps.slots
        self.config = deps.config
        self._cache: dict[bytes, tuple[float, Any]] = {}

    def resource(self) -> Any:
        return self.app.resource()

    # -- metadata ------------------------------------------------------------------------------------------------

    @api_route(app, "/version", route="ollama_version", methods=READ, upstream=False)
    async def version(self, request: Request) -> bytes:
        return send_json(request, ollama.version_body(self.config.ollama.version))

    @api_route(app, "/tags", route="ollama_tags", methods=READ)
    async def tags(self, request: Request) -> bytes:
        models, props = await self._models(request), await self._props(request)
        return send_json(request, ollama.tags_body(models, props))

    @api_route(app, "/ps", route="ollama_ps", methods=READ)
    async def ps(self, request: Request) -> bytes:
        models, props = await self._models(request), await self._props(request)
        return send_json(request, ollama.ps_body(models, props))

    @api_route(app, "/show", route="ollama_show")
    async def show(self, request: Request) -> bytes:
        body = read_json_object(request, self.config.limits.max_json_depth)
        requested = body.get("model") or body.get("name")
        if not isinstance(requested, str) or not requested:
            raise ShimError(400, "model is required")
        resolve = await self._resolver(request)
        shown = ollama.show_body(resolve(requested), await self._props(request), await self._models(request))
        if shown is None:
            raise ShimError(404, f"model '{requested}' not found")
        return send_json(request, shown)

    # -- chat, generate, embeddings ------------------------------------------------------------------------------

    @api_route(app, "/chat", route="ollama_chat")
    async def chat(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.config.limits.max_json_depth)
        if self.config.ollama.chat_dialect == "openai":  # the seed's behaviour: a plain alias of chat completions
            return await self.deps.flow.run(request, chat_call(self.deps, request, body))
        return await self._chat(request, body, generate=False)

    @api_route(app, "/generate", route="ollama_generate")
    async def generate(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.config.limits.max_json_depth)
        return await self._chat(request, body, generate=True)

    @api_route(app, "/embed", route="ollama_embed")
    async def embed(self, request: Request) -> bytes:
        return await self._embed(request, legacy=False)

    @api_route(app, "/embeddings", route="ollama_embeddings")
    async def embeddings(self, request: Request) -> bytes:
        return await self._embed(request, legacy=True)

    # -- internals -----------------------------------------------------------------------------------------------

    async def _get_json(self, request: Request, path: bytes) -> Any:
        now = self.deps.clock.seconds()
        cached = self._cache.get(path)
        if cached is not None and now - cached[0] < METADATA_TTL:
            return cached[1]
        upstream = self.deps.upstream
        response = await upstream.get(path, forwarded_headers(request))
        value = await json_reply(response, self.deps.clock, upstream.idle_timeout, path.decode(), 16 * 1024 * 1024)
        self._cache[path] = (now, value)
        return value

    async def _models(self, request: Request) -> Any:
        return await self._get_json(request, b"/v1/models")

    async def _props(self, request: Request) -> dict[str, Any] | None:
        try:
            value = await self._get_json(request, b"/props")
        except ShimError as e:
            if e.status in (404, 501):
                return None  # an upstream without /props: metadata from /v1/models alone
            raise
        return value if isinstance(value, dict) else None

    async def _resolver(self, request: Request) -> Any:
        ids = [e["id"] for e in ollama.model_entries(await self._models(request))]
        return lambda name: ollama.resolve_model(name, ids)

    async def _chat(self, request: Request, body: dict[str, Any], generate: bool) -> bytes | None:
        resolve = await self._resolver(request)
        mapper = ollama.generate_request_to_openai if generate else ollama.chat_request_to_openai
        chat_body, ignored = mapper(body, resolve)
        if ignored:
            self.log.debug("ignored Ollama options with no llama-server equivalent: {names}", names=", ".join(ignored))
        if body.get("keep_alive") is not None:
            self.log.debug("keep_alive accepted and ignored (llama-server keeps its model loaded)")
        model_name = body["model"]
        clock = self.deps.clock

        def reply(answer: dict[str, Any]) -> dict[str, Any]:
            return ollama.chat_reply_to_ollama(answer, model_name, clock.seconds(), generate)

        call = ChatCall(
            OLLAMA,
            chat_body,
            ollama.OllamaChatEncoder(model_name, clock.seconds, generate),
            reply,
            separate_mode(self.config.thinking.mode, body.get("think")),
            include_usage=True,
            model=model_name,
        )
        return await self.deps.flow.run(request, call)

    async def _embed(self, request: Request, legacy: bool) -> bytes:
        body = read_json_object(request, self.config.limits.max_json_depth)
        resolve = await self._resolver(request)
        req = ollama.embed_request(body, resolve, legacy)
        upstream = self.deps.upstream
        response = await upstream.request(
            b"POST", b"/v1/embeddings", forwarded_headers(request), BytesProducer(jsonutil.dumps(req))
        )
        reply = await json_reply(response, self.deps.clock, upstream.idle_timeout, "/v1/embeddings")
        return send_json(request, ollama.embed_body(reply, body["model"], legacy))
