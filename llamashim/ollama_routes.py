"""The Ollama API routes (``/api/*``): the I/O around :mod:`llamashim.ollama`'s pure mapping.

``/api/chat`` and ``/api/generate`` run through the same :class:`llamashim.chat.ChatFlow` as the OpenAI routes — tool
conformance, stream synthesis and reasoning routing included — with the Ollama NDJSON encoder at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from llamashim import jsonutil, ollama
from llamashim.chat import ChatPlan
from llamashim.errors import ShimError
from llamashim.http_util import BytesProducer, read_json_object, send_json, start_stream
from llamashim.reasoning import ReasoningRouter, apply_to_reply, ollama_mode
from llamashim.relay import json_reply
from llamashim.tool_repair import repair_chat_request
from llamashim.tool_stream import ToolCallConformance, normalise_reply

if TYPE_CHECKING:
    from llamashim.app import Routes

NDJSON = b"application/x-ndjson"
METADATA_TTL = 5.0  # seconds the upstream's /props and /v1/models are reused between metadata calls


def start_ndjson(request: Request) -> None:
    start_stream(request, NDJSON)


class OllamaRoutes:
    log = Logger()

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self._cache: dict[bytes, tuple[float, Any]] = {}

    @property
    def config(self) -> Any:
        return self.routes.config

    @property
    def clock(self) -> Any:
        return self.routes.clock

    async def dispatch(self, request: Request, name: str) -> bytes | None:
        method = request.method
        if name == "version" and method in (b"GET", b"HEAD"):
            return send_json(request, ollama.version_body(self.config.ollama.version))
        if name == "tags" and method in (b"GET", b"HEAD"):
            models, props = await self._models(), await self._props()
            return send_json(request, ollama.tags_body(models, props))
        if name == "ps" and method in (b"GET", b"HEAD"):
            models, props = await self._models(), await self._props()
            return send_json(request, ollama.ps_body(models, props))
        if name == "show" and method == b"POST":
            return await self._show(request)
        if name == "chat" and method == b"POST":
            if self.config.ollama.chat_dialect == "openai":
                return await self.routes._openai_chat(request)
            return await self._chat(request, generate=False)
        if name == "generate" and method == b"POST":
            return await self._chat(request, generate=True)
        if name in ("embed", "embeddings") and method == b"POST":
            return await self._embed(request, legacy=name == "embeddings")
        if name in ("version", "tags", "ps", "show", "chat", "generate", "embed", "embeddings"):
            raise ShimError(405, f"method {method.decode('latin-1')} not allowed for /api/{name}")
        raise ShimError(404, f"unknown Ollama API path /api/{name}")

    # -- upstream metadata -----------------------------------------------------------------------------------

    async def _get_json(self, path: bytes) -> Any:
        now = self.clock.seconds()
        cached = self._cache.get(path)
        if cached is not None and now - cached[0] < METADATA_TTL:
            return cached[1]
        upstream = self.routes.upstream
        response = await upstream.get(path)
        value = await json_reply(response, self.clock, upstream.idle_timeout, path.decode(), 16 * 1024 * 1024)
        self._cache[path] = (now, value)
        return value

    async def _models(self) -> Any:
        return await self._get_json(b"/v1/models")

    async def _props(self) -> dict[str, Any] | None:
        try:
            value = await self._get_json(b"/props")
        except ShimError as e:
            if e.status in (404, 501):
                return None  # an upstream without /props: metadata from /v1/models alone
            raise
        return value if isinstance(value, dict) else None

    async def _resolver(self) -> Any:
        ids = [e["id"] for e in ollama.model_entries(await self._models())]
        return lambda name: ollama.resolve_model(name, ids)

    async def _show(self, request: Request) -> bytes:
        body = read_json_object(request, self.config.limits.max_json_depth)
        requested = body.get("model") or body.get("name")
        if not isinstance(requested, str) or not requested:
            raise ShimError(400, "model is required")
        resolve = await self._resolver()
        model_id = resolve(requested)
        shown = ollama.show_body(model_id, await self._props(), await self._models())
        if shown is None:
            raise ShimError(404, f"model '{requested}' not found")
        return send_json(request, shown)

    # -- chat and generate -----------------------------------------------------------------------------------

    async def _chat(self, request: Request, generate: bool) -> bytes | None:
        body = read_json_object(request, self.config.limits.max_json_depth)
        resolve = await self._resolver()
        mapper = ollama.generate_request_to_openai if generate else ollama.chat_request_to_openai
        chat_body, ignored = mapper(body, resolve)
        if ignored:
            self.log.debug("ignored Ollama options with no llama-server equivalent: {names}", names=", ".join(ignored))
        if body.get("keep_alive") is not None:
            self.log.debug("keep_alive accepted and ignored (llama-server keeps its model loaded)")
        chat_body = repair_chat_request(chat_body, self.log.debug)
        if self.config.log.verbose:
            self.routes.verbose_body("request", jsonutil.dumps(chat_body))
        model_name = body["model"]
        mode = ollama_mode(self.config.thinking.mode, body.get("think"))
        debug = self.routes.thinking_debug if self.config.thinking.debug else None
        style = self.routes.style
        clock = self.clock

        def on_reply(reply: dict[str, Any]) -> bytes:
            reply = normalise_reply(reply)
            reply, _ = apply_to_reply(reply, mode, style)
            out = ollama.chat_reply_to_ollama(reply, model_name, clock.seconds(), generate)
            data = jsonutil.dumps(out)
            self.routes.verbose_body("response", data)
            return send_json(request, data)

        plan = ChatPlan(
            body=chat_body,
            stream=bool(chat_body.get("stream")),
            stages=[ToolCallConformance(True), ReasoningRouter(mode, style, debug)],
            encoder=ollama.OllamaChatEncoder(model_name, clock.seconds, generate),
            start_stream=start_ndjson,
            heartbeat=None,
            on_reply=on_reply,
            headers=self.routes.forwarded_auth(request),
        )
        return await self.routes.chat.run(request, plan)

    async def _embed(self, request: Request, legacy: bool) -> bytes:
        body = read_json_object(request, self.config.limits.max_json_depth)
        resolve = await self._resolver()
        req = ollama.embed_request(body, resolve, legacy)
        upstream = self.routes.upstream
        headers = Headers({b"content-type": [b"application/json"]})
        response = await upstream.request(b"POST", b"/v1/embeddings", headers, BytesProducer(jsonutil.dumps(req)))
        reply = await json_reply(response, self.clock, upstream.idle_timeout, "/v1/embeddings")
        return send_json(request, ollama.embed_body(reply, body["model"], legacy))
