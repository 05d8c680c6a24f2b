"""The OpenAI Responses routes in memory: the real site in front of the fake llama-server on one clock, driven by the
``openai`` SDK (its requests served in memory) and by raw requests where the bytes themselves are the point.

Every shim here keeps its Responses store under pytest's ``tmp_path``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai.types.responses import (
    FunctionToolParam,
    ResponseFunctionToolCall,
    ResponseInputMessageItem,
    ResponseInputParam,
    ResponseOutputMessage,
    ResponseReasoningItem,
)

from llamashim import jsonutil
from llamashim.testing.fake_llama import FakeLlama, render
from tests.integration.support import Scripted, ShimFixture
from tests.support import sse_events

JSON = dict[str, Any]

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}
KEY_A, KEY_B = "sk-alpha-0001", "sk-bravo-0002"
OVERFLOW = jsonutil.dumps({"error": {
    "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 21157, "n_ctx": 8192,
    "message": "request (21157 tokens) exceeds the available context size (8192 tokens), try increasing it",
}})
TOOL_MODES = [
    ("native", None),
    ("synthesize", None),
    ("auto", None),
    ("auto", "refuse_stream_tools"),
    ("auto", "json_for_stream"),
]


def check_wire(events: list[tuple[str | None, JSON]]) -> list[str]:
    """Every frame names its type twice (``event:`` and ``type``), sequence numbers count from 0; the types."""
    assert events, "no events"
    assert [e for e, _ in events] == [d["type"] for _, d in events]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    return [d["type"] for _, d in events]


def streamed(client: openai.OpenAI, **kw: Any) -> tuple[list[str], Any]:
    """The SDK's ``responses.stream()`` helper run to its final response: (event types, final response)."""
    with client.responses.stream(model=kw.pop("model", "m"), **kw) as stream:
        types: list[str] = [event.type for event in stream]
        return types, stream.get_final_response()


def chat_messages(fake: FakeLlama) -> list[JSON]:
    messages: list[JSON] = fake.chat_requests()[-1].body["messages"]
    return messages


def input_messages(items: Sequence[object]) -> list[ResponseInputMessageItem]:
    """The listed input items, each of them checked to be a message."""
    out = [i for i in items if isinstance(i, ResponseInputMessageItem)]
    assert len(out) == len(items), items
    return out


def function_calls(items: Sequence[object]) -> list[ResponseFunctionToolCall]:
    """The output items, each of them checked to be a function call."""
    out = [i for i in items if isinstance(i, ResponseFunctionToolCall)]
    assert len(out) == len(items), items
    return out


# -- creating responses ------------------------------------------------------------------------------------------


def test_create_non_streamed_with_the_sdk(shims: ShimFixture) -> None:
    """responses.create answers a completed response: one assistant message, output_text, usage, echoed fields."""
    env = shims.start()
    client = env.openai()
    r = client.responses.create(model="m", input="Hi", instructions="Be brief.", metadata={"k": "v"},
                                temperature=0.5)
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.model == "m" and r.instructions == "Be brief." and r.metadata == {"k": "v"} and r.temperature == 0.5
    assert [item.type for item in r.output] == ["message"]
    message = r.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert message.role == "assistant" and message.status == "completed" and message.id.startswith("msg_")
    assert r.output_text == "Hello, world!"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (12, 4, 16)
    sent = env.fake.chat_requests()[-1].body
    assert sent["stream"] is False and sent["temperature"] == 0.5
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_stream_helper_reaches_the_final_response(shims: ShimFixture) -> None:
    """responses.stream() goes from response.created to response.completed; the final response has the text."""
    env = shims.start()
    env.fake.content = ["Par", "is is", " sunny."]
    types, final = streamed(env.openai(), input="Weather?")
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 3
    assert final.status == "completed" and final.output_text == "Paris is sunny."
    assert final.usage is not None and final.usage.output_tokens == 3
    sent = env.fake.chat_requests()[-1].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_raw_stream_event_order_and_sequence_numbers(shims: ShimFixture) -> None:
    """The raw stream: SSE headers, OpenAI's event order for one message, sequence numbers contiguous from 0."""
    env = shims.start()
    status, headers, body = env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True})
    assert status == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/event-stream; charset=utf-8"]
    events = sse_events(body)
    assert check_wire(events) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 4, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert completed["id"] == created["id"] and completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == "Hello, world!"
    assert completed["usage"]["input_tokens"] == 12


