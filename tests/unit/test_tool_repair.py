"""Request repair: every repair in DESIGN.md, table-tested; unrepairable shapes are 400s naming the index."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from llamashim.chat.repair import repair_chat_request
from llamashim.errors import BadRequest

GOOD_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, fmt: str, **kw: Any) -> None:
        self.lines.append(fmt.format(**kw))


def tool(**fn: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "get_weather", **fn}}


def repaired_tool(t: Any) -> tuple[dict[str, Any], list[str]]:
    log = Log()
    out = repair_chat_request({"messages": [], "tools": [t]}, log)
    return out["tools"][0], log.lines


@pytest.mark.parametrize(
    ("given", "expected_params", "log_needle"),
    [
        ({"function": {"name": "get_weather", "parameters": GOOD_PARAMS}}, GOOD_PARAMS, "missing type"),
        (tool(), {"type": "object", "properties": {}}, "missing parameters"),
        (tool(parameters=None), {"type": "object", "properties": {}}, "missing parameters"),
        (tool(parameters=json.dumps(GOOD_PARAMS)), GOOD_PARAMS, "JSON string"),
        (tool(parameters={"city": {"type": "string"}}), {"type": "object", "properties": {"city": {"type": "string"}}},
         "bare property map"),
        (tool(parameters={"type": "object"}), {"type": "object", "properties": {}}, "without properties"),
        (tool(parameters={}), {"type": "object", "properties": {}}, "empty parameters"),
    ],
)
def test_tool_repairs(given: dict[str, Any], expected_params: dict[str, Any], log_needle: str) -> None:
    """Each repairable tool shape becomes a function tool with object parameters, is logged, and is not mutated."""
    before = copy.deepcopy(given)
    out, lines = repaired_tool(given)
    assert out["type"] == "function"
    assert out["function"]["name"] == "get_weather"
    assert out["function"]["parameters"] == expected_params
    assert any(log_needle in line and "get_weather" in line for line in lines), lines
    assert given == before  # the caller's objects are not mutated


def test_well_formed_request_is_returned_as_is_and_logs_nothing() -> None:
    """A well-formed request is returned as the same object and nothing is logged."""
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [tool(parameters=GOOD_PARAMS)] * 3,
    }
    log = Log()
    assert repair_chat_request(body, log) is body
    assert log.lines == []


def test_legacy_functions_become_tools() -> None:
    """Legacy functions and function_call become tools and tool_choice."""
    out = repair_chat_request(
        {"messages": [], "functions": [{"name": "f", "parameters": GOOD_PARAMS}], "function_call": {"name": "f"}},
        Log(),
    )
    assert "functions" not in out and "function_call" not in out
    assert out["tools"] == [{"type": "function", "function": {"name": "f", "parameters": GOOD_PARAMS}}]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize("empty", [[], None])
def test_empty_tools_removed_with_tool_choice(empty: Any) -> None:
    """An empty or null tools list is removed together with tool_choice."""
    out = repair_chat_request({"messages": [], "tools": empty, "tool_choice": "auto"}, Log())
    assert "tools" not in out and "tool_choice" not in out


def test_message_fixups() -> None:
    """Object arguments become JSON text, calls get id and type, null content '', tool results the call's id."""
    log = Log()
    body: dict[str, Any] = {
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny"},
        ]
    }
    out = repair_chat_request(body, log)
    call = out["messages"][0]["tool_calls"][0]
    assert call["function"]["arguments"] == '{"city":"Paris"}'
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert out["messages"][0]["content"] == ""
    assert out["messages"][1]["tool_call_id"] == call["id"]
    assert body["messages"][0]["content"] is None  # not mutated


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"tools": "get_weather"}, "tools must be a list"),
        ({"tools": [tool(parameters=GOOD_PARAMS), 7]}, "tools[1]"),
        ({"tools": [tool(parameters=GOOD_PARAMS), {"type": "function", "function": {"parameters": {}}}]},
         "tools[1].function.name"),
        ({"tools": [{"type": "function", "function": "x"}]}, "tools[0].function"),
        ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [tool(parameters="{not json")]}, "tools[0].function.parameters"),
        ({"tools": [tool(parameters=[1])]}, "tools[0].function.parameters"),
        ({"messages": "hi"}, "messages must be a list"),
        ({"messages": [1]}, "messages[0]"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"function": "x"}]}]}, "messages[0].tool_calls[0]"),
    ],
)
def test_unrepairable_shapes_are_400s(body: dict[str, Any], needle: str) -> None:
    """Shapes that cannot be repaired are a 400 whose message names the offending index or field."""
    with pytest.raises(BadRequest) as e:
        repair_chat_request(body, Log())
    assert e.value.status == 400 and needle in e.value.message


def test_128_tools_cost_almost_nothing() -> None:
    """Copilot sends up to 128 tools; a well-formed request passes without copies (measured, not asserted on time)."""
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [tool(parameters=GOOD_PARAMS)] * 128}
    started = time.perf_counter()
    for _ in range(100):
        out = repair_chat_request(body, Log())
    per_call = (time.perf_counter() - started) / 100
    assert out is body
    print(f"repair of 128 well-formed tools: {per_call * 1e6:.1f} µs")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=20,
)
tool_like = st.fixed_dictionaries({}, optional={
    "type": json_values, "function": st.fixed_dictionaries({}, optional={
        "name": json_values, "parameters": json_values, "description": json_values}),
    "name": json_values, "parameters": json_values})


@settings(max_examples=300, deadline=None)
@given(tools=st.one_of(json_values, st.lists(st.one_of(tool_like, json_values), max_size=4)),
       messages=st.one_of(json_values, st.lists(st.fixed_dictionaries(
           {"role": st.sampled_from(["user", "assistant", "tool"])},
           optional={"content": json_values, "tool_calls": json_values, "tool_call_id": json_values}), max_size=3)),
       functions=json_values)
def test_repair_never_raises_anything_but_a_400(tools: Any, messages: Any, functions: Any) -> None:
    """For arbitrary tools, messages and functions, repair returns JSON-serialisable output or a BadRequest."""
    for body in ({"tools": tools, "messages": messages}, {"functions": functions, "messages": []}):
        try:
            out = repair_chat_request(body, Log())
        except BadRequest:
            continue
        json.dumps(out)  # what goes upstream is still JSON
