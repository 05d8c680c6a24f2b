"""The OpenAI Responses routes over loopback: the real service tree in front of the fake llama-server, driven by the
``openai`` SDK (in a thread) and by raw HTTP where the wire itself is the point.

Every shim here keeps its Responses store under pytest's ``tmp_path``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.defer import maybeDeferred
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.config import Config
from llamashim.testing.fake_llama import FakeLlama, Seen
from tests.integration.support import (
    Scripted,
    Shim,
    config,
    fetch,
    http_request,
    listen,
    raw_connect,
    reactor,
    start_shim,
    timeout,
)

T = TypeVar("T")
JSON = dict[str, Any]

WEATHER = {
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


class TemplatingFake(FakeLlama):
    """The fake plus llama-server's ``POST /apply-template``, which the fake itself lacks: the prompt is each
    message's role and content, so the fake's one-token-per-character ``/tokenize`` gives a predictable count."""

    def _routes(self) -> dict[tuple[str, str], Callable[[Request, Seen], bytes | int]]:
        return {**super()._routes(), ("POST", "/apply-template"): self._apply_template}

    def _apply_template(self, request: Request, seen: Seen) -> bytes:
        return self._json(request, {"prompt": render(seen.body["messages"])})


def render(messages: list[JSON]) -> str:
    return "".join(f"<|{m['role']}|>{m['content']}" for m in messages)


@dataclass
class Env:
    fake: FakeLlama
    port: Any
    cfg: Config
    shim: Shim
    store_path: str
    stopped: bool = False

    def client(self, key: str = "sk-x", v1: bool = True) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.shim.url + ("/v1" if v1 else ""), api_key=key, max_retries=0, timeout=20)

    async def post(self, path: str, body: Any) -> tuple[int, Any, bytes]:
        data = body if isinstance(body, bytes) else jsonutil.dumps(body)
        return await fetch(self.shim.url + path, "POST", data, {"Content-Type": "application/json"})

    async def restart(self) -> None:
        """Stop the service tree and start a new one on the same configuration (and so the same store file)."""
        await timeout(self.shim.stop())
        self.shim = await start_shim(self.cfg)

    async def stop_shim(self) -> None:
        if not self.stopped:
            self.stopped = True
            await timeout(self.shim.stop())

    async def close(self) -> None:
        await self.stop_shim()
        await timeout(maybeDeferred(self.port.stopListening))


Start = Callable[..., Awaitable[Env]]


@pytest_twisted.async_yield_fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts shims (fake upstream, YAML config with a store under ``tmp_path``) and stops them all afterwards."""
    envs: list[Env] = []

    async def factory(
        tools: str = "native", settings: dict[str, Any] | None = None, fake: FakeLlama | None = None,
        upstream: Any = None,
    ) -> Env:
        fake = fake or FakeLlama(reactor)
        port, url = listen(upstream if upstream is not None else fake.resource())
        store_path = str(tmp_path / f"store{len(envs)}" / "responses.sqlite3")
        sections: dict[str, Any] = {"responses": {"store_path": store_path}}
        for name, values in (settings or {}).items():
            sections[name] = {**sections.get(name, {}), **values}
        path = tmp_path / f"llamashim{len(envs)}.yaml"
        path.write_text(json.dumps(sections))  # JSON is YAML
        cfg = config(url, {"config": str(path), "tool_streaming": tools})
        env = Env(fake, port, cfg, await start_shim(cfg), store_path)
        envs.append(env)
        return env

    yield factory
    for env in reversed(envs):
        await env.close()


async def in_thread(fn: Callable[[], T], seconds: float = 30) -> T:
    return await timeout(threads.deferToThread(fn), seconds)


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


def check_wire(events: list[tuple[str | None, JSON]]) -> list[str]:
    """Every frame names its type twice (``event:`` and ``type``), sequence numbers count from 0; the types."""
    assert events, "no events"
    assert [e for e, _ in events] == [d["type"] for _, d in events]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    return [d["type"] for _, d in events]


def streamed(client: openai.OpenAI, **kw: Any) -> tuple[list[str], Any]:
    """The SDK's ``responses.stream()`` helper run to its final response: (event types, final response)."""
    with client.responses.stream(model=kw.pop("model", "m"), **kw) as stream:
        types = [event.type for event in stream]
        return types, stream.get_final_response()


