"""End-to-end: the OpenAI Responses dialect (``/v1/responses``) through the real daemon and a real llama-server.

Driven by the real ``openai`` Python package (and, for one streamed answer, the JavaScript one). The tool-call recipe
is the chat one of ``shared/REAL-LLAMA-SERVER.md`` translated to Responses items, except that Responses has no
``logit_bias`` (llamashim drops unknown fields) and a named ``tool_choice`` does not help this llama-server build:
what makes SmolLM2-135M call ``get_weather`` every time is a trailing assistant ``message`` item holding
``<tool_call>\\n`` — llama-server continues that prefill and parses the call it completes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.daemon import Daemon, StartShim

HERE = Path(__file__).parent / "node"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    },
}


def _turn(city: str, n: int) -> list[dict[str, Any]]:
    call_id = f"call_{n}"
    return [
        {"type": "message", "role": "user", "content": f"Weather in {city}?"},
        {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": json.dumps({"city": city})},
        {"type": "function_call_output", "call_id": call_id, "output": f"Sunny in {city}."},
    ]


TOOL_REQUEST: dict[str, Any] = dict(
    model="any",
    instructions="You answer every question by calling a tool.",
    input=[
        *_turn("Rome", 1),
        *_turn("Berlin", 2),
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "message", "role": "assistant", "content": "<tool_call>\n"},
    ],
    tools=[WEATHER_TOOL],
    tool_choice="required",
    temperature=0,
    max_output_tokens=60,
)


@pytest.fixture(scope="module")
def shim(real_llama: Any, shim_daemon: StartShim) -> Iterator[Daemon]:
    with shim_daemon(real_llama.url, "--verbose") as d:
        yield d


def client(d: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=d.url + "/v1", api_key="sk-test", timeout=120, max_retries=0)


def upstream_bodies(d: Daemon) -> list[dict[str, Any]]:
    """The chat bodies llamashim sent upstream, from its ``--verbose`` log (``... request: {json}``)."""
    out = []
    for line in d.log().splitlines():
        _, sep, body = line.partition("] request: ")
        if sep:
            out.append(json.loads(body))
    return out


def test_create_non_streamed_text(shim: Daemon) -> None:
    """``responses.create`` returns the real model's text as a message item with usage."""
    r = client(shim).responses.create(model="any", input="Say hello.", max_output_tokens=16, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status in ("completed", "incomplete")
    assert r.output[0].type == "message" and r.output_text
    assert r.usage is not None and r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 16


def test_stream_to_the_final_response(shim: Daemon) -> None:
    """``responses.stream()`` runs to ``response.completed``; the final response holds the streamed text."""
    deltas: list[str] = []
    with client(shim).responses.stream(
        model="any", input="Say hello.", max_output_tokens=256, temperature=0
    ) as stream:
        kinds = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) and final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_real_tool_call(shim: Daemon, stream: bool) -> None:
    """The real model's call comes back as one ``function_call`` item whose arguments match the schema."""
    c = client(shim)
    if stream:
        with c.responses.stream(**TOOL_REQUEST) as s:
            for _ in s:
                pass
            r = s.get_final_response()
    else:
        r = c.responses.create(**TOOL_REQUEST)
    assert r.status == "completed"
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1, r.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    args = json.loads(call.arguments)
    assert args == {"city": "Paris"}
    assert isinstance(args["city"], str) and len(args["city"]) <= 20


def test_previous_response_id_sends_the_stored_conversation(shim: Daemon) -> None:
    """A follow-up with ``previous_response_id`` reaches llama-server with the stored first turn in front of it."""
    c = client(shim)
    first = c.responses.create(
        model="any", input="My name is Zorblax. Say hi.", max_output_tokens=8, temperature=0
    )
    second = c.responses.create(
        model="any", previous_response_id=first.id, input="What is my name?", max_output_tokens=8, temperature=0
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None
    # the prompt grew by the whole first turn (its input and its answer), not just by the new question
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    sent = [b for b in upstream_bodies(shim) if "What is my name?" in json.dumps(b)]
    assert sent, "the follow-up never reached the upstream"
    messages = sent[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "My name is Zorblax. Say hi."
    assert messages[1]["content"] == first.output_text
    assert messages[2]["content"] == "What is my name?"


def test_retrieve_input_items_and_delete(shim: Daemon) -> None:
    """A stored response can be retrieved (with its input items), deleted, and is then gone (404)."""
    c = client(shim)
    r = c.responses.create(model="any", input="Say hi.", max_output_tokens=4, temperature=0)
    got = c.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.status == r.status
    items = c.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    c.responses.delete(r.id)  # (a 200: the SDK returns nothing, and raises for anything else)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.delete(r.id)


def test_openai_js_streams_a_responses_answer(shim: Daemon, node_sdks: Path) -> None:
    """The openai JS package's ``responses.stream()`` reaches ``finalResponse()``: text, then a real tool call."""
    script = node_sdks.parent / "responses_stream.mjs"
    shutil.copy(HERE / "responses_stream.mjs", script)
    result = subprocess.run(
        ["node", str(script), shim.url + "/v1", json.dumps(TOOL_REQUEST)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == "completed" and out["text"] and out["text"] == out["deltas"]
    assert out["events"][0] == "response.created" and out["events"][-1] == "response.completed"
    assert out["tool"]["status"] == "completed"
    assert out["tool"]["name"] == "get_weather" and json.loads(out["tool"]["arguments"]) == {"city": "Paris"}


def _metric(d: Daemon, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples in /metrics whose labels include ``labels``."""
    with urllib.request.urlopen(d.url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.split()[-1])
    return total


def test_a_websocket_conversation_compacted_on_its_socket(shim: Daemon) -> None:
    """Over the openai SDK's Responses WebSocket against the real model: a turn, ``response.compact`` on the same
    socket (answered by ``response.compacted`` with the model's summary), a turn on the compacted window; every turn
    is counted in /metrics and has its access line with tokens."""
    turns_before = _metric(shim, "llamashim_requests_total", route="responses_websocket", status="200")
    compactions_before = _metric(shim, "llamashim_requests_total", route="responses_websocket_compact", status="200")
    with client(shim).responses.connect() as conn:
        conn.response.create(model="any", input="Name a colour.", max_output_tokens=16, store=False)
        first = next(e for e in conn if e.type in ("response.completed", "response.incomplete")).response
        conn.send_raw(json.dumps({"type": "response.compact", "model": "any", "previous_response_id": first.id}))
        compacted = json.loads(conn.recv_bytes())
        assert compacted["type"] == "response.compacted", compacted
        window = compacted["response"]["output"]
        assert window and any(item.get("type") == "message" for item in window), window
        conn.response.create(model="any", input=[*window, {"role": "user", "content": "And another?"}],
                             max_output_tokens=16, store=False)
        second = next(e for e in conn if e.type in ("response.completed", "response.incomplete")).response
    assert first.output_text and second.output_text
    assert "And another?" in json.dumps(upstream_bodies(shim)[-1]["messages"][-1])
    assert _metric(shim, "llamashim_requests_total", route="responses_websocket", status="200") == turns_before + 2
    assert _metric(shim, "llamashim_requests_total", route="responses_websocket_compact",
                   status="200") == compactions_before + 1
    lines = [line for line in shim.log().splitlines() if "] WS /v1/responses 200 " in line]
    assert len(lines) >= 3 and all(re.search(r"tokens=\d+/\d+", line) for line in lines[-3:]), lines[-3:]
