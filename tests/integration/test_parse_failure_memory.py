"""A parse-failure 500 is not the end of the turn: llama-server's chat-parse failure (the fake reproduces its message,
non-streamed 500 and streamed error event) reaches every dialect's SDK as a valid answer with the right tool call,
or as text when the generation holds none; any other 500 is still an error."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from llamashim.testing.fake_llama import FakeLlama
from tests.integration.support import Env, ShimFixture, anthropic_tool_uses

TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "The weather in a city.",
                  "input_schema": TOOL["function"]["parameters"]}
ASK: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [TOOL]}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
PARIS = {"city": "Paris"}


def failing(shims: ShimFixture, text: str = CALL, pos: int = 0, before: list[str] | None = None) -> Env:
    """A shim whose upstream's chat parser fails at ``pos``, its message carrying ``text``; ``before`` is what the
    stream sent before the failure."""
    env = shims.start(fake=FakeLlama(shims.clock))
    env.fake.fault = "parse_failure"
    env.fake.parse_failure_pos = pos
    env.fake.parse_failure_text = text
    env.fake.content = before or []
    return env


def test_openai_chat_not_streamed_gets_the_call(shims: ShimFixture) -> None:
    """Non-streamed: the openai SDK gets a chat.completion with the get_weather call and finish_reason tool_calls."""
    env = failing(shims)
    reply = env.openai().chat.completions.create(**ASK)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == PARIS


def test_openai_chat_streamed_gets_the_call(shims: ShimFixture) -> None:
    """Streamed (content deltas, then the error event): the SDK's accumulated completion has the content before the
    failure and the call, finish_reason tool_calls; no error."""
    env = failing(shims, pos=14, before=["Let me ", "check."])
    with env.openai().chat.completions.stream(**ASK) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == PARIS


def test_responses_streamed_and_not_get_a_function_call(shims: ShimFixture) -> None:
    """The Responses API, streamed and not: a function_call item for get_weather with the arguments."""
    env = failing(shims)
    client = env.openai()
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": TOOL["function"]["parameters"]}]
    reply = client.responses.create(model="m", input="Weather in Paris?", tools=tools)
    with client.responses.stream(model="m", input="Weather in Paris?", tools=tools) as stream:
        streamed = stream.get_final_response()
    for response in (reply, streamed):
        [item] = [o for o in response.output if o.type == "function_call"]
        assert item.name == "get_weather" and json.loads(item.arguments) == PARIS


def test_anthropic_streamed_and_not_get_tool_use(shims: ShimFixture) -> None:
    """The anthropic SDK, streamed and not: a tool_use block for get_weather, stop_reason tool_use."""
    env = failing(shims)
    ask: Any = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Weather?"}],
                "tools": [ANTHROPIC_TOOL]}
    assert anthropic_tool_uses(env.anthropic(), ask) == [("tool_use", "get_weather", PARIS)] * 2


def test_ollama_streamed_and_not_gets_tool_calls(shims: ShimFixture) -> None:
    """The ollama client, streamed and not: the get_weather call in message.tool_calls."""
    env = failing(shims)
    client = env.ollama()
    reply = client.chat(model="m", messages=ASK["messages"], tools=[TOOL], stream=False)
    calls = [c for part in client.chat(model="m", messages=ASK["messages"], tools=[TOOL], stream=True)
             for c in part.message.tool_calls or []]
    for found in (reply.message.tool_calls or [], calls):
        [call] = found
        assert call.function.name == "get_weather" and dict(call.function.arguments) == PARIS


def test_a_failure_without_a_call_answers_its_text(shims: ShimFixture) -> None:
    """The failure's text holds no call: the client gets it as content (finish_reason stop), streamed and not."""
    env = failing(shims, text="It is sunny in Paris.")
    client = env.openai()
    reply = client.chat.completions.create(**ASK)
    assert reply.choices[0].message.content == "It is sunny in Paris." and reply.choices[0].finish_reason == "stop"
    with client.chat.completions.stream(**ASK) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "It is sunny in Paris." and final.choices[0].finish_reason == "stop"


def test_a_failure_without_text_is_asked_again_as_raw_text(shims: ShimFixture) -> None:
    """The newest builds' message carries no text: llamashim renders the prompt (/apply-template), generates it as
    raw text (/completion, the request's sampling) and answers the call it holds."""
    env = failing(shims)
    env.fake.parse_failure_message = "The model produced output that does not match the expected peg-native format"
    env.fake.content = [CALL]  # what /completion generates
    reply = env.openai().chat.completions.create(**ASK, temperature=0)
    [call] = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == PARIS
    raw = [r for r in env.fake.requests if r.path == "/completion"][-1].body
    assert raw["temperature"] == 0 and raw["stream"] is False and raw["prompt"].startswith("<|user|>")


def test_other_500s_are_still_errors(shims: ShimFixture) -> None:
    """Another 500 (not a parse failure) reaches the openai SDK as an error, not as an answer."""
    env = shims.start()
    env.fake.fault = "http_500"
    with pytest.raises(openai.InternalServerError):
        env.openai().chat.completions.create(**ASK)
    with pytest.raises(anthropic.InternalServerError):
        env.anthropic().messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
