"""The Responses stream encoder (pure): typed chat deltas → Responses SSE events, and the response object they build.

:class:`ResponsesEncoder` writes the event sequence OpenAI documents: ``response.created`` and
``response.in_progress``, then per output item ``response.output_item.added``, its content events and
``response.output_item.done``, and finally ``response.completed`` (``response.incomplete`` when the answer hit the
token limit) with the whole response object; a terminal error is an ``error`` event and ``response.failed``. Every
event's data has ``type`` and a ``sequence_number`` counting from 0.

Output items open in the order they start and close before the next one starts: answer text is a ``message``,
reasoning a ``reasoning`` item (its text as ``reasoning_text`` content, and as our ``encrypted_content`` blob when the
client asked for it), each tool call a ``function_call``, ``custom_tool_call`` or ``local_shell_call`` per the tool
the client declared. A custom tool's input is JSON-decoded from the chat call's ``{"input": ...}`` arguments, so its
delta comes whole when the call closes. :func:`response_object` runs a non-streamed reply through the same encoder,
so both paths build one object. :func:`error_body` and :func:`previous_response_not_found` are the error shapes
answered before a stream starts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from llamashim import jsonutil
from llamashim.errors import CONTEXT_CODE, CONTEXT_TYPES, Described, ShimError, context_overflow, is_context_error
from llamashim.jsonutil import obj
from llamashim.stream.deltas import Delta, DeltaEncoder, ToolCallDelta, reply_deltas
from llamashim.stream.items import Item, StreamError
from llamashim.stream.usage import Usage

from .translate import ItemType, ResponsesRequest, ToolKind, ToolType, encrypt_reasoning

JSON = dict[str, Any]
IdFactory = Callable[[str], str]
"""A prefix (``msg``, ``rs``, ``fc``, ``ctc``, ``lsh``, ``call``) → a new id (``msg_…``)."""

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# OpenAI's Responses API words for an input that does not fit (with code context_length_exceeded)
CONTEXT_WORDS = "Your input exceeds the context window of this model. Please adjust your input and try again."


def new_id(prefix: str) -> str:
    """A fresh random id with OpenAI's prefix convention (``resp_…``, ``msg_…``, ``fc_…``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


@cache  # one per event type: a small, fixed set
def _prefix(kind: str) -> bytes:
    return b"event: " + kind.encode("ascii") + b"\ndata: "


def _loads(text: str) -> Any:
    try:
        return jsonutil.loads(text)
    except jsonutil.JSONError:
        return None


