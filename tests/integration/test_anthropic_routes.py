"""The Anthropic Messages routes over loopback: the real service tree in front of the fake llama-server, driven by
the ``anthropic`` SDK (in a thread), by raw HTTP where the wire itself is the point, and by a captured real Claude
Code request (tests/fixtures/agents).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamashim import jsonutil
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

FIXTURE = Path(__file__).parent.parent / "fixtures" / "agents" / "claude_code_2.1.328_requests.jsonl"
MODEL = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
KEY_A, KEY_B = "sk-ant-alpha-0001", "sk-ant-bravo-0002"
OVERFLOW = jsonutil.dumps({"error": {
    "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 21157, "n_ctx": 8192,
    "message": "request (21157 tokens) exceeds the available context size (8192 tokens), try increasing it",
}})
TEXT_EVENTS = ["message_start", "content_block_start", *["content_block_delta"] * 4, "content_block_stop",
               "message_delta", "message_stop"]
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


class Held(Resource):
    """An upstream that holds every chat request until the test answers it (metadata GETs get ``{}``)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Request] = []
        self.arrived: Deferred[None] = Deferred()

    def render(self, request: Request) -> bytes | int:
        if request.method == b"GET":
            request.setHeader(b"content-type", b"application/json")
            return b"{}"
        self.pending.append(request)
        if not self.arrived.called:
            self.arrived.callback(None)
        return NOT_DONE_YET

    def answer(self, status: int, body: bytes) -> None:
        pending, self.pending = self.pending, []
        for request in pending:
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            request.write(body)
            request.finish()


def render(messages: list[JSON]) -> str:
    return "".join(f"<|{m['role']}|>{m['content']}" for m in messages)


def read_requests(path: Path) -> list[JSON]:
    """The capture format (tests/fixtures/agents/README.md): pretty-printed JSON records one after another."""
    text, decoder, pos, out = path.read_text(encoding="utf-8"), json.JSONDecoder(), 0, []
    while text[pos:].strip():
        pos += len(text[pos:]) - len(text[pos:].lstrip())
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)
    return out


@dataclass
class Env:
    fake: FakeLlama
    port: Any
    shim: Shim
    stopped: bool = False

    def client(self, key: str = "sk-x", bearer: bool = False) -> anthropic.Anthropic:
        auth: JSON = {"auth_token": key} if bearer else {"api_key": key}
        return anthropic.Anthropic(base_url=self.shim.url, max_retries=0, timeout=20, **auth)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        data = body if isinstance(body, bytes) else jsonutil.dumps(body)
        return await fetch(self.shim.url + path, "POST", data,
                           {"Content-Type": "application/json", "anthropic-version": "2023-06-01", **(headers or {})})

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
    """Starts shims (fake upstream, YAML config, a Responses store under ``tmp_path``) and stops them afterwards."""
    envs: list[Env] = []

    async def factory(
        tools: str = "native", settings: dict[str, Any] | None = None, fake: FakeLlama | None = None,
        upstream: Any = None,
    ) -> Env:
        fake = fake or FakeLlama(reactor)
        port, url = listen(upstream if upstream is not None else fake.resource())
        sections: dict[str, Any] = {"responses": {"store_path": str(tmp_path / f"store{len(envs)}.sqlite3")}}
        sections.update(settings or {})
        path = tmp_path / f"llamashim{len(envs)}.yaml"
        path.write_text(json.dumps(sections))  # JSON is YAML
        env = Env(fake, port, await start_shim(config(url, {"config": str(path), "tool_streaming": tools})))
        envs.append(env)
        return env

    yield factory
    for env in reversed(envs):
        await env.close()


async def in_thread(fn: Callable[[], T], seconds: float = 30) -> T:
    return await timeout(threads.deferToThread(fn), seconds)


def sse_events(body: bytes) -> list[tuple[str | None, JSON]]:
    """A whole SSE body → (event name, parsed data) per frame."""
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
    """Every frame has an ``event:`` line naming its data's type (Claude Code needs it); pings aside, the types."""
    assert events, "no events"
    assert [e for e, _ in events] == [d["type"] for _, d in events]
    types = [d["type"] for _, d in events if d["type"] != "ping"]
    if types[-1] != "error":
        assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"], types
        opened = [d["index"] for _, d in events if d["type"] == "content_block_start"]
        closed = [d["index"] for _, d in events if d["type"] == "content_block_stop"]
        assert opened == closed == list(range(len(opened)))
    return types


