"""End-to-end: the Anthropic Messages dialect (``/v1/messages``) through the real daemon and a real llama-server.

Driven by the real ``anthropic`` Python package (2.15.0 has no ``temperature`` argument any more: it goes in
``extra_body``) and, for one streamed answer, ``@anthropic-ai/sdk``. The tool-call recipe is the chat one of
``shared/REAL-LLAMA-SERVER.md`` in Anthropic's shape (``tool_use`` / ``tool_result`` turns), with
``tool_choice: {"type": "tool", "name": "get_weather"}`` or ``{"type": "any"}``; instead of the chat recipe's
``logit_bias`` (which Messages has not) an assistant prefill ``<tool_call>\\n`` — Anthropic's own prefill feature —
makes SmolLM2-135M call the tool every time.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import anthropic
import pytest
from anthropic.types import TextBlockParam, ToolParam

from tests.e2e.daemon import Daemon, StartShim

HERE = Path(__file__).parent / "node"
GREEDY = {"temperature": 0}

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    },
}


def _tool_use(city: str, n: int) -> dict[str, Any]:
    return {"role": "assistant", "content": [
        {"type": "tool_use", "id": f"toolu_{n}", "name": "get_weather", "input": {"city": city}}]}


def _result_then(n: int, city: str, question: str) -> dict[str, Any]:
    return {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": f"Sunny in {city}."},
        {"type": "text", "text": question}]}


CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Rome?"},
    _tool_use("Rome", 1),
    _result_then(1, "Rome", "Weather in Berlin?"),
    _tool_use("Berlin", 2),
    _result_then(2, "Berlin", "Weather in Paris?"),
]
PREFILL = {"role": "assistant", "content": "<tool_call>\n"}


def tool_request(choice: dict[str, Any]) -> dict[str, Any]:
    return dict(
        model="claude-sonnet-4-5",
        max_tokens=60,
        system="You answer every question by calling a tool.",
        messages=[*CONVERSATION, PREFILL],
        tools=[WEATHER_TOOL],
        tool_choice=choice,
        extra_body=GREEDY,
    )


def client(d: Daemon, key: str = "sk-ant-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=d.url, api_key=key, timeout=120, max_retries=0)


def test_messages_create(shim: Daemon) -> None:
    """``messages.create`` returns the real model's text block, a stop reason and usage."""
    m = client(shim).messages.create(
        model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "Say hello."}],
        extra_body=GREEDY,
    )
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.model == "claude-sonnet-4-5"
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 0 and 0 < m.usage.output_tokens <= 16


def test_messages_stream_to_the_final_message(shim: Daemon) -> None:
    """``messages.stream()`` yields the text deltas and a final message that holds them."""
    with client(shim).messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Say hello."}],
        extra_body=GREEDY,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("choice", "stream"),
    [({"type": "tool", "name": "get_weather"}, False), ({"type": "any"}, True)],
    ids=["tool-create", "any-stream"],
)
def test_real_tool_use(shim: Daemon, choice: dict[str, Any], stream: bool) -> None:
    """The real model's call comes back as one ``tool_use`` block (input matches the schema), ``stop_reason``
    ``tool_use``."""
    c = client(shim)
    if stream:
        with c.messages.stream(**tool_request(choice)) as s:
            for _ in s:
                pass
            m = s.get_final_message()
    else:
        m = c.messages.create(**tool_request(choice))
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1, m.content
    assert uses[0].name == "get_weather" and uses[0].id
    assert uses[0].input == {"city": "Paris"}


def test_tool_result_follow_up_turn(shim: Daemon) -> None:
    """An agent loop: the model's ``tool_use``, our ``tool_result`` for it, and the model answers the next turn."""
    c = client(shim)
    first = c.messages.create(**tool_request({"type": "any"}))
    use = next(b for b in first.content if b.type == "tool_use")
    follow = c.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=30,
        system="You answer every question by calling a tool.",
        messages=cast(Any, [
            *CONVERSATION,
            {"role": "assistant", "content": [use.model_dump(include={"type", "id", "name", "input"})]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 24 C."}]},
        ]),
        tools=[cast(ToolParam, WEATHER_TOOL)],
        extra_body=GREEDY,
    )
    assert follow.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert follow.content and all(b.type in ("text", "tool_use") for b in follow.content)
    assert follow.usage.input_tokens + (follow.usage.cache_read_input_tokens or 0) > first.usage.input_tokens


