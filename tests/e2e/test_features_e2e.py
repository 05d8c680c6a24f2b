"""End-to-end: tool calls, reasoning and the Ollama dialect through the real daemon and a real llama-server.

The tool-call recipe (SmolLM2-135M with the Qwen2.5 template) is the one in ``shared/REAL-LLAMA-SERVER.md``: it makes
the tiny model call ``get_weather({"city": "Paris"})`` deterministically.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest

from tests.assemble import assemble
from tests.e2e.daemon import Daemon, StartShim

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}


def _turn(city: str, n: int) -> list[dict[str, Any]]:
    call_id = f"call_{n}"
    return [
        {"role": "user", "content": f"Weather in {city}?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": f"Sunny in {city}."},
    ]


TOOL_REQUEST: dict[str, Any] = dict(
    model="any",
    messages=[
        {"role": "system", "content": "You answer every question by calling a tool."},
        *_turn("Rome", 1),
        *_turn("Berlin", 2),
        {"role": "user", "content": "Weather in Paris?"},
    ],
    tools=[WEATHER_TOOL],
    tool_choice="required",
    temperature=0,
    max_tokens=60,
    extra_body={"logit_bias": [[7639, False]]},
)


@pytest.fixture(scope="module", params=["native", "synthesize"])
def tool_shim(request: pytest.FixtureRequest, real_llama: Any, shim_daemon: StartShim) -> Iterator[Daemon]:
    with shim_daemon(real_llama.url, "--tool-streaming", request.param) as d:
        yield d


def client(d: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=d.url + "/v1", api_key="sk-test", timeout=120, max_retries=0)


def test_tool_call_with_the_sdk_stream_helper(tool_shim: Daemon) -> None:
    """``client.chat.completions.stream`` (the SDK's accumulating helper) assembles the real tool call."""
    with client(tool_shim).chat.completions.stream(**TOOL_REQUEST) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert calls[0].id


def test_tool_call_assembled_by_hand(tool_shim: Daemon) -> None:
    """Assembling ``delta.tool_calls`` by index, as Open Interpreter and n8n do, gives the same call."""
    got = assemble(client(tool_shim).chat.completions.create(stream=True, **TOOL_REQUEST))
    assert got.finish == "tool_calls"
    assert list(got.calls) == [0]
    assert got.calls[0]["name"] == "get_weather" and got.calls[0]["id"]
    assert json.loads(got.calls[0]["arguments"]) == {"city": "Paris"}


def test_non_streamed_tool_call(tool_shim: Daemon) -> None:
    """A non-streamed request gets the real model's function call with an id and the Paris arguments."""
    reply = client(tool_shim).chat.completions.create(**TOOL_REQUEST)
    call = (reply.choices[0].message.tool_calls or [])[0]
    assert call.type == "function" and call.id
    assert json.loads(call.function.arguments) == {"city": "Paris"}


# -- reasoning ---------------------------------------------------------------------------------------------------

THINK_REQUEST: dict[str, Any] = dict(
    model="any",
    messages=[
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nLet me think."},
    ],
    max_tokens=24,
    temperature=0,
    stream=True,
)


def _raw_stream(d: Daemon, mode: str) -> bytes:
    body = dict(THINK_REQUEST)
    req = urllib.request.Request(
        d.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Llamashim-Thinking": mode},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return bytes(r.read())


def _contents(raw: bytes) -> tuple[str, str, str]:
    """(content, reasoning_content, thinking-event text) of an SSE stream."""
    content = reasoning = events = ""
    for frame in raw.split(b"\n\n"):
        lines = frame.split(b"\n")
        if lines[0] == b"event: thinking":
            events += json.loads(lines[1][len(b"data: ") :])["content"]
            continue
        if not lines[0].startswith(b"data: {"):
            continue
        value = json.loads(lines[0][len(b"data: ") :])
        for choice in value.get("choices", []):
            delta = choice.get("delta", {})
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
    return content, reasoning, events


def test_inline_think_from_a_real_server_in_every_mode(shim: Daemon) -> None:
    """The real server streams ``<think>`` inline (assistant prefill); each mode routes it as documented."""
    default = _contents(_raw_stream(shim, "default"))
    assert "<think>" in default[0] or default[0]  # passed as sent
    show = _contents(_raw_stream(shim, "show_reasoning"))
    assert "<think>" not in show[0]
    events = _contents(_raw_stream(shim, "events"))
    assert "<think>" not in events[0]
    off = _contents(_raw_stream(shim, "off"))
    assert "<think>" not in off[0] and not off[1] and not off[2]
    if "</think>" in default[0]:
        # the model closed its thought: the answer after it is the same in every mode
        answer = default[0].split("</think>", 1)[1]
        assert off[0] == answer
        assert show[0].startswith("💭 ") and show[0].endswith(answer)
        assert events[0] == answer and events[2]
    else:
        # an unterminated thought is all reasoning
        assert show[0].startswith("💭 ")
        assert events[2] and not events[0]


def test_openai_sdk_parses_every_thinking_mode(shim: Daemon) -> None:
    """In every thinking mode the SDK reads the real server's stream without raising and gets some chunk."""
    for mode in ("default", "show_reasoning", "events", "both", "off"):
        c = openai.OpenAI(
            base_url=shim.url + "/v1", api_key="x", timeout=120, max_retries=0,
            default_headers={"X-Llamashim-Thinking": mode},
        )
        chunks = list(c.chat.completions.create(**{k: v for k, v in THINK_REQUEST.items()}))
        assert chunks, mode


# -- Ollama dialect ----------------------------------------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def test_copilot_byok_sequence(shim: Daemon) -> None:
    """What VS Code Copilot's Ollama provider does, in order, against llamashim in front of a real llama-server."""
    version = _get(shim.url + "/api/version")["version"]
    assert tuple(int(x) for x in version.split(".")[:3]) >= (0, 6, 4)
    tags = _get(shim.url + "/api/tags")
    model_id = tags["models"][0]["model"]
    show = _post(shim.url + "/api/show", {"model": model_id})
    assert "tools" in show["capabilities"] and "completion" in show["capabilities"]
    assert "vision" not in show["capabilities"]
    info = show["model_info"]
    arch = info["general.architecture"]
    assert info[f"{arch}.context_length"] > 0 and info["general.basename"]
    # Copilot then streams chat with include_usage, no max_tokens, many tools and an empty bearer key
    # (32 here: the real 135M model has a 4k context per slot; 128 tools are tested against the fake).
    tools = [{**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "name": f"tool_{i}"}} for i in range(32)]
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": "Say hi."}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": tools,
    }
    conn = http.client.HTTPConnection("127.0.0.1", shim.port, timeout=120)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body),
        {"Content-Type": "application/json", "Authorization": "Bearer "},
    )
    resp = conn.getresponse()
    assert resp.status == 200
    raw = resp.read()
    conn.close()
    text, usage = "", None
    frames = [f for f in raw.split(b"\n\n") if f.startswith(b"data: ")]
    assert frames[-1] == b"data: [DONE]"
    for frame in frames[:-1]:
        value = json.loads(frame[6:])
        usage = value.get("usage") or usage
        for choice in value["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for tc in delta.get("tool_calls") or []:
                text += tc.get("function", {}).get("arguments") or ""
    assert text and usage is not None


def test_ollama_client_chat_streamed_and_not(shim: Daemon) -> None:
    """The ollama client chats by listed name and with :latest, streamed or not, getting content, done, counts."""
    cl = ollama.Client(host=shim.url, timeout=120)
    names = [m.model for m in cl.list().models]
    assert names
    friendly = names[0]
    assert friendly is not None
    reply = cl.chat(model=friendly, messages=[{"role": "user", "content": "Say hi."}], options={"num_predict": 8})
    assert reply.message.content and reply.done and reply.eval_count
    parts = list(
        cl.chat(
            model=friendly + ":latest",
            messages=[{"role": "user", "content": "Say hi."}],
            stream=True,
            options={"num_predict": 8, "temperature": 0},
        )
    )
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert parts[-1].prompt_eval_count and parts[-1].eval_count
    assert "".join(p.message.content or "" for p in parts)


def _ollama_turn(city: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"Weather in {city}?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": city}}}]},
        {"role": "tool", "content": f"Sunny in {city}.", "tool_name": "get_weather"},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_client_real_tool_call(shim: Daemon, stream: bool) -> None:
    """The recipe's real get_weather call, in Ollama's shape: arguments come back as a dict."""
    cl = ollama.Client(host=shim.url, timeout=120)
    model = cl.list().models[0].model
    assert model is not None
    messages = [
        {"role": "system", "content": "You answer every question by calling a tool."},
        *_ollama_turn("Rome"), *_ollama_turn("Berlin"),
        {"role": "user", "content": "Weather in Paris?"},
    ]
    options = {"temperature": 0, "num_predict": 60, "logit_bias": [[7639, False]]}
    if stream:
        parts = list(cl.chat(model=model, messages=messages, tools=[WEATHER_TOOL], options=options, stream=True))
        calls = [c for p in parts for c in (p.message.tool_calls or [])]
        assert parts[-1].done
    else:
        reply = cl.chat(model=model, messages=messages, tools=[WEATHER_TOOL], options=options)
        calls = list(reply.message.tool_calls or [])
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments, dict) and dict(calls[0].function.arguments) == {"city": "Paris"}


