"""Tool-call rescue: every corpus answer gives exactly its calls and text, whole (``rescue_text``) and streamed through
the stage in small random pieces; look-alikes stay text; arguments are repaired; holding is bounded; plain text is
passed as it came, and cheaply."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from llamashim.stream.items import Chunk, Done, Item, StreamError
from llamashim.stream.rescue import ToolCallRescue, repair_arguments, rescue_reply, rescue_text
from llamashim.stream.rescue.detect import FAMILIES
from tests.unit.rescue_corpus import CASES, TOOLS, Case

META = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _args(text: str) -> Any:
    return json.loads(text)


def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return Chunk({**META, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, b"raw")


def pieces(text: str, seed: int) -> list[str]:
    """``text`` cut into pieces of 1 to 8 characters, the same way for the same seed."""
    rng, out, at = random.Random(seed), [], 0
    while at < len(text):
        size = rng.randint(1, 8)
        out.append(text[at:at + size])
        at += size
    return out


def run_stage(parts: list[str], tools: Any = TOOLS, **kw: Any) -> tuple[str, list[tuple[str, Any]], list[Item]]:
    """The stage fed a role chunk, ``parts`` as content deltas, a stop chunk and ``[DONE]``: (content, calls, items)."""
    stage = ToolCallRescue(tools, **kw)
    items: list[Item] = []
    items += stage.feed(chunk({"role": "assistant", "content": None}))
    for part in parts:
        items += stage.feed(chunk({"content": part}))
    items += stage.feed(chunk({}, "stop"))
    items += stage.feed(Done())
    items += stage.finish()
    return assemble(items)


def assemble(items: list[Item]) -> tuple[str, list[tuple[str, Any]], list[Item]]:
    content: list[str] = []
    calls: list[tuple[str, Any]] = []
    finish = None
    for item in items:
        if not isinstance(item, Chunk):
            continue
        for choice in item.data["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or ():
                assert call["index"] == len(calls) and call["id"] and call["type"] == "function"
                calls.append((call["function"]["name"], _args(call["function"]["arguments"])))
            finish = choice["finish_reason"] or finish
    assert finish == ("tool_calls" if calls else "stop")
    return "".join(content), calls, items


def test_the_corpus_is_big_and_varied() -> None:
    """At least 60 answers over at least 8 markups, look-alikes among them, and every markup module has cases."""
    families = {c.family for c in CASES if c.calls}
    assert len(CASES) >= 60 and len(families) >= 8
    assert sum(1 for c in CASES if not c.calls) >= 10
    assert {f.__name__.rsplit(".", 1)[1] for f in FAMILIES} <= {c.family for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rescue_text(case: Case) -> None:
    """A whole answer: exactly the expected calls (arguments as JSON) and the text left over, or the text unchanged."""
    text, calls = rescue_text(case.text, TOOLS)
    assert text == case.expected_text
    assert [(c.name, _args(c.arguments)) for c in calls] == case.calls


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_streamed_in_random_pieces(case: Case) -> None:
    """The same answer streamed in pieces of 1-8 characters (three seeds): the same calls as tool-call deltas, the
    same text as content, finish_reason tool_calls exactly when there are calls."""
    for seed in range(3):
        content, calls, _ = run_stage(pieces(case.text, seed))
        assert (content, calls) == (case.expected_text, case.calls), f"seed {seed}"


def test_only_offered_tools_count() -> None:
    """A call naming a tool the request did not offer stays text; with no tools nothing is rescued."""
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert rescue_text(call, [TOOLS[1]]) == (call, [])
    assert rescue_text(call, []) == (call, [])
    assert rescue_text(call, ["get_weather"])[1][0].name == "get_weather"


def test_plain_text_passes_as_it_came() -> None:
    """Chunks of plain text leave the stage as the very same objects (their upstream bytes kept)."""
    stage = ToolCallRescue(TOOLS)
    stage.feed(chunk({"role": "assistant", "content": None}))
    first = chunk({"content": "Hello"})
    stage.feed(first)
    for text in (" world", ", a < b", " and [x]", " `code`", "\n"):
        item = chunk({"content": text})
        assert stage.feed(item) == [item]


def test_a_false_start_is_released_unchanged_at_once() -> None:
    """``<tool_call>`` followed by prose is released as soon as it proves not to be a call, not at the end."""
    stage = ToolCallRescue(TOOLS)
    stage.feed(chunk({"role": "assistant", "content": None}))
    stage.feed(chunk({"content": "Hi. "}))
    assert stage.feed(chunk({"content": "<tool_"})) == []
    out = stage.feed(chunk({"content": "call> tags are"}))
    assert [c.data["choices"][0]["delta"]["content"] for c in out if isinstance(c, Chunk)] == ["<tool_call> tags are"]


def test_holding_is_bounded() -> None:
    """A possible markup longer than max_hold is released as text while the stream goes on."""
    stage = ToolCallRescue(TOOLS, max_hold=64)
    stage.feed(chunk({"role": "assistant", "content": None}))
    stage.feed(chunk({"content": 'Go: <tool_call>{"name": "get_weather", "arguments": {"city": "'}))
    out = stage.feed(chunk({"content": "x" * 100}))
    released = "".join(c.data["choices"][0]["delta"].get("content") or "" for c in out if isinstance(c, Chunk))
    assert released.startswith('<tool_call>{"name"') and released.endswith("x" * 100)


def test_an_unclosed_call_at_the_end_of_the_stream_is_released() -> None:
    """The stream ends (no finish_reason) while a call is still open: the held text goes out before [DONE]."""
    stage = ToolCallRescue(TOOLS)
    stage.feed(chunk({"role": "assistant", "content": None}))
    held = stage.feed(chunk({"content": '<tool_call>{"name": "get_weather", "argu'}))
    out = stage.feed(Done())
    assert held == [] and isinstance(out[-1], Done)
    assert isinstance(out[0], Chunk)
    assert out[0].data["choices"][0]["delta"]["content"] == '<tool_call>{"name": "get_weather", "argu'


def test_an_error_releases_what_is_held_before_it() -> None:
    """A stream error arrives while text is held: the text goes out first, then the error."""
    stage = ToolCallRescue(TOOLS)
    stage.feed(chunk({"role": "assistant", "content": None}))
    stage.feed(chunk({"content": "<tool_call>{"}))
    out = stage.feed(StreamError("boom"))
    assert isinstance(out[-1], StreamError) and isinstance(out[0], Chunk)


def test_rescued_calls_follow_native_ones() -> None:
    """A rescued call gets the index after the upstream's own calls of the choice."""
    stage = ToolCallRescue(TOOLS)
    stage.feed(chunk({"role": "assistant", "content": None}))
    native = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}
    stage.feed(chunk({"tool_calls": [native]}))
    out = stage.feed(chunk({"content": '[TOOL_CALLS]special_function[ARGS]{"arg1": 1}'}))
    out += stage.feed(chunk({}, "stop"))
    calls = [tc for c in out if isinstance(c, Chunk) for ch in c.data["choices"] for tc in ch["delta"].get(
        "tool_calls") or ()]
    assert [c["index"] for c in calls] == [1]
    assert isinstance(out[-1], Chunk) and out[-1].data["choices"][0]["finish_reason"] == "tool_calls"


