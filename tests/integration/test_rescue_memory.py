"""Tool-call rescue in every dialect: an answer whose tool call came as Hermes markup in the content (the fake
llama-server streams it as content deltas, and answers it as ``message.content``) reaches the SDKs' own parsers
(``openai`` chat and Responses, ``anthropic``, ``ollama``) as a real tool call, streamed and not; a look-alike stays
text; and one answer of every markup family reaches every dialect as its calls."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from tests.integration.support import Env, ShimFixture, anthropic_tool_uses
from tests.unit.rescue_corpus import CASES, TOOLS, Case
from tests.unit.test_rescue import pieces

CALL = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": "2",}}\n</tool_call>'
WANT = {"city": "Paris", "days": 2}  # the trailing comma repaired, "2" coerced to the schema's integer
LOOKALIKE = 'Write `<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>` to call a tool.'
WEATHER = TOOLS[0]
MESSAGES: Any = [{"role": "user", "content": "Weather in Paris?"}]
ANTHROPIC_TOOL: Any = {"name": "get_weather", "description": "weather",
                       "input_schema": WEATHER["function"]["parameters"]}
RESPONSES_TOOL: Any = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}


def answering(shims: ShimFixture, text: str) -> Env:
    """A shim whose upstream answers ``text`` as content (streamed in small pieces), no native tool calls."""
    env = shims.start()
    env.fake.content = pieces(text, 7)
    return env


def test_openai_chat_gets_the_call_streamed_and_not(shims: ShimFixture) -> None:
    """openai chat.completions: tool_calls with the repaired arguments, finish_reason tool_calls, the text before
    the call as content; the same from the SDK's stream accumulator."""
    client = answering(shims, CALL).openai()
    reply = client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER])  # type: ignore[list-item]
    with client.chat.completions.stream(model="m", messages=MESSAGES, tools=[WEATHER]) as stream:  # type: ignore[list-item]
        streamed = stream.get_final_completion()
    for answer in (reply, streamed):
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls" and (choice.message.content or "").strip() == "Let me check."
        [call] = choice.message.tool_calls or []
        assert call.type == "function"
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == WANT


def test_responses_gets_a_function_call_streamed_and_not(shims: ShimFixture) -> None:
    """openai Responses: a function_call item for get_weather with the arguments, streamed and not."""
    client = answering(shims, CALL).openai()
    reply = client.responses.create(model="m", input="Weather in Paris?", tools=[RESPONSES_TOOL])
    with client.responses.stream(model="m", input="Weather in Paris?", tools=[RESPONSES_TOOL]) as stream:
        streamed = stream.get_final_response()
    for response in (reply, streamed):
        [item] = [o for o in response.output if o.type == "function_call"]
        assert item.name == "get_weather" and json.loads(item.arguments) == WANT
        assert "<tool_call>" not in response.output_text


def test_anthropic_gets_tool_use_streamed_and_not(shims: ShimFixture) -> None:
    """anthropic messages: a tool_use block with the input, stop_reason tool_use, streamed and not."""
    ask: Any = {"model": "m", "max_tokens": 100, "messages": MESSAGES, "tools": [ANTHROPIC_TOOL]}
    assert anthropic_tool_uses(answering(shims, CALL).anthropic(), ask) == [("tool_use", "get_weather", WANT)] * 2


def test_ollama_gets_tool_calls_streamed_and_not(shims: ShimFixture) -> None:
    """ollama chat: message.tool_calls with the arguments, streamed and not."""
    client = answering(shims, CALL).ollama()
    reply = client.chat(model="m", messages=MESSAGES, tools=[WEATHER], stream=False)
    calls = [c for part in client.chat(model="m", messages=MESSAGES, tools=[WEATHER], stream=True)
             for c in part.message.tool_calls or []]
    for found in (reply.message.tool_calls or [], calls):
        [call] = found
        assert call.function.name == "get_weather" and dict(call.function.arguments) == WANT


def test_a_lookalike_stays_text_in_every_dialect(shims: ShimFixture) -> None:
    """Markup shown in inline code is text for every SDK, streamed and not: no tool call, the text intact."""
    env = answering(shims, LOOKALIKE)
    client = env.openai()
    reply = client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER])  # type: ignore[list-item]
    with client.chat.completions.stream(model="m", messages=MESSAGES, tools=[WEATHER]) as stream:  # type: ignore[list-item]
        streamed = stream.get_final_completion()
    for answer in (reply, streamed):
        assert answer.choices[0].message.content == LOOKALIKE and not answer.choices[0].message.tool_calls
    response = client.responses.create(model="m", input="x", tools=[RESPONSES_TOOL])
    assert response.output_text == LOOKALIKE and not [o for o in response.output if o.type == "function_call"]
    ask: Any = {"model": "m", "max_tokens": 100, "messages": MESSAGES, "tools": [ANTHROPIC_TOOL]}
    with env.anthropic().messages.stream(**ask) as astream:
        message = astream.get_final_message()
    assert message.stop_reason == "end_turn" and [b.type for b in message.content] == ["text"]
    chat = env.ollama().chat(model="m", messages=MESSAGES, tools=[WEATHER], stream=False)
    assert chat.message.content == LOOKALIKE and not chat.message.tool_calls


def _calls_everywhere(env: Env, streamed: bool) -> list[list[tuple[str, Any]]]:
    """The calls each SDK sees: openai chat, Responses, anthropic and ollama."""
    tools: Any = TOOLS
    client = env.openai()
    chat: Any
    response: Any
    if streamed:
        with client.chat.completions.stream(model="m", messages=MESSAGES, tools=tools) as stream:
            chat = stream.get_final_completion()
        with client.responses.stream(model="m", input="x", tools=[RESPONSES_TOOL | {
                "name": t["function"]["name"], "parameters": t["function"]["parameters"]} for t in TOOLS]) as rstream:
            response = rstream.get_final_response()
    else:
        chat = client.chat.completions.create(model="m", messages=MESSAGES, tools=tools)
        response = client.responses.create(model="m", input="x", tools=[RESPONSES_TOOL | {
            "name": t["function"]["name"], "parameters": t["function"]["parameters"]} for t in TOOLS])
    ask: Any = {"model": "m", "max_tokens": 100, "messages": MESSAGES, "tools": [
        {"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in TOOLS]}
    if streamed:
        with env.anthropic().messages.stream(**ask) as astream:
            message = astream.get_final_message()
        ollama_calls = [c for part in env.ollama().chat(model="m", messages=MESSAGES, tools=tools, stream=True)
                        for c in part.message.tool_calls or []]
    else:
        message = env.anthropic().messages.create(**ask)
        ollama_calls = list(env.ollama().chat(model="m", messages=MESSAGES, tools=tools).message.tool_calls or [])
    return [
        [(c.function.name, json.loads(c.function.arguments)) for c in chat.choices[0].message.tool_calls or []],
        [(o.name, json.loads(o.arguments)) for o in response.output if o.type == "function_call"],
        [(b.name, b.input) for b in message.content if isinstance(b, anthropic.types.ToolUseBlock)],
        [(c.function.name, dict(c.function.arguments)) for c in ollama_calls],
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_corpus_answer_reaches_every_dialect(shims: ShimFixture, case: Case) -> None:
    """Every corpus answer, streamed and not: the openai (chat and Responses), anthropic and ollama SDKs each see
    exactly its calls (none for a look-alike); no request fails."""
    env = answering(shims, case.text)
    for streamed in (False, True):
        assert _calls_everywhere(env, streamed) == [case.calls] * 4, f"streamed={streamed}"
