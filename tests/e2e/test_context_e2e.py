"""End-to-end: the real llama-server's per-slot window (``-c 1024 -np 1``) is what ``/v1/models`` says, and a prompt
that cannot fit it is refused before it goes upstream, in each SDK's own error; one just under it is answered.

The counts here come from llama-server itself (``/apply-template`` + ``/tokenize``, as llamashim counts), so the
boundary is llama-server's own (``n_prompt_tokens >= n_ctx`` is refused); its log (a ``launch_slot_`` line per task
on its slot) shows that no refused prompt reached it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import RealLlama
from tests.e2e.daemon import Daemon, StartShim

WINDOW = 1024
WORD = "apple "


@pytest.fixture(scope="module")
def small(llama_server_factory: Callable[..., AbstractContextManager[RealLlama]]) -> Iterator[RealLlama]:
    """A real llama-server with one 1,024-token slot."""
    with llama_server_factory("-c", str(WINDOW), "-np", "1") as llama:
        yield llama


@pytest.fixture(scope="module")
def shim(small: RealLlama, shim_daemon: StartShim) -> Iterator[Daemon]:
    with shim_daemon(small.url, sections={"anthropic": {"context_scaling": False}}) as d:
        yield d


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def _count(llama: RealLlama, messages: list[dict[str, str]]) -> int:
    """The prompt tokens llama-server sees for ``messages`` (its template, its tokenizer)."""
    prompt = _post(llama.url + "/apply-template", {"messages": messages})["prompt"]
    return len(_post(llama.url + "/tokenize", {"content": prompt, "add_special": True})["tokens"])


def _messages(words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": WORD * words}]


def _words_for(llama: RealLlama, tokens: int) -> int:
    """The most words whose prompt is at most ``tokens`` tokens."""
    low, high = 1, tokens
    while low < high:
        mid = (low + high + 1) // 2
        if _count(llama, _messages(mid)) <= tokens:
            low = mid
        else:
            high = mid - 1
    return low


def _chat_requests(llama: RealLlama) -> int:
    """The tasks llama-server started on its slot (a generation, or its own refusal; never /tokenize)."""
    return llama.log_path.read_text(errors="replace").count("launch_slot_")


def test_models_report_the_real_per_slot_window(shim: Daemon, small: RealLlama) -> None:
    """/v1/models says llama-server's per-slot n_ctx (not n_ctx_train) as context_length and max_model_len."""
    with urllib.request.urlopen(small.url + "/props", timeout=30) as r:
        assert json.loads(r.read())["default_generation_settings"]["n_ctx"] == WINDOW
    entry = openai.OpenAI(base_url=shim.url + "/v1", api_key="x").models.list().data[0]
    assert entry.model_extra is not None
    assert entry.model_extra["context_length"] == entry.model_extra["max_model_len"] == WINDOW


def test_oversized_prompts_are_refused_in_each_sdks_words(shim: Daemon, small: RealLlama) -> None:
    """openai chat and Responses: BadRequestError code context_length_exceeded (a stream too); anthropic: the 400
    "prompt is too long: M tokens > 1024 maximum" with llama-server's own count; none reached its chat route."""
    messages = _messages(2 * WINDOW)
    n = _count(small, messages)
    before = _chat_requests(small)
    client = openai.OpenAI(base_url=shim.url + "/v1", api_key="x", max_retries=0, timeout=60)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as chat:
            client.chat.completions.create(model="any", messages=messages, stream=stream)  # type: ignore[arg-type]
        assert chat.value.code == "context_length_exceeded"
        assert f"maximum context length is {WINDOW} tokens. However, your messages resulted in {n} tokens" in str(
            chat.value.message)
    with pytest.raises(openai.BadRequestError) as responses:
        client.responses.create(model="any", input=messages[0]["content"], stream=True)
    assert responses.value.code == "context_length_exceeded"
    claude = anthropic.Anthropic(base_url=shim.url, api_key="x", max_retries=0, timeout=60)
    with pytest.raises(anthropic.BadRequestError) as too_long:
        claude.messages.create(model="any", max_tokens=8, messages=messages)  # type: ignore[arg-type]
    assert too_long.value.status_code == 400
    assert f"prompt is too long: {n} tokens > {WINDOW} maximum" in str(too_long.value.message)
    assert _chat_requests(small) == before


def test_a_prompt_just_under_the_window_is_answered(shim: Daemon, small: RealLlama) -> None:
    """window − 1 tokens by llama-server's count is sent and answered; the next size up (≥ window) is refused."""
    words = _words_for(small, WINDOW - 1)
    assert _count(small, _messages(words + 1)) >= WINDOW
    client = openai.OpenAI(base_url=shim.url + "/v1", api_key="x", max_retries=0, timeout=120)
    before = _chat_requests(small)
    reply = client.chat.completions.create(model="any", messages=_messages(words), max_tokens=1)  # type: ignore
    assert reply.usage is not None and reply.usage.prompt_tokens == _count(small, _messages(words))
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.chat.completions.create(model="any", messages=_messages(words + 1), max_tokens=1)  # type: ignore
    assert _chat_requests(small) == before + 1
