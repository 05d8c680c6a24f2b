"""Usage scaled to the context window an Anthropic client assumes (pure): ``anthropic.context_scaling``.

Claude Code decides when to compact from the usage of its last answer (input + cache reads + cache writes + output
tokens) against the window it believes the model has: 200,000 tokens for a Claude model name, 1,000,000 for a name
it does not know or with the ``context-1m`` beta (its ``[1m]`` suffix). It cannot be told a window below 100,000
(``CLAUDE_CODE_AUTO_COMPACT_WINDOW`` and a served ``max_input_tokens`` stop there), so against a 32k local window it
never compacts in time. Reporting the prompt counts multiplied by assumed ÷ real makes it see the real fill level: it
compacts when the local window is nearly full (200,000 − 20,000 reserved for output − 13,000 is 83.5% of any
window). Output tokens are not scaled (clients hold them against ``max_tokens``; a small part of the sum). Only
Anthropic Messages answers are scaled; llamashim's own counts (access line, status page, ``/metrics``) stay real.
Claude Code 2.1.328 compacts a Claude model's session ahead of time only with an auto-compact window set
(``CLAUDE_CODE_AUTO_COMPACT_WINDOW`` or ``/autocompact``); otherwise it compacts on "prompt is too long".
"""

from __future__ import annotations

from typing import Literal

Setting = int | Literal["auto"] | None
"""``anthropic.context_scaling``: ``auto`` (the window Claude Code assumes), ``None`` (off), or that window."""

ASSUMED_WINDOW = 200_000  # Claude Code's window for a Claude model (cli.js: gyt / kN)
LONG_WINDOW = 1_000_000  # with the context-1m beta (a "[1m]" model: cli.js $y / Jdo)
LONG_BETA = "context-1m"


def assumed_window(setting: Setting, model: str, betas: list[str]) -> int | None:
    """The window the client believes in: the configured one, or (``auto``) Claude Code's for this request: 200k
    for a Claude model name, 1M for a name it does not know (it says so: "assumes a context window of 1m tokens")
    or with an ``anthropic-beta: context-1m-…`` header (a "[1m]" model). ``None`` when scaling is off."""
    if setting is None or isinstance(setting, int):
        return setting
    if any(b.strip().startswith(LONG_BETA) for b in betas) or not model.lower().startswith("claude-"):
        return LONG_WINDOW
    return ASSUMED_WINDOW


def usage_factor(real_window: int | None, assumed: int | None) -> float:
    """What each reported count is multiplied by: assumed ÷ real when the real window is known and smaller, else
    1 (a window larger than the assumed one is left alone: the client then compacts early, never late)."""
    if real_window is None or assumed is None or real_window <= 0 or real_window >= assumed:
        return 1.0
    return assumed / real_window


def scaled(tokens: int, factor: float) -> int:
    """A token count as reported with ``factor`` (rounded; unchanged at 1)."""
    return tokens if factor == 1.0 else round(tokens * factor)
