"""Real client libraries (``openai``, ``ollama``) against llamashim in front of the fake llama-server, on real sockets:
the clients' own HTTP stacks read llamashim's chunked streams off the wire (the route suites drive the same SDKs in
memory).

The clients are synchronous; they run in a thread while the reactor serves llamashim and the fake on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import ollama
import openai
import pytest
import pytest_twisted
from openai.types.chat import ChatCompletionMessageParam

from llamashim.testing.fake_llama import FakeLlama
from tests.assemble import assemble
from tests.integration.support import Shim, config, in_thread, listen, reactor, start_shim

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Paris and Rome?"}]


async def setup(cli: dict[str, Any] | None = None) -> tuple[FakeLlama, Shim, Any]:
    fake = FakeLlama(reactor)
    port, url = listen(fake.resource())
    shim = await start_shim(config(url, cli))
    return fake, shim, port


async def teardown(shim: Shim, port: Any) -> None:
    await shim.stop()
    await port.stopListening()


def oai(shim: Shim, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=shim.url + "/v1", api_key="sk-x", max_retries=0, timeout=20,
                         default_headers=headers or None)


def with_helper(client: openai.OpenAI, **kw: Any) -> Any:
    with client.chat.completions.stream(model="m", messages=MESSAGES, **kw) as stream:
        for _ in stream:
            pass
        return stream.get_final_completion()


def by_hand(client: openai.OpenAI, **kw: Any) -> tuple[dict[int, dict[str, str]], str | None, str, Any]:
    got = assemble(client.chat.completions.create(model="m", messages=MESSAGES, stream=True, **kw))
    return got.calls, got.finish, got.text, got.usage


TOOL_MODES = [
    ({"tool_streaming": "native"}, None),
    ({"tool_streaming": "synthesize"}, None),
    ({"tool_streaming": "auto"}, None),
    ({"tool_streaming": "auto"}, "refuse_stream_tools"),
    ({"tool_streaming": "auto"}, "json_for_stream"),
]


@pytest.mark.parametrize(("cli", "old_build"), TOOL_MODES)
@pytest_twisted.ensureDeferred
async def test_openai_sdk_assembles_parallel_tool_calls(cli: dict[str, Any], old_build: str | None) -> None:
    """Both the SDK's accumulating helper and hand assembly get both calls, whole, in every mode."""
    fake, shim, port = await setup(cli)
    fake.content = ["Checking", " both."]
    fake.tool_calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
    fake.old_build = old_build
    try:
        final = await in_thread(lambda: with_helper(oai(shim), tools=[WEATHER]))
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Checking both."
        calls = choice.message.tool_calls or []
        assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
        assert all(c.id and c.function.name == "get_weather" for c in calls)
        hand, finish, text, usage = await in_thread(
            lambda: by_hand(oai(shim), tools=[WEATHER], stream_options={"include_usage": True})
        )
        assert finish == "tool_calls" and text == "Checking both."
        assert [json.loads(hand[i]["arguments"]) for i in sorted(hand)] == [{"city": "Paris"}, {"city": "Rome"}]
        assert usage is not None
        if old_build is not None:
            # the fallback is remembered: the second request went straight to stream: false
            chat = fake.chat_requests()
            assert chat[-1].body["stream"] is False
            assert sum(1 for r in chat if r.body.get("stream")) == 1
    finally:
        await teardown(shim, port)


@pytest.mark.parametrize("tools_mode", ["native", "synthesize"])
@pytest.mark.parametrize("thinking", ["default", "show_reasoning", "events", "both", "off"])
@pytest_twisted.ensureDeferred
async def test_reasoning_and_tool_calls_in_every_mode(tools_mode: str, thinking: str) -> None:
    """The SDK gets the tool call in every mode; reasoning lands in content, reasoning_content or nowhere per mode."""
    fake, shim, port = await setup({"tool_streaming": tools_mode, "thinking_mode": thinking})
    fake.reasoning = ["The user", " wants weather."]
    fake.content = []
    fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    try:
        final = await in_thread(lambda: with_helper(oai(shim), tools=[WEATHER]))
        msg = final.choices[0].message
        assert [json.loads(c.function.arguments) for c in msg.tool_calls or []] == [{"city": "Paris"}]
        reasoning = getattr(msg, "reasoning_content", None) or (msg.model_extra or {}).get("reasoning_content")
        content = msg.content or ""
        if thinking == "show_reasoning":
            assert content.startswith("💭 The user wants weather.")
        elif thinking in ("default", "both"):
            assert reasoning == "The user wants weather." and "The user" not in content
        else:
            assert not reasoning and "The user" not in content
    finally:
        await teardown(shim, port)