def test_count_tokens_matches_the_prompt(shim: Daemon) -> None:
    """``messages.count_tokens`` counts what ``messages.create`` then reports as its prompt (input + cache reads)."""
    c = client(shim)
    kwargs: dict[str, Any] = dict(
        model="claude-sonnet-4-5", system="Be brief.", messages=[{"role": "user", "content": "Say hello."}]
    )
    counted = c.messages.count_tokens(**kwargs).input_tokens
    m = c.messages.create(max_tokens=4, extra_body=GREEDY, **kwargs)
    assert counted > 5
    assert counted == m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)


def test_api_keys_wrong_key_is_refused_right_key_works(real_llama: Any, shim_daemon: StartShim) -> None:
    """With ``auth.api_keys`` set, a wrong ``x-api-key`` raises ``AuthenticationError``; the right one is served."""
    with shim_daemon(real_llama.url, sections={"auth": {"api_keys": ["sk-ant-right"]}}) as d:
        request: dict[str, Any] = dict(
            model="claude-sonnet-4-5", max_tokens=4, messages=[{"role": "user", "content": "Hi."}]
        )
        with pytest.raises(anthropic.AuthenticationError) as raised:
            client(d, "sk-ant-wrong").messages.create(**request)
        assert raised.value.status_code == 401
        body = cast(dict[str, Any], raised.value.body)
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        ok = client(d, "sk-ant-right").messages.create(**request)
        assert ok.content and ok.usage.output_tokens > 0


# -- the billing header and llama-server's prompt cache ---------------------------------------------------------

_WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
LONG_SYSTEM = "\n".join(
    f"Rule {i}: when the user says {_WORDS[i % 16]}, answer with {_WORDS[i * 7 % 16]} and {_WORDS[i * 3 % 16]}."
    for i in range(60)
)


def claude_code_system() -> list[TextBlockParam]:
    """Claude Code's system blocks: a billing header that changes on every request, then fixed prompts."""
    header = f"x-anthropic-billing-header: cc_version=2.1.328.d94; cc_entrypoint=sdk-cli; cch={secrets.token_hex(3)};"
    return [
        {"type": "text", "text": header},
        {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}},
    ]


@pytest.mark.parametrize("strip", [True, False], ids=["strip", "keep"])
def test_billing_header_and_the_prompt_cache(
    real_llama: Any, shim_daemon: StartShim, strip: bool
) -> None:
    """Stripping the per-request billing header lets the second Claude-Code-shaped turn reuse llama-server's cache;
    keeping it does not."""
    # the real counts (no context scaling): this is about the prompt cache
    with shim_daemon(real_llama.url, sections={"anthropic": {"strip_billing_header": strip,
                                                             "context_scaling": False}}) as d:
        c = client(d)
        usages = []
        for _ in range(2):
            m = c.messages.create(
                model="claude-sonnet-4-5", max_tokens=2, system=claude_code_system(),
                messages=[{"role": "user", "content": "Say OK."}], extra_body=GREEDY,
            )
            usages.append(m.usage)
    prompt = usages[1].input_tokens + (usages[1].cache_read_input_tokens or 0)
    cached = usages[1].cache_read_input_tokens or 0
    print(f"strip={strip}: prompt {prompt} tokens, second turn cache_read {cached}, first {usages[0]}")
    assert prompt > 1000
    if strip:
        assert cached >= prompt - 8  # all but the last token or so came from the cache
    else:
        assert cached < 100  # only the prefix up to "cch=" matches


def test_anthropic_js_streams_a_message(shim: Daemon, node_sdks: Path) -> None:
    """``@anthropic-ai/sdk``'s ``messages.stream()`` reaches ``finalMessage()``: text, then a real ``tool_use``."""
    script = node_sdks.parent / "anthropic_stream.mjs"
    shutil.copy(HERE / "anthropic_stream.mjs", script)
    request = {k: v for k, v in tool_request({"type": "tool", "name": "get_weather"}).items() if k != "extra_body"}
    result = subprocess.run(
        ["node", str(script), shim.url, json.dumps({**request, **GREEDY})], capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["stop"] == "end_turn" and out["text"] and out["text"] == out["deltas"]
    assert out["events"][0] == "message_start" and out["events"][-1] == "message_stop"
    assert out["toolStop"] == "tool_use"
    assert out["tool"]["name"] == "get_weather" and out["tool"]["input"] == {"city": "Paris"}
