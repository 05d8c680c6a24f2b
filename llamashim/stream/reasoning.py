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
from typing import Any

from llamashim.errors import BadRequest
from llamashim.jsonutil import int_or
from llamashim.stream.items import Chunk, Done, Item, Thinking

MODES = ("default", "show_reasoning", "events", "both", "off")
ALIASES = {"content": "show_reasoning"}
OPEN, CLOSE = "<think>", "</think>"
REASONING_KEYS = ("reasoning_content", "reasoning")

Debug = Callable[[str, str], None]


@dataclass(frozen=True)
class ReasoningStyle:
    prefix: str = "💭 "
    separator: str = "\n\n---\n\n"


def mode_for_request(configured: str, header: bytes | str | None) -> str:
    """The mode for one request: the ``X-Llamashim-Thinking`` header overrides the configured mode."""
    if header is None:
        return configured
    text = (header.decode("latin-1") if isinstance(header, bytes) else header).strip().lower()
    if not text:
        return configured
    text = ALIASES.get(text, text)
    if text not in MODES:
        raise BadRequest(f"X-Llamashim-Thinking: {text!r} is not one of {', '.join(MODES)}")
    return text


def separate_mode(mode: str, think: object = None) -> str:
    """The routing for dialects where reasoning has its own place (Ollama's ``message.thinking``, Anthropic's
    thinking blocks, Responses' reasoning items): kept apart unless the configured mode folds it into the answer
    (``show_reasoning``) or drops it (``off``, or the client's own ``think: false``)."""
    if think is False or mode == "off":
        return "off"
    if mode == "show_reasoning":
        return "show_reasoning"
    return "separate"



def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@dataclass
class _Inline:
    """The inline-tag state of one choice."""

    phase: str = "start"  # start | thinking | answer
    held: str = ""
    strip: bool = False  # drop whitespace right after </think>

    def feed(self, text: str) -> list[tuple[str, str]]:
        """Content text in → [(kind, text)] out, kind "reasoning" or "answer"."""
        out: list[tuple[str, str]] = []
        if self.phase == "answer":
            self._answer(text, out)
            return out
        buf = self.held + text
        self.held = ""
        if self.phase == "start":
            stripped = buf.lstrip()
            if not stripped or (len(stripped) < len(OPEN) and OPEN.startswith(stripped)):
                self.held = buf
                return out
            if not stripped.startswith(OPEN):
                self.phase = "answer"
                self._answer(buf, out)
                return out
            self.phase = "thinking"
            buf = stripped[len(OPEN) :]
        # thinking
        end = buf.find(CLOSE)
        if end >= 0:
            if end:
                out.append(("reasoning", buf[:end]))
            self.phase = "answer"
            self.strip = True
            self._answer(buf[end + len(CLOSE) :], out)
            return out
        keep = _partial_suffix(buf, CLOSE)
        if keep:
            self.held = buf[-keep:]
            buf = buf[:-keep]
        if buf:
            out.append(("reasoning", buf))
        return out

    def _answer(self, text: str, out: list[tuple[str, str]]) -> None:
        if self.strip:
            text = text.lstrip()
            if not text:
                return
            self.strip = False
        if text:
            out.append(("answer", text))

    def flush(self) -> list[tuple[str, str]]:
        held, self.held = self.held, ""
        if not held:
            return []
        if self.phase == "thinking":
            return [("reasoning", held)]
        self.phase = "answer"
        out: list[tuple[str, str]] = []
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
        mode = ALIASES.get(mode, mode)
        if mode not in (*MODES, "separate"):
            raise ValueError(f"unknown thinking mode {mode!r}")
        self.mode = mode
        self.style = style or ReasoningStyle()
        self.debug = debug
        self._choices: dict[int, _Choice] = {}
        self._meta: dict[str, Any] = {}

    def feed(self, item: Item) -> list[Item]:
        if self.mode == "default":
            return [item]
        if isinstance(item, Chunk):
            return self._chunk(item)
        if isinstance(item, Done):
            return [*self._flush_all(), item]
        return [item]

    def finish(self) -> list[Item]:
        if self.mode == "default":
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
        if self.mode == "both":
            return [*before, chunk]
        if new_choices is None:
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
            and state.inline.phase == "answer"
            and not state.inline.strip
            and not (self.mode == "show_reasoning" and state.reasoned and not state.separated and content)
        ):
            return choice  # the fast path: a plain answer chunk
        fragments: list[tuple[str, str]] = []
        for key in REASONING_KEYS:
            value = delta.get(key)
            if isinstance(value, str) and value:
                fragments.append(("reasoning", value))
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
        fragments: list[tuple[str, str]],
        before: list[Item],
    ) -> Any:
        mode = self.mode
        text_out: list[str] = []
        reasoning_out: list[str] = []
        for kind, text in fragments:
            if kind == "reasoning":
                if mode == "show_reasoning":
                    if not state.reasoned:
                        text = self.style.prefix + text
                    text_out.append(text)
                elif mode in ("events", "both"):
                    before.append(Thinking(text))
                elif mode == "separate":
                    reasoning_out.append(text)
                state.reasoned = True
                self._debug(mode, "reasoning", text)
            else:
                if mode == "show_reasoning" and state.reasoned and not state.separated:
                    state.separated = True
                    text = self.style.separator + text
                text_out.append(text)
                self._debug(mode, "answer", text)
        if mode == "both":
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
            if self.mode == "both":
                continue  # the data stream already carried this text as sent
            if routed is not None:
                out.append(Chunk({**self._meta, "choices": [routed]}))
        return out

    def _debug(self, mode: str, kind: str, text: str) -> None:
        if self.debug is None:
            return
        where = {
            "show_reasoning": "content",
            "events": "event: thinking" if kind == "reasoning" else "content",
            "both": "content + event: thinking" if kind == "reasoning" else "content",
            "off": "dropped" if kind == "reasoning" else "content",
            "separate": "reasoning_content" if kind == "reasoning" else "content",
        }[mode]
        self.debug(f"{kind} -> {where}", text)


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


def apply_to_reply(reply: dict[str, Any], mode: str, style: ReasoningStyle) -> tuple[dict[str, Any], str]:
    """Route the reasoning of a non-streamed reply. Returns the new reply and the reasoning text.

    A non-streamed reply cannot carry ``event: thinking`` frames, so ``events`` removes the reasoning from it (as
    ``off`` does); ``both`` and ``default`` leave the reply as it is.
    """
    mode = ALIASES.get(mode, mode)
    choices = reply.get("choices")
    if not isinstance(choices, list):
        return reply, ""
    all_reasoning: list[str] = []
    new_choices: list[Any] = []
    for choice in choices:
        msg = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(msg, dict):
            new_choices.append(choice)
            continue
        reasoning = "".join(str(msg.get(k)) for k in REASONING_KEYS if isinstance(msg.get(k), str) and msg.get(k))
        content = msg.get("content")
        inline_reasoning, answer = split_inline(content) if isinstance(content, str) else ("", content)
        reasoning += inline_reasoning
        all_reasoning.append(reasoning)
        if mode in ("default", "both") or not reasoning:
            new_choices.append(choice)
            continue
        new_msg = {k: v for k, v in msg.items() if k not in REASONING_KEYS}
        if mode == "show_reasoning":
            new_msg["content"] = style.prefix + reasoning + (style.separator + answer if answer else "")
        elif mode == "separate":
            new_msg["content"] = answer
            new_msg["reasoning_content"] = reasoning
        else:  # events, off
            new_msg["content"] = answer
        new_choices.append({**choice, "message": new_msg})
    return {**reply, "choices": new_choices}, "".join(all_reasoning)
