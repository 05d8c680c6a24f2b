"""Tool calls in streams (pure): the conformance layer for native streams and stream synthesis from one reply.

The OpenAI chunk contract clients rely on (the ``openai`` SDKs' accumulating helpers crash or drop calls otherwise):
every ``delta.tool_calls`` entry has an ``index``; the first fragment of each call carries ``id``, ``type:
"function"`` and ``function.name``; ``arguments`` are strings that concatenate to JSON; ``object`` is
``chat.completion.chunk``; a reply that called tools finishes with ``finish_reason: "tool_calls"``; with
``stream_options.include_usage`` a usage chunk (``choices: []``) comes before ``[DONE]``; ``model`` is the name the
client knows (the one ``/v1/models`` lists), never the upstream's id, which for a spawned llama-server is a private
file path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from llamashim import jsonutil
from llamashim.jsonutil import arr, int_or, map_objects, obj
from llamashim.stream.items import Chunk, Done, Item
from llamashim.stream.usage import Usage

CHUNK_OBJECT = "chat.completion.chunk"


def new_call_id() -> str:
    """A fresh tool-call id in OpenAI's shape."""
    return "call_" + uuid.uuid4().hex[:24]


def _args_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return jsonutil.dumps(value).decode("utf-8")


@dataclass
class _ChoiceState:
    started: set[int] = field(default_factory=set)  # call indexes whose header fragment has gone out
    by_id: dict[str, int] = field(default_factory=dict)
    last: int = -1
    saw_tools: bool = False


class _ModelName:
    """The model name a stream is presented under. A chunk whose ``model`` differs gets it, in ``raw`` too: the
    upstream's ``"model":"…"`` is spliced out of the frame's bytes, so every other byte stays the upstream's; only a
    frame where it is not found that way (other spacing or escaping, no ``model``) is encoded anew."""

    __slots__ = ("_new", "_old", "_upstream", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._new = b'"model":' + jsonutil.dumps(name)
        self._upstream: str | None = None  # the upstream's model string, and its bytes in a compact frame
        self._old = b""

    def present(self, chunk: Chunk) -> Chunk:
        upstream = chunk.data.get("model")
        if upstream == self.name:
            return chunk
        data = {**chunk.data, "model": self.name}
        raw = chunk.raw
        if raw is None or not isinstance(upstream, str):
            return Chunk(data, None)
        if upstream != self._upstream:
            self._upstream, self._old = upstream, b'"model":' + jsonutil.dumps(upstream)
        at = raw.find(self._old)
        if at < 0:
            return Chunk(data, None)
        return Chunk(data, raw[:at] + self._new + raw[at + len(self._old) :])


class ToolCallConformance:
    """A pipeline stage that makes native upstream streams keep the tool-call chunk contract, and presents the
    stream as ``model``'s (the name the client knows) when given: every chunk's ``model`` becomes it."""

    def __init__(self, include_usage: bool, *, model: str | None = None) -> None:
        self.include_usage = include_usage
        self.saw_usage = False
        self._choices: dict[int, _ChoiceState] = {}
        self._meta: dict[str, Any] = {}
        self._usage_sent = False
        self._timings: Any = None
        self._model = _ModelName(model) if model is not None else None

    def feed(self, item: Item) -> list[Item]:
        if isinstance(item, Chunk):
            return [self._chunk(item)]
        if isinstance(item, Done):
            return [*self._usage_tail(), item]
        return [item]

    def finish(self) -> list[Item]:
        return []

    def _usage_tail(self) -> list[Item]:
        if not self.include_usage or self.saw_usage or self._usage_sent:
            return []
        self._usage_sent = True
        usage = (Usage.from_timings(self._timings) or Usage(0, 0)).to_openai()
        return [Chunk({"choices": [], **self._meta, "object": CHUNK_OBJECT, "usage": usage})]

    def _chunk(self, chunk: Chunk) -> Chunk:
        if self._model is not None:
            chunk = self._model.present(chunk)
        data = chunk.data
        if not self._meta:
            self._meta = {k: data[k] for k in ("id", "created", "model") if k in data}
        if data.get("usage"):
            self.saw_usage = True
        if "timings" in data:
            self._timings = data["timings"]
        changed = False
        if data.get("object") != CHUNK_OBJECT:
            data = {**data, "object": CHUNK_OBJECT}
            changed = True
        choices = data.get("choices")
        if isinstance(choices, list):
            new_choices = map_objects(choices, self._choice)
            if new_choices is not choices:
                data = {**data, "choices": new_choices}
                changed = True
        return Chunk(data, None) if changed else chunk

    def _choice(self, choice: dict[str, Any], pos: int) -> dict[str, Any]:
        index = choice.get("index")
        out = choice
        if not isinstance(index, int):
            index = pos
            out = {**out, "index": index}
        state = self._choices.get(index)
        delta = choice.get("delta")
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        if calls:
            if state is None:
                state = self._choices[index] = _ChoiceState()
            state.saw_tools = True
            new_calls = self._calls(calls, state)
            if new_calls is not calls:
                assert isinstance(delta, dict)
                out = {**out, "delta": {**delta, "tool_calls": new_calls}}
        if choice.get("finish_reason") == "stop" and state is not None and state.saw_tools:
            out = {**out, "finish_reason": "tool_calls"}
        return out

    def _calls(self, calls: Any, state: _ChoiceState) -> Any:
        if not isinstance(calls, list):
            return calls
        return map_objects(calls, lambda call, _: self._call(call, state))

    def _call(self, call: dict[str, Any], state: _ChoiceState) -> dict[str, Any]:
        out = call
        index = call.get("index")
        call_id = call.get("id")
        fn = call.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(index, int):
            if isinstance(call_id, str) and call_id in state.by_id:
                index = state.by_id[call_id]
            elif call_id or name or state.last < 0:
                index = max(state.started, default=-1) + 1  # a new call
            else:
                index = state.last  # a continuation of the call in progress
            out = {**out, "index": index}
        state.last = index
        if index not in state.started:
            state.started.add(index)
            if not call_id:
                call_id = new_call_id()
                out = {**out, "id": call_id}
            if out.get("type") != "function":
                out = {**out, "type": "function"}
            if not isinstance(fn, dict):
                fn = {}
                out = {**out, "function": fn}
            if "arguments" not in fn:
                fn = {**fn, "arguments": ""}
                out = {**out, "function": fn}
        if isinstance(call_id, str):
            state.by_id[call_id] = index
        if isinstance(fn, dict) and "arguments" in fn and not isinstance(fn["arguments"], str):
            out = {**out, "function": {**fn, "arguments": _args_text(fn["arguments"])}}
        return out


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] if text else []


