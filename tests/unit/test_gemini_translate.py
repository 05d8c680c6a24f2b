"""Gemini API requests → internal chat requests, chat answers → Gemini response objects (streamed and whole), and
Google's error shapes: the pure half of the Gemini dialect."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamashim.dialects.gemini.dialect import GEMINI, status_name
from llamashim.dialects.gemini.encoder import Framing, GeminiEncoder, response_object
from llamashim.dialects.gemini.translate import (
    GeminiRequest,
    count_request,
    embed_dimensions,
    embed_inputs,
    embeddings_reply,
    request_to_chat,
    schema_to_json_schema,
)
from llamashim.errors import BadRequest, ContextOverflow, ShimError
from llamashim.stream.deltas import Finish, ReasoningDelta, TextDelta, ToolCallDelta
from llamashim.stream.items import StreamError
from llamashim.stream.usage import Usage

JSON = dict[str, Any]
HI = [{"role": "user", "parts": [{"text": "Hi"}]}]
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}


def log(*_: Any, **__: Any) -> None:
    pass


def translate(stream: bool = False, **body: Any) -> GeminiRequest:
    return request_to_chat({"contents": HI, **body}, model="gemini-2.5-flash", stream=stream, log=log)


# -- requests ---------------------------------------------------------------------------------------------------


def test_text_turns_and_system_instruction() -> None:
    """systemInstruction becomes one system message; user/model turns become user/assistant messages."""
    contents = [*HI, {"role": "model", "parts": [{"text": "Hello"}, {"text": "!"}]},
                {"role": "user", "parts": [{"text": "Bye"}]}]
    got = translate(contents=contents, systemInstruction={"parts": [{"text": "Be brief."}, {"text": "Be kind."}]})
    assert got.chat_body == {"model": "gemini-2.5-flash", "stream": False, "messages": [
        {"role": "system", "content": "Be brief.\n\nBe kind."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]}


def test_a_stream_asks_for_usage() -> None:
    """A streamed request asks the upstream for a usage chunk (usageMetadata comes from it)."""
    assert translate(stream=True).chat_body["stream_options"] == {"include_usage": True}


def test_inline_images_become_data_urls() -> None:
    """inlineData images become image_url parts with a data URL; http fileData images their URL; others dropped."""
    parts = [{"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
             {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}},
             {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]
    got = translate(contents=[{"role": "user", "parts": parts}])
    assert got.chat_body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]}]
    assert got.dropped == {"inlineData (application/pdf)": 1}


def test_function_calls_and_responses_with_ids() -> None:
    """functionCall parts become the assistant's tool_calls (args as a JSON string), functionResponse parts tool
    messages with the same ids, before the turn's text; thought parts become reasoning_content."""
    contents = [*HI,
                {"role": "model", "parts": [{"text": "Let me look.", "thought": True}, {"text": "Checking."},
                                            {"functionCall": {"id": "c1", "name": "get_weather",
                                                              "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "get_weather",
                                                                 "response": {"output": "Sunny"}}},
                                           {"text": "And?"}]}]
    messages = translate(contents=contents).chat_body["messages"]
    assert messages[1:] == [
        {"role": "assistant", "content": "Checking.", "reasoning_content": "Let me look.",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        {"role": "user", "content": "And?"},
    ]


def test_responses_without_ids_match_their_calls_by_name() -> None:
    """Calls without ids get generated ones; responses without ids answer the first open call of their name."""
    contents = [*HI,
                {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}},
                                            {"functionCall": {"name": "b", "args": {"x": 1}}}]},
                {"role": "function", "parts": [{"functionResponse": {"name": "b", "response": {"v": 2}}},
                                               {"functionResponse": {"name": "a", "response": {"error": "no"}}}]}]
    messages = translate(contents=contents).chat_body["messages"]
    ids = [c["id"] for c in messages[1]["tool_calls"]]
    assert len(set(ids)) == 2
    assert messages[2:] == [{"role": "tool", "tool_call_id": ids[1], "content": '{"v":2}'},
                            {"role": "tool", "tool_call_id": ids[0], "content": "Error: no"}]


def test_schema_to_json_schema() -> None:
    """Gemini's Schema: upper-case types lowered, nullable as a null type, int64 bounds as numbers, recursively."""
    schema = {"type": "OBJECT", "nullable": True, "propertyOrdering": ["xs"], "properties": {
        "xs": {"type": "ARRAY", "minItems": "1", "items": {"type": "STRING", "enum": ["a", "b"]}}}}
    assert schema_to_json_schema(schema) == {"type": ["object", "null"], "properties": {
        "xs": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["a", "b"]}}}}


