"""anthropic.context_scaling in memory: the anthropic SDK sees usage scaled from the model's real window (the fake's
``/props`` n_ctx) to the one Claude Code assumes, while the access line and /metrics count the real tokens."""

from __future__ import annotations

from typing import Any

import pytest

from llamashim.dialects.anthropic.scaling import ASSUMED_WINDOW, LONG_WINDOW
from llamashim.testing.fake_llama import FakeLlama
from tests.integration.support import Env, ShimFixture
from tests.support import logged

N_CTX = 8192  # the fake's per-slot window; it reports 12 prompt tokens and one output token per piece
PROMPT, OUTPUT = 12, 4
ASK: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}


def small_window(shims: ShimFixture, **settings: Any) -> Env:
    fake = FakeLlama(shims.clock)
    fake.n_ctx = N_CTX
    return shims.start(fake=fake, settings={"anthropic": settings} if settings else None)


def access_tokens(events: list[Any]) -> list[str]:
    return [e["tokens"] for e in events if e.get("log_namespace") == "llamashim.access"]


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_sees_scaled_usage_and_llamashim_counts_the_real_one(shims: ShimFixture, stream: bool) -> None:
    """By default the prompt counts are × 200k ÷ n_ctx in the answer (streamed or not), output_tokens as it is; the
    access line says tokens=12/4 and llamashim_tokens_total grows by the real 12 and 4."""
    env = small_window(shims)
    with logged() as events:
        if stream:
            with env.anthropic().messages.stream(**ASK) as s:
                m = s.get_final_message()
        else:
            m = env.anthropic().messages.create(**ASK)
    assert (m.usage.input_tokens, m.usage.output_tokens) == (round(PROMPT * ASSUMED_WINDOW / N_CTX), OUTPUT)
    assert access_tokens(events) == [f"{PROMPT}/{OUTPUT}"]
    assert env.shim.metric("llamashim_tokens_total", kind="prompt") == PROMPT
    assert env.shim.metric("llamashim_tokens_total", kind="completion") == OUTPUT


def test_the_1m_beta_scales_to_a_million(shims: ShimFixture) -> None:
    """A request with the context-1m beta (Claude Code's "[1m]" models) is scaled to 1,000,000 tokens."""
    env = small_window(shims)
    m = env.anthropic().messages.create(**ASK, extra_headers={"anthropic-beta": "context-1m-2025-08-07"})
    assert m.usage.input_tokens == round(PROMPT * LONG_WINDOW / N_CTX)


@pytest.mark.parametrize(("setting", "expected"), [(False, PROMPT), (65_536, round(PROMPT * 65_536 / N_CTX))])
def test_off_or_a_configured_window(shims: ShimFixture, setting: Any, expected: int) -> None:
    """context_scaling false reports the upstream's counts; a number is the window the client is taken to assume."""
    env = small_window(shims, context_scaling=setting)
    with env.anthropic().messages.stream(**ASK) as s:
        assert s.get_final_message().usage.input_tokens == expected


def test_other_dialects_are_never_scaled(shims: ShimFixture) -> None:
    """The OpenAI dialect on the same small window reports the real counts."""
    env = small_window(shims)
    reply = env.openai().chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert reply.usage is not None and reply.usage.prompt_tokens == PROMPT
