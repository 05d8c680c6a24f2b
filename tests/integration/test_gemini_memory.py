"""The Gemini API in memory, driven by the real ``google-genai`` SDK (its httpx2 client served in memory through a
``MockTransport``, as the route suites serve the openai and anthropic SDKs): the real site in front of the fake
llama-server on one clock. Raw requests where the bytes themselves are the point (the JSON-array stream, the keys).
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from llamashim.testing.fake_llama import FakeLlama, render
from tests.integration.support import BASE, Env, ShimFixture

JSON = dict[str, Any]
MODEL = "fake-model-7B.Q4_K_M"
KEY = "AIza-local-secret-0001"
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="The weather in a city.",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)},
                            required=["city"]),
)
TOOLS: list[types.Tool | Any] = [types.Tool(function_declarations=[WEATHER])]
HEARTBEAT = 15.0


def gemini(env: Env, key: str = KEY, version: str | None = "v1beta") -> genai.Client:
    """The google-genai SDK against the shim in memory, on the Gemini API's v1beta (``None``: the SDK's default,
    v1)."""
    http = httpx2.Client(transport=httpx2.MockTransport(env._httpx2))
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=BASE, api_version=version,
                                                                     httpx_client=http))


def parts_of(chunks: list[types.GenerateContentResponse]) -> list[types.Part]:
    """Every part of every chunk's first candidate."""
    return [p for c in chunks if c.candidates and c.candidates[0].content for p in c.candidates[0].content.parts or []]


def upstream_body(env: Env) -> JSON:
    body: JSON = env.fake.chat_requests()[-1].body
    return body


# -- generating ---------------------------------------------------------------------------------------------------


def test_generate(shims: ShimFixture) -> None:
    """generate_content: the text, finish reason, usage, modelVersion and responseId; the request went upstream as a
    chat request with its system instruction and sampling."""
    env = shims.start()
    config = types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.2, top_k=20,
                                         max_output_tokens=30, stop_sequences=["END"])
    reply = gemini(env).models.generate_content(model="gemini-2.5-flash", contents="Hi", config=config)
    assert reply.text == "Hello, world!"
    assert reply.candidates and reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert reply.usage_metadata is not None
    assert (reply.usage_metadata.prompt_token_count, reply.usage_metadata.candidates_token_count,
            reply.usage_metadata.total_token_count) == (12, 4, 16)
    assert reply.model_version == "gemini-2.5-flash" and reply.response_id
    sent = upstream_body(env)
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (sent["temperature"], sent["top_k"], sent["max_tokens"], sent["stop"]) == (0.2, 20, 30, ["END"])
    assert sent["stream"] is False


@pytest.mark.parametrize("tools", ["native", "synthesize"])
def test_stream(shims: ShimFixture, tools: str) -> None:
    """generate_content_stream (SSE): the chunks' text is the answer, the last chunk has the finish reason and usage;
    thoughts come as thought parts only when include_thoughts asks for them."""
    env = shims.start(tools=tools)
    env.fake.reasoning = ["Think", "ing."]
    client = gemini(env)
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"))
    assert "".join(c.text or "" for c in chunks) == "Hello, world!"
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None and last.usage_metadata.total_token_count == 18
    assert not any(p.thought for p in parts_of(chunks))
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi", config=config))
    assert "".join(p.text or "" for p in parts_of(chunks) if p.thought) == "Thinking."
    assert "".join(c.text or "" for c in chunks) == "Hello, world!"
    usage = chunks[-1].usage_metadata
    assert usage is not None and usage.thoughts_token_count
    assert (usage.thoughts_token_count or 0) + (usage.candidates_token_count or 0) == 6