# -- tools -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tools", "old_build"), TOOL_MODES)
def test_function_tool_call_in_every_mode(shims: ShimFixture, tools: str, old_build: str | None) -> None:
    """A function tool call is a function_call item with parseable arguments in every mode; "required" goes on."""
    env = shims.start(tools)
    env.fake.reasoning = ["Hmm."]
    env.fake.content = ["Checking."]
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    env.fake.old_build = old_build
    client = env.openai()
    kw: JSON = {"input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"}
    types, final = streamed(client, **kw)
    assert types[-1] == "response.completed"
    assert "response.function_call_arguments.done" in types
    plain = client.responses.create(model="m", **kw)
    for response in (final, plain):
        assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
        assert response.output_text == "Checking."
        call = response.output[2]
        assert isinstance(call, ResponseFunctionToolCall)
        assert call.name == "get_weather" and call.call_id == "fakecall00" and (call.id or "").startswith("fc_")
        assert json.loads(call.arguments) == {"city": "Paris"}
    chat = env.fake.chat_requests()
    assert all(r.body["tool_choice"] == "required" for r in chat)
    assert chat[0].body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER["parameters"]}}]


def test_old_build_refusing_streamed_tools_gets_a_synthesized_stream(shims: ShimFixture) -> None:
    """An upstream that refuses streamed tools still yields a well-formed Responses stream with the function_call."""
    env = shims.start("auto")
    env.fake.old_build = "refuse_stream_tools"
    env.fake.content = ["Checking."]
    env.fake.tool_calls = [("get_weather", '{"city": "Rome"}')]
    body = {"model": "m", "input": "Weather in Rome?", "tools": [WEATHER], "stream": True}
    status, _, data = env.post("/v1/responses", body)
    assert status == 200
    events = sse_events(data)
    types = check_wire(events)
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert types.count("response.output_item.added") == types.count("response.output_item.done") == 2
    done = {d["item"]["type"]: d["item"] for _, d in events if d["type"] == "response.output_item.done"}
    assert done["message"]["content"][0]["text"] == "Checking."
    assert json.loads(done["function_call"]["arguments"]) == {"city": "Rome"}
    args = "".join(d["delta"] for _, d in events if d["type"] == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Rome"}
    assert [r.body["stream"] for r in env.fake.chat_requests()] == [True, False]


def test_function_call_output_turn_reaches_the_upstream_as_a_tool_message(shims: ShimFixture) -> None:
    """function_call and function_call_output input items become the assistant tool_calls and the tool message."""
    env = shims.start()
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    first = env.openai().responses.create(model="m", input="Weather?", tools=[WEATHER], store=False)
    call = first.output[-1]
    assert isinstance(call, ResponseFunctionToolCall)
    env.fake.tool_calls = []
    items = [{"role": "user", "content": "Weather?"}, call.model_dump(exclude_none=True),
             {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    env.openai().responses.create(model="m", input=cast(ResponseInputParam, items), tools=[WEATHER], store=False)
    messages = chat_messages(env.fake)
    assert messages[1]["role"] == "assistant"
    assert messages[1]["tool_calls"][0]["id"] == "fakecall00"
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert messages[2] == {"role": "tool", "tool_call_id": "fakecall00", "content": "sunny"}


def test_previous_response_id_with_function_call_outputs(shims: ShimFixture) -> None:
    """Outputs sent after previous_response_id follow the stored parallel calls: one assistant, then tool messages."""
    env = shims.start()
    env.fake.content = []
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
    client = env.openai()
    r = client.responses.create(model="m", input="Paris and Rome?", tools=[WEATHER])
    calls = function_calls(r.output)
    assert [(o.type, o.call_id) for o in calls] == [("function_call", "fakecall00"), ("function_call", "fakecall01")]
    env.fake.content, env.fake.tool_calls = ["Paris is sunny, Rome rainy."], []
    outputs = [{"type": "function_call_output", "call_id": "fakecall00", "output": "sunny"},
               {"type": "function_call_output", "call_id": "fakecall01", "output": "rainy"}]
    _, follow = streamed(client, input=outputs, tools=[WEATHER], previous_response_id=r.id)
    assert follow.output_text == "Paris is sunny, Rome rainy."
    messages = chat_messages(env.fake)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [json.loads(c["function"]["arguments"]) for c in messages[1]["tool_calls"]] == [
        {"city": "Paris"}, {"city": "Rome"}]
    assert [(m["tool_call_id"], m["content"]) for m in messages[2:]] == [("fakecall00", "sunny"),
                                                                         ("fakecall01", "rainy")]


@pytest.mark.parametrize("stream", [False, True])
def test_length_finish_is_an_incomplete_response(shims: ShimFixture, stream: bool) -> None:
    """A length finish is status incomplete (max_output_tokens), streamed as response.incomplete."""
    env = shims.start()
    env.fake.finish_reason = "length"
    status, _, body = env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": stream,
                                                 "max_output_tokens": 4})
    assert status == 200
    if stream:
        events = sse_events(body)
        types = check_wire(events)
        assert types[-1] == "response.incomplete" and "response.completed" not in types
        response = events[-1][1]["response"]
    else:
        response = jsonutil.loads(body)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["max_output_tokens"] == 4
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "Hello, world!"
    assert env.fake.chat_requests()[-1].body["max_tokens"] == 4


# -- reasoning ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["reasoning_content", "inline_think"])
@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_item_and_its_round_trip(shims: ShimFixture, source: str, stream: bool) -> None:
    """Reasoning becomes a reasoning item (encrypted_content on request) that restores reasoning_content next turn."""
    env = shims.start()
    if source == "reasoning_content":
        env.fake.reasoning = ["Let me", " think."]
    else:
        env.fake.inline_think = ["Let me", " think."]
    env.fake.content = ["Paris."]
    client = env.openai()
    kw: JSON = {"input": "Capital of France?", "include": ["reasoning.encrypted_content"]}
    if stream:
        _, r = streamed(client, **kw)
    else:
        r = client.responses.create(model="m", **kw)
    assert [item.type for item in r.output] == ["reasoning", "message"]
    reasoning, message = r.output
    assert isinstance(reasoning, ResponseReasoningItem) and isinstance(message, ResponseOutputMessage)
    assert reasoning.id.startswith("rs_") and [c.text for c in reasoning.content or []] == ["Let me think."]
    assert reasoning.encrypted_content
    assert r.output_text == "Paris."
    plain = client.responses.create(model="m", input="Again?")
    assert isinstance(plain.output[0], ResponseReasoningItem)
    assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None
    # Codex's next turn: the reasoning item as it came (only its opaque blob), the message, a new user turn.
    env.fake.reasoning = env.fake.inline_think = []
    items = [
        {"role": "user", "content": "Capital of France?"},
        {"type": "reasoning", "id": reasoning.id, "summary": [], "encrypted_content": reasoning.encrypted_content},
        message.model_dump(exclude_none=True),
        {"role": "user", "content": "And Italy?"},
    ]
    client.responses.create(model="m", input=cast(ResponseInputParam, items), store=False)
    sent = chat_messages(env.fake)
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["reasoning_content"] == "Let me think."
    assert sent[1]["content"] == "Paris."


# -- the store -----------------------------------------------------------------------------------------------------


def test_previous_response_id_sends_the_stored_conversation(shims: ShimFixture) -> None:
    """previous_response_id prepends the stored conversation (inputs and answers, chained) to the new input."""
    env = shims.start()
    client = env.openai()
    first = client.responses.create(model="m", input="My name is Ann.")
    env.fake.content = ["Hi", " Ann."]
    second = client.responses.create(model="m", input="What is my name?", previous_response_id=first.id,
                                     instructions="Be brief.")
    assert second.previous_response_id == first.id
    assert chat_messages(env.fake) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "What is my name?"},
    ]
    _, third = streamed(client, input="Thanks.", previous_response_id=second.id)
    assert third.status == "completed"
    assert [m["content"] for m in chat_messages(env.fake)] == [
        "My name is Ann.", "Hello, world!", "What is my name?", "Hi Ann.", "Thanks."]


