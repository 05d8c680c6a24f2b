"""The Ollama API routes (``/api/*``): the I/O around the dialect's pure modules
(:mod:`.request`, :mod:`.encoder`, :mod:`.metadata`, :mod:`.embeddings`).

``/api/chat`` and ``/api/generate`` run through the shared :class:`llamashim.chat.flow.ChatFlow` — tool conformance,
stream synthesis and reasoning routing included — with the Ollama NDJSON encoder at the end. ``/api/generate`` with a
``suffix`` (fill-in-the-middle) or ``raw: true`` is no chat: it goes to llama-server's ``/infill`` or ``/completion``
(:mod:`llamashim.dialects.ollama.completion`) as a :class:`~llamashim.chat.call.CompletionCall` through the same flow
(failover, the one relay: backpressure, cancellation, idle timeout, drain), on the upstream the model index picks.
``/api/show`` says ``insert`` for a model that fills in the middle, asked of its llama-server once per upstream and
model (:data:`~llamashim.dialects.ollama.completion.FIM_PROBE`).
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat.call import ChatCall, CompletionCall
from llamashim.chat.deps import RouteDeps
from llamashim.chat.flow import with_model
from llamashim.dialects.ollama import completion
from llamashim.dialects.ollama.dialect import OLLAMA
from llamashim.dialects.ollama.embeddings import embed_body, embed_request
from llamashim.dialects.ollama.encoder import OllamaChatEncoder, chat_reply_to_ollama, load_reply
from llamashim.dialects.ollama.metadata import context_length, ps_body, show_body, tags_body, version_body
from llamashim.dialects.ollama.request import chat_request_to_openai, generate_request_to_openai
from llamashim.dialects.openai_chat.routes import chat_call
from llamashim.errors import ShimError
from llamashim.jsonutil import obj
from llamashim.stream.reasoning import separate_mode
from llamashim.upstream.body import BytesProducer, collect_body, json_reply
from llamashim.upstream.models import Model, props_of
from llamashim.upstream.set import Pick, UpstreamSet
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import DialectRoutes, api_route
from llamashim.web.turn import RequestTurn

METADATA_TTL = 5.0  # seconds the upstream's /props and /v1/models are reused between metadata calls
READ = ("GET", "HEAD")
UNLOAD = (0, "0", "0s", "0m")  # keep_alive values that mean "unload now"


class OllamaRoutes(DialectRoutes):
    app = Klein()
    dialect = OLLAMA
    prefixes = (b"/api",)
    log = Logger()

    def __init__(self, deps: RouteDeps) -> None:
        super().__init__(deps)
        self.config = deps.config
        self._fim: dict[tuple[str, str], bool] = {}
        self._told_num_ctx: set[str] = set()  # (upstream, model id) → fills in the middle (FIM_PROBE's answer)

    # -- metadata ------------------------------------------------------------------------------------------------

    @api_route(app, "/version", route="ollama_version", methods=READ, upstream=False)
    async def version(self, request: Request) -> bytes:
        return send_json(request, version_body(self.config.ollama.version))

    @api_route(app, "/tags", route="ollama_tags", methods=READ)
    async def tags(self, request: Request) -> bytes:
        """Every model of every upstream, under its one friendly name (``name`` and ``model`` alike)."""
        upstreams = await self._index()
        return send_json(request, tags_body(upstreams.index.models(), self._props_of))

    @api_route(app, "/ps", route="ollama_ps", methods=READ)
    async def ps(self, request: Request) -> bytes:
        upstreams = await self._index()
        return send_json(request, ps_body(upstreams.index.models(), self._props_of))

    @api_route(app, "/show", route="ollama_show")
    async def show(self, request: Request) -> bytes:
        body = read_json_object(request, self.config.limits.max_json_depth)
        requested = body.get("model") or body.get("name")
        if not isinstance(requested, str) or not requested:
            raise ShimError(400, "model is required")
        upstreams = await self._index()
        model = upstreams.resolve(requested).model  # as a chat would: friendly name, id, :latest, alias; else 404
        fim = await self._fills_in_the_middle(request, model.name)
        return send_json(request, show_body(model, self._props_of(model), fim))

    # -- chat, generate, embeddings ------------------------------------------------------------------------------

    @api_route(app, "/chat", route="ollama_chat")
    async def chat(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.config.limits.max_json_depth)
        if self.config.ollama.chat_dialect == "openai":  # the seed's behaviour: a plain alias of chat completions
            return await self.deps.flow.run(RequestTurn(request, self.deps.clock),
                                            chat_call(self.deps, request, body))
        return await self._chat(request, body, generate=False)

    @api_route(app, "/generate", route="ollama_generate")
    async def generate(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.config.limits.max_json_depth)
        if completion.is_native(body):
            return await self._native(request, body)
        return await self._chat(request, body, generate=True)

    @api_route(app, "/embed", route="ollama_embed")
    async def embed(self, request: Request) -> bytes:
        return await self._embed(request, legacy=False)

    @api_route(app, "/embeddings", route="ollama_embeddings")
    async def embeddings(self, request: Request) -> bytes:
        return await self._embed(request, legacy=True)

    # -- internals -----------------------------------------------------------------------------------------------

    async def _index(self) -> UpstreamSet:
        """The upstreams, their model index no older than METADATA_TTL seconds."""
        upstreams = self.deps.upstreams
        await upstreams.ensure_index(max_age=METADATA_TTL)
        return upstreams

    def _props_of(self, model: Model) -> dict[str, Any] | None:
        return props_of(model, self.deps.upstreams.props_by_upstream())

    def _options_seen(self, model: str, body: dict[str, Any]) -> None:
        """``options.num_ctx`` cannot change llama-server's per-slot context: said once per model when it asks for
        more than there is (``/api/show`` and ``/api/ps`` report the real value so the client can adapt)."""
        asked = obj(body.get("options")).get("num_ctx")
        if not isinstance(asked, int) or model in self._told_num_ctx:
            return
        found = self.deps.upstreams.index.find(model)
        if found is None:
            return
        real = context_length(found.first().entry, self._props_of(found))
        if asked > real:
            self._told_num_ctx.add(model)
            self.log.info("{model}: options.num_ctx {asked} asked, but the upstream's per-slot context is {real} "
                          "(fixed when llama-server starts: -c / -np)", model=model, asked=asked, real=real)

    async def _keep_alive(self, model: str, body: dict[str, Any]) -> None:
        """``keep_alive: 0`` unloads the model from a router-mode upstream (``/models/unload``); elsewhere
        llama-server keeps its one model loaded, so it is accepted and ignored."""
        keep = body.get("keep_alive")
        if keep is None:
            return
        if keep not in UNLOAD:
            self.log.debug("keep_alive {keep!r} accepted and ignored", keep=keep)
            return
        await self.deps.upstreams.unload(model)

    async def _chat(self, request: Request, body: dict[str, Any], generate: bool) -> bytes | None:
        mapper = generate_request_to_openai if generate else chat_request_to_openai
        chat_body, ignored = mapper(body)
        ignored = [name for name in ignored if name != "num_ctx"]
        if ignored:
            self.log.debug("ignored Ollama options with no llama-server equivalent: {names}", names=", ".join(ignored))
        model_name = body["model"]
        await self._index()
        self._options_seen(model_name, body)
        turn = RequestTurn(request, self.deps.clock)
        if not (body.get("prompt") if generate else body.get("messages")):
            # Ollama's load / unload request: nothing to generate, but the model's upstream must answer, as for a
            # chat (an unreachable one is the same 502, after failover).
            await self._reachable(turn, model_name)
            await self._keep_alive(model_name, body)
            done = "unload" if body.get("keep_alive") in UNLOAD else "load"
            return send_json(request, load_reply(model_name, self.deps.clock.seconds(), generate, done))
        clock = self.deps.clock

        def reply(answer: dict[str, Any]) -> dict[str, Any]:
            return chat_reply_to_ollama(answer, model_name, clock.seconds(), generate)

        call = ChatCall(
            body=chat_body,
            encoder=OllamaChatEncoder(model_name, clock.seconds, generate),
            reply=reply,
            reasoning_mode=separate_mode(self.config.thinking.mode, body.get("think")),
        )
        answer = await self.deps.flow.run(turn, call)
        await self._keep_alive(model_name, body)
        return answer

    async def _reachable(self, turn: RequestTurn, model: str) -> None:
        """Ask the model's upstream for ``/health`` (any answer will do: it is there), failing over like a chat."""

        async def ask(pick: Pick) -> None:
            response = await pick.member.client.request(b"GET", b"/health", turn.upstream_headers())
            await collect_body(response, self.deps.clock, pick.member.client.idle_timeout, 64 * 1024)

        await self.deps.flow.with_upstream(turn, model, None, ask)

    async def _native(self, request: Request, body: dict[str, Any]) -> bytes | None:
        """``/api/generate`` with ``suffix`` or ``raw``: llama-server's ``/infill`` or ``/completion`` on the upstream
        serving the model (chosen like a chat's), streamed as Ollama NDJSON through the flow's relay, or one reply."""
        native = completion.native_request(body)
        if native.ignored:
            self.log.debug("ignored Ollama options with no llama-server equivalent: {names}",
                           names=", ".join(native.ignored))
        if native.unused:
            self.log.debug("{fields} not used by a raw or fill-in-the-middle generate", fields=", ".join(native.unused))
        await self._index()
        self._options_seen(native.model, body)
        clock = self.deps.clock

        def stream() -> completion.CompletionStream:
            return completion.CompletionStream(native.model, clock.seconds)

        call = CompletionCall(
            model=native.model,
            path=native.path,
            body=native.body,
            stream=native.stream,
            transform=stream,
            reply=lambda reply: completion.reply_to_ollama(reply, native.model, clock.seconds()),
            whole=lambda reply: stream().event({**reply, "stop": True}),
            usage=completion.completion_usage,
            failure=lambda status, data: completion.upstream_failure(status, data, native.model, native.infill),
        )
        return await self.deps.flow.complete(RequestTurn(request, clock), call)

    async def _fills_in_the_middle(self, request: Request, model_id: str) -> bool:
        """Whether the model has FIM tokens: its upstream's answer to FIM_PROBE, kept with the upstream."""
        headers = RequestTurn(request, self.deps.clock).upstream_headers()
        return await self.deps.upstreams.fills_in_the_middle(model_id, headers)

    async def _embed(self, request: Request, legacy: bool) -> bytes:
        body = read_json_object(request, self.config.limits.max_json_depth)
        req = embed_request(body, legacy)

        async def embed(pick: Pick) -> Any:
            upstream = pick.member.client
            response = await upstream.request(
                b"POST", b"/v1/embeddings", RequestTurn(request, self.deps.clock).upstream_headers(),
                BytesProducer(jsonutil.dumps(with_model(req, pick))),
            )
            return await json_reply(response, self.deps.clock, upstream.idle_timeout, "/v1/embeddings")

        reply = await self.deps.flow.with_upstream(RequestTurn(request, self.deps.clock), req["model"], None, embed)
        return send_json(request, embed_body(reply, body["model"], legacy))

