"""Reasoning routing (pure): where ``reasoning_content`` and inline ``<think>…</think>`` go, per ``thinking.mode``.

Sources: ``delta.reasoning_content`` (``delta.reasoning`` in some builds) and an inline ``<think>`` block at the start
of ``content`` (leading whitespace allowed; tags may be split across chunks at any character). Modes:

* ``default`` — everything as the upstream sent it (chunks pass as the same objects, bytes untouched);
* ``show_reasoning`` — reasoning becomes visible ``content``: the first fragment prefixed (``💭 ``), a separator
  (``\\n\\n---\\n\\n``) before the first answer content; with no reasoning the answer passes untouched;
* ``events`` — reasoning leaves the data stream and goes out as ``event: thinking`` frames (:class:`Thinking`);
* ``both`` — the data stream unchanged, plus the ``event: thinking`` frames;
* ``off`` — reasoning removed;
* ``separate`` (internal, the Ollama dialect) — inline ``<think>`` moved into ``reasoning_content``.

Nothing is held back but the few characters that could still be the start of ``<think>`` (or of ``</think>`` inside a
thought): an answer without reasoning flows at once, and whatever is held is flushed before a ``finish_reason``,
before ``[DONE]`` and at the end of the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from llamashim.errors import BadRequest
from llamashim.jsonutil import int_or
from llamashim.modes import THINKING_ALIASES, THINKING_MODES, ThinkingMode
from llamashim.stream.items import Chunk, Done, Item, Thinking

OPEN, CLOSE = "<think>", "</think>"
REASONING_KEYS = ("reasoning_content", "reasoning")
"""Where a chat delta or message carries reasoning (``reasoning`` in some llama-server builds)."""

Debug = Callable[[str, str], None]


class _Part(StrEnum):
    """What a fragment of a choice's text is."""

    REASONING = "reasoning"
    ANSWER = "answer"


class _Phase(StrEnum):
    """Where a choice's content is: before any text (a ``<think>`` may open), inside ``<think>``, or past it."""

    START = "start"
    THINKING = "thinking"
    ANSWER = "answer"


_Fragment = tuple[_Part, str]

# Where each mode sends reasoning (what the debug hook reports; answer text always goes to ``content``).
_REASONING_GOES = {
    ThinkingMode.DEFAULT: "as sent",
    ThinkingMode.SHOW_REASONING: "content",
    ThinkingMode.EVENTS: "event: thinking",
    ThinkingMode.BOTH: "content + event: thinking",
    ThinkingMode.OFF: "dropped",
    ThinkingMode.SEPARATE: "reasoning_content",
}


@dataclass(frozen=True)
class ReasoningStyle:
    prefix: str = "💭 "
    separator: str = "\n\n---\n\n"


def thinking_mode(mode: str) -> ThinkingMode:
    """``mode`` (a :class:`ThinkingMode`, its value or an alias) as a :class:`ThinkingMode`; ``ValueError`` else."""
    try:
        return ThinkingMode(THINKING_ALIASES.get(mode, mode))
    except ValueError:
        raise ValueError(f"unknown thinking mode {mode!r}") from None


def mode_for_request(configured: str, header: bytes | str | None) -> ThinkingMode:
    """The mode for one request: the ``X-Llamashim-Thinking`` header overrides the configured mode."""
    text = "" if header is None else (header.decode("latin-1") if isinstance(header, bytes) else header)
    text = text.strip().lower()
    if not text:
        return thinking_mode(configured)
    text = THINKING_ALIASES.get(text, text)
    if text not in THINKING_MODES:
        raise BadRequest(f"X-Llamashim-Thinking: {text!r} is not one of {', '.join(THINKING_MODES)}")
    return ThinkingMode(text)


