"""A parse-failure 500 is not the end of the turn (pure): llama-server's chat parser failed on a finished generation,
and the generation is recovered and answered through the tool-call rescue.

llama-server derives a strict PEG parser from the model's chat template and parses the whole generation when it ends
(``common_chat_peg_parse`` in ``common/chat.cpp``); text it cannot place — a fenced tool call, a call with trailing
prose, markup of another format — makes it throw, and the exception becomes the request's error
(``{"error": {"code": 500, "message": ..., "type": "server_error"}}``): HTTP 500 for a non-streamed request (and for
a stream that fails on its first result), ``data: {"error": {...}}`` with no ``[DONE]`` after the content deltas of a
stream. The message depends on the build (see /work/notes/parse-failure.md):

* ``Failed to parse input at pos N: TEXT`` — TEXT is the parser's input from N on (``input.substr(N)``; from the
  builds that prepend the generation prompt, the effective input's), possibly empty;
* ``Failed to parse input at pos N`` — the oldest PEG builds: no text;
* ``The model produced output that does not match the expected FORMAT format`` — the newest builds: no text (the
  unparsed output only goes to the server's log).

What this module decides, from the message alone: :func:`parse_failure` recognises one; :func:`recovered_reply`
turns text into a ``chat.completion`` through the rescue (text → content, calls → ``tool_calls``);
:func:`raw_completion_body` is the request that asks the upstream for the generation again as raw text (its
``/completion`` has no chat parser) when the message does not carry all of it; :class:`ParseFailureRecovery` is the
stream stage that turns the mid-stream error into the rescued calls (or content), a finish chunk and ``Done``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamashim import jsonutil
from llamashim.stream.items import Chunk, Done, Item, StreamError
from llamashim.stream.rescue.detect import rescue_text
from llamashim.stream.tools import CHUNK_OBJECT, new_call_id

_WITH_POS = re.compile(r"(?:got exception: )?Failed to parse input at pos (\d+)(?:: (.*))?", re.S)
_NO_TEXT = re.compile(r"(?:got exception: )?The model produced output that does not match the expected \S+ format")

# What a rescue yields: the text left over and the calls (name, arguments).
Calls = list[tuple[str, str]]


@dataclass(frozen=True)
class ParseFailure:
    """One recognised failure: ``pos`` where the parser stopped (``None``: not said), ``text`` the input from there
    on (``None``: the message carries none)."""

    pos: int | None
    text: str | None

    @property
    def whole(self) -> bool:
        """The text is the whole generation (the parser failed at its start)."""
        return self.pos == 0 and self.text is not None


def parse_failure(message: str) -> ParseFailure | None:
    """The failure ``message`` (an upstream error's) reports, or ``None`` when it is some other error."""
    m = _WITH_POS.fullmatch(message)
    if m is not None:
        return ParseFailure(int(m.group(1)), m.group(2))
    if _NO_TEXT.fullmatch(message):
        return ParseFailure(None, None)
    return None


def from_error_body(status: int, body: bytes) -> ParseFailure | None:
    """The failure an upstream error answer reports (llama-server answers it with 500); ``None`` for any other."""
    if status != 500:
        return None
    try:
        value = jsonutil.loads(body)
    except jsonutil.JSONError:
        return None
    err = value.get("error") if isinstance(value, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    return parse_failure(message) if isinstance(message, str) else None


def from_stream_error(err: StreamError) -> ParseFailure | None:
    """The failure a mid-stream error event reports (its code is 500 or absent); ``None`` for any other."""
    if err.code not in (500, "500", None):
        return None
    return parse_failure(err.message)


# -- the rescue -------------------------------------------------------------------------------------------------------


def rescue(text: str, tools: Any) -> tuple[str, Calls]:
    """(text left over, trimmed; calls as (name, arguments)) from ``text``, through the tool-call rescue (only offered
    tools count); ``text`` unchanged when it holds no call."""
    left, calls = rescue_text(text, tools)
    if not calls:
        return text, []
    return left.strip(), [(c.name, c.arguments) for c in calls]


# -- a non-streamed answer --------------------------------------------------------------------------------------------


def recovered_reply(text: str, tools: Any, *, model: str | None, created: int,
                    new_id: Callable[[], str] = new_call_id) -> dict[str, Any]:
    """The ``chat.completion`` a recovered generation stands for: its calls as ``tool_calls`` (finish reason
    ``tool_calls``), the rest as content (``stop``)."""
    content, calls = rescue(text, tools)
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = [{"type": "function", "function": {"name": name, "arguments": args}, "id": new_id()}
                                 for name, args in calls]
    return {
        "choices": [{"finish_reason": "tool_calls" if calls else "stop", "index": 0, "message": message}],
        "created": created,
        "model": model or "",
        "object": "chat.completion",
        "id": "chatcmpl-" + new_id().removeprefix("call_"),
    }


def known_text(failure: ParseFailure, tools: Any) -> str | None:
    """The text to answer from without asking again: all of it, or — when the prefix before ``pos`` is missing —
    the tail, if it holds a call (the part an agent acts on; asking again costs a whole generation). ``None``: ask
    again (:func:`raw_completion_body`)."""
    if failure.text is None:
        return None
    if failure.whole or rescue(failure.text, tools)[1]:
        return failure.text
    return None


# Chat fields /completion does not take, or that would change what it does.
_NOT_SAMPLING = frozenset({
    "messages", "tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options", "response_format",
    "return_progress", "model", "max_tokens", "max_completion_tokens", "chat_template_kwargs", "reasoning_format",
    "logprobs", "top_logprobs", "n",
})


def raw_completion_body(prompt: str, chat_body: dict[str, Any]) -> dict[str, Any]:
    """The ``/completion`` request that generates the same answer as raw text: the template-rendered ``prompt``
    (``/apply-template``), the chat request's sampling fields, its token limit as ``n_predict``."""
    body = {k: v for k, v in chat_body.items() if k not in _NOT_SAMPLING}
    limit = chat_body.get("max_completion_tokens", chat_body.get("max_tokens"))
    if isinstance(limit, int):
        body["n_predict"] = limit
    return {**body, "prompt": prompt, "stream": False}


# -- the stream stage -------------------------------------------------------------------------------------------------


@dataclass
class ParseFailureRecovery:
    """The stage: a parse-failure error event becomes the rescued calls (or the text as content), a finish chunk and
    ``Done``; any other item passes. The text the error carries is rescued together with the content already passed
    (a call's markup may straddle the failure point); only what was not streamed yet goes out. ``on_recovered`` is
    told what happened (the flow logs it)."""

    tools: Any
    on_recovered: Callable[[str], None] = lambda what: None
    new_id: Callable[[], str] = new_call_id
    _streamed: list[str] = field(default_factory=list)
    _calls: int = 0  # tool calls already streamed (the rescued ones are numbered after them)
    _meta: dict[str, Any] = field(default_factory=dict)

    def feed(self, item: Item) -> list[Item]:
        if isinstance(item, Chunk):
            self._note(item)
            return [item]
        if isinstance(item, StreamError):
            failure = from_stream_error(item)
            if failure is not None:
                return self._recover(failure)
        return [item]

    def finish(self) -> list[Item]:
        return []

    def _note(self, chunk: Chunk) -> None:
        if not self._meta:
            self._meta = {k: chunk.data[k] for k in ("id", "created", "model") if k in chunk.data}
        for choice in chunk.data.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str):
                self._streamed.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("index"), int):
                    self._calls = max(self._calls, call["index"] + 1)

    def _recover(self, failure: ParseFailure) -> list[Item]:
        streamed = "".join(self._streamed)
        content, calls = rescue(streamed + (failure.text or ""), self.tools)
        fresh = content[len(streamed):] if content.startswith(streamed) else ""
        if not calls:
            fresh = failure.text or ""
        self.on_recovered(f"{len(calls)} tool call(s) and {len(fresh)} characters of text recovered"
                          if failure.text is not None else
                          "the message carries no text: the stream ends with what was streamed")
        out: list[Item] = []
        if fresh:
            out.append(self._chunk({"content": fresh}))
        for n, (name, args) in enumerate(calls, self._calls):
            out.append(self._chunk({"tool_calls": [{"index": n, "id": self.new_id(), "type": "function",
                                                    "function": {"name": name, "arguments": args}}]}))
        finish = "tool_calls" if calls or self._calls else "stop"
        return [*out, self._chunk({}, finish), Done()]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return Chunk({**self._meta, "object": CHUNK_OBJECT, "choices": [choice]})


def offered_tools(body: dict[str, Any]) -> Sequence[Any]:
    """The tools a chat request offered (none: an empty list)."""
    tools = body.get("tools")
    return tools if isinstance(tools, list) else []