def synthesize_items(reply: dict[str, Any], chunk_size: int, include_usage: bool) -> list[Item]:
    """A complete, well-formed stream (ending in ``Done``) built from one non-streamed chat.completion."""
    base: dict[str, Any] = {
        "id": reply.get("id") or "chatcmpl-" + uuid.uuid4().hex[:24],
        "created": reply.get("created") or 0,
        "model": reply.get("model") or "",
    }
    if "system_fingerprint" in reply:
        base["system_fingerprint"] = reply["system_fingerprint"]
    base["object"] = CHUNK_OBJECT
    size = max(1, chunk_size)
    items: list[Item] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        items.append(Chunk({"choices": [{"index": index, "delta": delta, "finish_reason": finish}], **base}))

    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        choices = [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]
    for pos, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        index = int_or(choice.get("index"), pos)
        msg = obj(choice.get("message"))
        chunk(index, {"role": "assistant", "content": ""})
        for attr in ("reasoning_content", "content"):
            value = msg.get(attr)
            if isinstance(value, str):
                for piece in _pieces(value, size):
                    chunk(index, {attr: piece})
        calls = arr(msg.get("tool_calls"))
        for j, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            fn = obj(call.get("function"))
            header = {
                "index": j,
                "id": call.get("id") or new_call_id(),
                "type": "function",
                "function": {"name": fn.get("name") or "", "arguments": ""},
            }
            chunk(index, {"tool_calls": [header]})
            for piece in _pieces(_args_text(fn.get("arguments")), size):
                chunk(index, {"tool_calls": [{"index": j, "function": {"arguments": piece}}]})
        finish = choice.get("finish_reason") or "stop"
        if calls and finish == "stop":
            finish = "tool_calls"
        chunk(index, {}, finish)
    _add_usage(items, reply, base, include_usage)
    items.append(Done())
    return items


def _add_usage(items: list[Item], reply: dict[str, Any], base: dict[str, Any], include_usage: bool) -> None:
    """What a synthesized stream says about usage, as llama-server's own stream would: the usage chunk (with the
    reply's ``timings``) when the client asked for it, else the ``timings`` on the last chunk — so the pipeline
    learns the usage of every stream without a usage chunk the client did not ask for."""
    timings = reply.get("timings")
    extra = {"timings": timings} if isinstance(timings, dict) else {}
    if include_usage:
        usage = reply.get("usage")
        if not isinstance(usage, dict) or not usage:
            usage = (Usage.from_timings(timings) or Usage(0, 0)).to_openai()
        items.append(Chunk({"choices": [], **base, "usage": usage, **extra}))
    elif extra and items and isinstance(items[-1], Chunk):
        items[-1] = Chunk({**items[-1].data, **extra})


def normalise_reply(reply: dict[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """A non-streamed reply whose tool calls all have ``type``, ``id`` and string ``arguments``, presented as
    ``model``'s (the name the client knows) when given."""
    if model is not None and reply.get("model") != model:
        reply = {**reply, "model": model}
    choices = reply.get("choices")
    if not isinstance(choices, list):
        return reply
    new_choices: list[Any] | None = None
    for pos, choice in enumerate(choices):
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            continue
        msg = choice["message"]
        calls = msg.get("tool_calls")
        if not isinstance(calls, list) or not calls:
            continue
        fixed_calls = []
        for call in calls:
            if not isinstance(call, dict):
                continue
            fn = obj(call.get("function"))
            fixed_calls.append(
                {
                    **call,
                    "id": call.get("id") or new_call_id(),
                    "type": "function",
                    "function": {**fn, "arguments": _args_text(fn.get("arguments"))},
                }
            )
        new_choice = {**choice, "message": {**msg, "tool_calls": fixed_calls}}
        if choice.get("finish_reason") == "stop":
            new_choice["finish_reason"] = "tool_calls"
        if new_choices is None:
            new_choices = list(choices)
        new_choices[pos] = new_choice
    return reply if new_choices is None else {**reply, "choices": new_choices}


def is_stream_tools_refusal(status: int, body: bytes) -> bool:
    """Old llama-server builds answer tools + stream with HTTP 500 "Cannot use tools with stream"."""
    return status >= 400 and b"cannot use tools with stream" in body.lower()


def reply_from_json_stream_answer(data: bytes) -> dict[str, Any] | None:
    """An old build answered a stream request with one chat.completion JSON: that reply, else ``None``."""
    try:
        value = jsonutil.loads(data)
    except jsonutil.JSONError:
        return None
    if not isinstance(value, dict):
        return None
    choices = value.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]:
        return value
    return None
