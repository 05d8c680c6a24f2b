"""What every tier reads, once: SSE and NDJSON bodies, each dialect's error body, the SDKs' own accumulators that
fold a stream into the object a client ends up with, and the log.

The accumulators use SDK internals (``openai.lib.streaming…_responses``, ``anthropic.lib.streaming._messages``): brittle
by choice, acceptable with the versions pinned in setup.cfg's test extras — the client's own code decides what a
stream means.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai import omit
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher

JSON = dict[str, Any]
RESPONSE_EVENT: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
MESSAGE_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


@contextmanager
def logged() -> Iterator[list[LogEvent]]:
    """Every log event emitted (to Twisted's global log publisher) while the block runs."""
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def sse_events(body: bytes) -> list[tuple[str | None, JSON]]:
    """A whole SSE body → (event name, parsed data) per frame; comments (heartbeats) are skipped."""
    out: list[tuple[str | None, JSON]] = []
    for frame in body.decode("utf-8").split("\n\n"):
        event, data = None, []
        for line in frame.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            out.append((event, json.loads("\n".join(data))))
    return out


def sse_chunks(body: bytes) -> list[JSON]:
    """The JSON objects of an OpenAI chat stream's ``data:`` lines (``[DONE]`` and comments left out)."""
    return [json.loads(line[6:]) for frame in body.split(b"\n\n") for line in frame.split(b"\n")
            if line.startswith(b"data: {")]


def ndjson(body: bytes) -> list[JSON]:
    """A whole NDJSON body (it ends with a newline) → one object per line."""
    assert body.endswith(b"\n"), body[-200:]
    return [json.loads(line) for line in body.splitlines()]


def openai_error(body: bytes) -> JSON:
    """The ``error`` object of an OpenAI error body, checking its shape."""
    value = json.loads(body)
    assert set(value) == {"error"}, value
    err: JSON = value["error"]
    assert {"message", "type", "code"} <= set(err), err
    return err


def anthropic_error(body: bytes) -> JSON:
    """The ``error`` object of an Anthropic error body (or ``event: error`` data), checking its shape."""
    value = json.loads(body)
    assert value["type"] == "error" and set(value) == {"type", "error"}, value
    err: JSON = value["error"]
    assert set(err) == {"type", "message"}, err
    return err


# -- the SDKs' accumulators -------------------------------------------------------------------------------------------


def accumulate_chat(body: bytes) -> Any:
    """An OpenAI chat stream fed to the SDK's own accumulator, as ``client.chat.completions.stream`` does: the final
    ``ParsedChatCompletion``."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for value in sse_chunks(body):
        state.handle_chunk(ChatCompletionChunk.model_validate(value))
    return state.get_final_completion()


def accumulate_response(events: list[JSON]) -> Any:
    """Responses stream events fed to the SDK's accumulator (what ``client.responses.stream`` runs), each validated
    as one of the SDK's event types, sequence numbers 0..n-1: the final response of ``response.completed``."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    final = None
    for event in events:
        for out in state.handle_event(RESPONSE_EVENT.validate_python(event)):
            if out.type == "response.completed":
                final = out.response
    assert final is not None, "no response.completed"
    return final


def accumulate_message(events: list[JSON]) -> Any:
    """Anthropic stream events (pings left out) fed to the SDK's accumulator, as ``client.messages.stream`` does:
    the final ``Message``."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for payload in events:
        event = MESSAGE_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot is not None, "no events"
    return Message.model_validate(snapshot.to_dict())