def test_usage_and_timings_are_kept() -> None:
    """The finish chunk's timings ride on the last chunk the stage makes of it."""
    stage = ToolCallRescue(TOOLS)
    stage.feed(chunk({"role": "assistant", "content": None}))
    stage.feed(chunk({"content": '<tool_call>{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>'}))
    last = chunk({}, "stop")
    last.data["timings"] = {"predicted_n": 3}
    out = stage.feed(last)
    assert isinstance(out[-1], Chunk) and out[-1].data["timings"] == {"predicted_n": 3}


def test_reply_rescue() -> None:
    """A non-streamed reply: the call moves to tool_calls (content null when nothing else is left), finish_reason
    tool_calls; a reply with no markup is the same object; native arguments are repaired."""
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    reply = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": call}}]}
    fixed = rescue_reply(reply, TOOLS, new_id=lambda: "call_x")
    choice = fixed["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "call_x", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    plain = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}]}
    assert rescue_reply(plain, TOOLS) is plain
    native = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "search", "arguments": '{"limit": "3",}'}}]}}]}
    args = rescue_reply(native, TOOLS)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {"limit": 3}


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": 1,}', {"a": 1}),
    ("{'a': 'b'}", {"a": "b"}),
    ('{"a": "x\ny"}', {"a": "x\ny"}),
    ('{"a": True, "b": None, "c": False}', {"a": True, "b": None, "c": False}),
    ('```json\n{"a": [1, 2,],}\n```', {"a": [1, 2]}),
])
def test_repair_nearly_json(text: str, expected: Any) -> None:
    """Trailing commas, single quotes, raw newlines, Python literals and a fence are repaired."""
    assert json.loads(repair_arguments(text)) == expected


def test_repair_coerces_by_schema_and_never_raises() -> None:
    """Strings become what the schema says; valid text that needs nothing is returned byte for byte; what cannot be
    repaired comes back as written."""
    schema = TOOLS[5]["function"]["parameters"]
    assert json.loads(repair_arguments('{"limit": "7", "exact": "TRUE", "tags": "a"}', schema)) == {
        "limit": 7, "exact": True, "tags": ["a"]}
    assert repair_arguments('{"query": "x",  "limit": 7}', schema) == '{"query": "x",  "limit": 7}'
    huge = '{"n": 123456789012345678901234567890}'
    for broken in ('{"a": ', "not json at all", '{"limit": "seven"}', "[" * 500, huge):
        out = repair_arguments(broken, schema)
        assert out == broken or json.loads(out) is not None


def test_plain_chunks_cost_at_most_3_microseconds() -> None:
    """The stage's cost on a plain-text chunk (no markup) is at most 3 µs (best of 5 runs of 20,000 chunks)."""
    stage = ToolCallRescue(TOOLS)
    stage.feed(chunk({"role": "assistant", "content": None}))
    stage.feed(chunk({"content": "Hello"}))
    items = [chunk({"content": w}) for w in (" the", " quick", " brown", " fox", " jumps", ".\n", " over", " it")]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2500):
            for item in items:
                stage.feed(item)
        best = min(best, (time.perf_counter() - start) / 20000)
    assert best <= 3e-6, f"{best * 1e6:.2f} µs per chunk"


def test_a_long_call_costs_linear_time() -> None:
    """A 120 KB write_file call streamed in 5-character pieces is rescued whole, without re-reading the held text
    on every piece (well under a second), and a long unclosed one comes back unchanged."""
    content = "def f():\n    return {1: [2]}\n" * 4000
    call = json.dumps({"name": "write_file", "arguments": {"path": "a.py", "content": content}})
    start = time.perf_counter()
    text, calls, _ = run_stage(pieces("<tool_call>\n" + call + "\n</tool_call>", 1), tools=TOOLS)
    assert time.perf_counter() - start < 2.0
    assert text == "" and calls == [("write_file", {"path": "a.py", "content": content})]
    unclosed = '<tool_call>{"name": "write_file", "arguments": {"content": "' + "x" * 20000
    assert run_stage(pieces(unclosed, 2))[:2] == (unclosed, [])
