"""Context truth and overflow in each client's words, in memory (issue 21 items 3 and 4).

The fake llama-server here renders chat messages as ``<|role|>content`` and counts one token per character
(:class:`FakeLlama`), and refuses a chat prompt of ``n_ctx`` tokens or more exactly as llama-server does (HTTP 400
``exceed_context_size_error`` with ``n_prompt_tokens``/``n_ctx``), so a test knows each prompt's exact count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import ollama
import openai
import pytest
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat.context import token_bound
from llamashim.testing.fake_llama import FakeLlama, Seen, render
from tests.integration.support import Env, ShimFixture

WINDOW = 2048


def _refusal(request: Request, fake: FakeLlama, n: int) -> bytes:
    message = f"request ({n} tokens) exceeds the available context size ({fake.n_ctx} tokens), try increasing it"
    return fake._json(request, {"error": {"code": 400, "message": message, "type": "exceed_context_size_error",
                                          "n_prompt_tokens": n, "n_ctx": fake.n_ctx}}, 400)


class RefusingFake(FakeLlama):
    """:class:`FakeLlama` that refuses an oversized chat prompt with llama-server's own 400."""

    def _chat(self, request: Request, seen: Seen) -> bytes | int:
        n = len(render(seen.body["messages"])) if isinstance(seen.body, dict) else 0
        if n >= self.n_ctx:
            return _refusal(request, self, n)
        return super()._chat(request, seen)


class UncountingFake(FakeLlama):
    """An older build: no ``/apply-template`` (so nothing can be pre-counted), llama-server's own refusal."""

    def _routes(self) -> dict[tuple[str, str], Callable[[Request, Seen], bytes | int]]:
        return {**super()._routes(), ("POST", "/apply-template"): self._no_route}

    def _no_route(self, request: Request, seen: Seen) -> bytes:
        return self._error(request, 404, "File Not Found", "not_found_error")

    def _chat(self, request: Request, seen: Seen) -> bytes | int:
        n = len(render(seen.body["messages"])) if isinstance(seen.body, dict) else 0
        if n >= self.n_ctx:
            return _refusal(request, self, n)
        return super()._chat(request, seen)


def start(shims: ShimFixture, fake: FakeLlama | None = None, **settings: dict[str, Any]) -> Env:
    fake = fake or RefusingFake(shims.clock)
    fake.n_ctx = WINDOW
    return shims.start(fake=fake, settings=settings)


def user(n: int) -> list[dict[str, Any]]:
    """One user message whose rendered prompt (``<|user|>`` + text) is exactly ``n`` tokens in the fake."""
    return [{"role": "user", "content": "x" * (n - len("<|user|>"))}]


def paths(env: Env, path: str) -> int:
    return sum(1 for r in env.fake.requests if r.path == path)


# -- the window, reported ---------------------------------------------------------------------------------------


def test_models_and_show_report_the_per_slot_window(shims: ShimFixture) -> None:
    """/v1/models says the per-slot window as context_length and max_model_len (llama-server's meta kept); /api/show
    says the same number as <arch>.context_length and num_ctx."""
    env = start(shims)
    status, _, body = env.get("/v1/models")
    entry = jsonutil.loads(body)["data"][0]
    assert status == 200 and entry["context_length"] == entry["max_model_len"] == WINDOW
    assert entry["meta"]["n_ctx_train"] == 32768
    listed = env.openai().models.list().data[0]
    assert listed.model_extra is not None and listed.model_extra["context_length"] == WINDOW
    shown = env.ollama().show(entry["id"])
    assert shown.modelinfo is not None
    assert shown.modelinfo[f"{shown.modelinfo['general.architecture']}.context_length"] == WINDOW
    assert shown.parameters is not None and f"num_ctx                        {WINDOW}" in shown.parameters