def test_ollama_client_generate_and_embed(shim: Daemon) -> None:
    """The ollama client's generate (both ways), embed and legacy embeddings work; vectors have one size."""
    cl = ollama.Client(host=shim.url, timeout=120)
    model = cl.list().models[0].model
    assert model is not None
    gen = cl.generate(model=model, prompt="Say hi.", options={"num_predict": 6, "temperature": 0})
    assert gen.done and gen.response
    parts = list(cl.generate(model=model, prompt="Say hi.", options={"num_predict": 6}, stream=True))
    assert parts[-1].done and "".join(p.response or "" for p in parts)
    emb = cl.embed(model=model, input=["hello", "world"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 100
    legacy = cl.embeddings(model=model, prompt="hello")
    assert len(legacy.embedding) == len(emb.embeddings[0])


def test_agent_loop_tool_call_then_result_then_answer(tool_shim: Daemon) -> None:
    """An agent loop through llamashim: the model calls the tool, gets the result, and answers in the next turn."""
    c = client(tool_shim)
    call = assemble(c.chat.completions.create(stream=True, **TOOL_REQUEST)).calls[0]
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    messages = [
        *TOOL_REQUEST["messages"],
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 24 degrees."},
    ]
    final = c.chat.completions.create(model="any", messages=messages, max_tokens=30, temperature=0)
    assert final.choices[0].message.content or final.choices[0].message.tool_calls
