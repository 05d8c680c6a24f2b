"""Runaway tool calls are cut (llamashim.stream.runaway): the guard stage on conformed chunks, and the same rule for a
non-streamed reply."""

from __future__ import annotations

import json
from typing import Any

from llamashim.stream.items import Chunk, Done, Item
from llamashim.stream.runaway import MAX_CALLS_KEY, MAX_REPEATS_KEY, RunawayGuard, limit_reply_calls


def call_chunks(n: int, args: str = '{"i": %d}') -> list[Item]:
    """``n`` conformed tool calls, each a start chunk (id, name) then an arguments chunk, then the finish chunk."""
    out: list[Item] = []
    for i in range(n):
        text = args % i if "%d" in args else args
        out.append(Chunk({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "id": f"call{i}", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}))
        out.append(Chunk({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "function": {"arguments": text}}]}}]}))
    out.append(Chunk({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
    out.append(Done())
    return out


def run(guard: RunawayGuard, items: list[Item]) -> list[Item]:
    return [out for item in items for out in guard.feed(item)]


def started(items: list[Item]) -> list[int]:
    return [c["index"] for item in items if isinstance(item, Chunk)
            for ch in item.data["choices"] for c in ch.get("delta", {}).get("tool_calls", []) if "id" in c]


def test_calls_within_the_limits_pass_untouched() -> None:
    """Eight distinct calls under limits of 8 calls and 3 repeats: every item passes as the same object."""
    items = call_chunks(8)
    guard = RunawayGuard(max_calls=8, max_repeats=3)
    assert run(guard, items) == items and guard.cut is None


def test_a_call_beyond_max_calls_ends_the_answer() -> None:
    """With max_calls 5, the sixth call's start is dropped and the stream ends with finish_reason tool_calls and a
    Done naming tools.max_calls; the five calls before it went out whole."""
    guard = RunawayGuard(max_calls=5, max_repeats=99)
    out = run(guard, call_chunks(40))
    assert started(out) == [0, 1, 2, 3, 4]
    assert isinstance(out[-1], Done) and out[-1].cut == MAX_CALLS_KEY and guard.cut == MAX_CALLS_KEY
    finish = out[-2]
    assert isinstance(finish, Chunk) and finish.data["choices"] == [
        {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    assert finish.data["id"] == "c" and finish.data["model"] == "m"


def test_the_same_call_repeated_ends_the_answer_at_max_repeats() -> None:
    """The same name and arguments for the third time (max_repeats 3) ends the stream when that call completes:
    three calls out, the fourth's start dropped, Done naming tools.max_repeats."""
    guard = RunawayGuard(max_calls=64, max_repeats=3)
    out = run(guard, call_chunks(50, args='{"path": "a.txt"}'))
    assert started(out) == [0, 1, 2]
    assert isinstance(out[-1], Done) and out[-1].cut == MAX_REPEATS_KEY


def test_a_repeat_is_counted_when_its_arguments_are_whole() -> None:
    """Calls that share a prefix of their arguments are different calls; only whole equal arguments repeat."""
    guard = RunawayGuard(max_calls=64, max_repeats=2)
    assert guard.cut is None and started(run(guard, call_chunks(10))) == list(range(10))


def test_nothing_after_the_cut() -> None:
    """Once cut, later items (the upstream still talking) produce nothing."""
    guard = RunawayGuard(max_calls=1, max_repeats=9)
    run(guard, call_chunks(3))
    assert guard.feed(Chunk({"choices": []})) == [] and guard.feed(Done()) == []


def reply_with(calls: list[tuple[str, str]]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
        for i, (n, a) in enumerate(calls)]}}]}


def test_a_reply_keeps_at_most_max_calls() -> None:
    """A non-streamed reply with 100 calls keeps the first 64 (the default) and says tools.max_calls."""
    reply, cut = limit_reply_calls(reply_with([("f", json.dumps({"i": i})) for i in range(100)]))
    assert cut == MAX_CALLS_KEY and len(reply["choices"][0]["message"]["tool_calls"]) == 64


def test_a_reply_ends_at_the_repeat_limit_and_a_normal_one_is_untouched() -> None:
    """Repeats: the reply ends with the max_repeats-th identical call; a reply within the limits is the same
    object."""
    looping = reply_with([("f", "{}")] * 20)
    reply, cut = limit_reply_calls(looping, max_repeats=4)
    assert cut == MAX_REPEATS_KEY and len(reply["choices"][0]["message"]["tool_calls"]) == 4
    fine = reply_with([("f", "{}"), ("g", "{}")])
    assert limit_reply_calls(fine) == (fine, None)