def test_count_routes_say_the_window(shims: ShimFixture) -> None:
    """Anthropic's count_tokens and the Responses input_tokens route add context_window to their documented fields
    (Anthropic's on the scale of its input_tokens: anthropic.context_scaling)."""
    env = start(shims, anthropic={"context_scaling": False})
    hi = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    status, _, body = env.post("/v1/messages/count_tokens", hi)
    assert status == 200 and jsonutil.loads(body) == {"input_tokens": len("<|user|>Hi"), "context_window": WINDOW}
    scaled = start(shims)  # auto: Claude Code assumes 1,000,000 tokens for a name it does not know
    status, _, body = scaled.post("/v1/messages/count_tokens", hi)
    factor = 1_000_000 / WINDOW
    assert jsonutil.loads(body) == {"input_tokens": round(len("<|user|>Hi") * factor), "context_window": 1_000_000}
    status, _, body = env.post("/v1/responses/input_tokens", {"model": "m", "input": "Hi"})
    assert status == 200 and jsonutil.loads(body) == {"object": "response.input_tokens",
                                                      "input_tokens": len("<|user|>Hi"), "context_window": WINDOW}


# -- the pre-check ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_overflow_is_context_length_exceeded(shims: ShimFixture, stream: bool) -> None:
    """An oversized chat prompt: the openai SDK raises BadRequestError, code context_length_exceeded, OpenAI's
    words with both numbers — and the upstream's chat route never saw it (counted with /tokenize instead)."""
    env = start(shims)
    with pytest.raises(openai.BadRequestError) as raised:
        env.openai().chat.completions.create(model="m", messages=user(WINDOW + 10), stream=stream)  # type: ignore
    err = raised.value
    assert err.status_code == 400 and err.code == "context_length_exceeded" and err.type == "invalid_request_error"
    assert err.body == {"message": (f"This model's maximum context length is {WINDOW} tokens. However, your messages "
                           f"resulted in {WINDOW + 10} tokens. Please reduce the length of the messages."),
                        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    assert env.fake.chat_requests() == [] and paths(env, "/tokenize") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_responses_overflow_is_context_length_exceeded(shims: ShimFixture, stream: bool) -> None:
    """An oversized Responses input: BadRequestError with code context_length_exceeded and the Responses API's
    words; nothing reached the upstream's chat route."""
    env = start(shims)
    with pytest.raises(openai.BadRequestError) as raised:
        env.openai().responses.create(model="m", input="x" * (WINDOW + 10), stream=stream)
    err = raised.value
    assert err.status_code == 400 and err.code == "context_length_exceeded"
    assert err.body["message"] == ("Your input exceeds the context window of this model. Please adjust your input "  # type: ignore[index]
                                   f"and try again. (The input is {WINDOW + 10 + len('<|user|>')} tokens; the context "
                                   f"window is {WINDOW} tokens.)")
    assert env.fake.chat_requests() == []


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_overflow_is_prompt_too_long(shims: ShimFixture, stream: bool) -> None:
    """An oversized Messages request: the anthropic SDK's 400 "prompt is too long: M tokens > N maximum", a real
    HTTP 400 even for a stream; nothing reached the upstream's chat route."""
    env = start(shims)
    n = WINDOW + 10
    with pytest.raises(anthropic.BadRequestError) as raised:
        env.anthropic().messages.create(model="m", max_tokens=16, stream=stream,
                                        messages=[{"role": "user", "content": "x" * (n - len("<|user|>"))}])
    assert raised.value.status_code == 400
    assert raised.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": f"prompt is too long: {n} tokens > {WINDOW} "
                                                                       "maximum"}}
    assert env.fake.chat_requests() == []


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_overflow_in_its_own_words(shims: ShimFixture, stream: bool) -> None:
    """An oversized /api/chat: Ollama's 400 {"error": "the input length exceeds the context length …"}."""
    env = start(shims)
    n = WINDOW + 10
    with pytest.raises(ollama.ResponseError) as raised:
        if stream:
            list(env.ollama().chat(model="m", messages=user(n), stream=True))
        else:
            env.ollama().chat(model="m", messages=user(n))
    assert raised.value.status_code == 400
    assert raised.value.error == (f"the input length exceeds the context length ({n} tokens; the context length is "
                                  f"{WINDOW})")
    assert env.fake.chat_requests() == []