def test_unknown_previous_response_id_is_a_404(shims: ShimFixture) -> None:
    """An unknown previous_response_id is a 404 with code previous_response_not_found; nothing goes upstream."""
    env = shims.start()
    client = env.openai()
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="m", input="Hi", previous_response_id="resp_nope")
    assert raised.value.code == "previous_response_not_found"
    assert raised.value.param == "previous_response_id"
    status, _, body = env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True,
                                                 "previous_response_id": "resp_nope"})
    assert status == 404
    err = jsonutil.loads(body)["error"]
    assert err["code"] == "previous_response_not_found" and "resp_nope" in err["message"]
    assert env.fake.chat_requests() == []


def test_store_false_is_not_retrievable(shims: ShimFixture) -> None:
    """A response created with store: false (streamed or not) is a 404 for retrieve and previous_response_id."""
    env = shims.start()
    client = env.openai()
    r = client.responses.create(model="m", input="Hi", store=False)
    assert (r.model_extra or {}).get("store") is False  # (not a declared field of this SDK's Response)
    _, s = streamed(client, input="Hi", store=False)
    for rid in (r.id, s.id):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="m", input="Hi", previous_response_id=rid)


def test_retrieve_input_items_and_delete(shims: ShimFixture) -> None:
    """A stored response can be retrieved, its input items listed and deleted; after the delete all are 404s."""
    env = shims.start()
    client = env.openai()
    items = [{"role": "developer", "content": "Be brief."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]
    _, r = streamed(client, input=items)
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.status == "completed" and got.output_text == "Hello, world!"
    assert got.output[0].id == r.output[0].id and got.usage is not None and got.usage.total_tokens == 16
    for stream in (False, True):  # retrieve answers exactly the object the create ended with
        _, _, body = env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": stream})
        created = sse_events(body)[-1][1]["response"] if stream else jsonutil.loads(body)
        _, _, again = env.get(f"/v1/responses/{created['id']}")
        assert jsonutil.loads(again) == created
    listed = client.responses.input_items.list(r.id)
    assert [i.role for i in input_messages(listed.data)] == ["user", "developer"]
    assert all(i.id for i in listed.data) and listed.has_more is False
    asc = client.responses.input_items.list(r.id, order="asc")
    assert [i.role for i in input_messages(asc.data)] == ["developer", "user"]
    assert [i.id for i in asc.data] == [i.id for i in reversed(listed.data)]
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)
    plain = client.responses.create(model="m", input="Hi")
    (item,) = input_messages(client.responses.input_items.list(plain.id).data)
    assert (item.type, item.role, [c.model_dump(exclude_none=True) for c in item.content]) == (
        "message", "user", [{"type": "input_text", "text": "Hi"}])