def test_the_json_array_stream(shims: ShimFixture) -> None:
    """Without alt=sse the stream is one JSON array of response objects, application/json."""
    env = shims.start()
    status, headers, body = env.post(f"/v1beta/models/{MODEL}:streamGenerateContent",
                                     {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
                                     {"x-goog-api-key": KEY})
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"application/json; charset=UTF-8"]
    objects = json.loads(body)
    assert "".join(p.get("text", "") for o in objects for p in o["candidates"][0]["content"]["parts"]) == \
        "Hello, world!"
    assert objects[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("tools", ["native", "synthesize"])
def test_a_function_call_and_its_response(shims: ShimFixture, tools: str) -> None:
    """A tool call comes back as a functionCall part (id, name, args object), streamed or not; the next turn's
    functionResponse goes upstream as the tool message answering that call."""
    env = shims.start(tools=tools)
    env.fake.content = []
    env.fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    client = gemini(env)
    config = types.GenerateContentConfig(tools=TOOLS, tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)))
    reply = client.models.generate_content(model=MODEL, contents="Weather in Paris?", config=config)
    (call,) = reply.function_calls or []
    assert (call.id, call.name, call.args) == ("fakecall00", "get_weather", {"city": "Paris"})
    sent = upstream_body(env)
    assert sent["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}
    assert sent["tool_choice"] == "required"
    streamed = list(client.models.generate_content_stream(model=MODEL, contents="Weather in Paris?", config=config))
    calls = [c for chunk in streamed for c in chunk.function_calls or []]
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]
    env.fake.tool_calls, env.fake.content = [], ["Sunny", "."]
    assert reply.candidates and reply.candidates[0].content
    history = [types.Content(role="user", parts=[types.Part.from_text(text="Weather in Paris?")]),
               reply.candidates[0].content,
               types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                   id=call.id, name="get_weather", response={"output": "Sunny, 21 °C"}))])]
    final = client.models.generate_content(model=MODEL, contents=history, config=types.GenerateContentConfig(
        tools=TOOLS))
    assert final.text == "Sunny."
    messages = upstream_body(env)["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "fakecall00"
    assert messages[2] == {"role": "tool", "tool_call_id": "fakecall00", "content": "Sunny, 21 °C"}


class Answer(BaseModel):
    city: str
    temperature: int


def test_json_mode(shims: ShimFixture) -> None:
    """response_mime_type application/json with a schema asks llama-server for that JSON Schema; the SDK parses
    the answer into the model."""
    env = shims.start()
    env.fake.content = ['{"city": "Paris", ', '"temperature": 21}']
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=Answer)
    reply = gemini(env).models.generate_content(model=MODEL, contents="Weather?", config=config)
    assert reply.parsed == Answer(city="Paris", temperature=21)
    fmt = upstream_body(env)["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["temperature"]["type"] == "integer"
    gemini(env).models.generate_content(model=MODEL, contents="Weather?", config=types.GenerateContentConfig(
        response_mime_type="application/json"))
    assert upstream_body(env)["response_format"] == {"type": "json_object"}


# -- counting, models, embeddings ---------------------------------------------------------------------------------


def test_count_tokens(shims: ShimFixture) -> None:
    """count_tokens counts with the upstream's own template and tokenizer, and generates nothing."""
    fake = FakeLlama(shims.clock)
    env = shims.start(fake=fake)
    counted = gemini(env).models.count_tokens(model=MODEL, contents="How many tokens?")
    assert counted.total_tokens == len(render([{"role": "user", "content": "How many tokens?"}]))
    assert fake.chat_requests() == []


def test_models_list_and_get(shims: ShimFixture) -> None:
    """models.list lists the upstream's model with its real per-slot window; models.get answers for the name asked
    (one model serves every name)."""
    env = shims.start()
    client = gemini(env)
    listed = list(client.models.list())
    assert [m.name for m in listed] == [f"models/{MODEL}"]
    assert listed[0].input_token_limit == env.fake.n_ctx
    assert listed[0].supported_actions and "generateContent" in listed[0].supported_actions
    got = client.models.get(model="gemini-2.5-pro")
    assert got.name == "models/gemini-2.5-pro" and got.display_name == MODEL


def test_embed_content(shims: ShimFixture) -> None:
    """embed_content embeds each text through the upstream's /v1/embeddings, cut to output_dimensionality."""
    env = shims.start()
    client = gemini(env)
    texts: list[types.ContentUnion] = ["one two", "three"]  # (typed: mypy's list invariance, pillow installed or not)
    got = client.models.embed_content(model=MODEL, contents=texts)
    assert [e.values for e in got.embeddings or []] == [[0.1, 0.11, 0.12, 0.13], [0.2, 0.21, 0.22, 0.23]]
    embedded = [r for r in env.fake.requests if r.path == "/v1/embeddings"][-1].body
    assert embedded["input"] == ["one two", "three"]
    cut = client.models.embed_content(model=MODEL, contents="one",
                                      config=types.EmbedContentConfig(output_dimensionality=2))
    assert [e.values for e in cut.embeddings or []] == [[0.1, 0.11]]
    status, _, body = env.post(f"/v1beta/models/{MODEL}:embedContent", {"content": {"parts": [{"text": "x"}]}},
                               {"x-goog-api-key": KEY})
    assert status == 200 and json.loads(body) == {"embedding": {"values": [0.1, 0.11, 0.12, 0.13]}}


# -- errors ---------------------------------------------------------------------------------------------------------


def test_errors_are_the_sdks_own(shims: ShimFixture) -> None:
    """A refused request raises the SDK's ClientError with Google's code and status; an upstream failure its
    ServerError."""
    env = shims.start()
    client = gemini(env)
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model=MODEL, contents="Hi",
                                       config=types.GenerateContentConfig(candidate_count=2))
    assert (refused.value.code, refused.value.status) == (400, "INVALID_ARGUMENT")
    assert "candidateCount" in (refused.value.message or "")
    env.fake.status_override = 429
    with pytest.raises(errors.ClientError) as busy:
        client.models.generate_content(model=MODEL, contents="Hi")
    assert (busy.value.code, busy.value.status) == (429, "RESOURCE_EXHAUSTED")
    env.fake.status_override = 500
    with pytest.raises(errors.ServerError) as failed:
        list(client.models.generate_content_stream(model=MODEL, contents="Hi"))
    assert (failed.value.code, failed.value.status) == (500, "INTERNAL")