@pytest.mark.parametrize("thinking", ["default", "show_reasoning", "events", "both", "off"])
@pytest_twisted.ensureDeferred
async def test_inline_think_modes_with_the_sdk(thinking: str) -> None:
    """Inline <think> text reaches the SDK as each thinking mode says; the X-Llamashim-Thinking header overrides."""
    fake, shim, port = await setup({"thinking_mode": thinking})
    fake.inline_think = ["Let me", " think."]
    fake.content = ["Paris", " is sunny."]
    try:
        _, finish, text, _ = await in_thread(lambda: by_hand(oai(shim)))
        assert finish == "stop"
        expected = {
            "default": "<think>Let me think.</think>\n\nParis is sunny.",
            "both": "<think>Let me think.</think>\n\nParis is sunny.",
            "show_reasoning": "💭 Let me think.\n\n---\n\nParis is sunny.",
            "events": "Paris is sunny.",
            "off": "Paris is sunny.",
        }[thinking]
        assert text == expected
        header_text = await in_thread(lambda: by_hand(oai(shim, **{"X-Llamashim-Thinking": "off"}))[2])
        assert header_text == "Paris is sunny."
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_unknown_thinking_header_is_a_400() -> None:
    """An unknown X-Llamashim-Thinking value makes the SDK raise BadRequestError saying it is not one of the modes."""
    _, shim, port = await setup()
    try:
        with pytest.raises(openai.BadRequestError, match="not one of"):
            await in_thread(lambda: by_hand(oai(shim, **{"X-Llamashim-Thinking": "loud"})))
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_mid_stream_failure_makes_the_sdk_raise() -> None:
    """A terminal error frame, not a silently truncated answer."""
    fake, shim, port = await setup({"tool_streaming": "native"})
    fake.content = [f"t{i} " for i in range(10)]
    fake.fault = "drop_mid_stream"
    try:
        with pytest.raises(openai.APIError):
            await in_thread(lambda: by_hand(oai(shim)))
    finally:
        await teardown(shim, port)


@pytest_twisted.ensureDeferred
async def test_ollama_client_against_the_fake() -> None:
    """The ollama client's list, show, chat (streamed or not, think=False, tools), generate, embed and ps work."""
    fake, shim, port = await setup()
    fake.reasoning = ["Hmm."]
    fake.content = ["Hi", " there"]
    try:
        client = ollama.Client(host=shim.url, timeout=20)
        listed = await in_thread(client.list)
        assert [m.model for m in listed.models] == ["fake-model-7B.Q4_K_M"]  # one friendly name: name == model
        shown = await in_thread(lambda: client.show("fake-model-7B.Q4_K_M:latest"))
        assert shown.capabilities is not None and "tools" in shown.capabilities
        assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 4096
        reply = await in_thread(lambda: client.chat(model="fake-model-7B.Q4_K_M", messages=MESSAGES, stream=False))
        assert reply.message.content == "Hi there" and reply.message.thinking == "Hmm." and reply.done
        parts = await in_thread(
            lambda: list(client.chat(model="fake-model-7B.Q4_K_M", messages=MESSAGES, stream=True))
        )
        assert "".join(p.message.content or "" for p in parts) == "Hi there"
        assert "".join(p.message.thinking or "" for p in parts) == "Hmm."
        last = parts[-1]
        assert last.done and last.done_reason == "stop" and last.eval_count and last.prompt_eval_count == 12
        assert last.eval_duration and last.prompt_eval_duration == 24_000_000
        nothink = await in_thread(
            lambda: client.chat(model="fake-model-7B.Q4_K_M", messages=MESSAGES, stream=False, think=False)
        )
        assert nothink.message.thinking is None and nothink.message.content == "Hi there"
        fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
        tool = await in_thread(lambda: client.chat(model="fake-model-7B.Q4_K_M", messages=MESSAGES, tools=[WEATHER]))
        calls = tool.message.tool_calls or []
        assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
        gen = await in_thread(lambda: client.generate(model="fake-model-7B.Q4_K_M", prompt="Hi", stream=False))
        assert gen.response == "Hi there" and gen.done
        emb = await in_thread(lambda: client.embed(model="fake-model-7B.Q4_K_M", input=["a", "b"]))
        assert len(emb.embeddings) == 2
        ps = await in_thread(client.ps)
        assert ps.models[0].model == "fake-model-7B.Q4_K_M"
    finally:
        await teardown(shim, port)