def test_function_declarations() -> None:
    """parameters (Gemini's Schema) become JSON Schema; parametersJsonSchema is taken as it is; Google's own tools
    are left out; several calls at once are allowed, as Gemini allows them."""
    raw = {"type": "object", "properties": {"q": {"type": "string"}}}
    tools = [{"functionDeclarations": [WEATHER, {"name": "search", "parametersJsonSchema": raw}]},
             {"googleSearch": {}}]
    body = translate(tools=tools).chat_body
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}},
        {"type": "function", "function": {"name": "search", "parameters": raw}},
    ]
    assert body["parallel_tool_calls"] is True and "tool_choice" not in body


@pytest.mark.parametrize(("config", "choice", "names"), [
    ({"mode": "AUTO"}, None, ["get_weather", "search"]),
    ({"mode": "NONE"}, "none", ["get_weather", "search"]),
    ({"mode": "ANY"}, "required", ["get_weather", "search"]),
    ({"mode": "ANY", "allowedFunctionNames": ["search"]}, "required", ["search"]),
])
def test_function_calling_config(config: JSON, choice: Any, names: list[str]) -> None:
    """AUTO/ANY/NONE become tool_choice auto/required/none; allowedFunctionNames narrows the tools (so ANY with one
    allowed name forces that function: llama-server takes "required", not a named function)."""
    tools = [{"functionDeclarations": [WEATHER, {"name": "search"}]}]
    body = translate(tools=tools, toolConfig={"functionCallingConfig": config}).chat_body
    assert body.get("tool_choice") == choice
    assert [t["function"]["name"] for t in body["tools"]] == names


def test_generation_config() -> None:
    """Sampling, maxOutputTokens, stopSequences and seed map to their chat names."""
    config = {"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 64, "stopSequences": ["END"],
              "seed": 7, "candidateCount": 1}
    body = translate(generationConfig=config).chat_body
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "max_tokens", "stop", "seed")} == {
        "temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 64, "stop": ["END"], "seed": 7}


def test_more_than_one_candidate_is_a_400() -> None:
    """candidateCount other than 1 is refused (llama-server answers one candidate)."""
    with pytest.raises(BadRequest, match="candidateCount"):
        translate(generationConfig={"candidateCount": 2})


@pytest.mark.parametrize(("config", "expected"), [
    ({"responseMimeType": "application/json"}, {"type": "json_object"}),
    ({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
     {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}}),
    ({"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {
        "n": {"type": "INTEGER"}}}},
     {"type": "json_schema", "json_schema": {"name": "response", "schema": {
         "type": "object", "properties": {"n": {"type": "integer"}}}}}),
])
def test_json_mode(config: JSON, expected: JSON) -> None:
    """responseMimeType application/json is JSON mode; with a schema (either kind), that JSON Schema."""
    assert translate(generationConfig=config).chat_body["response_format"] == expected


@pytest.mark.parametrize(("thinking", "kwargs", "include"), [
    ({"includeThoughts": True}, None, True),
    ({"thinkingBudget": 0}, {"enable_thinking": False}, False),
    ({"thinkingBudget": 512, "includeThoughts": True}, {"enable_thinking": True}, True),
    ({"thinkingBudget": -1}, {"enable_thinking": True}, False),
])
def test_thinking_config(thinking: JSON, kwargs: JSON | None, include: bool) -> None:
    """thinkingBudget 0 turns the template's thinking off, any other budget on; includeThoughts is remembered."""
    got = translate(generationConfig={"thinkingConfig": thinking})
    assert got.chat_body.get("chat_template_kwargs") == kwargs
    assert got.include_thoughts is include


@pytest.mark.parametrize("body", [
    {"contents": []},
    {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]},
    {"contents": [{"role": "user", "parts": "x"}]},
    {"contents": HI, "tools": [{"functionDeclarations": [{"description": "no name"}]}]},
    {"contents": HI, "generationConfig": {"temperature": "hot"}},
])
def test_malformed_requests_are_400s(body: JSON) -> None:
    """Shapes that cannot be translated are a 400 naming what is wrong."""
    with pytest.raises(BadRequest):
        request_to_chat(body, model="m", stream=False, log=log)


