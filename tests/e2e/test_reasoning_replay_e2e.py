"""Reasoning carried across turns, end to end: the real llama-server with llama.cpp's Qwen3 chat template (which
renders an assistant turn's ``reasoning_content`` as ``<think>…</think>`` when the turn follows the last user query)
and ``--reasoning-format deepseek``.

Turn 1 is the real model thinking and calling a tool: the conversation already holds two such steps (reasoning, then
a ``get_weather`` call, then its result), and SmolLM2 copies the pattern — ``<think>…</think>`` and a ``<tool_call>``,
which llama-server splits into ``reasoning_content`` and ``tool_calls`` (``logit_bias`` bans the token ``response``,
which otherwise starts a ``<tool_response>``; see REAL-LLAMA-SERVER.md). Turn 2 is Copilot's follow-up: the whole
conversation without any ``reasoning_content``, then the tool result. What proves the reasoning reached the model is
llama-server's own rendering: the follow-up's ``prompt_tokens`` are larger by at least the reasoning's tokens than the
same follow-up with another API key or with ``thinking.replay: off``, and the upstream request llamashim recorded
(``log.record``), rendered by llama-server's ``/apply-template``, holds ``<think>`` + the reasoning in that turn.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion
from twisted.internet.task import Clock

from llamashim.chat.reasoning_memory import ReasoningMemory
from llamashim.testing.provision import RealLlamaPaths, chat_template
from tests.e2e.conftest import RealLlama, _llama_server
from tests.e2e.daemon import Daemon, StartShim

KEYS = ["sk-alice-123456", "sk-bob-12345678"]
TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}}
ASK: Any = {"model": "any", "tools": [TOOL], "temperature": 0, "extra_body": {"logit_bias": [[7639, False]]}}


@pytest.fixture(scope="module")
def thinker(real_llama_paths: RealLlamaPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLlama]:
    """A second real llama-server: llama.cpp's Qwen3 template, reasoning extracted from ``<think>`` tags."""
    paths = replace(real_llama_paths, template=str(chat_template("Qwen-Qwen3-0.6B.jinja")))
    log_path = tmp_path_factory.mktemp("llama-server-qwen3") / "llama-server.log"
    with _llama_server(paths, log_path, "-c", "4096", "-np", "2", "--reasoning-format", "deepseek") as llama:
        yield llama


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def _steps(reasoning: bool) -> list[dict[str, Any]]:
    """The conversation so far: a question, then two steps of thinking and a tool call with its result (which
    names the next city, so the model's own step is a new one: Paris)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You answer every question by calling a tool."},
        {"role": "user", "content": "Weather in Rome, Berlin and Paris?"}]
    for i, (city, weather) in enumerate([("Rome", "sunny. Next: Berlin"), ("Berlin", "rainy. Next: Paris")]):
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}
        turn: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [call]}
        if reasoning:
            turn["reasoning_content"] = f"I need the weather in {city}, so I call get_weather for {city}."
        messages += [turn, {"role": "tool", "tool_call_id": f"call_{i}", "content": f"{city}: {weather}"}]
    return messages


def _think_and_call(shim: Daemon, key: str) -> tuple[str, list[dict[str, Any]]]:
    """Turn 1, streamed through llamashim: the real model's reasoning and its tool calls (as the client got them)."""
    client = openai.OpenAI(base_url=shim.url + "/v1", api_key=key, timeout=120, max_retries=0)
    reasoning: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    request: Any = {**ASK, "messages": _steps(True), "max_tokens": 80}
    for chunk in client.chat.completions.create(stream=True, **request):
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            reasoning.append(extra.get("reasoning_content") or "")
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
    return "".join(reasoning), [{"id": c["id"], "type": "function",
                                 "function": {"name": c["name"], "arguments": c["arguments"]}}
                                for _, c in sorted(calls.items())]


def _follow_up(shim: Daemon, key: str, calls: list[dict[str, Any]]) -> int:
    """Turn 2 as Copilot sends it (no reasoning_content anywhere, then the tool result); its prompt_tokens."""
    messages = [*_steps(False), {"role": "assistant", "content": "", "tool_calls": calls},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "Paris: cloudy"}]
    client = openai.OpenAI(base_url=shim.url + "/v1", api_key=key, timeout=120, max_retries=0)
    request: Any = {**ASK, "messages": messages, "max_tokens": 1}
    reply: ChatCompletion = client.chat.completions.create(**request)
    assert reply.usage is not None
    return reply.usage.prompt_tokens


def _upstream_bodies(folder: Path) -> list[Any]:
    """The chat requests llamashim sent upstream, in order (from its recordings)."""
    bodies = []
    for path in sorted(folder.glob("*.json")):  # (named by time)
        for exchange in json.loads(path.read_text())["upstream"]:
            if exchange["path"].endswith("/chat/completions"):
                bodies.append(json.loads(exchange["body"]))
    return bodies


def test_auto_turns_on_for_the_qwen3_template_only(thinker: RealLlama, real_llama: RealLlama) -> None:
    """/props of the Qwen3 server shows a template naming reasoning_content, so ``auto`` applies; the Qwen2.5
    server's does not."""
    with urllib.request.urlopen(thinker.url + "/props", timeout=30) as r:
        template = json.loads(r.read())["chat_template"]
    assert "reasoning_content" in template
    memory = ReasoningMemory(Clock())
    assert memory.applies(template)
    with urllib.request.urlopen(real_llama.url + "/props", timeout=30) as r:
        assert not memory.applies(json.loads(r.read())["chat_template"])


def test_the_reasoning_reaches_the_real_template(thinker: RealLlama, shim_daemon: StartShim, tmp_path: Path) -> None:
    """A Copilot-shaped follow-up through llamashim (auto) reaches llama-server with the first turn's real reasoning
    rendered into its prompt; another API key, and ``thinking.replay: off``, do not."""
    folder = tmp_path / "recordings"
    sections = {"auth": {"api_keys": KEYS}, "log": {"record": str(folder)}}
    with shim_daemon(thinker.url, sections=sections) as shim:
        reasoning, calls = _think_and_call(shim, KEYS[0])
        assert reasoning.strip() and [c["function"]["name"] for c in calls] == ["get_weather"]
        replayed = _follow_up(shim, KEYS[0], calls)
        other_key = _follow_up(shim, KEYS[1], calls)
    assert reasoning.strip() not in shim.log()  # never logged (log.record keeps the conversation, by design)
    with shim_daemon(thinker.url, sections={**sections, "thinking": {"replay": "off"}, "log": {}}) as shim:
        off_reasoning, off_calls = _think_and_call(shim, KEYS[0])
        assert off_reasoning == reasoning
        off = _follow_up(shim, KEYS[0], off_calls)

    reasoning_tokens = len(_post(thinker.url + "/tokenize", {"content": reasoning})["tokens"])
    assert other_key == off
    assert replayed - off >= reasoning_tokens > 0
    sent = _upstream_bodies(folder)
    assert [m.get("reasoning_content") for m in sent[1]["messages"] if m["role"] == "assistant"] == [
        None, None, reasoning]
    assert all("reasoning_content" not in m for m in sent[2]["messages"])
    rendered = _post(thinker.url + "/apply-template", sent[1])["prompt"]
    assert f"<think>\n{reasoning.strip()}\n</think>" in rendered
    assert reasoning.strip() not in _post(thinker.url + "/apply-template", sent[2])["prompt"]
