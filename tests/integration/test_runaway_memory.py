"""A looping model's tool calls are cut at ``tools.max_calls`` / ``tools.max_repeats`` in every dialect, streamed and
not: the client gets a whole answer ending in tool calls, the upstream connection is closed (llama-server stops
generating), the cut is logged and counted."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.support import ShimFixture

TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "read", "description": "Read a file.", "parameters": {"type": "object", "properties": {
        "path": {"type": "string"}}}}}
ASK = {"model": "m", "messages": [{"role": "user", "content": "Read everything."}], "tools": [TOOL]}


def looping(shims: ShimFixture, calls: int, distinct: bool = True, **tools: int) -> Any:
    env = shims.start(settings={"tools": tools} if tools else None)
    env.fake.content = []
    env.fake.chunk_interval = 0.01  # paced, as a model generates: the cut comes while it still talks
    env.fake.tool_calls = [("read", json.dumps({"path": f"f{i}" if distinct else "same"})) for i in range(calls)]
    return env


def test_openai_stream_is_cut_at_max_calls_and_the_upstream_stopped(shims: ShimFixture) -> None:
    """200 streamed calls with tools.max_calls 10: the openai SDK accumulates exactly 10 calls and finish_reason
    tool_calls; the upstream request was closed before its end; metrics count one cut at tools.max_calls."""
    env = looping(shims, 200, max_calls=10)
    with env.openai().chat.completions.stream(**ASK) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [json.loads(c.function.arguments)["path"] for c in choice.message.tool_calls or []] == [
        f"f{i}" for i in range(10)]
    assert env.fake.chat_requests()[-1].lost.called  # llamashim hung up on the generation
    assert env.shim.metric("llamashim_cut_streams_total", limit="tools.max_calls") == 1


def test_anthropic_stream_ends_with_tool_use_at_the_repeat_limit(shims: ShimFixture) -> None:
    """The same call 100 times with tools.max_repeats 3: the anthropic SDK's final message has 3 tool_use blocks and
    stop_reason tool_use; the stream ended properly (message_stop), not with an error."""
    env = looping(shims, 100, distinct=False, max_repeats=3)
    client = env.anthropic()
    with client.messages.stream(model="m", max_tokens=100, messages=[{"role": "user", "content": "Read."}],
                                tools=[{"name": "read", "description": "Read a file.",
                                        "input_schema": TOOL["function"]["parameters"]}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["tool_use"] * 3
    assert env.shim.metric("llamashim_cut_streams_total", limit="tools.max_repeats") == 1


def test_non_streamed_replies_keep_the_limit_in_every_dialect(shims: ShimFixture) -> None:
    """Not streamed, 100 calls with max_calls 64 (the default): OpenAI chat and Ollama answer 64 calls, Anthropic 64
    tool_use blocks; each counted as a cut."""
    env = looping(shims, 100)
    chat = env.openai().chat.completions.create(**ASK)
    assert len(chat.choices[0].message.tool_calls or []) == 64 and chat.choices[0].finish_reason == "tool_calls"
    message = env.anthropic().messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "Read."}],
        tools=[{"name": "read", "description": "Read a file.", "input_schema": TOOL["function"]["parameters"]}])
    assert [b.type for b in message.content] == ["tool_use"] * 64 and message.stop_reason == "tool_use"
    reply = env.ollama().chat(model="m", messages=[{"role": "user", "content": "Read."}], tools=[TOOL], stream=False)
    assert len(reply.message.tool_calls or []) == 64
    assert env.shim.metric("llamashim_cut_streams_total", limit="tools.max_calls") == 3


def test_an_answer_within_the_limits_is_not_cut(shims: ShimFixture) -> None:
    """Five distinct calls, streamed: all five arrive, nothing counted as cut, the upstream request ended itself."""
    env = looping(shims, 5)
    with env.openai().chat.completions.stream(**ASK) as stream:
        final = stream.get_final_completion()
    assert len(final.choices[0].message.tool_calls or []) == 5
    assert env.fake.chat_requests()[-1].done.called
    assert env.shim.metric("llamashim_cut_streams_total", limit="tools.max_calls") == 0