def test_a_failure_mid_stream_raises(shims: ShimFixture) -> None:
    """After the first byte a failure ends the SSE stream with an error frame in Google's shape: the SDK raises
    its ServerError after the text it got, never a silently truncated answer."""
    env = shims.start()
    env.fake.content = [f"t{i} " for i in range(10)]
    env.fake.fault = "drop_mid_stream"
    got: list[str] = []
    with pytest.raises(errors.ServerError) as failed:
        for chunk in gemini(env).models.generate_content_stream(model=MODEL, contents="Hi"):
            got.append(chunk.text or "")
    assert failed.value.code == 502 and failed.value.status == "UNAVAILABLE"
    assert "".join(got).startswith("t0 ")


def test_keepalives_through_a_long_prefill(shims: ShimFixture) -> None:
    """While the upstream is silent, keep-alive frames go out every server.heartbeat seconds; the SDK parses them
    (an SSE comment would end its stream with a parse error) and they add no text."""
    env = shims.start(settings={"server": {"heartbeat": HEARTBEAT}})
    env.fake.fault = "slow_headers"
    env.fake.slow_headers = 50.0
    chunks = list(gemini(env).models.generate_content_stream(model=MODEL, contents="Hi"))
    assert "".join(c.text or "" for c in chunks) == "Hello, world!"
    beats = [c for c in chunks if c.candidates and c.candidates[0].content and
             c.candidates[0].content.parts == [types.Part(text="")] and not c.candidates[0].finish_reason]
    assert len(beats) == 3  # at 15, 30 and 45 s of the 50 s prefill


# -- keys -------------------------------------------------------------------------------------------------------