def separate_mode(mode: str, think: object = None) -> ThinkingMode:
    """The routing for dialects where reasoning has its own place (Ollama's ``message.thinking``, Anthropic's
    thinking blocks, Responses' reasoning items): kept apart unless the configured mode folds it into the answer
    (``show_reasoning``) or drops it (``off``, or the client's own ``think: false``)."""
    if think is False or mode == ThinkingMode.OFF:
        return ThinkingMode.OFF
    if mode == ThinkingMode.SHOW_REASONING:
        return ThinkingMode.SHOW_REASONING
    return ThinkingMode.SEPARATE


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@dataclass
class _Inline:
    """The inline-tag state of one choice."""

    phase: _Phase = _Phase.START
    held: str = ""
    strip: bool = False  # drop whitespace right after </think>

    def feed(self, text: str) -> list[_Fragment]:
        """Content text in → the fragments it is made of, reasoning or answer."""
        out: list[_Fragment] = []
        if self.phase is _Phase.ANSWER:
            self._answer(text, out)
            return out
        buf = self.held + text
        self.held = ""
        if self.phase is _Phase.START:
            stripped = buf.lstrip()
            if not stripped or (len(stripped) < len(OPEN) and OPEN.startswith(stripped)):
                self.held = buf
                return out
            if not stripped.startswith(OPEN):
                self.phase = _Phase.ANSWER
                self._answer(buf, out)
                return out
            self.phase = _Phase.THINKING
            buf = stripped[len(OPEN) :]
        end = buf.find(CLOSE)
        if end >= 0:
            if end:
                out.append((_Part.REASONING, buf[:end]))
            self.phase = _Phase.ANSWER
            self.strip = True
            self._answer(buf[end + len(CLOSE) :], out)
            return out
        keep = _partial_suffix(buf, CLOSE)
        if keep:
            self.held = buf[-keep:]
            buf = buf[:-keep]
        if buf:
            out.append((_Part.REASONING, buf))
        return out

    def _answer(self, text: str, out: list[_Fragment]) -> None:
        if self.strip:
            text = text.lstrip()
            if not text:
                return
            self.strip = False
        if text:
            out.append((_Part.ANSWER, text))

    def flush(self) -> list[_Fragment]:
        held, self.held = self.held, ""
        if not held:
            return []
        if self.phase is _Phase.THINKING:
            return [(_Part.REASONING, held)]
        self.phase = _Phase.ANSWER
        out: list[_Fragment] = []
        self._answer(held, out)
        return out


@dataclass
class _Choice:
    inline: _Inline = field(default_factory=_Inline)
    reasoned: bool = False
    separated: bool = False


class ReasoningRouter:
    """A pipeline stage routing reasoning per mode (see the module docstring)."""

    def __init__(self, mode: str, style: ReasoningStyle | None = None, debug: Debug | None = None) -> None:
        self.mode = thinking_mode(mode)
        self.style = style or ReasoningStyle()
        self.debug = debug
        self._choices: dict[int, _Choice] = {}
        self._meta: dict[str, Any] = {}

    def feed(self, item: Item) -> list[Item]:
        if self.mode is ThinkingMode.DEFAULT:
            return [item]
        if isinstance(item, Chunk):
            return self._chunk(item)
        if isinstance(item, Done):
            return [*self._flush_all(), item]
        return [item]

    def finish(self) -> list[Item]:
        if self.mode is ThinkingMode.DEFAULT:
            return []
        return self._flush_all()

    # -- internals ------------------------------------------------------------------------------------------------

    def _state(self, index: int) -> _Choice:
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice()
        return state

    def _chunk(self, chunk: Chunk) -> list[Item]:
        data = chunk.data
        if not self._meta:
            self._meta = {k: data[k] for k in ("id", "created", "model", "object") if k in data}
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return [chunk]
        before: list[Item] = []
        new_choices: list[Any] | None = None
        for pos, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            fixed = self._choice(choice, pos, before)
            if fixed is not choice:
                if new_choices is None:
                    new_choices = list(choices)
                new_choices[pos] = fixed
        if self.mode is ThinkingMode.BOTH or new_choices is None:
            return [*before, chunk]
        kept = [c for c in new_choices if c is not None]
        if not kept and not data.get("usage"):
            return before
        return [*before, Chunk({**data, "choices": kept})]

    def _choice(self, choice: dict[str, Any], pos: int, before: list[Item]) -> Any:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return choice
        index = int_or(choice.get("index"), pos)
        state = self._state(index)
        content = delta.get("content")
        has_reasoning = any(delta.get(k) for k in REASONING_KEYS)
        finishing = bool(choice.get("finish_reason"))
        if (
            not has_reasoning
            and state.inline.phase is _Phase.ANSWER
            and not state.inline.strip
            and not (self.mode is ThinkingMode.SHOW_REASONING and state.reasoned and not state.separated and content)
        ):
            return choice  # the fast path: a plain answer chunk
        fragments: list[_Fragment] = []
        for key in REASONING_KEYS:
            value = delta.get(key)
            if isinstance(value, str) and value:
                fragments.append((_Part.REASONING, value))
        if isinstance(content, str) and content:
            fragments.extend(state.inline.feed(content))
        if finishing:
            fragments.extend(state.inline.flush())
        return self._route(choice, delta, state, fragments, before)

    def _route(
        self,
        choice: dict[str, Any],
        delta: dict[str, Any],
        state: _Choice,
        fragments: list[_Fragment],
        before: list[Item],
    ) -> Any:
        mode = self.mode
        text_out: list[str] = []
        reasoning_out: list[str] = []
        for part, text in fragments:
            if part is _Part.ANSWER:
                if mode is ThinkingMode.SHOW_REASONING and state.reasoned and not state.separated:
                    state.separated = True
                    text = self.style.separator + text
                text_out.append(text)
            else:
                match mode:
                    case ThinkingMode.SHOW_REASONING:
                        text = text if state.reasoned else self.style.prefix + text
                        text_out.append(text)
                    case ThinkingMode.EVENTS | ThinkingMode.BOTH:
                        before.append(Thinking(text))
                    case ThinkingMode.SEPARATE:
                        reasoning_out.append(text)
                state.reasoned = True
            self._debug(part, text)
        if mode is ThinkingMode.BOTH:
            return choice  # data untouched; only the events were added
        new_delta = {k: v for k, v in delta.items() if k not in REASONING_KEYS and k != "content"}
        if text_out:
            new_delta["content"] = "".join(text_out)
        elif "content" in delta and delta["content"] is None:
            new_delta["content"] = None
        if reasoning_out:
            new_delta["reasoning_content"] = "".join(reasoning_out)
        meaningful = (
            text_out
            or reasoning_out
            or new_delta.get("tool_calls")
            or new_delta.get("role")
            or choice.get("finish_reason")
            or any(k not in ("content",) for k in new_delta)
        )
        if not meaningful:
            return None
        return {**choice, "delta": new_delta}

    def _flush_all(self) -> list[Item]:
        out: list[Item] = []
        for index, state in self._choices.items():
            fragments = state.inline.flush()
            if not fragments:
                continue
            before: list[Item] = []
            choice = {"index": index, "delta": {}, "finish_reason": None}
            routed = self._route(choice, {}, state, fragments, before)
            out.extend(before)
            if self.mode is ThinkingMode.BOTH:
                continue  # the data stream already carried this text as sent
            if routed is not None:
                out.append(Chunk({**self._meta, "choices": [routed]}))
        return out

    def _debug(self, part: _Part, text: str) -> None:
        if self.debug is not None:
            where = _REASONING_GOES[self.mode] if part is _Part.REASONING else "content"
            self.debug(f"{part} -> {where}", text)


