"""``POST /v1/responses/compact`` in memory, driven by the OpenAI SDK's ``responses.compact``: the conversation
summarised by the model into the compacted window (the user messages kept, then one ``compaction`` item), which the
next turn takes back as its ``input``."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseInputParam

from tests.integration.support import ShimFixture

JSON = dict[str, Any]
CONVERSATION: ResponseInputParam = [
    {"role": "user", "content": "We launch on Tuesday."},
    {"role": "assistant", "content": "Understood: Tuesday."},
    {"role": "user", "content": "And notify support first."},
]


def chat_messages(env: Any) -> list[JSON]:
    messages: list[JSON] = env.fake.last.body["messages"]
    return messages


def raw_window(client: openai.OpenAI, **body: Any) -> list[Any]:
    """The compacted ``output`` exactly as the server sent it (what a client passes back as-is)."""
    raw = client.responses.with_raw_response.compact(model="m", **body)
    output: list[Any] = raw.http_response.json()["output"]
    return output


def test_compact_summarises_the_conversation_into_the_compacted_window(shims: ShimFixture) -> None:
    """The SDK's responses.compact: the upstream is asked (not streamed) for a summary after the whole conversation;
    the answer is response.compaction with the user messages kept, then one compaction item, and usage."""
    env = shims.start()
    env.fake.content = ["Launch Tuesday; ", "notify support first."]
    compacted = env.openai().responses.compact(model="m", input=CONVERSATION, instructions="Be brief.")
    sent = env.fake.last.body
    assert sent["stream"] is False
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user", "user"]
    assert sent["messages"][-1]["content"].startswith("Compact the conversation above")
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    kinds = [item.type for item in compacted.output]
    assert kinds == ["message", "message", "compaction"]
    assert [item.content[0].text for item in compacted.output[:2]] == [  # type: ignore[union-attr,index]
        "We launch on Tuesday.", "And notify support first."]
    assert compacted.usage is not None and compacted.usage.output_tokens == 2


def test_the_compacted_window_is_the_next_turns_input(shims: ShimFixture) -> None:
    """The compacted output passed back as-is, plus a new user message: the model sees the kept user messages and
    the summary (a user message in the compaction item's place), never the assistant turns summarised away."""
    env = shims.start()
    client = env.openai()
    env.fake.content = ["Launch Tuesday; notify support first."]
    window = raw_window(client, input=CONVERSATION)
    env.fake.content = ["On it."]
    answer = client.responses.create(model="m", input=[*window, {"role": "user", "content": "What now?"}])
    assert answer.output_text == "On it."
    messages = chat_messages(env)
    assert [m["role"] for m in messages] == ["user", "user", "user", "user"]
    assert "Launch Tuesday; notify support first." in messages[2]["content"]
    assert messages[-1]["content"] == "What now?"


def test_compact_continues_a_stored_response_and_folds_an_earlier_summary(shims: ShimFixture) -> None:
    """previous_response_id compacts the stored conversation; compacting a window that already holds a summary
    summarises it again instead of keeping it as a user message."""
    env = shims.start()
    client = env.openai()
    first = client.responses.create(model="m", input="Remember: slate.")
    env.fake.content = ["The word is slate."]
    window = raw_window(client, previous_response_id=first.id)
    assert [m["role"] for m in chat_messages(env)] == ["user", "assistant", "user"]
    again = client.responses.compact(model="m", input=window)
    assert [item.type for item in again.output] == ["message", "compaction"]
    assert "The word is slate." in chat_messages(env)[1]["content"]


@pytest.mark.parametrize(("body", "message"), [
    ({"input": "Compact this."}, "model is required"),
    ({"model": "m"}, "no conversation to compact"),
    ({"model": "m", "previous_response_id": "resp_missing"}, "Previous response with id"),
])
def test_compact_refuses_what_it_cannot_compact(shims: ShimFixture, body: JSON, message: str) -> None:
    """No model (the spec requires it), nothing to compact, or an unknown previous_response_id: an OpenAI error
    (400, 400, 404) before anything goes upstream."""
    env = shims.start()
    status, _, raw = env.post("/v1/responses/compact", body)
    error = json.loads(raw)["error"]
    assert status in (400, 404) and message in error["message"]
    assert not env.fake.chat_requests()


def test_compact_errors_are_the_sdks_own_exceptions(shims: ShimFixture) -> None:
    """An unknown previous_response_id raises the SDK's NotFoundError with OpenAI's code."""
    env = shims.start()
    with pytest.raises(openai.NotFoundError) as raised:
        env.openai().responses.compact(model="m", previous_response_id="resp_missing")
    assert raised.value.code == "previous_response_not_found"