def test_count_tokens_takes_contents_or_a_whole_request() -> None:
    """countTokens counts ``contents``, or a ``generateContentRequest`` with its system instruction and tools."""
    assert count_request({"contents": HI}, model="m", log=log)["messages"] == [{"role": "user", "content": "Hi"}]
    whole = count_request({"generateContentRequest": {"contents": HI, "systemInstruction": {"parts": [{"text": "S"}]},
                                                      "tools": [{"functionDeclarations": [WEATHER]}]}},
                          model="m", log=log)
    assert whole["messages"][0] == {"role": "system", "content": "S"} and whole["tools"]


def test_embeddings() -> None:
    """embedContent embeds one content, batchEmbedContents each request's; outputDimensionality cuts a vector."""
    assert embed_inputs({"content": {"parts": [{"text": "a"}, {"text": "b"}]}}, batch=False) == ["a\nb"]
    body = {"requests": [{"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 2},
                         {"content": {"parts": [{"text": "y"}]}}]}
    assert embed_inputs(body, batch=True) == ["x", "y"]
    reply = {"data": [{"index": 1, "embedding": [4, 5, 6]}, {"index": 0, "embedding": [1, 2, 3]}]}
    assert embeddings_reply(reply, embed_dimensions(body, True), batch=True) == {
        "embeddings": [{"values": [1, 2]}, {"values": [4, 5, 6]}]}
    assert embeddings_reply(reply, [None], batch=False) == {"embedding": {"values": [1, 2, 3]}}


# -- answers ----------------------------------------------------------------------------------------------------

REPLY: JSON = {
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "reasoning_content": "Hmm, weather.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30,
              "prompt_tokens_details": {"cached_tokens": 8}},
}


def test_a_whole_reply() -> None:
    """A chat reply becomes candidates[0].content.parts (thought, text, functionCall with id and args object),
    finishReason, usageMetadata (thoughts estimated apart, cached tokens), modelVersion and responseId."""
    got = response_object(REPLY, "gemini-2.5-flash", "r1")
    assert got["candidates"] == [{"content": {"role": "model", "parts": [
        {"text": "Hmm, weather.", "thought": True}, {"text": "Checking."},
        {"functionCall": {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}}]},
        "index": 0, "finishReason": "STOP"}]
    usage = got["usageMetadata"]
    assert usage["promptTokenCount"] == 20 and usage["totalTokenCount"] == 30
    assert usage["cachedContentTokenCount"] == 8
    assert usage["thoughtsTokenCount"] + usage["candidatesTokenCount"] == 10 and usage["thoughtsTokenCount"] > 0
    assert got["modelVersion"] == "gemini-2.5-flash" and got["responseId"] == "r1"


@pytest.mark.parametrize(("reason", "expected"), [("stop", "STOP"), ("length", "MAX_TOKENS"),
                                                  ("tool_calls", "STOP"), ("content_filter", "SAFETY")])
def test_finish_reasons(reason: str, expected: str) -> None:
    """OpenAI finish reasons map to Gemini's."""
    reply = {"choices": [{"index": 0, "finish_reason": reason, "message": {"content": "x"}}]}
    assert response_object(reply, "m", "r")["candidates"][0]["finishReason"] == expected


def sse_objects(data: bytes) -> list[JSON]:
    frames = data.split(b"\r\n\r\n")
    assert frames[-1] == b""
    assert all(f.startswith(b"data: ") for f in frames[:-1])
    return [json.loads(f[6:]) for f in frames[:-1]]


def stream(framing: Framing) -> tuple[GeminiEncoder, bytes]:
    encoder = GeminiEncoder("m", "r", framing)
    out = encoder.feed_deltas([TextDelta("Hel"), TextDelta("lo")]) + encoder.on_chunk_end()
    out += encoder.feed_deltas([ReasoningDelta("hm")]) + encoder.on_chunk_end()
    out += encoder.feed_deltas([ToolCallDelta(0, "c1", "f", '{"a":'), ToolCallDelta(0, None, None, "1}"),
                                Finish("tool_calls"), Usage(5, 3)]) + encoder.on_chunk_end()
    return encoder, out + encoder.on_done()


def test_sse_stream() -> None:
    """SSE: one data frame (CRLF CRLF) per chunk that said something; the function call whole in the last one,
    with finishReason and usageMetadata."""
    _, out = stream(Framing.SSE)
    objects = sse_objects(out)
    assert [o["candidates"][0]["content"]["parts"] for o in objects] == [
        [{"text": "Hello"}], [{"text": "hm", "thought": True}],
        [{"functionCall": {"id": "c1", "name": "f", "args": {"a": 1}}}]]
    assert objects[-1]["candidates"][0]["finishReason"] == "STOP"
    assert objects[-1]["usageMetadata"]["totalTokenCount"] == 8
    assert all(o["responseId"] == "r" and o["modelVersion"] == "m" for o in objects)


