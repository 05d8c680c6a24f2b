"""The Ollama mapping: requests, NDJSON encoding, metadata — parsed by the ``ollama`` package's own models."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ollama._types import ChatResponse, EmbedResponse, ListResponse, ProcessResponse, ShowResponse

from llamashim.dialects.ollama.embeddings import embed_body, embed_request
from llamashim.dialects.ollama.encoder import OllamaChatEncoder, chat_reply_to_ollama, load_reply, now_iso
from llamashim.dialects.ollama.metadata import capabilities, ps_body, show_body, tags_body
from llamashim.dialects.ollama.request import chat_request_to_openai, generate_request_to_openai
from llamashim.errors import BadRequest
from llamashim.stream.items import Chunk, Done, StreamError
from llamashim.upstream.models import ModelIndex

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROPS = json.loads((FIXTURES / "real_props.json").read_text())
MODELS = json.loads((FIXTURES / "real_models.json").read_text())
MODEL_ID = MODELS["data"][0]["id"]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


def test_chat_request_mapping() -> None:
    """An Ollama chat body maps to OpenAI: images, tool calls and ids, format, options; unknown options reported."""
    body = {
        "model": "m:latest",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is this?", "images": [PNG]},
            {"role": "assistant", "content": "", "thinking": "hmm",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "format": {"type": "object"},
        "options": {"temperature": 0.1, "num_predict": 5, "top_k": 3, "seed": 7, "stop": ["x"], "num_ctx": 8192},
        "keep_alive": "5m",
        "think": True,
    }
    out, ignored = chat_request_to_openai(body)
    assert out["model"] == "m:latest" and out["stream"] is True and out["stream_options"] == {"include_usage": True}
    user = out["messages"][1]["content"]
    assert user[0] == {"type": "text", "text": "what is this?"}
    assert user[1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    call = out["messages"][2]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"} and call["type"] == "function"
    assert out["messages"][3]["tool_call_id"] == call["id"] and out["messages"][3]["name"] == "get_weather"
    assert out["response_format"]["type"] == "json_schema"
    assert (out["temperature"], out["max_tokens"], out["top_k"], out["seed"], out["stop"]) == (0.1, 5, 3, 7, ["x"])
    assert ignored == ["num_ctx"] and out["tools"] == body["tools"]


def test_generate_request_mapping() -> None:
    """A templated generate body maps to system and user messages and json format; stream false, no options."""
    out, _ = generate_request_to_openai(
        {"model": "m", "prompt": "hi", "system": "sys", "format": "json", "stream": False}
    )
    assert out["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert out["response_format"] == {"type": "json_object"} and "input_suffix" not in out
    assert out["stream"] is False and "stream_options" not in out


@pytest.mark.parametrize(
    "body",
    [{}, {"model": 3}, {"model": "m", "messages": "x"}, {"model": "m", "messages": [{"content": "x"}]},
     {"model": "m", "options": [1]}, {"model": "m", "format": 3}, {"model": "m", "stream": "yes"},
     {"model": "m", "messages": [{"role": "user", "images": "x"}]}],
)
def test_bad_requests_are_400(body: dict[str, Any]) -> None:
    """Malformed chat bodies (model, messages, options, format, stream, images) raise BadRequest."""
    with pytest.raises(BadRequest):
        chat_request_to_openai(body)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_mapping_never_raises_anything_but_a_400(value: Any) -> None:
    """For arbitrary JSON, chat and generate mapping either succeed or raise BadRequest, never another error."""
    for body in (value, {"model": "m", "messages": value}, {"model": "m", "messages": [value]},
                 {"model": "m", "options": value, "format": value}):
        if not isinstance(body, dict):
            continue
        for mapper in (chat_request_to_openai, generate_request_to_openai):
            try:
                mapper(body)
            except BadRequest:
                pass


def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_encoder_lines_parse_as_ollama_chat_responses() -> None:
    """Encoded NDJSON lines validate as ChatResponses with thinking, content, tool calls, counts, durations."""
    enc = OllamaChatEncoder("m", lambda: 1_700_000_000.0)
    out = enc([
        chunk({"role": "assistant", "content": None}),
        chunk({"reasoning_content": "hmm"}),
        chunk({"content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "a", "type": "function",
                               "function": {"name": "f", "arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({}, "tool_calls"),
        Chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4},
               "timings": {"prompt_ms": 1.5, "predicted_ms": 20.0}}),
        Done(),
    ])
    lines = [ChatResponse.model_validate(json.loads(line)) for line in out.splitlines()]
    assert [line.message.thinking for line in lines[:-1]] == ["hmm", None]
    assert [line.message.content for line in lines[:-1]] == ["", "Hi"]
    last = lines[-1]
    assert last.done and last.done_reason == "stop"
    assert last.message.tool_calls is not None and dict(last.message.tool_calls[0].function.arguments) == {"x": 1}
    assert (last.prompt_eval_count, last.eval_count) == (3, 4)
    assert (last.prompt_eval_duration, last.eval_duration, last.total_duration) == (1_500_000, 20_000_000, 21_500_000)
    assert json.loads(out.splitlines()[0])["created_at"].startswith("2023-11-14T22:13:20")


def test_encoder_error_line_and_length() -> None:
    """A length finish gives done_reason length (generate shape); a stream error ends with an error line."""
    enc = OllamaChatEncoder("m", lambda: 0.0, generate=True)
    out = enc([chunk({"content": "a"}), chunk({}, "length"), Done()])
    last = json.loads(out.splitlines()[-1])
    assert last["done_reason"] == "length" and last["response"] == ""
    enc = OllamaChatEncoder("m", lambda: 0.0)
    assert enc([chunk({"content": "a"}), StreamError("boom")]).splitlines()[-1] == b'{"error":"boom"}'


def test_non_streamed_reply() -> None:
    """A non-streamed OpenAI tool-call reply becomes a done ChatResponse with dict arguments and token counts."""
    reply = json.loads((FIXTURES / "real_tool_reply.json").read_text())
    out = chat_reply_to_ollama(reply, "m", 0.0)
    parsed = ChatResponse.model_validate(out)
    assert parsed.done and parsed.message.tool_calls
    assert dict(parsed.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert parsed.prompt_eval_count == reply["usage"]["prompt_tokens"]


@pytest.mark.parametrize("generate", [False, True])
@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_non_streamed_reply_is_the_streams_fold(key: str, generate: bool) -> None:
    """A non-streamed reply gives the text, thinking (from either reasoning key), calls and counts its stream's
    lines add up to: one encoder builds both."""
    call = {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    message = {"role": "assistant", "content": "Hi", key: "hmm", "tool_calls": [call]}
    reply = {"choices": [{"index": 0, "message": message, "finish_reason": "length"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 4}, "timings": {"prompt_ms": 1.5, "predicted_ms": 2.0}}
    whole = chat_reply_to_ollama(reply, "m", 7.25, generate)
    streamed = [json.loads(line) for line in OllamaChatEncoder("m", lambda: 7.25, generate)([
        chunk({key: "hmm"}), chunk({"content": "Hi"}), chunk({"tool_calls": [{"index": 0, **call}]}),
        chunk({}, "length"), Chunk({"choices": [], "usage": reply["usage"], "timings": reply["timings"]}), Done(),
    ]).splitlines()]
    text_key = "response" if generate else "message"
    last = streamed[-1]
    if generate:
        assert whole["response"] == "Hi" and whole["thinking"] == "hmm"
    else:
        assert whole["message"] == {**last["message"], "content": "Hi", "thinking": "hmm"}
        assert whole["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"x": 1}}, "id": "a"}]
    assert {k: v for k, v in whole.items() if k not in (text_key, "thinking")} == {
        k: v for k, v in last.items() if k != text_key}
    assert (whole["done_reason"], whole["eval_count"], whole["created_at"]) == ("length", 4, now_iso(7.25))


def test_created_at_formats_each_second_and_its_fraction() -> None:
    """created_at is UTC with microseconds; a later or earlier second is formatted anew, not reused."""
    assert now_iso(1_700_000_000.5) == "2023-11-14T22:13:20.500000Z"
    assert now_iso(1_700_000_001.25) == "2023-11-14T22:13:21.250000Z"
    assert now_iso(1_700_000_000.0) == "2023-11-14T22:13:20.000000Z"
    assert now_iso(0.000001) == "1970-01-01T00:00:00.000001Z"


def index_of(models_json: Any, props: Any = PROPS) -> ModelIndex:
    index = ModelIndex()
    index.set_upstream("u", models_json, props)
    return index


def test_metadata_from_a_real_server() -> None:
    """Tags, show and ps from real llama-server metadata validate, under one friendly name for name and model;
    capabilities follow props; parameters carry num_ctx, the stop string and the default sampling settings."""
    models = index_of(MODELS).models()
    tags = ListResponse.model_validate(tags_body(models, lambda m: PROPS))
    assert tags.models[0].model == "SmolLM2-135M-Instruct.Q4_1"
    assert tags_body(models, lambda m: PROPS)["models"][0]["name"] == "SmolLM2-135M-Instruct.Q4_1"
    shown = show_body(models[0], PROPS)
    parsed = ShowResponse.model_validate(shown)
    assert parsed.capabilities == ["completion", "tools"]
    assert parsed.modelinfo is not None
    assert parsed.modelinfo["llama.context_length"] == PROPS["default_generation_settings"]["n_ctx"]
    assert parsed.modelinfo["general.basename"] == "SmolLM2-135M-Instruct.Q4_1"
    params = dict(line.split(None, 1) for line in (parsed.parameters or "").splitlines())
    assert params["num_ctx"] == str(PROPS["default_generation_settings"]["n_ctx"])
    assert "temperature" in params and params["stop"] == json.dumps(PROPS["eos_token"])
    no_tools = {**PROPS, "chat_template_caps": {"supports_tools": False}, "modalities": {"vision": True}}
    assert capabilities(no_tools) == ["completion", "vision"]
    ps = ProcessResponse.model_validate(ps_body(models, lambda m: PROPS))
    assert ps.models[0].model == "SmolLM2-135M-Instruct.Q4_1"
    assert ps.models[0].context_length == PROPS["default_generation_settings"]["n_ctx"]


@pytest.mark.parametrize(
    "shape",
    [MODELS, {"data": MODELS["data"]}, MODELS["data"], {"models": MODELS["models"]}],
)
def test_every_models_shape(shape: Any) -> None:
    """Every /v1/models shape llama-server may send gives the same one model under its friendly name."""
    assert index_of(shape).names() == ["SmolLM2-135M-Instruct.Q4_1"]


def test_router_mode_ps_lists_only_loaded_models() -> None:
    """A router-mode upstream's unloaded models are in /api/tags but not in /api/ps."""
    router = {"data": [{"id": "alpha", "status": {"value": "loaded"}}, {"id": "beta", "status": {"value": "unloaded"}}]}
    models = index_of(router, None).models()
    assert [m["name"] for m in tags_body(models, lambda m: None)["models"]] == ["alpha", "beta"]
    assert [m["name"] for m in ps_body(models, lambda m: None)["models"]] == ["alpha"]