def streamed(client: anthropic.Anthropic, **kw: Any) -> tuple[list[str], Any]:
    """The SDK's ``messages.stream()`` helper run to its final message: (event types, final message)."""
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 256)
    kw.setdefault("messages", HELLO)
    with client.messages.stream(**kw) as stream:
        types = [event.type for event in stream]
        return types, stream.get_final_message()


def create(client: anthropic.Anthropic, **kw: Any) -> Any:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 256)
    kw.setdefault("messages", HELLO)
    return client.messages.create(**kw)


def error_of(body: bytes) -> JSON:
    value = jsonutil.loads(body)
    assert value["type"] == "error" and set(value) == {"type", "error"}, value
    err: JSON = value["error"]
    assert set(err) == {"type", "message"}
    return err


# -- text --------------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_with_the_sdk(start: Start) -> None:
    """messages.create answers one text block, stop_reason end_turn, the upstream's usage; system and sampling go on."""
    env = await start()
    # (this SDK has no sampling arguments any more; Claude Code still sends temperature)
    m = await in_thread(lambda: create(env.client(), system="Be brief.", stop_sequences=["END"],
                                       extra_body={"temperature": 0.5, "top_k": 5}))
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == MODEL
    assert [(b.type, b.text) for b in m.content] == [("text", "Hello, world!")]
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert (m.usage.input_tokens, m.usage.output_tokens) == (12, 4)
    sent = env.fake.chat_requests()[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (sent["stream"], sent["max_tokens"], sent["temperature"], sent["top_k"], sent["stop"]) == (
        False, 256, 0.5, 5, ["END"])


@pytest_twisted.ensureDeferred
async def test_stream_helper_reaches_the_final_message(start: Start) -> None:
    """messages.stream() accumulates the text deltas into the final message, with the stop reason and usage."""
    env = await start()
    env.fake.content = ["Par", "is is", " sunny."]
    types, m = await in_thread(lambda: streamed(env.client()))
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert [(b.type, b.text) for b in m.content] == [("text", "Paris is sunny.")]
    assert m.stop_reason == "end_turn" and m.usage.output_tokens == 3 and m.usage.input_tokens == 12
    sent = env.fake.chat_requests()[-1].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest_twisted.ensureDeferred
async def test_raw_stream_event_order(start: Start) -> None:
    """The raw stream has Anthropic's event order, each frame with its event: line."""
    env = await start()
    status, headers, body = await env.post("/v1/messages", {"model": MODEL, "max_tokens": 64, "messages": HELLO,
                                                            "stream": True})
    assert status == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/event-stream; charset=utf-8"]
    events = sse_events(body)
    assert check_wire(events) == TEXT_EVENTS
    start_msg = events[0][1]["message"]
    assert start_msg["content"] == [] and start_msg["stop_reason"] is None and start_msg["model"] == MODEL
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for _, d in events if d["type"] == "content_block_delta") == "Hello, world!"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4 and delta["usage"]["input_tokens"] == 12


