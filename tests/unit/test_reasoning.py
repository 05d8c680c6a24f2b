"""Reasoning routing: mode × source × streaming, splits at any boundary, nothing held back."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamashim.config import load_config
from llamashim.errors import BadRequest
from llamashim.modes import ThinkingMode, ToolsMode
from llamashim.stream.items import Chunk, Done, Item, Thinking
from llamashim.stream.reasoning import (
    ReasoningRouter,
    ReasoningStyle,
    apply_to_reply,
    mode_for_request,
    separate_mode,
)

STYLE = ReasoningStyle()
MODES = ["default", "show_reasoning", "events", "both", "off", "separate"]


def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return Chunk({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
                                                                             "finish_reason": finish}]}, b"RAW")


def run(mode: str, items: list[Item]) -> list[Item]:
    router = ReasoningRouter(mode, STYLE)
    out: list[Item] = []
    for item in items:
        out.extend(router.feed(item))
    out.extend(router.finish())
    return out


def visible(items: list[Item]) -> tuple[str, str, str, list[Any]]:
    """(content, reasoning_content, thinking events, tool calls) as a client would assemble them."""
    content = reasoning = events = ""
    calls: list[Any] = []
    for item in items:
        if isinstance(item, Thinking):
            events += item.text
        elif isinstance(item, Chunk):
            for choice in item.data.get("choices", []):
                d = choice.get("delta", {})
                content += d.get("content") or ""
                reasoning += d.get("reasoning_content") or ""
                calls += d.get("tool_calls") or []
    return content, reasoning, events, calls


def inline_stream(pieces: list[str]) -> list[Item]:
    return [chunk({"role": "assistant", "content": None}), *[chunk({"content": p}) for p in pieces],
            chunk({}, "stop"), Done()]


def rc_stream(reasoning: list[str], content: list[str], tools: bool = False) -> list[Item]:
    items: list[Item] = [chunk({"role": "assistant", "content": None})]
    items += [chunk({"reasoning_content": r}) for r in reasoning]
    items += [chunk({"content": c}) for c in content]
    if tools:
        items.append(chunk({"tool_calls": [{"index": 0, "id": "t", "type": "function",
                                            "function": {"name": "f", "arguments": "{}"}}]}))
    items += [chunk({}, "tool_calls" if tools else "stop"), Done()]
    return items


EXPECTED = {
    # mode: (content, reasoning_content, events)
    "default": None,
    "show_reasoning": ("💭 I think.\n\n---\n\nAnswer.", "", ""),
    "events": ("Answer.", "", "I think."),
    "off": ("Answer.", "", ""),
    "separate": ("Answer.", "I think.", ""),
}


@pytest.mark.parametrize("tools", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_reasoning_content_source(mode: str, tools: bool) -> None:
    """Streamed reasoning_content goes to content, reasoning_content or events per mode; tool calls survive."""
    out = visible(run(mode, rc_stream(["I ", "think."], ["Ans", "wer."], tools)))
    if mode in ("default", "both"):
        assert out[:2] == ("Answer.", "I think.")
        assert out[2] == ("I think." if mode == "both" else "")
    else:
        assert out[:3] == EXPECTED[mode]
    assert len(out[3]) == (1 if tools else 0)


@pytest.mark.parametrize("mode", MODES)
def test_inline_source(mode: str) -> None:
    """Inline <think> split across chunks stays in content for default/both (both adds events); others route it."""
    out = visible(run(mode, inline_stream(["<thi", "nk>I ", "think.</th", "ink>\n\n", "Answer."])))
    if mode in ("default", "both"):
        assert out[0] == "<think>I think.</think>\n\nAnswer."
        assert out[2] == ("I think." if mode == "both" else "")
    else:
        assert out[:3] == EXPECTED[mode]


@pytest.mark.parametrize("mode", MODES)
def test_non_streamed(mode: str) -> None:
    """Non-streamed replies (reasoning_content or inline <think>) are rewritten per mode."""
    for msg in ({"role": "assistant", "reasoning_content": "I think.", "content": "Answer."},
                {"role": "assistant", "content": "<think>I think.</think>\n\nAnswer."}):
        reply = {"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}
        out = apply_to_reply(reply, mode, STYLE)
        got = out["choices"][0]["message"]
        if mode in ("default", "both"):
            assert out is reply or got == msg
        elif mode == "show_reasoning":
            assert got["content"] == "💭 I think.\n\n---\n\nAnswer." and "reasoning_content" not in got
        elif mode == "separate":
            assert got["content"] == "Answer." and got["reasoning_content"] == "I think."
        else:
            assert got["content"] == "Answer." and "reasoning_content" not in got


@pytest.mark.parametrize("mode", MODES)
def test_answer_without_reasoning_flows_at_once(mode: str) -> None:
    """Content with no think tag is emitted at once, and later chunks pass as the very same objects."""
    router = ReasoningRouter(mode, STYLE)
    first = chunk({"content": "Hello"})
    out = router.feed(first)
    assert visible(out)[0] == "Hello"
    later = chunk({"content": " world"})
    assert router.feed(later) == [later] and router.feed(later)[0] is later  # fast path: same object, raw intact


@pytest.mark.parametrize("mode", ["show_reasoning", "events", "off", "separate"])
def test_only_a_possible_tag_start_is_held(mode: str) -> None:
    """Only a possible <think> prefix is held; it is released once it stops matching; <thinking> passes."""
    router = ReasoningRouter(mode, STYLE)
    assert visible(router.feed(chunk({"content": "<th"})))[0] == ""
    assert visible(router.feed(chunk({"content": "e weather"})))[0] == "<the weather"
    router = ReasoningRouter(mode, STYLE)
    assert visible(router.feed(chunk({"content": "<thinking> is a tag"})))[0] == "<thinking> is a tag"


@pytest.mark.parametrize("mode", MODES)
def test_unterminated_think_block(mode: str) -> None:
    """A <think> cut off by the stream's end is flushed as prefixed content, events or reasoning, or dropped (off)."""
    items: list[Item] = [chunk({"content": "<think>still thinking"}), chunk({"content": " </thi"})]
    out = visible(run(mode, items))  # the stream ends here, without finish or [DONE]
    if mode == "show_reasoning":
        assert out[0] == "💭 still thinking </thi"
    elif mode == "events":
        assert out[2] == "still thinking </thi" and out[0] == ""
    elif mode == "separate":
        assert out[1] == "still thinking </thi"
    elif mode == "off":
        assert out[0] == "" and out[1] == ""