def test_stored_responses_belong_to_the_key_that_made_them(shims: ShimFixture) -> None:
    """With two API keys, key B gets a 404 for key A's response (retrieve, delete, previous_response_id); A does not."""
    env = shims.start(settings={"auth": {"api_keys": [KEY_A, KEY_B]}})
    a, b = env.openai(KEY_A), env.openai(KEY_B)
    r = a.responses.create(model="m", input="Secret.")
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError) as raised:
        b.responses.create(model="m", input="?", previous_response_id=r.id)
    assert raised.value.code == "previous_response_not_found"
    with pytest.raises(openai.AuthenticationError):
        env.openai("sk-wrong").responses.retrieve(r.id)
    assert a.responses.retrieve(r.id).id == r.id  # B's delete did nothing
    follow = a.responses.create(model="m", input="Again.", previous_response_id=r.id)
    assert follow.status == "completed" and chat_messages(env.fake)[0] == {"role": "user", "content": "Secret."}
    a.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(r.id)


def test_store_survives_a_restart(shims: ShimFixture) -> None:
    """A response stored before the service stops is retrievable, and continuable, from the next one."""
    env = shims.start()
    r = env.openai().responses.create(model="m", input="Remember me.")
    env.restart()
    assert Path(env.store_path).is_file()
    client = env.openai()  # a client of the new shim
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == "Hello, world!"
    client.responses.create(model="m", input="Still there?", previous_response_id=r.id)
    assert chat_messages(env.fake)[0] == {"role": "user", "content": "Remember me."}