def test_load_and_unload_replies() -> None:
    """An empty chat or generate answers Ollama's load / unload reply, valid for the ollama package."""
    ChatResponse.model_validate(load_reply("m", 0.0, False, "unload"))
    assert load_reply("m", 0.0, True, "load")["done_reason"] == "load"


def test_embeddings() -> None:
    """Embed replies map to the new and legacy shapes; embed input passes as is; a list legacy prompt is a 400."""
    reply = {"data": [{"embedding": [0.1, 0.2]}, {"embedding": [0.3, 0.4]}], "usage": {"prompt_tokens": 2}}
    EmbedResponse.model_validate(embed_body(reply, "m", legacy=False))
    assert embed_body(reply, "m", legacy=True) == {"embedding": [0.1, 0.2]}
    assert embed_request({"model": "m", "input": ["a"]}, False) == {"model": "m", "input": ["a"]}
    with pytest.raises(BadRequest):
        embed_request({"model": "m", "prompt": ["a"]}, True)


def test_llama_server_sampling_options_pass_through() -> None:
    """llama-server options (logit_bias, grammar) pass through to the request; unknown ones are reported."""
    out, ignored = chat_request_to_openai(
        {"model": "m", "messages": [], "options": {"logit_bias": [[7639, False]], "grammar": "root ::= x", "mmap": 1}},
    )
    assert out["logit_bias"] == [[7639, False]] and out["grammar"] == "root ::= x" and ignored == ["mmap"]