def test_held_text_comes_before_the_finish_and_done() -> None:
    """Held text that never becomes a tag is released when the stream ends, and Done stays the last item."""
    out = run("off", [chunk({"content": "<t"}), chunk({}, "length"), Done()])
    assert visible(out)[0] == "<t"
    assert isinstance(out[-1], Done)


def test_debug_hook_sees_every_fragment() -> None:
    """The debug hook is told where each reasoning and answer fragment was routed."""
    seen: list[tuple[str, str]] = []
    router = ReasoningRouter("events", STYLE, lambda where, text: seen.append((where, text)))
    for item in rc_stream(["a"], ["b"]):
        router.feed(item)
    assert ("reasoning -> event: thinking", "a") in seen and ("answer -> content", "b") in seen


TEXT = "  <think>Let me think about \u00e9t\u00e9 ☕.</think>\n\nThe answer is 4. <think> stays."


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=10), st.sampled_from(MODES))
def test_any_split_gives_the_same_visible_result(cuts: list[int], mode: str) -> None:
    """Splitting inline-think text at any points gives the same visible result as one chunk, in every mode."""
    points = sorted(set(cuts))
    pieces = [TEXT[a:b] for a, b in zip([0, *points], [*points, len(TEXT)], strict=True)]
    whole = visible(run(mode, inline_stream([TEXT])))
    split = visible(run(mode, inline_stream([p for p in pieces if p])))
    assert split == whole


def test_mode_for_request_and_ollama_mode() -> None:
    """The header picks the mode (any case, aliases; unknown is a 400); Ollama's think flag maps to a mode."""
    assert mode_for_request("default", None) == "default"
    assert mode_for_request("default", b"Off") == "off"
    assert mode_for_request("off", "content") == "show_reasoning"
    with pytest.raises(BadRequest):
        mode_for_request("default", b"loud")
    assert separate_mode("default", None) == "separate"
    assert separate_mode("both", True) == "separate"
    assert separate_mode("events", False) == "off"
    assert separate_mode("show_reasoning", None) == "show_reasoning"
    assert separate_mode("off", True) == "off"


def test_modes_are_values() -> None:
    """Modes (from a header, a dialect or the configuration) are enum members whose values are the wire names; an
    unknown mode is refused."""
    assert mode_for_request("default", b"content") is ThinkingMode.SHOW_REASONING
    assert mode_for_request(ThinkingMode.EVENTS, None) is ThinkingMode.EVENTS
    assert separate_mode(ThinkingMode.BOTH) is ThinkingMode.SEPARATE
    assert ReasoningRouter("content", STYLE).mode is ThinkingMode.SHOW_REASONING
    with pytest.raises(BadRequest):
        mode_for_request("default", b"separate")  # internal: never named by a client
    with pytest.raises(ValueError, match="unknown thinking mode 'loud'"):
        ReasoningRouter("loud", STYLE)
    configured = load_config({"thinking_mode": "Content", "tool_streaming": "native"}, {})
    assert configured.thinking.mode is ThinkingMode.SHOW_REASONING and configured.tools.streaming is ToolsMode.NATIVE


@pytest.mark.parametrize(("mode", "where"), [("show_reasoning", "content"), ("both", "content + event: thinking"),
                                             ("off", "dropped"), ("separate", "reasoning_content")])
def test_debug_hook_names_where_reasoning_went(mode: str, where: str) -> None:
    """Each mode's debug line says where reasoning went; answer text always goes to content."""
    seen: list[str] = []
    router = ReasoningRouter(mode, STYLE, lambda said, text: seen.append(said))
    for item in rc_stream(["a"], ["b"]):
        router.feed(item)
    assert seen == [f"reasoning -> {where}", "answer -> content"]