def test_store_off_in_config_keeps_nothing(shims: ShimFixture) -> None:
    """With responses.store off, nothing is kept (retrieve 404s) and no store file is made, whatever the request."""
    env = shims.start(settings={"responses": {"store": False}})
    r = env.openai().responses.create(model="m", input="Hi", store=True)
    assert r.status == "completed"
    with pytest.raises(openai.NotFoundError):
        env.openai().responses.retrieve(r.id)
    assert not Path(env.store_path).exists()


# -- failures and errors -------------------------------------------------------------------------------------------


def test_mid_stream_drop_ends_with_error_then_response_failed(shims: ShimFixture) -> None:
    """An upstream that drops mid-stream: the stream ends with an error event, then response.failed; no completed."""
    env = shims.start()
    env.fake.content = [f"t{i} " for i in range(10)]
    env.fake.fault = "drop_mid_stream"
    env.fake.fault_after = 3
    status, _, body = env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True})
    assert status == 200
    events = sse_events(body)
    types = check_wire(events)
    assert types[-2:] == ["error", "response.failed"] and "response.completed" not in types
    error, failed = events[-2][1], events[-1][1]["response"]
    assert error["code"] == "server_error" and error["message"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"
    # The SDK sees the same two events, and its helper refuses to make up a final response.
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        streamed(env.openai(), input="Hi")
    seen = [e.type for e in env.openai().responses.create(model="m", input="Hi", stream=True)]
    assert seen[-2:] == ["error", "response.failed"]


def test_shutdown_ends_a_running_stream_with_response_failed(shims: ShimFixture) -> None:
    """Stopping the service mid-stream ends the stream with an error event and response.failed, not a cut body."""
    env = shims.start(settings={"shutdown": {"drain_timeout": 0}})
    env.fake.content = [f"t{i} " for i in range(50)]
    env.fake.chunk_interval = 0.5  # paces the fake; the test waits on what the client received, never on time
    exchange = env.shim.request("POST", "/v1/responses", {"model": "m", "input": "Hi", "stream": True})
    env.shim.run_until(lambda: b"response.output_text.delta" in exchange.body)
    env.shutdown()
    assert exchange.complete
    events = sse_events(bytes(exchange.body))
    types = check_wire(events)
    assert types[-2:] == ["error", "response.failed"] and "response.completed" not in types
    assert events[-1][1]["response"]["error"]["message"] == "llamashim is shutting down"


def test_routes_without_v1(shims: ShimFixture) -> None:
    """/responses (no /v1) creates and retrieves, raw and through an SDK whose base URL has no /v1."""
    env = shims.start()
    status, _, body = env.post("/responses", {"model": "m", "input": "Hi"})
    assert status == 200
    created = jsonutil.loads(body)
    assert created["object"] == "response" and created["status"] == "completed"
    status, _, body = env.get(f"/responses/{created['id']}")
    assert status == 200 and jsonutil.loads(body)["id"] == created["id"]
    client = env.openai(v1=False)
    got = client.responses.retrieve(created["id"])
    assert got.output_text == "Hello, world!"
    _, final = streamed(client, input="Hi")
    assert final.status == "completed"


def test_input_tokens_counts_with_the_upstream_template(shims: ShimFixture) -> None:
    """POST /v1/responses/input_tokens counts the /apply-template prompt's /tokenize tokens."""
    fake = FakeLlama(shims.clock)
    env = shims.start(fake=fake)
    status, _, body = env.post("/v1/responses/input_tokens",
                               {"model": "m", "input": "Hi", "instructions": "Be brief."})
    assert status == 200
    expected = len(render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]))
    assert jsonutil.loads(body) == {"object": "response.input_tokens", "input_tokens": expected,
                                    "context_window": fake.n_ctx}
    counted = env.openai().responses.input_tokens.count(model="m", input="Hi", tools=[WEATHER])
    assert counted.input_tokens == len("<|user|>Hi")
    template = [r for r in fake.requests if r.path == "/apply-template"][-1].body
    assert template["messages"] == [{"role": "user", "content": "Hi"}]
    assert template["tools"][0]["function"]["name"] == "get_weather"
    assert [r.body for r in fake.requests if r.path == "/tokenize"][-1] == {"content": "<|user|>Hi",
                                                                             "add_special": True}
    assert fake.chat_requests() == []