# -- tools -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tools", "old_build"), TOOL_MODES)
@pytest_twisted.ensureDeferred
async def test_tool_use_and_tool_result_round_trip(start: Start, tools: str, old_build: str | None) -> None:
    """A tool call is a tool_use block in every mode; its tool_result goes upstream as a tool message."""
    env = await start(tools)
    env.fake.content = ["Checking."]
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    env.fake.old_build = old_build
    client = env.client()
    types, final = await in_thread(lambda: streamed(client, tools=[WEATHER], tool_choice={"type": "any"}))
    assert types[0] == "message_start" and types[-1] == "message_stop"
    plain = await in_thread(lambda: create(client, tools=[WEATHER], tool_choice={"type": "any"}))
    for m in (final, plain):
        assert [b.type for b in m.content] == ["text", "tool_use"] and m.stop_reason == "tool_use"
        use = m.content[1]
        assert use.name == "get_weather" and use.id == "fakecall00" and use.input == {"city": "Paris"}
    sent = env.fake.chat_requests()[-1].body
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is True
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER["input_schema"]}}]
    env.fake.tool_calls = []
    turn = [*HELLO, {"role": "assistant", "content": [b.model_dump() for b in final.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "fakecall00", "content": "sunny"},
                                         {"type": "text", "text": "Thanks."}]}]
    after = await in_thread(lambda: create(client, tools=[WEATHER], messages=turn))
    assert after.stop_reason == "end_turn"
    messages = env.fake.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[1]["content"] == "Checking."
    assert messages[1]["tool_calls"] == [{"id": "fakecall00", "type": "function",
                                          "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert messages[2] == {"role": "tool", "tool_call_id": "fakecall00", "content": "sunny"}
    assert messages[3] == {"role": "user", "content": "Thanks."}


@pytest_twisted.ensureDeferred
async def test_old_build_synthesis_gives_the_same_events(start: Start) -> None:
    """An upstream refusing streamed tools: the synthesized stream has the native stream's event sequence."""
    native = await start("native")
    old = await start("auto")
    old.fake.old_build = "refuse_stream_tools"
    body = {"model": MODEL, "max_tokens": 64, "messages": HELLO, "tools": [WEATHER], "stream": True}
    shapes = []
    for env in (native, old):
        env.fake.content = ["Checking."]
        env.fake.tool_calls = [("get_weather", '{"city": "Rome"}')]
        status, _, data = await env.post("/v1/messages", body)
        assert status == 200
        events = sse_events(data)
        types = check_wire(events)
        starts = [d["content_block"]["type"] for _, d in events if d["type"] == "content_block_start"]
        args = "".join(d["delta"].get("partial_json", "") for _, d in events if d["type"] == "content_block_delta")
        shapes.append((types[0], starts, types[-2:], json.loads(args), events[-2][1]["delta"]["stop_reason"]))
    assert shapes[0] == shapes[1] == ("message_start", ["text", "tool_use"], ["message_delta", "message_stop"],
                                      {"city": "Rome"}, "tool_use")
    assert [r.body["stream"] for r in old.fake.chat_requests()] == [True, False]


@pytest_twisted.ensureDeferred
async def test_parallel_tool_use(start: Start) -> None:
    """Two upstream calls are two tool_use blocks; disable_parallel_tool_use sends parallel_tool_calls false."""
    env = await start()
    env.fake.content = []
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
    client = env.client()
    _, m = await in_thread(lambda: streamed(client, tools=[WEATHER]))
    assert [(b.type, b.id, b.input) for b in m.content] == [("tool_use", "fakecall00", {"city": "Paris"}),
                                                             ("tool_use", "fakecall01", {"city": "Rome"})]
    assert m.stop_reason == "tool_use"
    await in_thread(lambda: create(client, tools=[WEATHER],
                                   tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    sent = env.fake.chat_requests()[-1].body
    assert sent["parallel_tool_calls"] is False and sent["tool_choice"] == "auto"


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_length_finish_is_max_tokens(start: Start, stream: bool) -> None:
    """An answer cut by the token limit stops for max_tokens, streamed or not."""
    env = await start()
    env.fake.finish_reason = "length"
    status, _, body = await env.post("/v1/messages", {"model": MODEL, "max_tokens": 4, "messages": HELLO,
                                                      "stream": stream})
    assert status == 200
    if stream:
        events = sse_events(body)
        check_wire(events)
        assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    else:
        assert jsonutil.loads(body)["stop_reason"] == "max_tokens"


# -- reasoning ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["reasoning_content", "inline_think"])
@pytest_twisted.ensureDeferred
async def test_reasoning_becomes_a_signed_thinking_block(start: Start, source: str) -> None:
    """Reasoning is a signed thinking block that comes back as reasoning_content; thinking disabled drops it."""
    env = await start()
    if source == "reasoning_content":
        env.fake.reasoning = ["Let me", " think."]
    else:
        env.fake.inline_think = ["Let me", " think."]
    env.fake.content = ["Paris."]
    client = env.client()
    types, final = await in_thread(lambda: streamed(client, thinking={"type": "enabled", "budget_tokens": 1024}))
    assert "thinking" in types and "signature" in types
    plain = await in_thread(lambda: create(client))
    for m in (final, plain):
        assert [b.type for b in m.content] == ["thinking", "text"]
        assert m.content[0].thinking == "Let me think." and m.content[0].signature
        assert m.content[1].text == "Paris."
    sent = env.fake.chat_requests()[-2].body
    assert sent["chat_template_kwargs"] == {"enable_thinking": True} and sent["thinking_budget_tokens"] == 1024
    off = await in_thread(lambda: create(client, thinking={"type": "disabled"}))
    assert [(b.type, b.text) for b in off.content] == [("text", "Paris.")]
    env.fake.reasoning = env.fake.inline_think = []
    turn = [*HELLO, {"role": "assistant", "content": [b.model_dump() for b in final.content]},
            {"role": "user", "content": "And Italy?"}]
    await in_thread(lambda: create(client, messages=turn))
    assistant = env.fake.chat_requests()[-1].body["messages"][1]
    assert assistant == {"role": "assistant", "content": "Paris.", "reasoning_content": "Let me think."}


# -- Claude Code -------------------------------------------------------------------------------------------------


def claude_code_request() -> tuple[str, dict[str, str], JSON]:
    """The captured Claude Code turn: path (with ?beta=true), the headers worth sending again, the body."""
    (record,) = read_requests(FIXTURE)
    skip = {"host", "content-length", "connection", "authorization", "x-api-key"}
    headers = {k: v for k, v in record["headers"].items() if k not in skip}
    return record["path"], headers, record["body"]


@pytest.mark.parametrize(("strip", "old_build"), [(True, None), (False, None), (True, "refuse_stream_tools")])
@pytest_twisted.ensureDeferred
async def test_claude_code_turn_and_the_billing_header(start: Start, strip: bool, old_build: str | None) -> None:
    """The captured Claude Code turn streams fine; its billing header goes upstream only when stripping is off."""
    env = await start("auto", {"anthropic": {"strip_billing_header": strip}})
    env.fake.content = ["O", "K"]
    env.fake.old_build = old_build
    path, headers, body = claude_code_request()
    assert path == "/v1/messages?beta=true"
    assert body["system"][0]["text"].startswith("x-anthropic-billing-header: cc_version=")
    status, _, data = await env.post(path, body, headers)
    assert status == 200, data
    events = sse_events(data)
    check_wire(events)
    assert "".join(d["delta"].get("text", "") for _, d in events if d["type"] == "content_block_delta") == "OK"
    seen = env.fake.chat_requests()[-1]
    assert [r.body["stream"] for r in env.fake.chat_requests()] == ([True] if old_build is None else [True, False])
    assert (b"x-anthropic-billing-header" in seen.raw) is not strip
    assert (b"cc_version=" in seen.raw) is not strip
    system = seen.body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are a Claude agent" if strip else "x-anthropic-billing-header:")
    assert len(seen.body["tools"]) == 12 and sse_events(data)[0][1]["message"]["model"] == MODEL
    assert seen.body["chat_template_kwargs"] == {"enable_thinking": False}
    assert seen.body["messages"][1]["role"] == "user" and seen.body["messages"][1]["content"].endswith("Say OK")


@pytest_twisted.ensureDeferred
async def test_billing_header_in_a_string_system_prompt(start: Start) -> None:
    """A string system prompt whose first line is the billing header loses that line, and only that line."""
    env = await start()
    system = "x-anthropic-billing-header: cc_version=2.1.328.d94; cch=abc;\nYou are helpful."
    await in_thread(lambda: create(env.client(), system=system))
    assert env.fake.chat_requests()[-1].body["messages"][0] == {"role": "system", "content": "You are helpful."}


@pytest_twisted.ensureDeferred
async def test_beta_query_string_works(start: Start) -> None:
    """/v1/messages?beta=true (Claude Code's, and the SDK's beta client's, path) serves the same answer."""
    env = await start()
    status, _, body = await env.post("/v1/messages?beta=true", {"model": MODEL, "max_tokens": 16, "messages": HELLO})
    assert status == 200 and jsonutil.loads(body)["content"] == [{"type": "text", "text": "Hello, world!"}]
    m = await in_thread(lambda: env.client().beta.messages.create(model=MODEL, max_tokens=16, messages=HELLO))
    assert m.content[0].text == "Hello, world!"
    assert env.fake.chat_requests()[-1].path == "/v1/chat/completions"


# -- models, keys ------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_model_alias_goes_upstream_and_the_client_name_comes_back(start: Start) -> None:
    """models.aliases {"claude-*": "smol"}: the upstream gets smol, the reply echoes claude-sonnet-4-5."""
    env = await start(settings={"models": {"aliases": {"claude-*": "smol"}}}, fake=FakeLlama(reactor, model="smol"))
    m = await in_thread(lambda: create(env.client()))
    _, s = await in_thread(lambda: streamed(env.client()))
    status, _, body = await env.post("/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": HELLO,
                                                      "stream": True})
    assert m.model == s.model == MODEL
    assert sse_events(body)[0][1]["message"]["model"] == MODEL
    assert [r.body["model"] for r in env.fake.chat_requests()] == ["smol"] * 3


@pytest_twisted.ensureDeferred
async def test_api_keys_in_either_header(start: Start) -> None:
    """x-api-key and Bearer keys both pass and stop at llamashim; a wrong key is Anthropic's 401."""
    env = await start(settings={"auth": {"api_keys": [KEY_A, KEY_B]}})
    m = await in_thread(lambda: create(env.client(KEY_A)))
    assert m.content[0].text == "Hello, world!"
    assert not {"x-api-key", "authorization"} & set(env.fake.chat_requests()[-1].headers)
    _, s = await in_thread(lambda: streamed(env.client(KEY_B, bearer=True)))
    assert s.content[0].text == "Hello, world!"
    assert "authorization" not in env.fake.chat_requests()[-1].headers
    for client in (env.client("sk-wrong"), env.client("sk-wrong", bearer=True)):
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await in_thread(lambda client=client: create(client))
        assert raised.value.status_code == 401
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    for headers in ({"x-api-key": "sk-wrong"}, {}):
        status, _, data = await env.post("/v1/messages", body, headers)
        assert status == 401
        err = error_of(data)
        assert err["type"] == "authentication_error" and err["message"]
    assert len(env.fake.chat_requests()) == 2


# -- failures ----------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mid_stream_drop_ends_with_an_error_event(start: Start) -> None:
    """An upstream drop mid-stream ends the stream with event: error and no message_stop; the SDK raises."""
    env = await start()
    env.fake.content = [f"t{i} " for i in range(10)]
    env.fake.fault = "drop_mid_stream"
    env.fake.fault_after = 3
    status, _, body = await env.post("/v1/messages", {"model": MODEL, "max_tokens": 64, "messages": HELLO,
                                                      "stream": True})
    assert status == 200
    events = sse_events(body)
    types = check_wire(events)
    assert types[0] == "message_start" and types[-1] == "error"
    assert "message_stop" not in types and "message_delta" not in types
    assert body.rstrip().endswith(b"}") and body.count(b"event: error") == 1
    last = events[-1][1]
    assert last["error"]["type"] in ("api_error", "overloaded_error") and last["error"]["message"]
    with pytest.raises(anthropic.APIStatusError):
        await in_thread(lambda: streamed(env.client()))


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_upstream_unavailable_is_529_overloaded(start: Start, stream: bool) -> None:
    """An upstream 503 (busy or loading) is Anthropic's 529 overloaded_error; the SDK raises OverloadedError."""
    env = await start()
    env.fake.status_override = 503
    status, _, data = await env.post("/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": HELLO,
                                                      "stream": stream})
    assert status == 529
    assert error_of(data)["type"] == "overloaded_error"
    with pytest.raises(anthropic.OverloadedError):
        await in_thread(lambda: streamed(env.client()) if stream else create(env.client()))


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_context_overflow_is_prompt_too_long(start: Start, stream: bool) -> None:
    """llama-server's exceed_context_size_error is a 400 whose message starts "prompt is too long:"."""
    up = Scripted()
    up.status, up.body = 400, OVERFLOW
    env = await start(upstream=up)
    status, _, data = await env.post("/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": HELLO,
                                                      "stream": stream})
    assert status == 400
    err = error_of(data)
    assert err["type"] == "invalid_request_error"
    assert err["message"] == "prompt is too long: 21157 tokens > 8192 maximum"
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long:"):
        await in_thread(lambda: create(env.client(), stream=stream))


@pytest_twisted.ensureDeferred
async def test_malformed_requests_are_anthropic_shaped_400s(start: Start) -> None:
    """Malformed requests are 400 invalid_request_error in Anthropic's shape and never go upstream."""
    env = await start()
    for body, needle in ((b'{"model": ', "not valid JSON"),
                         ({"model": MODEL, "messages": HELLO}, "max_tokens"),
                         ({"model": MODEL, "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]},
                          "role")):
        status, headers, data = await env.post("/v1/messages", body)
        assert status == 400, data
        assert headers.getRawHeaders(b"content-type")[0].startswith(b"application/json")
        err = error_of(data)
        assert err["type"] == "invalid_request_error" and needle in err["message"]
    with pytest.raises(anthropic.BadRequestError):
        await in_thread(lambda: create(env.client(), messages=[]))
    assert env.fake.chat_requests() == []


@pytest.mark.parametrize("args", ['"Paris"', "city=Paris"])
@pytest.mark.parametrize("tools", ["native", "synthesize"])
@pytest_twisted.ensureDeferred
async def test_tool_arguments_that_are_not_an_object_still_give_a_dict_input(
    start: Start, tools: str, args: str
) -> None:
    """Non-object tool arguments give the same dict input streamed and not, and the SDK does not raise."""
    env = await start(tools)
    env.fake.content = []
    env.fake.tool_calls = [("get_weather", args)]
    client = env.client()
    plain = await in_thread(lambda: create(client, tools=[WEATHER]))
    assert plain.content[0].input == {}
    _, final = await in_thread(lambda: streamed(client, tools=[WEATHER]))
    assert final.content[0].input == plain.content[0].input


@pytest_twisted.ensureDeferred
async def test_limits_answer_in_anthropic_shapes(start: Start) -> None:
    """Body and queue limits answer 413 request_too_large and 429 rate_limit_error with Retry-After."""
    up = Held()
    env = await start(upstream=up, settings={"limits": {"max_body_bytes": 4096, "max_concurrent_upstream": 1,
                                                        "max_queue": 0}})
    big = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x" * 5000}]}
    status, _, data = await env.post("/v1/messages", big)
    assert status == 413 and error_of(data)["type"] == "request_too_large"
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    first = Deferred.fromCoroutine(env.post("/v1/messages", body))
    await timeout(up.arrived)
    status, headers, data = await env.post("/v1/messages", body)
    assert status == 429 and headers.getRawHeaders(b"retry-after") == [b"1"]
    assert error_of(data)["type"] == "rate_limit_error"
    up.answer(200, jsonutil.dumps(FakeLlama(reactor).reply()))
    status, _, data = await timeout(first)
    assert status == 200 and jsonutil.loads(data)["content"][0]["text"] == "Hello, world!"


@pytest_twisted.ensureDeferred
async def test_synthesis_heartbeats_are_pings_then_an_error_event(start: Start) -> None:
    """A synthesized answer's wait sends event: ping; an upstream 503 then ends it with overloaded_error."""
    up = Held()
    env = await start("synthesize", upstream=up, settings={"tools": {"heartbeat": 0.05}})
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO, "tools": [WEATHER], "stream": True}
    client = await raw_connect(env.shim.url, http_request("POST", "/v1/messages", jsonutil.dumps(body), {
        "Content-Type": "application/json", "Connection": "close"}))
    await timeout(client.wait_for(lambda b: b"event: ping" in b))
    up.answer(503, b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}')
    await timeout(client.closed)
    head, _, chunked = bytes(client.received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    events = sse_events(b"".join(line + b"\n" for line in chunked.split(b"\r\n")[1::2]))
    types = [d["type"] for _, d in events]
    assert set(types[:-1]) == {"ping"} and types[-1] == "error"
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Loading model"}


@pytest_twisted.ensureDeferred
async def test_shutdown_ends_a_running_stream_with_an_error_event(start: Start) -> None:
    """Stopping the service mid-stream ends the stream with event: error (overloaded_error), not a cut body."""
    env = await start(settings={"shutdown": {"drain_timeout": 0}})
    env.fake.content = [f"t{i} " for i in range(50)]
    env.fake.chunk_interval = 0.5  # paces the fake; the test waits on what the client received, never on time
    body = {"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True}
    client = await raw_connect(env.shim.url, http_request("POST", "/v1/messages", jsonutil.dumps(body), {
        "Content-Type": "application/json", "Connection": "close"}))
    await timeout(client.wait_for(lambda b: b"text_delta" in b))
    await env.stop_shim()
    await timeout(client.closed)
    text = bytes(client.received)
    assert text.rstrip().endswith(b"0") and b"message_stop" not in text
    last = text.rsplit(b"event: ", 1)[1]
    assert last.startswith(b"error\ndata: ")
    assert b'"type":"overloaded_error"' in last


# -- count_tokens --------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_count_tokens_with_the_upstream_template(start: Start) -> None:
    """count_tokens counts the /apply-template prompt's /tokenize tokens, billing header stripped."""
    fake = TemplatingFake(reactor)
    env = await start(fake=fake)
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
              {"type": "text", "text": "Be brief."}]
    counted = await in_thread(lambda: env.client().messages.count_tokens(
        model=MODEL, messages=HELLO, system=system, tools=[WEATHER]))  # type: ignore[arg-type]
    assert counted.input_tokens == len(render([{"role": "system", "content": "Be brief."}, *HELLO]))
    template = [r for r in fake.requests if r.path == "/apply-template"][-1].body
    assert template["messages"] == [{"role": "system", "content": "Be brief."}, *HELLO]
    assert template["tools"][0]["function"]["name"] == "get_weather"
    status, _, body = await env.post("/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO})
    assert status == 200 and jsonutil.loads(body) == {"input_tokens": len("<|user|>Hi")}
    assert fake.chat_requests() == []