def chat_messages(fake: FakeLlama) -> list[JSON]:
    messages: list[JSON] = fake.chat_requests()[-1].body["messages"]
    return messages


# -- creating responses ------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_non_streamed_with_the_sdk(start: Start) -> None:
    """responses.create answers a completed response: one assistant message, output_text, usage, echoed fields."""
    env = await start()
    client = env.client()
    r = await in_thread(lambda: client.responses.create(model="m", input="Hi", instructions="Be brief.",
                                                        metadata={"k": "v"}, temperature=0.5))
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.model == "m" and r.instructions == "Be brief." and r.metadata == {"k": "v"} and r.temperature == 0.5
    assert [item.type for item in r.output] == ["message"]
    message = r.output[0]
    assert message.role == "assistant" and message.status == "completed" and message.id.startswith("msg_")
    assert r.output_text == "Hello, world!"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (12, 4, 16)
    sent = env.fake.chat_requests()[-1].body
    assert sent["stream"] is False and sent["temperature"] == 0.5
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest_twisted.ensureDeferred
async def test_stream_helper_reaches_the_final_response(start: Start) -> None:
    """responses.stream() goes from response.created to response.completed; the final response has the text."""
    env = await start()
    env.fake.content = ["Par", "is is", " sunny."]
    types, final = await in_thread(lambda: streamed(env.client(), input="Weather?"))
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 3
    assert final.status == "completed" and final.output_text == "Paris is sunny."
    assert final.usage is not None and final.usage.output_tokens == 3
    sent = env.fake.chat_requests()[-1].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest_twisted.ensureDeferred
async def test_raw_stream_event_order_and_sequence_numbers(start: Start) -> None:
    """The raw stream: SSE headers, OpenAI's event order for one message, sequence numbers contiguous from 0."""
    env = await start()
    status, headers, body = await env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True})
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
@pytest_twisted.ensureDeferred
async def test_function_tool_call_in_every_mode(start: Start, tools: str, old_build: str | None) -> None:
    """A function tool call is a function_call item with parseable arguments in every mode; "required" goes on."""
    env = await start(tools)
    env.fake.reasoning = ["Hmm."]
    env.fake.content = ["Checking."]
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    env.fake.old_build = old_build
    client = env.client()
    kw: JSON = {"input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"}
    types, final = await in_thread(lambda: streamed(client, **kw))
    assert types[-1] == "response.completed"
    assert "response.function_call_arguments.done" in types
    plain = await in_thread(lambda: client.responses.create(model="m", **kw))
    for response in (final, plain):
        assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
        assert response.output_text == "Checking."
        call = response.output[2]
        assert call.name == "get_weather" and call.call_id == "fakecall00" and call.id.startswith("fc_")
        assert json.loads(call.arguments) == {"city": "Paris"}
    chat = env.fake.chat_requests()
    assert all(r.body["tool_choice"] == "required" for r in chat)
    assert chat[0].body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER["parameters"]}}]


@pytest_twisted.ensureDeferred
async def test_old_build_refusing_streamed_tools_gets_a_synthesized_stream(start: Start) -> None:
    """An upstream that refuses streamed tools still yields a well-formed Responses stream with the function_call."""
    env = await start("auto")
    env.fake.old_build = "refuse_stream_tools"
    env.fake.content = ["Checking."]
    env.fake.tool_calls = [("get_weather", '{"city": "Rome"}')]
    body = {"model": "m", "input": "Weather in Rome?", "tools": [WEATHER], "stream": True}
    status, _, data = await env.post("/v1/responses", body)
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