def test_keys(shims: ShimFixture) -> None:
    """With auth on, the key is taken from x-goog-api-key (the SDK's), ?key= or Bearer, and never sent upstream; no
    key is a 401 in Google's shape, which the SDK raises as its ClientError."""
    env = shims.start(settings={"auth": {"api_keys": [KEY]}})
    assert gemini(env).models.generate_content(model=MODEL, contents="Hi").text == "Hello, world!"
    assert not {"x-goog-api-key", "authorization"} & set(env.fake.chat_requests()[-1].headers)
    hi = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    assert env.post(f"/v1beta/models/{MODEL}:generateContent?key={KEY}", hi)[0] == 200
    assert env.post(f"/v1beta/models/{MODEL}:generateContent", hi, {"authorization": f"Bearer {KEY}"})[0] == 200
    status, _, body = env.post(f"/v1beta/models/{MODEL}:generateContent", hi)
    assert status == 401
    assert json.loads(body) == {"error": {"code": 401, "message": "missing or invalid API key",
                                          "status": "UNAUTHENTICATED"}}
    with pytest.raises(errors.ClientError) as refused:
        gemini(env, key="AIza-wrong").models.generate_content(model=MODEL, contents="Hi")
    assert (refused.value.code, refused.value.status) == (401, "UNAUTHENTICATED")


def test_routing_misses_are_in_googles_shape(shims: ShimFixture) -> None:
    """An unknown method on a model, or an unknown path under /v1beta, is a 404 NOT_FOUND in Google's shape."""
    env = shims.start()
    for path in (f"/v1beta/models/{MODEL}:predictLongRunning", "/v1beta/tunedModels"):
        status, _, body = env.post(path, {"contents": []})
        assert status == 404 and json.loads(body)["error"]["status"] == "NOT_FOUND", body


def test_the_sdks_default_v1_beside_openais_models(shims: ShimFixture) -> None:
    """On the SDK's default API version (v1) the Gemini methods work — POST /v1/models/{model}:{method} is Gemini's,
    keys and errors included — while GET /v1/models stays OpenAI's list and /v1/chat/completions OpenAI's."""
    env = shims.start(settings={"auth": {"api_keys": [KEY]}})
    client = gemini(env, version=None)
    assert client.models.generate_content(model=MODEL, contents="Hi").text == "Hello, world!"
    assert "".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents="Hi")) == \
        "Hello, world!"
    assert env.fake.chat_requests()[-1].path == "/v1/chat/completions"
    status, _, body = env.get("/v1/models", {"authorization": f"Bearer {KEY}"})
    assert status == 200 and json.loads(body)["object"] == "list"
    status, _, body = env.post(f"/v1/models/{MODEL}:generateContent", {"contents": []})
    assert status == 401 and json.loads(body)["error"]["status"] == "UNAUTHENTICATED"
    status, _, body = env.post("/v1/chat/completions", {"model": MODEL, "messages": []})
    assert status == 401 and "status" not in json.loads(body)["error"]


def test_a_tool_call_written_as_markup_reaches_gemini_as_a_function_call(shims: ShimFixture) -> None:
    """An answer whose call came as Hermes markup in the content (llama-server did not parse it) reaches
    google-genai as a functionCall part, generated and streamed; the markup never shows as text."""
    env = shims.start()
    markup = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    env.fake.content = [markup[i:i + 7] for i in range(0, len(markup), 7)]
    config = types.GenerateContentConfig(tools=TOOLS)
    client = gemini(env)
    reply = client.models.generate_content(model="gemini-2.5-flash", contents="Weather in Paris?", config=config)
    streamed = parts_of(list(client.models.generate_content_stream(model="gemini-2.5-flash",
                                                                   contents="Weather in Paris?", config=config)))
    for parts in (reply.candidates[0].content.parts if reply.candidates and reply.candidates[0].content else [],
                  streamed):
        calls = [p.function_call for p in parts or [] if p.function_call]
        assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]
        assert not any(p.text and "tool_call" in p.text for p in parts or [])
