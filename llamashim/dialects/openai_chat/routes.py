"""The OpenAI chat-completions routes: ``POST /v1/chat/completions`` (and ``/chat/completions``)."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamashim.chat.call import ChatCall
from llamashim.chat.deps import RouteDeps
from llamashim.chat.flow import with_model
from llamashim.dialects.openai_chat.dialect import OPENAI, encode_openai_items
from llamashim.stream.reasoning import mode_for_request
from llamashim.upstream.set import Pick
from llamashim.web.passthrough import relay_json_request
from llamashim.web.respond import read_json_object
from llamashim.web.routing import answer_errors, api_route

THINKING_HEADER = b"x-llamashim-thinking"


def _as_is(reply: dict[str, Any]) -> dict[str, Any]:
    return reply


def chat_call(deps: RouteDeps, request: Request, body: dict[str, Any]) -> ChatCall:
    """An OpenAI chat request as the shared flow's call (the body already is the internal form)."""
    mode = mode_for_request(deps.config.thinking.mode, request.getHeader(THINKING_HEADER))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatCall(OPENAI, body, encode_openai_items, _as_is, mode, include_usage, model=body.get("model"))


class OpenAIChatRoutes:
    app = Klein()
    answer_errors(app)
    dialect = OPENAI
    mounts = (b"/v1/chat/completions", b"/chat/completions")

    def __init__(self, deps: RouteDeps) -> None:
        self.deps = deps
        self.slots = deps.slots

    def resource(self) -> Any:
        return self.app.resource()

    @api_route(app, "/", route="chat")
    async def chat(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        return await self.deps.flow.run(request, chat_call(self.deps, request, body))


class OpenAIEmbeddingsRoutes:
    """``POST /v1/embeddings`` (and ``/embeddings``): routed by ``model`` like chat, relayed as the upstream answers."""

    app = Klein()
    answer_errors(app)
    dialect = OPENAI
    mounts = (b"/v1/embeddings", b"/embeddings")

    def __init__(self, deps: RouteDeps) -> None:
        self.deps = deps
        self.slots = deps.slots

    def resource(self) -> Any:
        return self.app.resource()

    @api_route(app, "/", route="embeddings")
    async def embeddings(self, request: Request) -> None:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        model = body.get("model")

        async def embed(pick: Pick) -> None:
            await relay_json_request(request, pick.member.client, b"/v1/embeddings", with_model(body, pick),
                                     self.deps.clock)

        await self.deps.flow.on_upstream(request, model if isinstance(model, str) and model else None, None, embed)
