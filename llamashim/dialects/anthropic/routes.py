"""The Anthropic Messages routes: ``POST /v1/messages`` (streamed and not) and ``POST /v1/messages/count_tokens``.

A Messages request is translated (:mod:`.translate`) onto the shared chat flow, so tool repair, tool-call
conformance, old-build synthesis, reasoning routing and the idle timeout apply; the answer comes back as Anthropic's
events (:mod:`.events`). Claude Code's per-request billing-header system block is dropped before the request goes
upstream (``anthropic.strip_billing_header``), so llama-server's prompt cache is reused turn after turn. Its usage
is reported scaled to the window the client assumes (``anthropic.context_scaling``, :mod:`.scaling`), so Claude Code
compacts before a small local window overflows.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.server import Request

from llamashim.chat.call import ChatCall
from llamashim.chat.deps import RouteDeps
from llamashim.dialects.anthropic.dialect import ANTHROPIC
from llamashim.dialects.anthropic.events import MessagesEncoder, message_object, new_message_id
from llamashim.dialects.anthropic.scaling import assumed_window, scaled, usage_factor
from llamashim.dialects.anthropic.translate import MessagesRequest, request_to_chat
from llamashim.modes import ThinkingMode
from llamashim.stream.reasoning import separate_mode
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import DialectRoutes, api_route
from llamashim.web.turn import RequestTurn


class AnthropicRoutes(DialectRoutes):
    app = Klein()
    dialect = ANTHROPIC
    prefixes = (b"/v1/messages",)
    log = Logger()

    def __init__(self, deps: RouteDeps) -> None:
        super().__init__(deps)
        self._told_billing = False

    def _translate(self, request: Request, count_only: bool = False) -> MessagesRequest:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        if count_only:
            body.setdefault("max_tokens", 1)  # count_tokens bodies carry none
        translated = request_to_chat(
            body, strip_billing_header=self.deps.config.anthropic.strip_billing_header, log=self.log.debug
        )
        if translated.stripped_billing_header and not self._told_billing:
            self._told_billing = True
            self.log.debug("anthropic: dropping the per-request x-anthropic-billing-header system block (it would "
                           "defeat the upstream's prompt cache; anthropic.strip_billing_header)")
        return translated

    @api_route(app, "/", route="messages")
    async def messages(self, request: Request) -> bytes | None:
        translated = self._translate(request)
        message_id = new_message_id()
        model = translated.model
        thinking = translated.thinking
        mode = ThinkingMode.OFF if thinking is not None and not thinking.enabled else separate_mode(
            self.deps.config.thinking.mode
        )

        encoder = MessagesEncoder(
            model, message_id,
            assumed_window=assumed_window(self.deps.config.anthropic.context_scaling, model, _betas(request)),
        )

        def reply(answer: dict[str, Any]) -> dict[str, Any]:
            return message_object(answer, model, message_id, encoder.usage_factor)

        call = ChatCall(body=translated.chat_body, encoder=encoder, reply=reply, reasoning_mode=mode,
                        on_window=encoder.upstream_window)
        return await self.deps.flow.run(RequestTurn(request, self.deps.clock), call)

    @api_route(app, "/count_tokens", route="messages_count_tokens")
    async def count_tokens(self, request: Request) -> bytes:
        translated = self._translate(request, count_only=True)
        assumed = assumed_window(self.deps.config.anthropic.context_scaling, translated.model, _betas(request))
        windows: list[int | None] = []
        n = await self.deps.flow.count_tokens(RequestTurn(request, self.deps.clock), translated.chat_body,
                                              windows.append)
        # the same scale as the usage of the answers (anthropic.context_scaling), so the two agree; the window those
        # tokens count against on that scale too (the real per-slot window when nothing is scaled), when known
        window = windows[-1] if windows else None
        factor = usage_factor(window, assumed)
        counted: dict[str, Any] = {"input_tokens": scaled(n, factor)}
        if window is not None:
            counted["context_window"] = scaled(window, factor)
        return send_json(request, counted)


def _betas(request: Request) -> list[str]:
    """The ``anthropic-beta`` flags the request names."""
    return ",".join(request.requestHeaders.getRawHeaders("anthropic-beta", [])).split(",")