@pytest_twisted.ensureDeferred
async def test_function_call_output_turn_reaches_the_upstream_as_a_tool_message(start: Start) -> None:
    """function_call and function_call_output input items become the assistant tool_calls and the tool message."""
    env = await start()
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    first = await in_thread(lambda: env.client().responses.create(
        model="m", input="Weather?", tools=[WEATHER], store=False))
    call = first.output[-1]
    env.fake.tool_calls = []
    items = [{"role": "user", "content": "Weather?"}, call.model_dump(exclude_none=True),
             {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    await in_thread(lambda: env.client().responses.create(model="m", input=items, tools=[WEATHER], store=False))
    messages = chat_messages(env.fake)
    assert messages[1]["role"] == "assistant"
    assert messages[1]["tool_calls"][0]["id"] == "fakecall00"
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert messages[2] == {"role": "tool", "tool_call_id": "fakecall00", "content": "sunny"}


@pytest_twisted.ensureDeferred
async def test_previous_response_id_with_function_call_outputs(start: Start) -> None:
    """Outputs sent after previous_response_id follow the stored parallel calls: one assistant, then tool messages."""
    env = await start()
    env.fake.content = []
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
    client = env.client()
    r = await in_thread(lambda: client.responses.create(model="m", input="Paris and Rome?", tools=[WEATHER]))
    assert [(o.type, o.call_id) for o in r.output] == [("function_call", "fakecall00"), ("function_call", "fakecall01")]
    env.fake.content, env.fake.tool_calls = ["Paris is sunny, Rome rainy."], []
    outputs = [{"type": "function_call_output", "call_id": "fakecall00", "output": "sunny"},
               {"type": "function_call_output", "call_id": "fakecall01", "output": "rainy"}]
    _, follow = await in_thread(lambda: streamed(client, input=outputs, tools=[WEATHER], previous_response_id=r.id))
    assert follow.output_text == "Paris is sunny, Rome rainy."
    messages = chat_messages(env.fake)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [json.loads(c["function"]["arguments"]) for c in messages[1]["tool_calls"]] == [
        {"city": "Paris"}, {"city": "Rome"}]
    assert [(m["tool_call_id"], m["content"]) for m in messages[2:]] == [("fakecall00", "sunny"),
                                                                         ("fakecall01", "rainy")]


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_length_finish_is_an_incomplete_response(start: Start, stream: bool) -> None:
    """A length finish is status incomplete (max_output_tokens), streamed as response.incomplete."""
    env = await start()
    env.fake.finish_reason = "length"
    status, _, body = await env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": stream,
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
@pytest_twisted.ensureDeferred
async def test_reasoning_item_and_its_round_trip(start: Start, source: str, stream: bool) -> None:
    """Reasoning becomes a reasoning item (encrypted_content on request) that restores reasoning_content next turn."""
    env = await start()
    if source == "reasoning_content":
        env.fake.reasoning = ["Let me", " think."]
    else:
        env.fake.inline_think = ["Let me", " think."]
    env.fake.content = ["Paris."]
    client = env.client()
    kw: JSON = {"input": "Capital of France?", "include": ["reasoning.encrypted_content"]}
    if stream:
        _, r = await in_thread(lambda: streamed(client, **kw))
    else:
        r = await in_thread(lambda: client.responses.create(model="m", **kw))
    assert [item.type for item in r.output] == ["reasoning", "message"]
    reasoning, message = r.output
    assert reasoning.id.startswith("rs_") and [c.text for c in reasoning.content or []] == ["Let me think."]
    assert reasoning.encrypted_content
    assert r.output_text == "Paris."
    plain = await in_thread(lambda: client.responses.create(model="m", input="Again?"))
    assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None
    # Codex's next turn: the reasoning item as it came (only its opaque blob), the message, a new user turn.
    env.fake.reasoning = env.fake.inline_think = []
    items = [
        {"role": "user", "content": "Capital of France?"},
        {"type": "reasoning", "id": reasoning.id, "summary": [], "encrypted_content": reasoning.encrypted_content},
        message.model_dump(exclude_none=True),
        {"role": "user", "content": "And Italy?"},
    ]
    await in_thread(lambda: client.responses.create(model="m", input=items, store=False))
    sent = chat_messages(env.fake)
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["reasoning_content"] == "Let me think."
    assert sent[1]["content"] == "Paris."


# -- the store -----------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_previous_response_id_sends_the_stored_conversation(start: Start) -> None:
    """previous_response_id prepends the stored conversation (inputs and answers, chained) to the new input."""
    env = await start()
    client = env.client()
    first = await in_thread(lambda: client.responses.create(model="m", input="My name is Ann."))
    env.fake.content = ["Hi", " Ann."]
    second = await in_thread(lambda: client.responses.create(
        model="m", input="What is my name?", previous_response_id=first.id, instructions="Be brief."))
    assert second.previous_response_id == first.id
    assert chat_messages(env.fake) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "What is my name?"},
    ]
    _, third = await in_thread(lambda: streamed(client, input="Thanks.", previous_response_id=second.id))
    assert third.status == "completed"
    assert [m["content"] for m in chat_messages(env.fake)] == [
        "My name is Ann.", "Hello, world!", "What is my name?", "Hi Ann.", "Thanks."]