def test_a_prompt_just_under_the_window_is_answered(shims: ShimFixture) -> None:
    """window − 1 tokens (llama-server's own limit) is counted, fits and is answered; window tokens is refused."""
    env = start(shims)
    reply = env.openai().chat.completions.create(model="m", messages=user(WINDOW - 1))  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Hello, world!"
    assert paths(env, "/tokenize") == 1 and len(env.fake.chat_requests()) == 1
    with pytest.raises(openai.BadRequestError, match=f"resulted in {WINDOW} tokens"):
        env.openai().chat.completions.create(model="m", messages=user(WINDOW))  # type: ignore[arg-type]
    assert len(env.fake.chat_requests()) == 1


def test_a_small_prompt_costs_no_count(shims: ShimFixture) -> None:
    """A prompt whose byte bound fits the window is never counted: no /apply-template, no /tokenize."""
    env = start(shims)
    messages = user(WINDOW // 4)
    assert token_bound({"messages": messages}) < WINDOW
    env.openai().chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    env.anthropic().messages.create(model="m", max_tokens=16, messages=[{"role": "user", "content": "Hi"}])
    assert paths(env, "/tokenize") == 0 and paths(env, "/apply-template") == 0
    assert len(env.fake.chat_requests()) == 2


def test_unknown_window_means_no_pre_check(shims: ShimFixture) -> None:
    """An upstream whose /props has no n_ctx: nothing is counted, the request goes upstream (which refuses it)."""

    class NoWindow(RefusingFake):
        def _props(self, request: Request, seen: Seen) -> bytes:
            props = jsonutil.loads(super()._props(request, seen))
            del props["default_generation_settings"]["n_ctx"]
            return jsonutil.dumps(props)

    env = start(shims, NoWindow(shims.clock))
    with pytest.raises(openai.BadRequestError) as raised:
        env.openai().chat.completions.create(model="m", messages=user(WINDOW + 10))  # type: ignore[arg-type]
    assert raised.value.code == "context_length_exceeded"
    assert paths(env, "/tokenize") == 0 and len(env.fake.chat_requests()) == 1


# -- llama-server's own refusal, in the same words ----------------------------------------------------------------


def test_llama_servers_own_refusal_in_every_dialect(shims: ShimFixture) -> None:
    """When nothing could be pre-counted (no /apply-template), llama-server's own exceed_context_size_error reaches
    every client in the same words as the pre-check's."""
    env = start(shims, UncountingFake(shims.clock))
    n = WINDOW + 10
    with pytest.raises(openai.BadRequestError) as chat:
        env.openai().chat.completions.create(model="m", messages=user(n))  # type: ignore[arg-type]
    assert chat.value.code == "context_length_exceeded" and f"resulted in {n} tokens" in chat.value.message
    with pytest.raises(openai.BadRequestError) as responses:
        env.openai().responses.create(model="m", input="x" * (n - len("<|user|>")))
    assert responses.value.code == "context_length_exceeded" and f"{n} tokens" in responses.value.message
    with pytest.raises(anthropic.BadRequestError, match=f"prompt is too long: {n} tokens > {WINDOW} maximum"):
        env.anthropic().messages.create(model="m", max_tokens=16,
                                        messages=[{"role": "user", "content": "x" * (n - len("<|user|>"))}])
    with pytest.raises(ollama.ResponseError, match=f"exceeds the context length \\({n} tokens"):
        env.ollama().chat(model="m", messages=user(n))
    assert len(env.fake.chat_requests()) == 4  # each went upstream: nothing could be counted
