"""The modes a configuration names (base layer: :mod:`llamashim.config` validates them, the stages act on them).

Each is a ``StrEnum`` whose values are what the YAML file, the environment and the command line spell.
"""

from __future__ import annotations

from enum import StrEnum


class ThinkingMode(StrEnum):
    """Where reasoning goes (``thinking.mode``; :mod:`llamashim.stream.reasoning` says what each does)."""

    DEFAULT = "default"
    SHOW_REASONING = "show_reasoning"
    EVENTS = "events"
    BOTH = "both"
    OFF = "off"
    SEPARATE = "separate"  # internal: the dialects where reasoning has its own place; never configured


THINKING_MODES: tuple[ThinkingMode, ...] = tuple(m for m in ThinkingMode if m is not ThinkingMode.SEPARATE)
"""The modes a configuration or an ``X-Llamashim-Thinking`` header may name."""

THINKING_ALIASES = {"content": ThinkingMode.SHOW_REASONING}


class ToolsMode(StrEnum):
    """How tool-call streams are made (``tools.streaming``): ``native`` relays the upstream's stream, ``synthesize``
    asks for the whole answer and streams it, ``auto`` relays until the upstream proves it cannot."""

    AUTO = "auto"
    NATIVE = "native"
    SYNTHESIZE = "synthesize"


class ReplayMode(StrEnum):
    """Whether earlier reasoning is put back into a conversation (``thinking.replay``): ``auto`` when the upstream's
    chat template reads it, ``always``, ``off``."""

    AUTO = "auto"
    ALWAYS = "always"
    OFF = "off"
