"""The Anthropic Messages routes in memory: the real site in front of the fake llama-server on one clock, driven by
the ``anthropic`` SDK (its requests served in memory), by raw requests where the bytes themselves are the point, and
by a captured real Claude Code request (tests/fixtures/agents).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import anthropic
import pytest
from anthropic.types import MessageParam, TextBlockParam, ToolParam
from anthropic.types.beta import BetaTextBlock
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamashim import jsonutil
from llamashim.testing.fake_llama import FakeLlama, render
from tests.integration.support import Scripted, ShimFixture
from tests.support import anthropic_error as error_of
from tests.support import sse_events

JSON = dict[str, Any]
VERSION = {"anthropic-version": "2023-06-01"}

FIXTURE = Path(__file__).parent.parent / "fixtures" / "agents" / "claude_code_2.1.328_requests.jsonl"
MODEL = "claude-sonnet-4-5"
HELLO: list[MessageParam] = [{"role": "user", "content": "Hi"}]
WEATHER: ToolParam = {
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


def read_requests(path: Path) -> list[JSON]:
    """The capture format (tests/fixtures/agents/README.md): pretty-printed JSON records one after another."""
    text, decoder, pos, out = path.read_text(encoding="utf-8"), json.JSONDecoder(), 0, []
    while text[pos:].strip():
        pos += len(text[pos:]) - len(text[pos:].lstrip())
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)
    return out


@pytest.fixture
def shims(shims: ShimFixture) -> ShimFixture:
    """This suite's shims send Anthropic's version header with every post, as the SDK does."""
    shims.headers.update(VERSION)
    return shims


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
        types: list[str] = [event.type for event in stream]
        return types, stream.get_final_message()


UNSCALED = {"anthropic": {"context_scaling": False}}  # the upstream's own counts (test_compaction_memory: scaled)


def create(client: anthropic.Anthropic, **kw: Any) -> Any:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 256)
    kw.setdefault("messages", HELLO)
    return client.messages.create(**kw)


# -- text --------------------------------------------------------------------------------------------------------


def test_create_with_the_sdk(shims: ShimFixture) -> None:
    """messages.create answers one text block, stop_reason end_turn, the upstream's usage; system and sampling go on."""
    env = shims.start(settings=UNSCALED)
    # (this SDK has no sampling arguments any more; Claude Code still sends temperature)
    m = create(env.anthropic(), system="Be brief.", stop_sequences=["END"],
               extra_body={"temperature": 0.5, "top_k": 5})
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == MODEL
    assert [(b.type, b.text) for b in m.content] == [("text", "Hello, world!")]
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert (m.usage.input_tokens, m.usage.output_tokens) == (12, 4)
    sent = env.fake.chat_requests()[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (sent["stream"], sent["max_tokens"], sent["temperature"], sent["top_k"], sent["stop"]) == (
        False, 256, 0.5, 5, ["END"])


def test_stream_helper_reaches_the_final_message(shims: ShimFixture) -> None:
    """messages.stream() accumulates the text deltas into the final message, with the stop reason and usage."""
    env = shims.start(settings=UNSCALED)
    env.fake.content = ["Par", "is is", " sunny."]
    types, m = streamed(env.anthropic())
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert [(b.type, b.text) for b in m.content] == [("text", "Paris is sunny.")]
    assert m.stop_reason == "end_turn" and m.usage.output_tokens == 3 and m.usage.input_tokens == 12
    sent = env.fake.chat_requests()[-1].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_raw_stream_event_order(shims: ShimFixture) -> None:
    """The raw stream has Anthropic's event order, each frame with its event: line."""
    env = shims.start(settings=UNSCALED)
    status, headers, body = env.post("/v1/messages", {"model": MODEL, "max_tokens": 64, "messages": HELLO,
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
def test_tool_use_and_tool_result_round_trip(shims: ShimFixture, tools: str, old_build: str | None) -> None:
    """A tool call is a tool_use block in every mode; its tool_result goes upstream as a tool message."""
    env = shims.start(tools)
    env.fake.content = ["Checking."]
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    env.fake.old_build = old_build
    client = env.anthropic()
    types, final = streamed(client, tools=[WEATHER], tool_choice={"type": "any"})
    assert types[0] == "message_start" and types[-1] == "message_stop"
    plain = create(client, tools=[WEATHER], tool_choice={"type": "any"})
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
    after = create(client, tools=[WEATHER], messages=turn)
    assert after.stop_reason == "end_turn"
    messages = env.fake.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[1]["content"] == "Checking."
    assert messages[1]["tool_calls"] == [{"id": "fakecall00", "type": "function",
                                          "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert messages[2] == {"role": "tool", "tool_call_id": "fakecall00", "content": "sunny"}
    assert messages[3] == {"role": "user", "content": "Thanks."}


def test_old_build_synthesis_gives_the_same_events(shims: ShimFixture) -> None:
    """An upstream refusing streamed tools: the synthesized stream has the native stream's event sequence."""
    native = shims.start("native")
    old = shims.start("auto")
    old.fake.old_build = "refuse_stream_tools"
    body = {"model": MODEL, "max_tokens": 64, "messages": HELLO, "tools": [WEATHER], "stream": True}
    shapes = []
    for env in (native, old):
        env.fake.content = ["Checking."]
        env.fake.tool_calls = [("get_weather", '{"city": "Rome"}')]
        status, _, data = env.post("/v1/messages", body)
        assert status == 200
        events = sse_events(data)
        types = check_wire(events)
        starts = [d["content_block"]["type"] for _, d in events if d["type"] == "content_block_start"]
        args = "".join(d["delta"].get("partial_json", "") for _, d in events if d["type"] == "content_block_delta")
        shapes.append((types[0], starts, types[-2:], json.loads(args), events[-2][1]["delta"]["stop_reason"]))
    assert shapes[0] == shapes[1] == ("message_start", ["text", "tool_use"], ["message_delta", "message_stop"],
                                      {"city": "Rome"}, "tool_use")
    assert [r.body["stream"] for r in old.fake.chat_requests()] == [True, False]


def test_parallel_tool_use(shims: ShimFixture) -> None:
    """Two upstream calls are two tool_use blocks; disable_parallel_tool_use sends parallel_tool_calls false."""
    env = shims.start()
    env.fake.content = []
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
    client = env.anthropic()
    _, m = streamed(client, tools=[WEATHER])
    assert [(b.type, b.id, b.input) for b in m.content] == [("tool_use", "fakecall00", {"city": "Paris"}),
                                                             ("tool_use", "fakecall01", {"city": "Rome"})]
    assert m.stop_reason == "tool_use"
    create(client, tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    sent = env.fake.chat_requests()[-1].body
    assert sent["parallel_tool_calls"] is False and sent["tool_choice"] == "auto"


@pytest.mark.parametrize("stream", [False, True])
def test_length_finish_is_max_tokens(shims: ShimFixture, stream: bool) -> None:
    """An answer cut by the token limit stops for max_tokens, streamed or not."""
    env = shims.start()
    env.fake.finish_reason = "length"
    status, _, body = env.post("/v1/messages", {"model": MODEL, "max_tokens": 4, "messages": HELLO,
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
def test_reasoning_becomes_a_signed_thinking_block(shims: ShimFixture, source: str) -> None:
    """Reasoning is a signed thinking block that comes back as reasoning_content; thinking disabled drops it."""
    env = shims.start()
    if source == "reasoning_content":
        env.fake.reasoning = ["Let me", " think."]
    else:
        env.fake.inline_think = ["Let me", " think."]
    env.fake.content = ["Paris."]
    client = env.anthropic()
    types, final = streamed(client, thinking={"type": "enabled", "budget_tokens": 1024})
    assert "thinking" in types and "signature" in types
    plain = create(client)
    for m in (final, plain):
        assert [b.type for b in m.content] == ["thinking", "text"]
        assert m.content[0].thinking == "Let me think." and m.content[0].signature
        assert m.content[1].text == "Paris."
    sent = env.fake.chat_requests()[-2].body
    assert sent["chat_template_kwargs"] == {"enable_thinking": True} and sent["thinking_budget_tokens"] == 1024
    off = create(client, thinking={"type": "disabled"})
    assert [(b.type, b.text) for b in off.content] == [("text", "Paris.")]
    env.fake.reasoning = env.fake.inline_think = []
    turn = [*HELLO, {"role": "assistant", "content": [b.model_dump() for b in final.content]},
            {"role": "user", "content": "And Italy?"}]
    create(client, messages=turn)
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
def test_claude_code_turn_and_the_billing_header(shims: ShimFixture, strip: bool, old_build: str | None) -> None:
    """The captured Claude Code turn streams fine; its billing header goes upstream only when stripping is off."""
    fake = FakeLlama(shims.clock)
    fake.n_ctx = 131072  # Claude Code's prompt is ~39k characters: ~39k of the fake's one-character tokens
    env = shims.start("auto", {"anthropic": {"strip_billing_header": strip}}, fake=fake)
    env.fake.content = ["O", "K"]
    env.fake.old_build = old_build
    path, headers, body = claude_code_request()
    assert path == "/v1/messages?beta=true"
    assert body["system"][0]["text"].startswith("x-anthropic-billing-header: cc_version=")
    status, _, data = env.post(path, body, headers)
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


def test_billing_header_in_a_string_system_prompt(shims: ShimFixture) -> None:
    """A string system prompt whose first line is the billing header loses that line, and only that line."""
    env = shims.start()
    system = "x-anthropic-billing-header: cc_version=2.1.328.d94; cch=abc;\nYou are helpful."
    create(env.anthropic(), system=system)
    assert env.fake.chat_requests()[-1].body["messages"][0] == {"role": "system", "content": "You are helpful."}


def test_beta_query_string_works(shims: ShimFixture) -> None:
    """/v1/messages?beta=true (Claude Code's, and the SDK's beta client's, path) serves the same answer."""
    env = shims.start()
    status, _, body = env.post("/v1/messages?beta=true", {"model": MODEL, "max_tokens": 16, "messages": HELLO})
    assert status == 200 and jsonutil.loads(body)["content"] == [{"type": "text", "text": "Hello, world!"}]
    m = env.anthropic().beta.messages.create(model=MODEL, max_tokens=16, messages=cast(Any, HELLO))
    assert isinstance(m.content[0], BetaTextBlock) and m.content[0].text == "Hello, world!"
    assert env.fake.chat_requests()[-1].path == "/v1/chat/completions"


# -- models, keys ------------------------------------------------------------------------------------------------


def test_model_alias_goes_upstream_and_the_client_name_comes_back(shims: ShimFixture) -> None:
    """models.aliases {"claude-*": "smol"}: the upstream gets smol, the reply echoes claude-sonnet-4-5."""
    env = shims.start(settings={"models": {"aliases": {"claude-*": "smol"}}}, fake=FakeLlama(shims.clock, model="smol"))
    m = create(env.anthropic())
    _, s = streamed(env.anthropic())
    status, _, body = env.post("/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": HELLO,
                                                "stream": True})
    assert m.model == s.model == MODEL
    assert sse_events(body)[0][1]["message"]["model"] == MODEL
    assert [r.body["model"] for r in env.fake.chat_requests()] == ["smol"] * 3


def test_api_keys_in_either_header(shims: ShimFixture) -> None:
    """x-api-key and Bearer keys both pass and stop at llamashim; a wrong key is Anthropic's 401."""
    env = shims.start(settings={"auth": {"api_keys": [KEY_A, KEY_B]}})
    m = create(env.anthropic(KEY_A))
    assert m.content[0].text == "Hello, world!"
    assert not {"x-api-key", "authorization"} & set(env.fake.chat_requests()[-1].headers)
    _, s = streamed(env.anthropic(KEY_B, bearer=True))
    assert s.content[0].text == "Hello, world!"
    assert "authorization" not in env.fake.chat_requests()[-1].headers
    for client in (env.anthropic("sk-wrong"), env.anthropic("sk-wrong", bearer=True)):
        with pytest.raises(anthropic.AuthenticationError) as raised:
            create(client)
        assert raised.value.status_code == 401
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    for headers in ({"x-api-key": "sk-wrong"}, {}):
        status, _, data = env.post("/v1/messages", body, headers)
        assert status == 401
        err = error_of(data)
        assert err["type"] == "authentication_error" and err["message"]
    assert len(env.fake.chat_requests()) == 2


# -- failures ----------------------------------------------------------------------------------------------------


def test_mid_stream_drop_ends_with_an_error_event(shims: ShimFixture) -> None:
    """An upstream drop mid-stream ends the stream with event: error and no message_stop; the SDK raises."""
    env = shims.start()
    env.fake.content = [f"t{i} " for i in range(10)]
    env.fake.fault = "drop_mid_stream"
    env.fake.fault_after = 3
    status, _, body = env.post("/v1/messages", {"model": MODEL, "max_tokens": 64, "messages": HELLO,
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
        streamed(env.anthropic())


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_unavailable_is_529_overloaded(shims: ShimFixture, stream: bool) -> None:
    """An upstream 503 (busy or loading) is Anthropic's 529 overloaded_error; the SDK raises OverloadedError."""
    env = shims.start()
    env.fake.status_override = 503
    status, _, data = env.post("/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": HELLO,
                                                "stream": stream})
    assert status == 529
    assert error_of(data)["type"] == "overloaded_error"
    with pytest.raises(anthropic.OverloadedError):
        streamed(env.anthropic()) if stream else create(env.anthropic())


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_prompt_too_long(shims: ShimFixture, stream: bool) -> None:
    """llama-server's exceed_context_size_error is a 400 whose message starts "prompt is too long:"."""
    up = Scripted()
    up.status, up.body = 400, OVERFLOW
    env = shims.start(upstream=up)
    status, _, data = env.post("/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": HELLO,
                                                "stream": stream})
    assert status == 400
    err = error_of(data)
    assert err["type"] == "invalid_request_error"
    assert err["message"] == "prompt is too long: 21157 tokens > 8192 maximum"
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long:"):
        create(env.anthropic(), stream=stream)


def test_malformed_requests_are_anthropic_shaped_400s(shims: ShimFixture) -> None:
    """Malformed requests are 400 invalid_request_error in Anthropic's shape and never go upstream."""
    env = shims.start()
    for body, needle in ((b'{"model": ', "not valid JSON"),
                         ({"model": MODEL, "messages": HELLO}, "max_tokens"),
                         ({"model": MODEL, "max_tokens": 8, "messages": [{"role": "tool", "content": "x"}]},
                          "role")):
        status, headers, data = env.post("/v1/messages", body)
        assert status == 400, data
        assert (headers.getRawHeaders(b"content-type") or [b""])[0].startswith(b"application/json")
        err = error_of(data)
        assert err["type"] == "invalid_request_error" and needle in err["message"]
    with pytest.raises(anthropic.BadRequestError):
        create(env.anthropic(), messages=[])
    assert env.fake.chat_requests() == []


@pytest.mark.parametrize("args", ['"Paris"', "city=Paris"])
@pytest.mark.parametrize("tools", ["native", "synthesize"])
def test_tool_arguments_that_are_not_an_object_still_give_a_dict_input(
    shims: ShimFixture, tools: str, args: str
) -> None:
    """Non-object tool arguments give the same dict input streamed and not, and the SDK does not raise."""
    env = shims.start(tools)
    env.fake.content = []
    env.fake.tool_calls = [("get_weather", args)]
    client = env.anthropic()
    plain = create(client, tools=[WEATHER])
    assert plain.content[0].input == {}
    _, final = streamed(client, tools=[WEATHER])
    assert final.content[0].input == plain.content[0].input


def test_limits_answer_in_anthropic_shapes(shims: ShimFixture) -> None:
    """Body and queue limits answer 413 request_too_large and 429 rate_limit_error with Retry-After."""
    up = Held()
    env = shims.start(upstream=up, settings={"limits": {"max_body_bytes": 4096, "max_concurrent_upstream": 1,
                                                        "max_queue": 0}})
    big = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x" * 5000}]}
    status, _, data = env.post("/v1/messages", big)
    assert status == 413 and error_of(data)["type"] == "request_too_large"
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    first = env.shim.request("POST", "/v1/messages", body, VERSION)
    env.shim.run_until(lambda: up.arrived.called)
    status, headers, data = env.post("/v1/messages", body)
    assert status == 429 and headers.getRawHeaders(b"retry-after") == [b"1"]
    assert error_of(data)["type"] == "rate_limit_error"
    up.answer(200, jsonutil.dumps(FakeLlama(shims.clock).reply()))
    env.shim.run_until(lambda: first.ended)
    status, data = first.code, bytes(first.body)
    assert status == 200 and jsonutil.loads(data)["content"][0]["text"] == "Hello, world!"


def test_synthesis_heartbeats_are_pings_then_an_error_event(shims: ShimFixture) -> None:
    """A synthesized answer's wait opens with message_start, then sends event: ping; an upstream 503 then ends it
    with overloaded_error."""
    up = Held()
    env = shims.start("synthesize", upstream=up, settings={"tools": {"heartbeat": 0.05}})
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO, "tools": [WEATHER], "stream": True}
    exchange = env.shim.request("POST", "/v1/messages", body, VERSION)
    env.shim.run_until(lambda: b"event: ping" in exchange.body, step=0.05)
    up.answer(503, b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}')
    env.shim.run_until(lambda: exchange.ended)
    assert exchange.complete and exchange.code == 200
    events = sse_events(bytes(exchange.body))
    types = [d["type"] for _, d in events]
    assert types[0] == "message_start" and set(types[1:-1]) == {"ping"} and types[-1] == "error"
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Loading model"}


def test_shutdown_ends_a_running_stream_with_an_error_event(shims: ShimFixture) -> None:
    """Stopping the service mid-stream ends the stream with event: error (overloaded_error), not a cut body."""
    env = shims.start(settings={"shutdown": {"drain_timeout": 0}})
    env.fake.content = [f"t{i} " for i in range(50)]
    env.fake.chunk_interval = 0.5  # paces the fake; the test waits on what the client received, never on time
    body = {"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True}
    exchange = env.shim.request("POST", "/v1/messages", body, VERSION)
    env.shim.run_until(lambda: b"text_delta" in exchange.body)
    env.shutdown()
    text = bytes(exchange.body)
    assert exchange.complete and b"message_stop" not in text  # the body ended, not cut
    last = text.rsplit(b"event: ", 1)[1]
    assert last.startswith(b"error\ndata: ")
    assert b'"type":"overloaded_error"' in last


# -- count_tokens --------------------------------------------------------------------------------------------------


def test_count_tokens_with_the_upstream_template(shims: ShimFixture) -> None:
    """count_tokens counts the /apply-template prompt's /tokenize tokens, billing header stripped (unscaled:
    anthropic.context_scaling off; its scaling is in test_compaction_memory)."""
    fake = FakeLlama(shims.clock)
    env = shims.start(fake=fake, settings={"anthropic": {"context_scaling": False}})
    system: list[TextBlockParam] = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
                                    {"type": "text", "text": "Be brief."}]
    counted = env.anthropic().messages.count_tokens(model=MODEL, messages=HELLO, system=system, tools=[WEATHER])
    assert counted.input_tokens == len(render([{"role": "system", "content": "Be brief."}, *HELLO]))
    template = [r for r in fake.requests if r.path == "/apply-template"][-1].body
    assert template["messages"] == [{"role": "system", "content": "Be brief."}, *HELLO]
    assert template["tools"][0]["function"]["name"] == "get_weather"
    status, _, body = env.post("/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO})
    assert status == 200 and jsonutil.loads(body) == {"input_tokens": len("<|user|>Hi"), "context_window": fake.n_ctx}
    assert fake.chat_requests() == []
