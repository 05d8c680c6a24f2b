"""The OpenAI Responses routes (``/v1/responses``, also without ``/v1``).

``POST /`` translates a Responses request (:mod:`.translate`) onto the shared chat flow — tool repair, tool-call
conformance, old-build synthesis, reasoning routing, the idle timeout — and answers with Responses events
(:mod:`.events`) or the response object. With ``store`` (the default), the response, its input items and the
conversation behind it go to the store (:mod:`.store`) as the answer ends; the store answers reads of a write
still in flight from memory, so a follow-up ``previous_response_id`` never races it. ``GET``/``DELETE /{id}``,
``GET /{id}/input_items`` and ``POST /input_tokens`` complete the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from llamashim.chat.call import ChatCall
from llamashim.chat.deps import RouteDeps
from llamashim.dialects.responses.dialect import RESPONSES
from llamashim.dialects.responses.events import ResponsesEncoder, previous_response_not_found, response_object
from llamashim.dialects.responses.store import ResponseStore, Stored, default_store_path
from llamashim.dialects.responses.translate import ResponsesRequest, conversation, request_to_chat
from llamashim.errors import ShimError
from llamashim.jsonutil import arr
from llamashim.stream.reasoning import separate_mode
from llamashim.web.context import context_of
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import DialectRoutes, api_route
from llamashim.web.turn import RequestTurn

JSON = dict[str, Any]


def new_response_id() -> str:
    return "resp_" + uuid.uuid4().hex


def input_items(value: Any) -> list[JSON]:
    """A request's ``input`` as the list of items ``GET /{id}/input_items`` returns, each with an id."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    out = []
    for item in arr(value):
        if isinstance(item, dict):
            if not item.get("id"):
                prefix = "msg_" if item.get("type", "message") == "message" else "item_"
                item = {"id": prefix + uuid.uuid4().hex, **item}
            out.append(item)
    return out


@dataclass
class _Answer:
    """The response one ``create`` builds: by the stream's encoder, or from the non-streamed reply."""

    translated: ResponsesRequest
    encoder: ResponsesEncoder
    replied: JSON | None = None

    def reply(self, answer: JSON) -> JSON:
        enc = self.encoder
        self.replied = response_object(self.translated, answer, enc.response_id, enc.created_at,
                                       completed_at=enc.completed_at)
        return self.replied

    @property
    def final(self) -> JSON | None:
        """The finished response (``None`` until the answer ended)."""
        return self.replied if self.replied is not None else self.encoder.response


def not_found(response_id: str) -> ShimError:
    return ShimError(404, f"Response with id '{response_id}' not found.", "invalid_request_error", "not_found")


class ResponsesRoutes(DialectRoutes):
    app = Klein()
    dialect = RESPONSES
    prefixes = (b"/v1/responses", b"/responses")
    log = Logger()

    def __init__(self, deps: RouteDeps) -> None:
        super().__init__(deps)
        settings = deps.config.responses
        self.store: ResponseStore | None = None
        if settings.store:
            path = settings.store_path or default_store_path()
            self.store = ResponseStore(deps.clock, path, settings.max_age, settings.max_items, settings.store_url,
                                       prune=deps.worker == 0)
            if deps.flow.memory is not None:  # thinking.replay's reasoning survives a restart in the same store
                deps.flow.memory.attach(self.store)

    def services(self) -> list[IService]:
        return [self.store] if self.store is not None else []

    async def _stored(self, request: Request, response_id: str) -> Stored:
        stored = await self.store.get(context_of(request).owner, response_id) if self.store is not None else None
        if stored is None:
            raise not_found(response_id)
        return stored

    # -- create ----------------------------------------------------------------------------------------------

    async def _translate(self, request: Request, body: JSON) -> tuple[ResponsesRequest, list[JSON]]:
        """The translated request and the stored conversation it continues (404 for an unknown previous id)."""
        history: list[JSON] = []
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            stored = await self.store.get(context_of(request).owner, previous) if self.store is not None else None
            if stored is None:
                raise previous_response_not_found(previous)
            history = stored.conversation
        return request_to_chat(body, history, self.log.debug), history

    @api_route(app, "/", route="responses")
    async def create(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        translated, history = await self._translate(request, body)
        clock = self.deps.clock
        answer = _Answer(translated, ResponsesEncoder(translated, new_response_id(), int(clock.seconds()),
                                                      completed_at=lambda: int(clock.seconds())))
        owner = context_of(request).owner
        call = ChatCall(body=translated.chat_body, encoder=answer.encoder, reply=answer.reply,
                        reasoning_mode=separate_mode(self.deps.config.thinking.mode),
                        on_complete=lambda: self._keep(owner, body, history, answer))
        return await self.deps.flow.run(RequestTurn(request, self.deps.clock), call)

    def _keep(self, owner: str, body: JSON, history: list[JSON], answer: _Answer) -> Deferred[None] | None:
        """Store the finished response when it is to be kept. A failed write is logged (without bodies) and never
        reaches the client: its answer stands."""
        final = answer.final
        if final is None or self.store is None or not answer.translated.store:
            return None
        turns = conversation([*history, *answer.translated.input_messages], final)
        d = self.store.put(owner, final, input_items(body.get("input")), turns)
        return d.addErrback(self._not_kept, final["id"])

    def _not_kept(self, failure: Failure, response_id: str) -> None:
        self.log.failure("responses store: could not keep {id}", failure, id=response_id)

    @api_route(app, "/input_tokens", route="responses_input_tokens")
    async def input_tokens(self, request: Request) -> bytes:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        translated, _ = await self._translate(request, body)
        windows: list[int | None] = []
        n = await self.deps.flow.count_tokens(RequestTurn(request, self.deps.clock), translated.chat_body,
                                              windows.append)
        counted: JSON = {"object": "response.input_tokens", "input_tokens": n}
        if windows and windows[-1] is not None:  # the model's per-slot window, beside OpenAI's two fields
            counted["context_window"] = windows[-1]
        return send_json(request, counted)

    # -- stored responses ------------------------------------------------------------------------------------

    @api_route(app, "/<string:response_id>", route="responses_get", methods=("GET",), upstream=False)
    async def retrieve(self, request: Request, response_id: str) -> bytes:
        stored = await self._stored(request, response_id)
        return send_json(request, stored.response)

    @api_route(app, "/<string:response_id>", route="responses_delete", methods=("DELETE",), upstream=False)
    async def delete(self, request: Request, response_id: str) -> bytes:
        if self.store is None or not await self.store.delete(context_of(request).owner, response_id):
            raise not_found(response_id)
        return send_json(request, {"id": response_id, "object": "response", "deleted": True})

    @api_route(app, "/<string:response_id>/input_items", route="responses_input_items", methods=("GET",),
               upstream=False)
    async def list_input_items(self, request: Request, response_id: str) -> bytes:
        stored = await self._stored(request, response_id)
        items = stored.input_items
        if request.args.get(b"order", [b"desc"])[0] != b"asc":
            items = list(reversed(items))
        return send_json(request, {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        })