@pytest_twisted.ensureDeferred
async def test_unknown_previous_response_id_is_a_404(start: Start) -> None:
    """An unknown previous_response_id is a 404 with code previous_response_not_found; nothing goes upstream."""
    env = await start()
    client = env.client()
    with pytest.raises(openai.NotFoundError) as raised:
        await in_thread(lambda: client.responses.create(model="m", input="Hi", previous_response_id="resp_nope"))
    assert raised.value.code == "previous_response_not_found"
    assert raised.value.param == "previous_response_id"
    status, _, body = await env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True,
                                                       "previous_response_id": "resp_nope"})
    assert status == 404
    err = jsonutil.loads(body)["error"]
    assert err["code"] == "previous_response_not_found" and "resp_nope" in err["message"]
    assert env.fake.chat_requests() == []


@pytest_twisted.ensureDeferred
async def test_store_false_is_not_retrievable(start: Start) -> None:
    """A response created with store: false (streamed or not) is a 404 for retrieve and previous_response_id."""
    env = await start()
    client = env.client()
    r = await in_thread(lambda: client.responses.create(model="m", input="Hi", store=False))
    assert r.store is False
    _, s = await in_thread(lambda: streamed(client, input="Hi", store=False))
    for rid in (r.id, s.id):
        with pytest.raises(openai.NotFoundError):
            await in_thread(lambda rid=rid: client.responses.retrieve(rid))
        with pytest.raises(openai.NotFoundError):
            await in_thread(lambda rid=rid: client.responses.create(model="m", input="Hi", previous_response_id=rid))