def custom_input(arguments: str) -> str:
    """A custom tool's raw input from the chat call's arguments (``{"input": "..."}``; anything else as sent)."""
    value = _loads(arguments)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("input"), str):
            return str(value["input"])
        strings = [v for v in value.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
    return arguments


def shell_action(arguments: str) -> JSON:
    """A ``local_shell_call`` action from the chat ``local_shell`` call's arguments (a command given as one string,
    as small models do, runs through ``bash -lc``)."""
    value = obj(_loads(arguments))
    command = value.get("command")
    if isinstance(command, str):
        command = ["bash", "-lc", command]
    argv = [c for c in command if isinstance(c, str)] if isinstance(command, list) else []
    action: JSON = {"type": "exec", "command": argv, "env": {}}
    if isinstance(value.get("workdir"), str):
        action["working_directory"] = value["workdir"]
    if isinstance(value.get("timeout_ms"), int):
        action["timeout_ms"] = value["timeout_ms"]
    return action


def response_error_code(type_: str | None, code: int | str | None) -> str:
    """The Responses ``error.code`` for an internal error (Codex acts on the context and rate-limit codes)."""
    if type_ in CONTEXT_TYPES or code in CONTEXT_TYPES:
        return CONTEXT_CODE
    if code in (429, "rate_limit_exceeded") or type_ == "rate_limit_error":
        return "rate_limit_exceeded"
    return "server_error"


class _Item:
    """One output item: its kind (its ``type``), position, the object the response shows and the text it
    accumulates."""

    __slots__ = ("data", "id", "index", "kind", "parts", "status")

    def __init__(self, index: int, data: JSON) -> None:
        self.kind = ItemType(data["type"])
        self.index = index
        self.data = data
        self.id: str = data["id"]
        self.parts: list[str] = []
        self.status = "in_progress"


class ResponsesEncoder(DeltaEncoder):
    """Pipeline items → Responses SSE events for one response; :attr:`response` is the final object once it ended."""

    def __init__(
        self, request: ResponsesRequest, response_id: str, created_at: int, ids: IdFactory = new_id,
        completed_at: Callable[[], int] | None = None,
    ) -> None:
        super().__init__()
        self.response_id = response_id
        self.created_at = created_at
        self.completed_at: Callable[[], int] = completed_at or (lambda: created_at)
        self.response: JSON | None = None
        self._ids = ids
        self._fields = request.response_fields()
        self._kinds = request.tool_kinds
        self._encrypt = request.include_encrypted_reasoning
        self._seq = 0
        self._started = False
        self._items: list[_Item] = []
        self._current: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._finish: str | None = None
        self._usage: Usage | None = None

    # -- entry points: the first output of a response is its created/in_progress pair

    def __call__(self, items: list[Item]) -> bytes:
        if self.ended:
            return b""
        head = b"" if self._started else self._begin()
        return head + super().__call__(items)

    def feed_deltas(self, items: Iterable[Delta]) -> bytes:
        head = b"" if self._started else self._begin()
        return head + super().feed_deltas(items)

    def opening(self) -> bytes:
        """``response.created`` and ``response.in_progress`` (once)."""
        return b"" if self._started else self._begin()

    def keepalive(self) -> bytes:
        """Another ``response.in_progress``: a data-bearing event, which is what resets Codex's stream idle timeout
        (its parser drops SSE comments)."""
        if not self._started or self.ended:
            return b""
        return self._event({"type": "response.in_progress", "response": self._response("in_progress")})

    # -- the wire

    def _event(self, payload: JSON) -> bytes:
        payload["sequence_number"] = self._seq
        self._seq += 1
        return _prefix(payload["type"]) + jsonutil.dumps(payload) + b"\n\n"

    def _begin(self) -> bytes:
        self._started = True
        snapshot = self._response("in_progress")
        return self._event({"type": "response.created", "response": snapshot}) + self._event(
            {"type": "response.in_progress", "response": snapshot}
        )

    def _response(self, status: str, incomplete: str | None = None, error: JSON | None = None) -> JSON:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": self.completed_at() if status == "completed" else None,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            **self._fields,
            "output": [item.data for item in self._items],
            "usage": self._usage_object(),
        }

    def _usage_object(self) -> JSON | None:
        return None if self._usage is None else usage_object(self._usage)

    # -- opening and closing items

    def _open(self, data: JSON) -> tuple[_Item, bytes]:
        head = self._close_current("completed")
        item = _Item(len(self._items), data)
        self._items.append(item)
        self._current = item
        added = self._event({"type": "response.output_item.added", "output_index": item.index, "item": data})
        return item, head + added

    def _close_current(self, status: str) -> bytes:
        item = self._current
        if item is None:
            return b""
        self._current = None
        item.status = status
        item.data = self._final(item)
        events = [*_RULES[item.kind].done(item), {"type": "response.output_item.done", "output_index": item.index,
                                                   "item": item.data}]
        return b"".join(self._event(e) for e in events)

    def _final(self, item: _Item) -> JSON:
        """The item as the finished response shows it."""
        return _RULES[item.kind].final(item, "".join(item.parts), self._encrypt)

    # -- deltas

    def on_text(self, text: str) -> bytes:
        item = self._current
        head = b""
        if item is None or item.kind is not ItemType.MESSAGE:
            item, head = self._open({
                "id": self._ids("msg"), "type": ItemType.MESSAGE, "status": "in_progress", "content": [],
                "role": "assistant",
            })
            head += self._event(_part_event("response.content_part.added", item, _output_text("")))
        item.parts.append(text)
        return head + self._event({
            "type": "response.output_text.delta", "item_id": item.id, "output_index": item.index,
            "content_index": 0, "delta": text, "logprobs": [],
        })

    def on_reasoning(self, text: str) -> bytes:
        item = self._current
        head = b""
        if item is None or item.kind is not ItemType.REASONING:
            item, head = self._open({"id": self._ids("rs"), "type": ItemType.REASONING, "summary": []})
            head += self._event(_part_event("response.content_part.added", item, _reasoning_text("")))
        item.parts.append(text)
        return head + self._event({
            "type": "response.reasoning_text.delta", "item_id": item.id, "output_index": item.index,
            "content_index": 0, "delta": text,
        })

    def on_tool_call(self, d: ToolCallDelta) -> bytes:
        item = self._calls.get(d.index)
        if item is None:
            item, head = self._open_call(d)
        elif item is not self._current:
            # A fragment of a call that already closed (the upstream interleaved calls): too late for its events,
            # but the final response still gets the whole call.
            item.parts.append(d.arguments)
            item.data = self._final(item)
            return b""
        else:
            head = b""
        if not d.arguments:
            return head
        item.parts.append(d.arguments)
        if item.kind is not ItemType.FUNCTION_CALL:
            return head
        return head + self._event({
            "type": "response.function_call_arguments.delta", "item_id": item.id, "output_index": item.index,
            "delta": d.arguments,
        })

    def _open_call(self, d: ToolCallDelta) -> tuple[_Item, bytes]:
        name = d.name or ""
        tool = self._kinds.get(name) or ToolKind(ToolType.FUNCTION, name)
        call_id = d.id or self._ids("call")
        data: JSON
        match tool.kind:
            case ToolType.CUSTOM:
                data = {"id": self._ids("ctc"), "type": ItemType.CUSTOM_TOOL_CALL, "call_id": call_id,
                        "name": tool.name, "input": ""}
            case ToolType.LOCAL_SHELL:
                data = {"id": self._ids("lsh"), "type": ItemType.LOCAL_SHELL_CALL, "call_id": call_id,
                        "status": "in_progress", "action": {"type": "exec", "command": [], "env": {}}}
            case ToolType.FUNCTION:
                data = {"id": self._ids("fc"), "type": ItemType.FUNCTION_CALL, "status": "in_progress",
                        "arguments": "", "call_id": call_id, "name": tool.name}
                if tool.namespace:
                    data["namespace"] = tool.namespace
        item, head = self._open(data)
        self._calls[d.index] = item
        return item, head

    def on_finish(self, reason: str) -> bytes:
        self._finish = reason
        return self._close_current("incomplete" if reason in _INCOMPLETE else "completed")

    def on_usage(self, usage: Usage) -> bytes:
        self._usage = usage
        return b""

    def on_done(self) -> bytes:
        head = self._close_current("completed")
        reason = _INCOMPLETE.get(self._finish or "")
        self.response = self._response("incomplete" if reason else "completed", reason)
        kind = "response.incomplete" if reason else "response.completed"
        return head + self._event({"type": kind, "response": self.response})

    def on_error(self, err: StreamError) -> bytes:
        item = self._current
        if item is not None:
            self._current = None
            item.status = "incomplete"
            item.data = self._final(item)
        code = CONTEXT_CODE if is_context_error(err) else response_error_code(err.type, err.code)
        message = error_message(err)
        self.response = self._response("failed", error={"code": code, "message": message})
        return self._event({"type": "error", "code": code, "message": message, "param": None}) + self._event(
            {"type": "response.failed", "response": self.response}
        )


