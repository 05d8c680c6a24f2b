"""The context pre-check's pure decision (llamashim/chat/context.py) and a context overflow in each dialect's words."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from llamashim import jsonutil
from llamashim.chat.context import needs_count, overflows, refusal, token_bound
from llamashim.dialects.anthropic.dialect import ANTHROPIC
from llamashim.dialects.ollama.dialect import OLLAMA
from llamashim.dialects.openai_chat.dialect import OPENAI
from llamashim.dialects.responses.dialect import RESPONSES
from llamashim.errors import ContextOverflow, ShimError, context_overflow, is_context_error
from llamashim.stream.items import StreamError

LLAMA = "request (9000 tokens) exceeds the available context size (4096 tokens), try increasing it"
OPENAI_WORDS = ("This model's maximum context length is 4096 tokens. However, your messages resulted in 9000 "
                "tokens. Please reduce the length of the messages.")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city. Ünïcödé: 天気",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "A city"},
                                                    "days": {"type": "array", "items": {"type": "integer"}}},
                   "required": ["city"]}}}


def _chatml(body: dict[str, Any]) -> str:
    """What Qwen2.5's template renders (tools as ``tojson``, with Python's ", " and ": " separators)."""
    out = ""
    if body.get("tools"):
        out += ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n"
                "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
        out += "".join("\n" + json.dumps(t, ensure_ascii=False) for t in body["tools"])
        out += ("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                "<args-json-object>}\n</tool_call><|im_end|>\n")
    for m in body["messages"]:
        out += f"<|im_start|>{m['role']}\n{m.get('content') or ''}"
        for call in m.get("tool_calls") or ():
            args = json.dumps(json.loads(call["function"]["arguments"]), ensure_ascii=False)
            out += f'\n<tool_call>\n{{"name": "{call["function"]["name"]}", "arguments": {args}}}\n</tool_call>'
        out += "<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def _llama31(body: dict[str, Any]) -> str:
    """What Llama 3.1's template renders (tools as ``tojson(indent=4)`` in the first user turn, a dated system)."""
    out = ("<|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\n"
           "Today Date: 26 Jul 2024\n\n<|eot_id|>")
    tools = "".join(json.dumps(t, ensure_ascii=False, indent=4) + "\n\n" for t in body.get("tools") or ())
    for i, m in enumerate(body["messages"]):
        content = m.get("content") or ""
        if i == 0 and tools:
            content = ("Given the following functions, please respond with a JSON for a function call with its proper "
                       "arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function "
                       "name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n"
                       + tools + content)
        for call in m.get("tool_calls") or ():
            content += json.dumps({"name": call["function"]["name"],
                                   "parameters": json.loads(call["function"]["arguments"])}, ensure_ascii=False)
        out += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{content}<|eot_id|>"
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n"


CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                     "arguments": '{"city":"Paris","days":[1,2,3,4,5,6,7,8,9]}'}}
BODIES = [
    {"messages": [{"role": "user", "content": "Hi"}]},
    {"messages": [{"role": "system", "content": "Be brief.\n\n\t"},
                  {"role": "user", "content": "日本語のテキスト 🙂" * 40}]},
    {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "c1", "content": '{"t":[1,2,3]}'}], "tools": [WEATHER] * 3},
    {"messages": [{"role": "user", "content": ""}] * 30, "tools": [WEATHER]},
]


@pytest.mark.parametrize("render", [_chatml, _llama31])
@pytest.mark.parametrize("body", BODIES)
def test_the_bound_covers_what_templates_render(render: Callable[[dict[str, Any]], str], body: dict[str, Any]
                                                ) -> None:
    """token_bound ≥ the rendered prompt's UTF-8 bytes + BOS/EOS (no tokenizer yields more tokens than bytes)."""
    assert token_bound(body) >= len(render(body).encode("utf-8")) + 2


def test_overflows_is_llama_servers_own_test() -> None:
    """A prompt of window − 1 tokens fits; window tokens or more does not (llama-server: n_tokens >= n_ctx)."""
    assert not overflows(4095, 4096)
    assert overflows(4096, 4096) and overflows(9000, 4096)