@pytest_twisted.ensureDeferred
async def test_retrieve_input_items_and_delete(start: Start) -> None:
    """A stored response can be retrieved, its input items listed and deleted; after the delete all are 404s."""
    env = await start()
    client = env.client()
    items = [{"role": "developer", "content": "Be brief."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]
    _, r = await in_thread(lambda: streamed(client, input=items))
    got = await in_thread(lambda: client.responses.retrieve(r.id))
    assert got.id == r.id and got.status == "completed" and got.output_text == "Hello, world!"
    assert got.output[0].id == r.output[0].id and got.usage is not None and got.usage.total_tokens == 16
    for stream in (False, True):  # retrieve answers exactly the object the create ended with
        _, _, body = await env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": stream})
        created = sse_events(body)[-1][1]["response"] if stream else jsonutil.loads(body)
        _, _, again = await fetch(f"{env.shim.url}/v1/responses/{created['id']}")
        assert jsonutil.loads(again) == created
    listed = await in_thread(lambda: client.responses.input_items.list(r.id))
    assert [i.role for i in listed.data] == ["user", "developer"]
    assert all(i.id for i in listed.data) and listed.has_more is False
    asc = await in_thread(lambda: client.responses.input_items.list(r.id, order="asc"))
    assert [i.role for i in asc.data] == ["developer", "user"]
    assert [i.id for i in asc.data] == [i.id for i in reversed(listed.data)]
    await in_thread(lambda: client.responses.delete(r.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: client.responses.retrieve(r.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: client.responses.input_items.list(r.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: client.responses.delete(r.id))
    plain = await in_thread(lambda: client.responses.create(model="m", input="Hi"))
    (item,) = (await in_thread(lambda: client.responses.input_items.list(plain.id))).data
    assert (item.type, item.role, [(c.type, c.text) for c in item.content]) == (
        "message", "user", [("input_text", "Hi")])


@pytest_twisted.ensureDeferred
async def test_stored_responses_belong_to_the_key_that_made_them(start: Start) -> None:
    """With two API keys, key B gets a 404 for key A's response (retrieve, delete, previous_response_id); A does not."""
    env = await start(settings={"auth": {"api_keys": [KEY_A, KEY_B]}})
    a, b = env.client(KEY_A), env.client(KEY_B)
    r = await in_thread(lambda: a.responses.create(model="m", input="Secret."))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: b.responses.retrieve(r.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: b.responses.input_items.list(r.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: b.responses.delete(r.id))
    with pytest.raises(openai.NotFoundError) as raised:
        await in_thread(lambda: b.responses.create(model="m", input="?", previous_response_id=r.id))
    assert raised.value.code == "previous_response_not_found"
    with pytest.raises(openai.AuthenticationError):
        await in_thread(lambda: env.client("sk-wrong").responses.retrieve(r.id))
    assert (await in_thread(lambda: a.responses.retrieve(r.id))).id == r.id  # B's delete did nothing
    follow = await in_thread(lambda: a.responses.create(model="m", input="Again.", previous_response_id=r.id))
    assert follow.status == "completed" and chat_messages(env.fake)[0] == {"role": "user", "content": "Secret."}
    await in_thread(lambda: a.responses.delete(r.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: a.responses.retrieve(r.id))


@pytest_twisted.ensureDeferred
async def test_store_survives_a_restart(start: Start) -> None:
    """A response stored before the service stops is retrievable, and continuable, from the next one."""
    env = await start()
    r = await in_thread(lambda: env.client().responses.create(model="m", input="Remember me."))
    await env.restart()
    assert Path(env.store_path).is_file()
    client = env.client()  # the new service listens on a new port
    got = await in_thread(lambda: client.responses.retrieve(r.id))
    assert got.id == r.id and got.output_text == "Hello, world!"
    await in_thread(lambda: client.responses.create(model="m", input="Still there?", previous_response_id=r.id))
    assert chat_messages(env.fake)[0] == {"role": "user", "content": "Remember me."}


@pytest_twisted.ensureDeferred
async def test_store_off_in_config_keeps_nothing(start: Start) -> None:
    """With responses.store off, nothing is kept (retrieve 404s) and no store file is made, whatever the request."""
    env = await start(settings={"responses": {"store": False}})
    r = await in_thread(lambda: env.client().responses.create(model="m", input="Hi", store=True))
    assert r.status == "completed"
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: env.client().responses.retrieve(r.id))
    assert not Path(env.store_path).exists()


# -- failures and errors -------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mid_stream_drop_ends_with_error_then_response_failed(start: Start) -> None:
    """An upstream that drops mid-stream: the stream ends with an error event, then response.failed; no completed."""
    env = await start()
    env.fake.content = [f"t{i} " for i in range(10)]
    env.fake.fault = "drop_mid_stream"
    env.fake.fault_after = 3
    status, _, body = await env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True})
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
        await in_thread(lambda: streamed(env.client(), input="Hi"))
    seen = await in_thread(lambda: [e.type for e in env.client().responses.create(model="m", input="Hi",
                                                                                   stream=True)])
    assert seen[-2:] == ["error", "response.failed"]


@pytest_twisted.ensureDeferred
async def test_shutdown_ends_a_running_stream_with_response_failed(start: Start) -> None:
    """Stopping the service mid-stream ends the stream with an error event and response.failed, not a cut body."""
    env = await start(settings={"shutdown": {"drain_timeout": 0}})
    env.fake.content = [f"t{i} " for i in range(50)]
    env.fake.chunk_interval = 0.5  # paces the fake; the test waits on what the client received, never on time
    body = jsonutil.dumps({"model": "m", "input": "Hi", "stream": True})
    client = await raw_connect(env.shim.url, http_request("POST", "/v1/responses", body, {
        "Content-Type": "application/json", "Connection": "close"}))
    await timeout(client.wait_for(lambda b: b"response.output_text.delta" in b))
    await env.stop_shim()
    await timeout(client.closed)
    _, _, chunked = bytes(client.received).partition(b"\r\n\r\n")
    events = sse_events(b"".join(chunk + b"\n" for chunk in chunked.split(b"\r\n")[1::2]))
    types = check_wire(events)
    assert types[-2:] == ["error", "response.failed"] and "response.completed" not in types
    assert events[-1][1]["response"]["error"]["message"] == "llamashim is shutting down"


@pytest_twisted.ensureDeferred
async def test_routes_without_v1(start: Start) -> None:
    """/responses (no /v1) creates and retrieves, raw and through an SDK whose base URL has no /v1."""
    env = await start()
    status, _, body = await env.post("/responses", {"model": "m", "input": "Hi"})
    assert status == 200
    created = jsonutil.loads(body)
    assert created["object"] == "response" and created["status"] == "completed"
    status, _, body = await fetch(f"{env.shim.url}/responses/{created['id']}")
    assert status == 200 and jsonutil.loads(body)["id"] == created["id"]
    client = env.client(v1=False)
    got = await in_thread(lambda: client.responses.retrieve(created["id"]))
    assert got.output_text == "Hello, world!"
    _, final = await in_thread(lambda: streamed(client, input="Hi"))
    assert final.status == "completed"


@pytest_twisted.ensureDeferred
async def test_input_tokens_counts_with_the_upstream_template(start: Start) -> None:
    """POST /v1/responses/input_tokens counts the /apply-template prompt's /tokenize tokens."""
    fake = TemplatingFake(reactor)
    env = await start(fake=fake)
    status, _, body = await env.post("/v1/responses/input_tokens",
                                     {"model": "m", "input": "Hi", "instructions": "Be brief."})
    assert status == 200
    expected = len(render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]))
    assert jsonutil.loads(body) == {"object": "response.input_tokens", "input_tokens": expected}
    counted = await in_thread(lambda: env.client().responses.input_tokens.count(
        model="m", input="Hi", tools=[WEATHER]))
    assert counted.input_tokens == len("<|user|>Hi")
    template = [r for r in fake.requests if r.path == "/apply-template"][-1].body
    assert template["messages"] == [{"role": "user", "content": "Hi"}]
    assert template["tools"][0]["function"]["name"] == "get_weather"
    assert [r.body for r in fake.requests if r.path == "/tokenize"][-1] == {"content": "<|user|>Hi",
                                                                             "add_special": True}
    assert fake.chat_requests() == []


@pytest_twisted.ensureDeferred
async def test_errors_before_the_first_byte_are_openai_shaped(start: Start) -> None:
    """Bad JSON, a malformed request and an unknown route are 400/404 in OpenAI's error shape; the SDK raises."""
    env = await start()
    for body, needle in ((b'{"model": ', "not valid JSON"), (b"[1]", "JSON object"),
                         (b'{"model":"m","input":5}', "input must be")):
        status, headers, data = await env.post("/v1/responses", body)
        assert status == 400, data
        assert headers.getRawHeaders(b"content-type")[0].startswith(b"application/json")
        err = jsonutil.loads(data)["error"]
        assert needle in err["message"] and err["type"] == "invalid_request_error"
        assert set(err) == {"message", "type", "code", "param"}
    with pytest.raises(openai.BadRequestError, match="tools must be a list"):
        await in_thread(lambda: env.client().responses.create(model="m", input="Hi", tools={"x": 1}))  # type: ignore
    status, _, data = await fetch(f"{env.shim.url}/v1/responses/resp_nope")
    assert status == 404 and jsonutil.loads(data)["error"]["message"] == "Response with id 'resp_nope' not found."
    assert env.fake.chat_requests() == []


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_context_overflow_is_context_length_exceeded(start: Start, stream: bool) -> None:
    """llama-server's exceed_context_size_error is a 400 with code context_length_exceeded (what Codex acts on)."""
    up = Scripted()
    up.status, up.body = 400, OVERFLOW
    env = await start(upstream=up)
    status, _, data = await env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": stream})
    assert status == 400
    err = jsonutil.loads(data)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "context_length_exceeded"
    assert "exceeds the available context size" in err["message"]


@pytest_twisted.ensureDeferred
async def test_metrics_count_the_responses_dialect(start: Start) -> None:
    """/metrics counts Responses requests under route responses (and its siblings) with dialect responses."""
    env = await start()
    await env.post("/v1/responses", {"model": "m", "input": "Hi"})
    status, _, body = await env.post("/v1/responses", {"model": "m", "input": "Hi", "stream": True})
    rid = sse_events(body)[-1][1]["response"]["id"]
    await fetch(f"{env.shim.url}/v1/responses/{rid}")
    await fetch(f"{env.shim.url}/v1/responses/resp_nope")
    await env.post("/v1/responses", b"{")
    status, _, body = await fetch(env.shim.url + "/metrics")
    assert status == 200
    text = body.decode()
    assert 'llamashim_requests_total{dialect="responses",route="responses",status="200"} 2.0' in text
    assert 'llamashim_requests_total{dialect="responses",route="responses",status="400"} 1.0' in text
    assert 'llamashim_requests_total{dialect="responses",route="responses_get",status="200"} 1.0' in text
    assert 'llamashim_requests_total{dialect="responses",route="responses_get",status="404"} 1.0' in text
