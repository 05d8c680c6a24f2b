"""The OpenAI chat-completions routes: ``POST /v1/chat/completions`` (and ``/chat/completions``), and embeddings."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamashim.chat.call import ChatCall
from llamashim.chat.deps import RouteDeps
from llamashim.chat.flow import with_model
from llamashim.dialects.openai_chat.dialect import OPENAI, OpenAIChatEncoder
from llamashim.jsonutil import obj
from llamashim.stream.reasoning import mode_for_request
from llamashim.upstream.set import Pick
from llamashim.web.passthrough import relay_json_request
from llamashim.web.respond import read_json_object
from llamashim.web.routing import DialectRoutes, api_route
from llamashim.web.turn import RequestTurn

THINKING_HEADER = b"x-llamashim-thinking"


def _as_is(reply: dict[str, Any]) -> dict[str, Any]:
    return reply


def chat_call(deps: RouteDeps, request: Request, body: dict[str, Any]) -> ChatCall:
    """An OpenAI chat request as the shared flow's call (the body already is the internal form)."""
    mode = mode_for_request(deps.config.thinking.mode, request.getHeader(THINKING_HEADER))
    include_usage = bool(obj(body.get("stream_options")).get("include_usage"))
    model = body.get("model")
    encoder = OpenAIChatEncoder(model if isinstance(model, str) else "", int(deps.clock.seconds()))
    return ChatCall(body=body, encoder=encoder, reply=_as_is, reasoning_mode=mode,
                    include_usage=include_usage, stream_content_type=OPENAI.stream_content_type)


class OpenAIChatRoutes(DialectRoutes):
    app = Klein()
    dialect = OPENAI
    prefixes = (b"/v1/chat/completions", b"/chat/completions")

    @api_route(app, "/", route="chat")
    async def chat(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        return await self.deps.flow.run(RequestTurn(request, self.deps.clock), chat_call(self.deps, request, body))


class OpenAIEmbeddingsRoutes(DialectRoutes):
    """``POST /v1/embeddings`` (and ``/embeddings``): routed by ``model`` like chat, relayed as the upstream answers."""

    app = Klein()
    dialect = OPENAI
    prefixes = (b"/v1/embeddings", b"/embeddings")

    @api_route(app, "/", route="embeddings")
    async def embeddings(self, request: Request) -> None:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        model = body.get("model")
        turn = RequestTurn(request, self.deps.clock)

        async def embed(pick: Pick) -> None:
            await relay_json_request(request, pick.member.client, b"/v1/embeddings", with_model(body, pick),
                                     self.deps.clock, turn.upstream_headers())

        await self.deps.flow.with_upstream(turn, model if isinstance(model, str) and model else None, None, embed)
