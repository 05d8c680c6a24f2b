"""anthropic.context_scaling: the pure scaling, its configuration, and the encoder's scaled usage (both paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamashim.config import ConfigError, load_config
from llamashim.dialects.anthropic.events import MessagesEncoder, message_object
from llamashim.dialects.anthropic.scaling import ASSUMED_WINDOW, LONG_WINDOW, assumed_window, scaled, usage_factor
from llamashim.stream.items import Done, Item
from tests.unit.test_anthropic_events import MODEL, MSG_ID, accumulate, chunk, usage_chunk

# Claude Code's auto-compact threshold for a 200k model with its default output reserve (notes: 200000-20000-13000)
THRESHOLD = ASSUMED_WINDOW - 20_000 - 13_000


def test_assumed_window_auto_off_and_fixed() -> None:
    """auto: 200k for a Claude name, 1M for another name or with the context-1m beta; None: off; a number: it."""
    assert assumed_window("auto", "claude-sonnet-4-5", []) == ASSUMED_WINDOW
    beta = ["interleaved-thinking-2025-05-14", " context-1m-2025-08-07"]
    assert assumed_window("auto", "claude-sonnet-4-5", beta) == LONG_WINDOW
    assert assumed_window("auto", "qwen3-coder", []) == LONG_WINDOW
    assert assumed_window(None, "claude-sonnet-4-5", beta) is None
    assert assumed_window(128_000, "qwen3-coder", []) == 128_000


def test_factor_only_scales_a_known_smaller_window() -> None:
    """assumed ÷ real for a known smaller window; 1 when unknown, off, or the real window is as large or larger."""
    assert usage_factor(32_768, ASSUMED_WINDOW) == ASSUMED_WINDOW / 32_768
    assert usage_factor(None, ASSUMED_WINDOW) == 1.0
    assert usage_factor(32_768, None) == 1.0
    assert usage_factor(262_144, ASSUMED_WINDOW) == 1.0
    assert scaled(1000, 1.0) == 1000 and scaled(1000, 6.1035) == 6104


@given(st.integers(min_value=1024, max_value=ASSUMED_WINDOW - 1), st.floats(min_value=0.0, max_value=1.0))
def test_reported_fill_is_the_real_fill(window: int, fill: float) -> None:
    """A prompt filling a share of the real window is reported at the same share of the assumed one."""
    prompt = int(window * fill)
    reported = scaled(prompt, usage_factor(window, ASSUMED_WINDOW))
    assert abs(reported / ASSUMED_WINDOW - prompt / window) <= 1 / ASSUMED_WINDOW


def test_threshold_crossed_near_the_real_window() -> None:
    """Against a 32k window Claude Code's 167k threshold is crossed at 83.5% of the real window, not before."""
    factor = usage_factor(32_768, ASSUMED_WINDOW)
    assert scaled(27_300, factor) < THRESHOLD <= scaled(27_400, factor)


@pytest.mark.parametrize(("text", "value"), [
    ("", "auto"), ("context_scaling: auto", "auto"), ("context_scaling: true", "auto"),
    ("context_scaling: false", None), ("context_scaling: 'off'", None), ("context_scaling: 131072", 131_072),
])
def test_config_values(tmp_path: Path, text: str, value: Any) -> None:
    """anthropic.context_scaling: auto by default; true is auto, false/off turn it off, a number is the window."""
    path = tmp_path / "c.yaml"
    path.write_text(f"anthropic: {{{text}}}\n" if text else "{}\n")
    assert load_config({"config": str(path)}, {}).anthropic.context_scaling == value


@pytest.mark.parametrize("text", ["context_scaling: 12", "context_scaling: sometimes", "context_scaling: [1]"])
def test_config_refuses_nonsense(tmp_path: Path, text: str) -> None:
    """A window below 1000 tokens or a word other than auto/true/false is a one-line error naming the key."""
    path = tmp_path / "c.yaml"
    path.write_text(f"anthropic: {{{text}}}\n")
    with pytest.raises(ConfigError, match="context_scaling"):
        load_config({"config": str(path)}, {})


USAGE = {"prompt_tokens": 4096, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1024}}


def test_stream_reports_prompt_usage_scaled() -> None:
    """With the real window told, message_start and message_delta carry the prompt counts × assumed ÷ real (the
    SDK's accumulator sees them), output_tokens stays the real count."""
    enc = MessagesEncoder(MODEL, MSG_ID, 100, assumed_window=ASSUMED_WINDOW)
    enc.upstream_window(8192)
    items: list[Item] = [chunk("Hi"), chunk(finish="stop"), usage_chunk(USAGE), Done()]
    data = b"".join(enc([item]) for item in items)
    message, events = accumulate(data)
    assert events[0]["message"]["usage"]["input_tokens"] == round(100 * ASSUMED_WINDOW / 8192)
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        75_000, 25_000, 7)


def test_unknown_window_or_off_reports_the_real_counts() -> None:
    """No real window (an old build) or scaling off: the upstream's counts as they are."""
    for assumed, window in ((ASSUMED_WINDOW, None), (None, 8192)):
        enc = MessagesEncoder(MODEL, MSG_ID, assumed_window=assumed)
        enc.upstream_window(window)
        items: list[Item] = [chunk("Hi"), usage_chunk(USAGE), Done()]
        message, _ = accumulate(b"".join(enc([i]) for i in items))
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (3072, 1024)


def test_message_object_scales_like_the_stream() -> None:
    """A non-streamed reply's usage is scaled by the same factor as the stream's."""
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
             "usage": USAGE}
    usage = message_object(reply, MODEL, MSG_ID, ASSUMED_WINDOW / 8192)["usage"]
    assert usage == {"input_tokens": 75_000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 25_000,
                     "output_tokens": 7}