def test_json_array_stream() -> None:
    """Without alt=sse the stream is one JSON array written as it grows: ``[{...}\\n,{...}\\n]``."""
    _, out = stream(Framing.ARRAY)
    assert out.startswith(b"[{") and out.endswith(b"}\n]") and b"\n,{" in out
    assert len(json.loads(out)) == 3


def test_keepalives_parse_and_add_nothing() -> None:
    """An SSE keep-alive is a data frame with one empty text part (the SDKs parse every line as JSON); in the
    array, whitespace after the opening bracket, which keeps the array valid JSON."""
    sse = GeminiEncoder("m", "r", Framing.SSE)
    assert sse.opening() == b""
    (beat,) = sse_objects(sse.keepalive())
    assert beat["candidates"][0]["content"]["parts"] == [{"text": ""}] and "finishReason" not in beat["candidates"][0]
    array = GeminiEncoder("m", "r", Framing.ARRAY)
    out = array.opening() + array.keepalive() + array.keepalive() + array.feed_deltas([TextDelta("x")])
    out += array.on_chunk_end() + array.on_done()
    assert out.startswith(b"[\n\n{") and [o["candidates"][0]["content"]["parts"] for o in json.loads(out)] == [
        [{"text": "x"}], [{"text": ""}]]


def test_a_failure_after_the_first_byte() -> None:
    """A mid-stream failure is a last frame in Google's error shape (an array element, then the array closes)."""
    sse = GeminiEncoder("m", "r", Framing.SSE)
    sse.feed_deltas([TextDelta("x")])
    out = sse.on_chunk_end() + sse.on_error(StreamError("upstream went away", "upstream_error", 502))
    assert sse_objects(out)[-1] == {"error": {"code": 502, "message": "upstream went away", "status": "UNAVAILABLE"}}
    array = GeminiEncoder("m", "r", Framing.ARRAY)
    out = array.on_error(StreamError("idle", "timeout_error", "timeout"))
    assert json.loads(out) == [{"error": {"code": 504, "message": "idle", "status": "DEADLINE_EXCEEDED"}}]


# -- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "name"), [(400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"),
                                              (403, "PERMISSION_DENIED"), (404, "NOT_FOUND"),
                                              (429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE"),
                                              (504, "DEADLINE_EXCEEDED")])
def test_error_bodies(status: int, name: str) -> None:
    """Errors before the first byte are Google's ``{"error": {"code", "message", "status"}}``."""
    assert status_name(status) == name
    body = json.loads(GEMINI.error_body(ShimError(status, "nope")))
    assert body == {"error": {"code": status, "message": "nope", "status": name}}
    assert GEMINI.error_status(ShimError(status, "nope")) == status


def test_a_context_overflow_in_geminis_words() -> None:
    """A prompt that cannot fit is a 400 INVALID_ARGUMENT in Gemini's own words, before or after the first byte."""
    err = ContextOverflow(5000, 4096)
    body = json.loads(GEMINI.error_body(err))["error"]
    assert body["code"] == 400 and body["status"] == "INVALID_ARGUMENT"
    assert body["message"] == "The input token count (5000) exceeds the maximum number of tokens allowed (4096)."
    frame = GEMINI.stream_error(StreamError(err.message, err.type, err.code))
    assert json.loads(frame.removeprefix(b"data: "))["error"]["code"] == 400


def test_proto_field_names_are_read_too() -> None:
    """Fields in their proto (snake_case) form are read like their JSON names, as Google's own parsers read them
    (google-genai 3.6.1 sends ``thinkingConfig: {"include_thoughts": true}``)."""
    got = translate(generation_config={"max_output_tokens": 9, "thinking_config": {"include_thoughts": True}},
                    tool_config={"function_calling_config": {"mode": "NONE"}},
                    tools=[{"function_declarations": [{"name": "f", "parameters_json_schema": {"type": "object"}}]}])
    assert got.include_thoughts and got.chat_body["max_tokens"] == 9 and got.chat_body["tool_choice"] == "none"
    assert got.chat_body["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert schema_to_json_schema({"type": "ARRAY", "min_items": "2"}) == {"type": "array", "minItems": 2}
