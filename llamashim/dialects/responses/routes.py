"""The OpenAI Responses routes (``/v1/responses``, also without ``/v1``).

``POST /`` translates a Responses request (:mod:`.translate`) onto the shared chat flow — tool repair, tool-call
conformance, old-build synthesis, reasoning routing, the idle timeout — and answers with Responses events
(:mod:`.events`) or the response object. With ``store`` (the default), the response, its input items and the
conversation behind it go to the store (:mod:`.store`) as the answer ends, and the stream's last event
(``response.completed``) goes out once the row is written (at most a few seconds: ``ChatFlow``'s
``COMPLETE_TIMEOUT``), so a follow-up ``previous_response_id`` sent at once to another instance sharing the store
finds it; within one process the store also answers reads of a write still in flight from memory. A response's id
carries the tag of the upstream that served it (:func:`with_upstream_tag`), so a turn continuing it goes back there,
where its prompt is cached (:meth:`~llamashim.upstream.set.UpstreamSet.pick`). ``GET``/``DELETE /{id}``,
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
from twisted.web.resource import IResource
from twisted.web.server import Request

from llamashim.chat.call import ChatCall
from llamashim.chat.deps import RouteDeps
from llamashim.chat.turn import Turn
from llamashim.dialects.responses.compact import compact_request
from llamashim.dialects.responses.dialect import RESPONSES
from llamashim.dialects.responses.events import (
    ResponsesEncoder,
    new_id,
    previous_response_not_found,
    response_object,
)
from llamashim.dialects.responses.store import ResponseStore, Stored, default_store_path
from llamashim.dialects.responses.translate import ResponsesRequest, conversation, orphan_outputs, request_to_chat
from llamashim.dialects.responses.websocket import (
    COMPACT,
    LocalResponses,
    Sockets,
    SocketTurn,
    bad_handshake,
    is_upgrade,
    refused_origin,
    socket_resource,
)
from llamashim.errors import BadRequest, ShimError
from llamashim.jsonutil import arr
from llamashim.stream.reasoning import separate_mode
from llamashim.web.context import context_of
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import DialectRoutes, api_route
from llamashim.web.turn import RequestTurn

JSON = dict[str, Any]


_RESPONSE = "resp_"
_HEX = frozenset("0123456789abcdef")
_BASE = len(_RESPONSE) + 32  # "resp_" and a UUID's 32 hex digits; an upstream's 8-digit tag may follow
_TAG = 8


def new_response_id() -> str:
    """A new response id, without an upstream tag yet (:func:`with_upstream_tag` adds it once one is chosen)."""
    return _RESPONSE + uuid.uuid4().hex


def with_upstream_tag(response_id: str, tag: str) -> str:
    """``response_id`` (from :func:`new_response_id`) carrying the tag of the upstream that serves it, in place of
    any it carried (a failover before the first byte chooses again)."""
    return response_id[:_BASE] + tag


def upstream_tag_of(response_id: Any) -> str | None:
    """The upstream tag a response id carries; ``None`` for an id minted before ids carried one, or not ours."""
    if not isinstance(response_id, str) or len(response_id) != _BASE + _TAG or not response_id.startswith(_RESPONSE):
        return None
    tail = response_id[len(_RESPONSE):]
    return response_id[_BASE:] if _HEX.issuperset(tail) else None


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

    def served_by(self, tag: str) -> None:
        """The upstream tagged ``tag`` answers: the response's id carries it."""
        self.encoder.response_id = with_upstream_tag(self.encoder.response_id, tag)

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
        self.sockets = Sockets()  # the open WebSockets, closed when the daemon stops
        self.store: ResponseStore | None = None
        if settings.store:
            path = settings.store_path or default_store_path()
            self.store = ResponseStore(deps.clock, path, settings.max_age, settings.max_items, settings.store_url,
                                       prune=deps.worker == 0)
            if deps.flow.memory is not None:  # thinking.replay's reasoning survives a restart in the same store
                deps.flow.memory.attach(self.store)

    def services(self) -> list[IService]:
        return [self.sockets, *([self.store] if self.store is not None else [])]

    async def _stored(self, request: Request, response_id: str) -> Stored:
        stored = await self.store.get(context_of(request).owner, response_id) if self.store is not None else None
        if stored is None:
            raise not_found(response_id)
        return stored

    # -- create ----------------------------------------------------------------------------------------------

    async def _history(self, owner: str, previous: Any, local: LocalResponses | None) -> list[JSON]:
        """The conversation ``previous_response_id`` continues: a WebSocket's own recent responses first (kept even
        with ``store: false``), then the store (404 ``previous_response_not_found`` for neither)."""
        if not (isinstance(previous, str) and previous):
            return []
        remembered = local.get(previous) if local is not None else None
        if remembered is not None:
            return remembered
        stored = await self.store.get(owner, previous) if self.store is not None else None
        if stored is None:
            raise previous_response_not_found(previous)
        return stored.conversation

    async def _translate(self, owner: str, body: JSON, local: LocalResponses | None = None
                         ) -> tuple[ResponsesRequest, list[JSON]]:
        """The translated request and the conversation it continues. Continuing a known conversation, every tool
        output must answer a call in it (OpenAI's 400)."""
        history = await self._history(owner, body.get("previous_response_id"), local)
        translated = request_to_chat(body, history, self.log.debug)
        if history:
            orphans = orphan_outputs([*history, *translated.input_messages])
            if orphans:
                raise BadRequest(f"No tool call found for function call output with call_id {orphans[0]}.")
        return translated, history

    def _answer(self, translated: ResponsesRequest) -> _Answer:
        clock = self.deps.clock
        return _Answer(translated, ResponsesEncoder(translated, new_response_id(), int(clock.seconds()),
                                                    completed_at=lambda: int(clock.seconds())))

    async def _create(self, turn: Turn, owner: str, body: JSON, local: LocalResponses | None = None
                      ) -> bytes | None:
        """One response on the shared chat flow, over HTTP or a WebSocket (``local``: its recent responses)."""
        translated, history = await self._translate(owner, body, local)
        answer = self._answer(translated)
        call = ChatCall(body=translated.chat_body, encoder=answer.encoder, reply=answer.reply,
                        reasoning_mode=separate_mode(self.deps.config.thinking.mode),
                        on_complete=lambda: self._keep(owner, body, history, answer, local),
                        prefer=upstream_tag_of(body.get("previous_response_id")), on_upstream=answer.served_by)
        return await self.deps.flow.run(turn, call)

    @api_route(app, "/", route="responses")
    async def create(self, request: Request) -> bytes | None:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        return await self._create(RequestTurn(request, self.deps.clock), context_of(request).owner, body)

    def _keep(self, owner: str, body: JSON, history: list[JSON], answer: _Answer, local: LocalResponses | None = None
              ) -> Deferred[None] | None:
        """Keep the finished response: on its WebSocket (whatever ``store`` says), and in the store when it is to
        be kept. A failed write is logged (without bodies) and never reaches the client: its answer stands."""
        final = answer.final
        if final is None:
            return None
        turns = conversation([*history, *answer.translated.input_messages], final)
        if local is not None:
            local.remember(final["id"], turns)
        if self.store is None or not answer.translated.store:
            return None
        d = self.store.put(owner, final, input_items(body.get("input")), turns)
        return d.addErrback(self._not_kept, final["id"])

    def _not_kept(self, failure: Failure, response_id: str) -> None:
        self.log.failure("responses store: could not keep {id}", failure, id=response_id)

    # -- over a WebSocket ------------------------------------------------------------------------------------

    @api_route(app, "/", route="responses_websocket_upgrade", methods=("GET",), upstream=False)
    async def websocket(self, request: Request) -> IResource:
        """``GET /v1/responses`` upgraded to a WebSocket (:mod:`.websocket`); any other GET is the 405 it was."""
        if not is_upgrade(request):
            raise ShimError(405, f"method GET not allowed for {request.path.decode('latin-1')} (allowed: POST; "
                                 "GET only as a WebSocket upgrade)")
        refused = bad_handshake(request) or refused_origin(request, self.deps.config.cors.origins)
        if refused is not None:
            raise refused
        limits = self.deps.config.limits
        return socket_resource(request, self._socket_turn, self.deps.clock, self.sockets, limits.max_body_bytes,
                               limits.max_json_depth)

    def _socket_turn(self, turn: SocketTurn, body: JSON, local: LocalResponses) -> Deferred[None]:
        """One ``response.create`` (or ``response.compact``) of a WebSocket, holding an upstream slot as an HTTP
        request does."""

        async def run() -> None:
            if turn.kind == COMPACT:
                await self._compact(turn, turn.owner, body, local)
            elif body.get("generate") is False:
                await self._prepare_only(turn, body, local)
            else:
                await self._create(turn, turn.owner, body, local)

        return Deferred.fromCoroutine(self.slots.run(run))

    async def _prepare_only(self, turn: SocketTurn, body: JSON, local: LocalResponses) -> None:
        """``generate: false`` (Codex's warm-up): the response is created and completed with no output and nothing
        asked upstream; its conversation is kept for the ``previous_response_id`` that follows."""
        translated, history = await self._translate(turn.owner, body, local)
        answer = self._answer(translated)
        encoder = answer.encoder
        turn.write(encoder.opening())
        end = encoder.on_done()  # (builds the final response that is kept)
        encoder.ended = True
        try:  # once kept (bounded), as for a generated response (ChatFlow._complete_and_end)
            await self.deps.flow.keep(turn, lambda: self._keep(turn.owner, body, history, answer, local))
        finally:
            turn.write(end)
        turn.finish()

    # -- compaction ------------------------------------------------------------------------------------------

    @api_route(app, "/compact", route="responses_compact")
    async def compact(self, request: Request) -> bytes | None:
        """``POST /responses/compact``: the conversation summarised by the model into the compacted window."""
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        return await self._compact(RequestTurn(request, self.deps.clock), context_of(request).owner, body)

    async def _compact(self, turn: Turn, owner: str, body: JSON, local: LocalResponses | None = None
                       ) -> bytes | None:
        """One compaction, over HTTP or a WebSocket (``local``: its recent responses, for ``previous_response_id``
        on the socket even with ``store: false``)."""
        history = await self._history(owner, body.get("previous_response_id"), local)
        job = compact_request(body, history, self.log.debug)
        created = int(self.deps.clock.seconds())
        call = ChatCall(body=job.chat_body, encoder=self._answer(job.translated).encoder,
                        reply=lambda reply: job.compacted(reply, new_id, created),
                        reasoning_mode=separate_mode(self.deps.config.thinking.mode))
        return await self.deps.flow.run(turn, call)

    @api_route(app, "/input_tokens", route="responses_input_tokens")
    async def input_tokens(self, request: Request) -> bytes:
        body = read_json_object(request, self.deps.config.limits.max_json_depth)
        translated, _ = await self._translate(context_of(request).owner, body)
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