def usage_object(u: Usage) -> JSON:
    """A Responses ``usage`` object."""
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens or 0, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _output_text(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": []}


def _reasoning_text(text: str) -> JSON:
    return {"type": "reasoning_text", "text": text}


def _part_event(event: str, item: _Item, part: JSON) -> JSON:
    return {"type": event, "item_id": item.id, "output_index": item.index, "content_index": 0, "part": part}


# -- each item kind: its finished object, and the events that close it before ``response.output_item.done`` ------


@dataclass(frozen=True, slots=True)
class _Rules:
    final: Callable[[_Item, str, bool], JSON]  # (item, its whole text, encrypt reasoning) → the finished object
    done: Callable[[_Item], list[JSON]]  # the finished item → its closing events (without sequence numbers)


def _message_final(item: _Item, text: str, encrypt: bool) -> JSON:
    return {**item.data, "status": item.status, "content": [_output_text(text)]}


def _message_done(item: _Item) -> list[JSON]:
    part = item.data["content"][0]
    return [{"type": "response.output_text.done", "item_id": item.id, "output_index": item.index, "content_index": 0,
             "text": part["text"], "logprobs": []}, _part_event("response.content_part.done", item, part)]


def _reasoning_final(item: _Item, text: str, encrypt: bool) -> JSON:
    done = {**item.data, "content": [_reasoning_text(text)]}
    if encrypt:
        done["encrypted_content"] = encrypt_reasoning(text)
    return done


def _reasoning_done(item: _Item) -> list[JSON]:
    part = item.data["content"][0]
    return [{"type": "response.reasoning_text.done", "item_id": item.id, "output_index": item.index,
             "content_index": 0, "text": part["text"]}, _part_event("response.content_part.done", item, part)]


def _function_done(item: _Item) -> list[JSON]:
    return [{"type": "response.function_call_arguments.done", "item_id": item.id, "output_index": item.index,
             "arguments": item.data["arguments"]}]


def _custom_done(item: _Item) -> list[JSON]:
    where, text = {"item_id": item.id, "output_index": item.index}, item.data["input"]
    delta = [{"type": "response.custom_tool_call_input.delta", **where, "delta": text}] if text else []
    return [*delta, {"type": "response.custom_tool_call_input.done", **where, "input": text}]


_RULES: dict[ItemType, _Rules] = {
    ItemType.MESSAGE: _Rules(_message_final, _message_done),
    ItemType.REASONING: _Rules(_reasoning_final, _reasoning_done),
    ItemType.FUNCTION_CALL: _Rules(
        lambda item, text, _: {**item.data, "status": item.status, "arguments": text}, _function_done
    ),
    ItemType.CUSTOM_TOOL_CALL: _Rules(lambda item, text, _: {**item.data, "input": custom_input(text)}, _custom_done),
    ItemType.LOCAL_SHELL_CALL: _Rules(
        lambda item, text, _: {**item.data, "status": item.status, "action": shell_action(text)}, lambda item: []
    ),
}


def response_object(
    request: ResponsesRequest, reply: JSON, response_id: str, created_at: int, ids: IdFactory = new_id,
    completed_at: Callable[[], int] | None = None,
) -> JSON:
    """The response object of a non-streamed ``chat.completion``: the same encoder, fed the reply's deltas."""
    encoder = ResponsesEncoder(request, response_id, created_at, ids, completed_at)
    encoder.feed_deltas(reply_deltas(reply))
    encoder.on_done()
    encoder.ended = True
    assert encoder.response is not None
    return encoder.response


# -- errors before the stream -----------------------------------------------------------------------------------------


def error_fields(err: ShimError) -> JSON:
    """OpenAI's error object, ``{"message", "type", "code", "param"}`` (``code`` a string or null)."""
    type_, code = err.type, err.code
    if is_context_error(err):
        type_, code = "invalid_request_error", CONTEXT_CODE
    elif type_ == "rate_limit_error":
        code = "rate_limit_exceeded"
    param = "previous_response_id" if code == "previous_response_not_found" else None
    return {"message": error_message(err), "type": type_, "code": code if isinstance(code, str) else None,
            "param": param}


def error_body(err: ShimError) -> bytes:
    """OpenAI's error body, ``{"error": {"message", "type", "code", "param"}}``."""
    return jsonutil.dumps({"error": error_fields(err)})


def error_message(err: Described) -> str:
    """An error's message as the Responses API says it: a context overflow in OpenAI's Responses words (what Codex
    and other clients match), with the numbers after them."""
    overflow = context_overflow(err)
    if overflow is None:
        return err.message
    return (f"{CONTEXT_WORDS} (The input is {overflow.prompt_tokens} tokens; the context window is "
            f"{overflow.window} tokens.)")


def previous_response_not_found(response_id: str) -> ShimError:
    """The 404 for a ``previous_response_id`` the store does not have (OpenAI's code and message)."""
    return ShimError(
        404, f"Previous response with id '{response_id}' not found.", "invalid_request_error",
        "previous_response_not_found",
    )
