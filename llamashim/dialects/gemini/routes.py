"""The Gemini API routes under ``/v1beta``: ``GET /models`` and ``/models/{model}``,
``POST /models/{model}:generateContent``, ``:streamGenerateContent`` (``?alt=sse``, or a streamed JSON array),
``:countTokens``, ``:embedContent`` and ``:batchEmbedContents``; the ``POST`` methods under ``/v1`` too (the SDKs'
default API version), where ``GET /v1/models`` stays OpenAI's.

A request is translated (:mod:`.translate`) onto the shared chat flow — tool repair, conformance, synthesis,
parse-failure recovery, reasoning routing, keep-alives, failover and the relay all apply — and the answer comes back
as Gemini response objects (:mod:`.encoder`). The model is the path's; the grammar ``models/{model}:{method}`` is a
path converter (:class:`ModelName`), so a model named like ``qwen3:8b`` is still one model.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.server import Request
from werkzeug.routing import BaseConverter

from llamashim import jsonutil
from llamashim.chat.call import ChatCall
from llamashim.chat.flow import with_model
from llamashim.dialects.gemini.dialect import GEMINI
from llamashim.dialects.gemini.encoder import (
    ARRAY_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    Framing,
    GeminiEncoder,
    response_object,
)
from llamashim.dialects.gemini.translate import (
    count_request,
    embed_dimensions,
    embed_inputs,
    embeddings_reply,
    request_to_chat,
)
from llamashim.modes import ThinkingMode
from llamashim.stream.reasoning import separate_mode
from llamashim.upstream.body import BytesProducer, json_reply
from llamashim.upstream.models import Model, model_window
from llamashim.upstream.set import Pick
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import DialectRoutes, api_route
from llamashim.web.turn import RequestTurn

V1_METHOD = re.compile(rb"/v1/models/[^/]+:[A-Za-z]+")
METHODS = ["generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents"]


class ModelName(BaseConverter):
    """A model name in ``models/{model}``: anything but a trailing ``:method`` (so ``GET models/x:generateContent``
    is no model lookup, and an unknown method is a 404, not a 405)."""

    regex = r"(?:[^/:]|:(?![A-Za-z]+\Z))+"


class GeminiRoutes(DialectRoutes):
    app = Klein()
    app.url_map.converters["model"] = ModelName
    dialect = GEMINI
    prefixes = (b"/v1beta", b"/v1")
    log = Logger()

    def claims(self, path: bytes) -> bool:
        """All of ``/v1beta``; under ``/v1`` (where the SDKs go by default) only ``models/{model}:{method}``, beside
        OpenAI's ``/v1/models`` and everything else of ``/v1``."""
        return not path.startswith(b"/v1/") or V1_METHOD.fullmatch(path) is not None

    # -- models ----------------------------------------------------------------------------------------------------

    @api_route(app, "/models", route="gemini_models", methods=("GET",))
    async def models(self, request: Request) -> bytes:
        await self.deps.upstreams.ensure_index()
        props = self.deps.upstreams.props_by_upstream()
        return send_json(request, {"models": [self._model(m, m.name, props) for m in
                                              self.deps.upstreams.index.models()]})

    @api_route(app, "/models/<model:model>", route="gemini_model", methods=("GET",))
    async def model(self, request: Request, model: str) -> bytes:
        await self.deps.upstreams.ensure_index()
        found = self.deps.upstreams.resolve(model).model  # a 404 in Google's shape when unknown
        return send_json(request, self._model(found, model, self.deps.upstreams.props_by_upstream()))

    def _model(self, model: Model, name: str, props: dict[str, Any]) -> dict[str, Any]:
        """A Gemini ``Model``: the name asked for, the local model it is, its real per-slot window."""
        window = model_window(model, props)
        entry: dict[str, Any] = {
            "name": f"models/{name}", "baseModelId": name, "version": "001", "displayName": model.name,
            "description": f"{model.name}, served by llama-server through llamashim",
            "supportedGenerationMethods": METHODS, "thinking": True,
        }
        if window is not None:
            entry["inputTokenLimit"] = entry["outputTokenLimit"] = window
        return entry

    # -- generating --------------------------------------------------------------------------------------------

    @api_route(app, "/models/<model:model>:generateContent", route="gemini_generate")
    async def generate(self, request: Request, model: str) -> bytes | None:
        return await self._generate(request, model, Framing.WHOLE)

    @api_route(app, "/models/<model:model>:streamGenerateContent", route="gemini_stream")
    async def stream(self, request: Request, model: str) -> bytes | None:
        sse = request.args.get(b"alt", [b""])[0] == b"sse"
        return await self._generate(request, model, Framing.SSE if sse else Framing.ARRAY)

    async def _generate(self, request: Request, model: str, framing: Framing) -> bytes | None:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        translated = request_to_chat(body, model=model, stream=framing is not Framing.WHOLE, log=self.log.debug)
        response_id = uuid.uuid4().hex[:24]
        configured = self.deps.config.thinking.mode
        mode = separate_mode(configured) if translated.include_thoughts else (
            ThinkingMode.SHOW_REASONING if configured == ThinkingMode.SHOW_REASONING else ThinkingMode.OFF)

        def reply(answer: dict[str, Any]) -> dict[str, Any]:
            return response_object(answer, model, response_id)

        call = ChatCall(body=translated.chat_body, encoder=GeminiEncoder(model, response_id, framing), reply=reply,
                        reasoning_mode=mode,
                        stream_content_type=ARRAY_CONTENT_TYPE if framing is Framing.ARRAY else SSE_CONTENT_TYPE)
        return await self.deps.flow.run(RequestTurn(request, self.deps.clock), call)

    # -- counting and embedding --------------------------------------------------------------------------------

    @api_route(app, "/models/<model:model>:countTokens", route="gemini_count_tokens")
    async def count_tokens(self, request: Request, model: str) -> bytes:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        chat = count_request(body, model=model, log=self.log.debug)
        n = await self.deps.flow.count_tokens(RequestTurn(request, self.deps.clock), chat)
        return send_json(request, {"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]})

    @api_route(app, "/models/<model:model>:embedContent", route="gemini_embed")
    async def embed(self, request: Request, model: str) -> bytes:
        return await self._embed(request, model, batch=False)

    @api_route(app, "/models/<model:model>:batchEmbedContents", route="gemini_batch_embed")
    async def batch_embed(self, request: Request, model: str) -> bytes:
        return await self._embed(request, model, batch=True)

    async def _embed(self, request: Request, model: str, batch: bool) -> bytes:
        """Through the upstream's ``/v1/embeddings``, on the upstream chosen for the model (with failover)."""
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        upstream_body = {"model": model, "input": embed_inputs(body, batch)}
        turn = RequestTurn(request, self.deps.clock)

        async def embed(pick: Pick) -> Any:
            client = pick.member.client
            response = await client.request(b"POST", b"/v1/embeddings", turn.upstream_headers(),
                                            BytesProducer(jsonutil.dumps(with_model(upstream_body, pick))))
            return await json_reply(response, self.deps.clock, client.idle_timeout, "/v1/embeddings")

        reply = await self.deps.flow.with_upstream(turn, model, None, embed)
        return send_json(request, embeddings_reply(reply, embed_dimensions(body, batch), batch))

