"""Reasoning carried across turns (llamashim.chat.reasoning_memory): remembered per owner and call, put back into
assistant turns that lack it, bounded in entries, bytes and age, and on only where the template reads it."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from llamashim.chat.reasoning_memory import ReasoningMemory, ReplayTap, calls_digest
from llamashim.modes import ReplayMode
from llamashim.stream.items import Chunk, Done, Item

CALL = {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a.txt"}'}}


def follow_up(calls: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [
        {"role": "user", "content": "Read a.txt"},
        {"role": "assistant", "content": "", "tool_calls": calls, **extra},
        {"role": "tool", "tool_call_id": "call_1", "content": "hello"}]}


def test_restore_puts_the_reasoning_back_for_the_same_owner_only() -> None:
    """An assistant turn with the remembered call gets its reasoning back for the owner who made it; another owner's
    request is returned untouched (the same object)."""
    memory = ReasoningMemory(Clock())
    memory.remember("alice", [CALL], "I should read a.txt first.")
    body, n = memory.restore(follow_up([CALL]), "alice")
    assert n == 1 and body["messages"][1]["reasoning_content"] == "I should read a.txt first."
    other = follow_up([CALL])
    assert memory.restore(other, "bob") == (other, 0)


def test_calls_without_ids_match_by_name_and_arguments() -> None:
    """A client that keeps no call ids (Ollama's), with the arguments re-serialised, still gets the reasoning."""
    memory = ReasoningMemory(Clock())
    memory.remember("", [CALL], "plan")
    ollama_shaped = [{"type": "function", "function": {"name": "read", "arguments": '{"path": "a.txt"}'}}]
    body, n = memory.restore(follow_up(ollama_shaped), "")
    assert n == 1 and body["messages"][1]["reasoning_content"] == "plan"
    assert calls_digest(ollama_shaped) == calls_digest([CALL])


def test_an_earlier_turn_with_the_same_calls_does_not_get_the_latest_answers_reasoning() -> None:
    """One answer's reasoning goes back into one turn, the latest with its calls: an earlier turn that made the
    same call (another id, or none) stays without (the real model repeating a call of the conversation did this)."""
    memory = ReasoningMemory(Clock())
    memory.remember("", [CALL], "plan")
    without_id = {k: v for k, v in CALL.items() if k != "id"}
    for earlier_call in ({**CALL, "id": "call_0"}, without_id):
        earlier = {"role": "assistant", "content": "", "tool_calls": [earlier_call]}
        body = follow_up([CALL])
        body["messages"][1:1] = [earlier, {"role": "tool", "tool_call_id": "call_0", "content": "hi"}]
        out, n = memory.restore(body, "")
        assert n == 1
        assert [m.get("reasoning_content") for m in out["messages"] if m["role"] == "assistant"] == [None, "plan"]


def test_a_turn_that_has_its_reasoning_keeps_it() -> None:
    """An assistant turn that still carries reasoning_content is not touched."""
    memory = ReasoningMemory(Clock())
    memory.remember("", [CALL], "remembered")
    body = follow_up([CALL], reasoning_content="the client's own")
    assert memory.restore(body, "") == (body, 0)


def test_bounded_in_entries_bytes_and_age() -> None:
    """The oldest entries go past max_entries or max_bytes, and every entry after max_age seconds."""
    clock = Clock()
    memory = ReasoningMemory(clock, max_entries=2, max_bytes=100, max_age=60)
    calls = [[{**CALL, "id": f"c{i}", "function": {"name": "read", "arguments": str(i)}}] for i in range(4)]
    for i in range(3):
        memory.remember("", calls[i], f"r{i}")
    assert memory.recall("", calls[0]) is None and memory.recall("", calls[2]) == "r2"
    memory.remember("", calls[3], "x" * 99)  # together with r2 over 100 bytes: r2 goes
    assert memory.recall("", calls[2]) is None and memory.recall("", calls[3]) == "x" * 99
    clock.advance(61)
    assert memory.recall("", calls[3]) is None


def test_applies_follows_the_mode_and_the_template() -> None:
    """auto: only for a template that reads reasoning_content; always: every template; off: never."""
    qwen = "{%- if message.reasoning_content %}<think>{{ message.reasoning_content }}</think>{%- endif %}"
    assert ReasoningMemory(Clock()).applies(qwen) and not ReasoningMemory(Clock()).applies("{{ messages }}")
    assert ReasoningMemory(Clock(), ReplayMode.ALWAYS).applies(None)
    assert not ReasoningMemory(Clock(), ReplayMode.OFF).applies(qwen)


def test_the_tap_keeps_a_streamed_answers_reasoning_and_calls_when_it_ends() -> None:
    """Reasoning deltas and a call streamed in fragments are handed over whole at Done, and the items pass as
    they are."""
    kept: list[tuple[list[dict[str, Any]], str]] = []
    tap = ReplayTap(lambda calls, reasoning: kept.append((calls, reasoning)))
    items: list[Item] = [
        Chunk({"choices": [{"index": 0, "delta": {"reasoning_content": "I should "}}]}),
        Chunk({"choices": [{"index": 0, "delta": {"reasoning_content": "read it."}}]}),
        Chunk({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                                  "function": {"name": "read", "arguments": ""}}]}}]}),
        *(Chunk({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}}]})
          for piece in ('{"path"', ':"a.txt"}')),
        Done(),
    ]
    assert [out for item in items for out in tap.feed(item)] == items
    assert kept == [([CALL], "I should read it.")]