def test_refusal_carries_the_numbers_in_openais_words() -> None:
    """refusal: a 400 ContextOverflow (code context_length_exceeded, OpenAI's message) or None when it fits."""
    err = refusal(9000, 4096)
    assert isinstance(err, ContextOverflow) and (err.prompt_tokens, err.window) == (9000, 4096)
    assert (err.status, err.type, err.code, err.message) == (400, "invalid_request_error", "context_length_exceeded",
                                                             OPENAI_WORDS)
    assert refusal(4095, 4096) is None


def test_needs_count_only_when_the_bound_does_not_fit() -> None:
    """No window, no count; a bound under the window, no count; a bound at or over it, a count."""
    small = {"messages": [{"role": "user", "content": "Hi"}]}
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert not needs_count(big, None)
    assert not needs_count(small, 4096)
    assert needs_count(big, 4096)
    assert needs_count(small, token_bound(small))


@pytest.mark.parametrize(
    ("message", "type_", "expected"),
    [
        (LLAMA, "exceed_context_size_error", (9000, 4096)),
        ("input (600 tokens) is larger than the max context size (512 tokens). skipping", "server_error", (600, 512)),
        (OPENAI_WORDS, "invalid_request_error", (9000, 4096)),
        ('{"error":{"type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":4096,"message":"x"}}', "x",
         (9000, 4096)),
        ("the request exceeds the available context size, try increasing it", "exceed_context_size_error", None),
        ("Jinja Exception: System message must be at the beginning", "server_error", None),
    ],
)
def test_context_overflow_recognises_every_wording(message: str, type_: str, expected: tuple[int, int] | None
                                                   ) -> None:
    """llama-server's two refusals, its fields in a body and OpenAI's words all give (prompt, window); others None."""
    found = context_overflow(StreamError(message, type_, 400))
    assert (None if found is None else (found.prompt_tokens, found.window)) == expected


def test_a_refusal_without_numbers_is_still_a_context_error() -> None:
    """An older build's bare exceed_context_size_error is a context error (for the codes) without numbers."""
    vague = ShimError(400, "the request exceeds the available context size", "exceed_context_size_error")
    assert is_context_error(vague) and context_overflow(vague) is None
    assert not is_context_error(ShimError(400, "bad input"))


OVERFLOWS = [ContextOverflow(9000, 4096), ShimError(400, LLAMA, "exceed_context_size_error")]


@pytest.mark.parametrize("err", OVERFLOWS)
def test_each_dialect_words_an_overflow_before_the_first_byte(err: ShimError) -> None:
    """The pre-check's refusal and llama-server's own: OpenAI chat, Responses, Anthropic and Ollama words, 400."""
    assert jsonutil.loads(OPENAI.error_body(err)) == {"error": {
        "message": OPENAI_WORDS, "type": "invalid_request_error", "param": "messages",
        "code": "context_length_exceeded"}}
    assert jsonutil.loads(RESPONSES.error_body(err)) == {"error": {
        "message": "Your input exceeds the context window of this model. Please adjust your input and try again. "
                   "(The input is 9000 tokens; the context window is 4096 tokens.)",
        "type": "invalid_request_error", "code": "context_length_exceeded", "param": None}}
    assert ANTHROPIC.error_status(err) == 400
    assert jsonutil.loads(ANTHROPIC.error_body(err)) == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 9000 tokens > 4096 maximum"}}
    assert jsonutil.loads(OLLAMA.error_body(err)) == {
        "error": "the input length exceeds the context length (9000 tokens; the context length is 4096)"}
    assert all(d.error_status(err) == 400 for d in (OPENAI, RESPONSES, OLLAMA))


@pytest.mark.parametrize("message", [OPENAI_WORDS, LLAMA])
def test_each_dialect_words_an_overflow_after_the_first_byte(message: str) -> None:
    """A started stream's terminal frame says the overflow in the same words (from the message alone)."""
    err = StreamError(message, "invalid_request_error", "context_length_exceeded")
    assert b'"code":"context_length_exceeded"' in OPENAI.stream_error(err)
    assert b"However, your messages resulted in 9000 tokens" in OPENAI.stream_error(err)
    assert b"prompt is too long: 9000 tokens > 4096 maximum" in ANTHROPIC.stream_error(err)
    assert b'"code":"context_length_exceeded"' in RESPONSES.stream_error(err)
    assert b"Your input exceeds the context window of this model." in RESPONSES.stream_error(err)
    assert OLLAMA.stream_error(err) == (b'{"error":"the input length exceeds the context length (9000 tokens; the '
                                        b'context length is 4096)"}\n')