def split_inline(content: str) -> tuple[str, str]:
    """(reasoning, answer) of a complete message content with an optional leading ``<think>`` block."""
    stripped = content.lstrip()
    if not stripped.startswith(OPEN):
        return "", content
    rest = stripped[len(OPEN) :]
    end = rest.find(CLOSE)
    if end < 0:
        return rest, ""
    return rest[:end], rest[end + len(CLOSE) :].lstrip()


def apply_to_reply(reply: dict[str, Any], mode: str, style: ReasoningStyle) -> dict[str, Any]:
    """Route the reasoning of a non-streamed reply; returns the new reply.

    A non-streamed reply cannot carry ``event: thinking`` frames, so ``events`` removes the reasoning from it (as
    ``off`` does); ``both`` and ``default`` leave the reply as it is.
    """
    routing = thinking_mode(mode)
    choices = reply.get("choices")
    if routing in (ThinkingMode.DEFAULT, ThinkingMode.BOTH) or not isinstance(choices, list):
        return reply
    return {**reply, "choices": [_route_choice(choice, routing, style) for choice in choices]}


def _route_choice(choice: Any, mode: ThinkingMode, style: ReasoningStyle) -> Any:
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict):
        return choice
    reasoning = "".join(msg[k] for k in REASONING_KEYS if isinstance(msg.get(k), str))
    content = msg.get("content")
    inline_reasoning, answer = split_inline(content) if isinstance(content, str) else ("", content)
    reasoning += inline_reasoning
    if not reasoning:
        return choice
    new_msg = {k: v for k, v in msg.items() if k not in REASONING_KEYS}
    match mode:
        case ThinkingMode.SHOW_REASONING:
            new_msg["content"] = style.prefix + reasoning + (style.separator + answer if answer else "")
        case ThinkingMode.SEPARATE:
            new_msg["content"] = answer
            new_msg["reasoning_content"] = reasoning
        case _:  # events, off
            new_msg["content"] = answer
    return {**choice, "message": new_msg}
