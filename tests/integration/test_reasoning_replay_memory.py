"""Reasoning carried across turns (``thinking.replay``), through the daemon: an answer that thought and called a tool
is remembered; a Copilot-shaped follow-up (the tool result, the assistant turn without ``reasoning_content``) reaches
the upstream with the reasoning back — for the same API key only, not with ``off``, and not for a template that does
not read it."""

from __future__ import annotations

from typing import Any

from llamashim.testing.fake_llama import FakeLlama
from tests.integration.support import Env, ShimFixture

QWEN = "{%- if message.reasoning_content %}<think>{{ message.reasoning_content }}</think>{%- endif %}"
TOOL: Any = {"type": "function", "function": {"name": "read", "description": "Read a file.",
                                                        "parameters": {"type": "object", "properties": {
                                                            "path": {"type": "string"}}}}}
KEYS = ["sk-alice-123456", "sk-bob-12345678"]


def start(shims: ShimFixture, template: str = QWEN, replay: str = "auto", keys: bool = True) -> Env:
    fake = FakeLlama(shims.clock)
    fake.chat_template = template
    fake.reasoning = ["I should ", "read a.txt first."]
    fake.content = []
    fake.tool_calls = [("read", '{"path": "a.txt"}')]
    auth = {"auth": {"api_keys": KEYS}} if keys else {}
    return shims.start(fake=fake, settings={**auth, "thinking": {"replay": replay}})


def first_turn(env: Env, key: str, stream: bool) -> Any:
    """The first turn through the openai SDK; returns the follow-up's messages as Copilot sends them (the assistant
    turn with its tool calls and no reasoning_content)."""
    client = env.openai(key)
    ask: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Read a.txt"}], "tools": [TOOL]}
    if stream:
        with client.chat.completions.stream(**ask) as s:
            message = s.get_final_completion().choices[0].message
    else:
        message = client.chat.completions.create(**ask).choices[0].message
    calls = [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
             for c in message.tool_calls or []]
    assert calls
    return [*ask["messages"], {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "hello"}]


def sent_reasoning(env: Env) -> Any:
    """The reasoning_content of the assistant turn the upstream last received."""
    messages = env.fake.chat_requests()[-1].body["messages"]
    return next(m for m in messages if m["role"] == "assistant").get("reasoning_content")


def test_a_copilot_follow_up_gets_the_reasoning_back_streamed_and_not(shims: ShimFixture) -> None:
    """Streamed or not, the follow-up without reasoning_content reaches the upstream with the first answer's
    reasoning in its assistant turn."""
    env = start(shims)
    for stream in (True, False):
        messages = first_turn(env, KEYS[0], stream)
        env.fake.tool_calls = []
        env.fake.content = ["Done."]
        env.openai(KEYS[0]).chat.completions.create(model="m", messages=messages, tools=[TOOL])
        assert sent_reasoning(env) == "I should read a.txt first."
        env.fake.tool_calls = [("read", '{"path": "a.txt"}')]
        env.fake.content = []


def test_another_api_key_does_not_get_it(shims: ShimFixture) -> None:
    """The same follow-up sent with another API key reaches the upstream without reasoning."""
    env = start(shims)
    messages = first_turn(env, KEYS[0], True)
    env.openai(KEYS[1]).chat.completions.create(model="m", messages=messages, tools=[TOOL])
    assert sent_reasoning(env) is None


def test_off_and_a_template_that_does_not_read_it_send_nothing(shims: ShimFixture) -> None:
    """thinking.replay off, or auto with a template that never names reasoning_content: nothing is put back."""
    for env in (start(shims, replay="off"), start(shims, template="{{ messages }}")):
        messages = first_turn(env, KEYS[0], True)
        env.openai(KEYS[0]).chat.completions.create(model="m", messages=messages, tools=[TOOL])
        assert sent_reasoning(env) is None


def test_an_ollama_client_without_call_ids_gets_it_back(shims: ShimFixture) -> None:
    """The ollama client's follow-up (tool calls without ids, arguments as an object) reaches the upstream with
    the reasoning of the answer that made the call."""
    env = start(shims, keys=False)
    client = env.ollama()
    first = client.chat(model="m", messages=[{"role": "user", "content": "Read a.txt"}], tools=[TOOL], stream=False,
                        think=True)
    assert first.message.tool_calls
    client.chat(model="m", tools=[TOOL], stream=False, messages=[
        {"role": "user", "content": "Read a.txt"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "read", "arguments": {"path": "a.txt"}}}]},
        {"role": "tool", "content": "hello"}])
    assert sent_reasoning(env) == "I should read a.txt first."


def test_the_reasoning_survives_a_restart_with_the_store(shims: ShimFixture) -> None:
    """With the Responses store on (these shims' default), the reasoning remembered before a restart is put back
    into a follow-up after it."""
    env = start(shims)
    messages = first_turn(env, KEYS[0], True)
    env.restart()
    env.openai(KEYS[0]).chat.completions.create(model="m", messages=messages, tools=[TOOL])
    assert sent_reasoning(env) == "I should read a.txt first."