def test_errors_before_the_first_byte_are_openai_shaped(shims: ShimFixture) -> None:
    """Bad JSON, a malformed request and an unknown route are 400/404 in OpenAI's error shape; the SDK raises."""
    env = shims.start()
    for body, needle in ((b'{"model": ', "not valid JSON"), (b"[1]", "JSON object"),
                         (b'{"model":"m","input":5}', "input must be")):
        status, headers, data = env.post("/v1/responses", body)
        assert status == 400, data
        assert (headers.getRawHeaders(b"content-type") or [b""])[0].startswith(b"application/json")
        err = jsonutil.loads(data)["error"]
        assert needle in err["message"] and err["type"] == "invalid_request_error"
        assert set(err) == {"message", "type", "code", "param"}
    with pytest.raises(openai.BadRequestError, match="tools must be a list"):
        env.openai().responses.create(model="m", input="Hi", tools=cast(Any, {"x": 1}))
    status, _, data = env.get("/v1/responses/resp_nope")
    assert status == 404 and jsonutil.loads(data)["error"]["message"] == "Response with id 'resp_nope' not found."
    assert env.fake.chat_requests() == []


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_context_length_exceeded(shims: ShimFixture, stream: bool) -> None:
    """llama-server's exceed_context_size_error is a 400 with code context_length_exceeded (what Codex acts on)."""
    up = Scripted()
    up.status, up.body = 400, OVERFLOW
    env = shims.start(upstream=up)
    status, _, data = env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": stream})
    assert status == 400
    err = jsonutil.loads(data)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "context_length_exceeded"
    assert err["message"].startswith("Your input exceeds the context window of this model.")
    assert "21157 tokens" in err["message"] and "8192 tokens" in err["message"]


def test_metrics_count_the_responses_dialect(shims: ShimFixture) -> None:
    """/metrics counts Responses requests under route responses (and its siblings) with dialect responses."""
    env = shims.start()
    env.post("/v1/responses", {"model": "m", "input": "Hi"})
    status, _, body = env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True})
    rid = sse_events(body)[-1][1]["response"]["id"]
    env.get(f"/v1/responses/{rid}")
    env.get("/v1/responses/resp_nope")
    env.post("/v1/responses", b"{")
    status, _, body = env.get("/metrics")
    assert status == 200
    text = body.decode()
    assert 'llamashim_requests_total{dialect="responses",route="responses",status="200"} 2.0' in text
    assert 'llamashim_requests_total{dialect="responses",route="responses",status="400"} 1.0' in text
    assert 'llamashim_requests_total{dialect="responses",route="responses_get",status="200"} 1.0' in text
    assert 'llamashim_requests_total{dialect="responses",route="responses_get",status="404"} 1.0' in text
