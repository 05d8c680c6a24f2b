"""Anthropic Messages requests → internal chat requests, and the shared glob model aliases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamashim.chat.repair import repair_chat_request
from llamashim.dialects.anthropic.translate import MessagesRequest, Thinking, request_to_chat
from llamashim.errors import BadRequest
from llamashim.upstream.models import resolve_model

JSON = dict[str, Any]
AGENT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agents"
BILLING = "x-anthropic-billing-header: cc_version=2.1.101.e51; cc_entrypoint=cli; cch=a5145;"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


class Log:
    """Records log calls as (format, fields) and the formatted line."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, JSON]] = []

    def __call__(self, fmt: str, **fields: Any) -> None:
        self.calls.append((fmt, fields))

    @property
    def lines(self) -> list[str]:
        return [fmt.format(**fields) for fmt, fields in self.calls]


def translate(strip: bool = True, log: Log | None = None, **body: Any) -> MessagesRequest:
    base: JSON = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}
    return request_to_chat({**base, **body}, strip_billing_header=strip, log=log or Log())


def chat_messages(*messages: JSON, **body: Any) -> list[JSON]:
    return translate(messages=list(messages), **body).chat_body["messages"]  # type: ignore[no-any-return]


# -- the envelope -----------------------------------------------------------------------------------------------


def test_minimal_request() -> None:
    """A minimal body → model echoed, max_tokens, stream false, no thinking, nothing extra."""
    req = translate()
    assert req.model == "claude-sonnet-4-5" and req.stream is False and req.thinking is None
    assert req.stripped_billing_header is False
    assert req.chat_body == {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}],
                             "max_tokens": 1024, "stream": False}


def test_streamed_request_asks_for_usage() -> None:
    """stream: true → stream set and stream_options.include_usage (message_delta needs the counts)."""
    req = translate(stream=True)
    assert req.stream is True
    assert req.chat_body["stream"] is True and req.chat_body["stream_options"] == {"include_usage": True}


def test_sampling_and_stop_sequences() -> None:
    """temperature, top_p, top_k pass through; stop_sequences → stop (an empty list → nothing)."""
    body = translate(temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:", "END"]).chat_body
    assert (body["temperature"], body["top_p"], body["top_k"], body["stop"]) == (0.2, 0.9, 40, ["\n\nHuman:", "END"])
    assert "stop" not in translate(stop_sequences=[]).chat_body


def test_unknown_and_anthropic_only_fields_are_ignored() -> None:
    """metadata, service_tier, container, mcp_servers, context_management and unknown fields never reach upstream."""
    body = translate(metadata={"user_id": "u"}, service_tier="auto", container="c", mcp_servers=[{"url": "x"}],
                     context_management={"edits": []}, output_config={"effort": "high"}, future_field=1).chat_body
    assert set(body) == {"model", "messages", "max_tokens", "stream"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": "hi"}, "messages must be a list"),
        ({"messages": []}, "at least one message"),
        ({"messages": [{"content": "hi"}]}, r"messages\[0\].role is missing"),
        ({"messages": [{"role": "tool", "content": "hi"}]}, r"messages\[0\].role must be"),
        ({"messages": [{"role": "system", "content": 5}]}, r"messages\[0\].content must be"),
        ({"messages": ["hi"]}, r"messages\[0\] must be an object"),
        ({"messages": [{"role": "user", "content": 5}]}, r"messages\[0\].content must be"),
        ({"max_tokens": None}, "max_tokens is required"),
        ({"max_tokens": 0}, "max_tokens is required"),
        ({"max_tokens": "100"}, "max_tokens is required"),
        ({"max_tokens": True}, "max_tokens is required"),
        ({"model": ""}, "model is required"),
        ({"stream": "yes"}, "stream must be"),
        ({"system": 3}, "system must be"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"stop_sequences": "END"}, "stop_sequences must be"),
        ({"tools": {"name": "x"}}, "tools must be a list"),
        ({"tools": [{"description": "no name", "input_schema": {}}]}, r"tools\[0\].name is missing"),
        ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "maybe"}}, "thinking.type"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}, "tool_use_id"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]},
         r"messages\[0\].content\[0\].name is missing"),
    ],
)
def test_malformed_requests_are_bad_requests(body: JSON, message: str) -> None:
    """Malformed bodies (wrong shapes, missing role or max_tokens) → BadRequest naming the field."""
    with pytest.raises(BadRequest, match=message):
        translate(**body)


def test_body_must_be_an_object() -> None:
    """A JSON array or string body → BadRequest."""
    with pytest.raises(BadRequest):
        request_to_chat([], strip_billing_header=True, log=Log())


# -- system -----------------------------------------------------------------------------------------------------


def test_system_string_and_blocks() -> None:
    """system as a string, or as text blocks (cache_control ignored) joined by a blank line, is one system message."""
    assert chat_messages({"role": "user", "content": "hi"}, system="Be brief.")[0] == {
        "role": "system", "content": "Be brief."}
    blocks = [{"type": "text", "text": "You are a helper."},
              {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    assert chat_messages({"role": "user", "content": "hi"}, system=blocks)[0] == {
        "role": "system", "content": "You are a helper.\n\nBe brief."}
    assert chat_messages({"role": "user", "content": "hi"}, system=[])[0]["role"] == "user"


def test_a_system_message_inside_messages_is_a_user_turn_where_it_stands() -> None:
    """A system-role message in ``messages`` (Claude Code's --continue with a model it does not know) is not a 400:
    its text (a string or text blocks) becomes a user turn at its place, the system prompt unchanged."""
    messages = chat_messages({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                             {"role": "system", "content": [{"type": "text", "text": "Resumed."}]},
                             {"role": "user", "content": "go on"}, system="Be brief.")
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "Resumed."},
                        {"role": "user", "content": "go on"}]


def test_billing_header_stripped() -> None:
    """Claude Code's leading billing-header block is removed when asked (and the request says so)."""
    system = [{"type": "text", "text": BILLING}, {"type": "text", "text": "You are Claude Code.",
                                                   "cache_control": {"type": "ephemeral"}}]
    req = translate(system=system)
    assert req.stripped_billing_header is True
    assert req.chat_body["messages"][0] == {"role": "system", "content": "You are Claude Code."}
    assert "cch=" not in json.dumps(req.chat_body)


def test_billing_header_kept_when_not_asked_or_not_leading() -> None:
    """With strip off, or when the header is not the first block, the system prompt is left as sent."""
    system = [{"type": "text", "text": BILLING}, {"type": "text", "text": "You are Claude Code."}]
    req = translate(strip=False, system=system)
    assert req.stripped_billing_header is False
    assert req.chat_body["messages"][0]["content"] == f"{BILLING}\n\nYou are Claude Code."
    later = translate(system=[{"type": "text", "text": "Intro."}, {"type": "text", "text": BILLING}])
    assert later.stripped_billing_header is False and BILLING in later.chat_body["messages"][0]["content"]


def test_billing_header_in_a_system_string() -> None:
    """A system string starting with the header loses its first line; a header-only prompt leaves no system."""
    req = translate(system=f"{BILLING}\nYou are Claude Code.")
    assert req.stripped_billing_header is True and req.chat_body["messages"][0]["content"] == "You are Claude Code."
    only = translate(system=[{"type": "text", "text": BILLING}])
    assert only.stripped_billing_header is True and only.chat_body["messages"][0]["role"] == "user"


# -- content blocks ---------------------------------------------------------------------------------------------


def test_text_blocks_join_into_a_string() -> None:
    """A user turn of text blocks (Claude Code's reminders + prompt) is one string content."""
    msgs = chat_messages({"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
        {"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}},
    ]})
    assert msgs == [{"role": "user", "content": "<system-reminder>ctx</system-reminder>\n\nfix the bug"}]


def test_images() -> None:
    """base64 images → data-URL image_url parts, url images → image_url; file sources are left out with a log."""
    log = Log()
    msgs = translate(log=log, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what are these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
    ]}]).chat_body["messages"]
    assert msgs == [{"role": "user", "content": [
        {"type": "text", "text": "what are these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
    ]}]
    assert log.lines == ["anthropic: left out content with no chat equivalent: image (file source)"]


def test_assistant_blocks() -> None:
    """Assistant text + tool_use → content and tool_calls (compact JSON arguments); thinking → reasoning_content;
    redacted_thinking dropped silently."""
    log = Log()
    msgs = translate(log=log, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Need the tool.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": 2}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ]},
    ]).chat_body["messages"]
    assert msgs[1] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":2}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
        "reasoning_content": "Need the tool.",
    }
    assert log.calls == []


def test_assistant_tool_use_only_has_empty_content() -> None:
    """An assistant turn of only tool_use has content "" (what chat templates and llama-server accept)."""
    msgs = chat_messages({"role": "user", "content": "x"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": [1, "é"]}}]})
    assert msgs[1]["content"] == "" and msgs[1]["tool_calls"][0]["function"]["arguments"] == '{"a":[1,"é"]}'


def test_tool_results() -> None:
    """tool_result → one tool message each: string content, text blocks joined, images left out with a log,
    is_error prefixed "Error: "."""
    log = Log()
    msgs = translate(log=log, messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}},
                                          {"type": "tool_use", "id": "b", "name": "g", "input": {}},
                                          {"type": "tool_use", "id": "c", "name": "h", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "42", "cache_control": {"type": "ephemeral"}},
            {"type": "tool_result", "tool_use_id": "b", "content": [
                {"type": "text", "text": "line 1"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "text", "text": "line 2"},
            ]},
            {"type": "tool_result", "tool_use_id": "c", "is_error": True, "content": "file not found"},
        ]},
    ]).chat_body["messages"]
    assert msgs[2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "42"},
        {"role": "tool", "tool_call_id": "b", "content": "line 1\n\nline 2"},
        {"role": "tool", "tool_call_id": "c", "content": "Error: file not found"},
    ]
    assert log.lines == ["anthropic: left out content with no chat equivalent: image in tool_result"]


def test_tool_result_error_forms() -> None:
    """is_error without content → "Error"; content already saying Error is not prefixed twice; no content → ""."""
    msgs = chat_messages({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "a", "is_error": True},
        {"type": "tool_result", "tool_use_id": "b", "is_error": True, "content": "Error: boom"},
        {"type": "tool_result", "tool_use_id": "c"},
    ]})
    assert [m["content"] for m in msgs] == ["Error", "Error: boom", ""]


def test_mixed_user_turn_puts_tool_results_first() -> None:
    """A user turn mixing text and tool_result → the tool messages first, then one user message with the text."""
    msgs = chat_messages({"role": "user", "content": [
        {"type": "text", "text": "Here you go."},
        {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "ok"}]},
        {"type": "text", "text": "Now continue."},
    ]})
    assert msgs == [{"role": "tool", "tool_call_id": "a", "content": "ok"},
                    {"role": "user", "content": "Here you go.\n\nNow continue."}]


def test_unsupported_blocks_are_dropped_with_one_log_line() -> None:
    """document, search_result, server_tool_use, unknown and non-object blocks → left out, one debug line, no 400."""
    log = Log()
    msgs = translate(log=log, messages=[
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "data": "doc"}},
            {"type": "document", "source": {"type": "text", "data": "doc2"}},
            {"type": "search_result", "source": "s", "title": "t", "content": []},
            {"type": "text", "text": "summarise"},
            "stray string",
        ]},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
            {"type": "hologram"},
            {"type": "text", "text": "done"},
        ]},
    ]).chat_body["messages"]
    assert msgs == [{"role": "user", "content": "summarise"}, {"role": "assistant", "content": "done"}]
    assert log.lines == ["anthropic: left out content with no chat equivalent: document x2, hologram, "
                         "non-object block, search_result, server_tool_use, web_search_tool_result"]


def test_user_turn_of_only_dropped_blocks_stays_a_turn() -> None:
    """A user turn whose blocks are all left out still gives a (empty) user message, so turns keep alternating."""
    assert chat_messages({"role": "user", "content": [{"type": "document"}]}) == [{"role": "user", "content": ""}]


# -- tools ------------------------------------------------------------------------------------------------------


def test_tools_kept_and_server_tools_dropped() -> None:
    """Client tools → function tools (parameters = input_schema); server tools left out with one log naming them."""
    log = Log()
    body = translate(log=log, tools=[
        {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA,
         "cache_control": {"type": "ephemeral"}},
        {"type": "custom", "name": "Bash", "input_schema": {"type": "object", "properties": {}}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024},
        {"type": "code_execution_20250825", "name": "code_execution"},
    ]).chat_body
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                          "parameters": WEATHER_SCHEMA}},
        {"type": "function", "function": {"name": "Bash", "parameters": {"type": "object", "properties": {}}}},
    ]
    assert body["parallel_tool_calls"] is True and "tool_choice" not in body
    assert log.lines == ["anthropic: left out server tools llama-server cannot run: web_search (web_search_20250305), "
                         "bash (bash_20250124), str_replace_based_edit_tool (text_editor_20250728), "
                         "computer (computer_20250124), code_execution (code_execution_20250825)"]


def test_only_server_tools_means_no_tools() -> None:
    """When every tool is a server tool, no tools, tool_choice or parallel_tool_calls are sent."""
    body = translate(tools=[{"type": "web_search_20250305", "name": "web_search"}],
                     tool_choice={"type": "any"}).chat_body
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(body)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_forms(choice: JSON, expected: Any) -> None:
    """tool_choice auto/any/none/tool → auto/required/none/the named function."""
    body = translate(tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}], tool_choice=choice).chat_body
    assert body["tool_choice"] == expected and body["parallel_tool_calls"] is True


def test_disable_parallel_tool_use() -> None:
    """disable_parallel_tool_use: true → parallel_tool_calls: false."""
    body = translate(tools=[{"name": "f", "input_schema": {}}],
                     tool_choice={"type": "auto", "disable_parallel_tool_use": True}).chat_body
    assert body["parallel_tool_calls"] is False and body["tool_choice"] == "auto"


def test_tool_choice_naming_a_dropped_tool() -> None:
    """tool_choice naming a tool that was left out (a server tool) is itself left out, with a log."""
    log = Log()
    body = translate(log=log, tools=[{"name": "f", "input_schema": {}},
                                     {"type": "web_search_20250305", "name": "web_search"}],
                     tool_choice={"type": "tool", "name": "web_search"}).chat_body
    assert "tool_choice" not in body and any("tool_choice names web_search" in line for line in log.lines)


def test_translated_tools_need_no_repair() -> None:
    """The chat body passes repair_chat_request untouched (no repair logged)."""
    log = Log()
    body = translate(tools=[{"name": "f", "input_schema": WEATHER_SCHEMA}], messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"city": "P"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}]},
    ]).chat_body
    assert repair_chat_request(body, log) == body and log.calls == []


# -- thinking ---------------------------------------------------------------------------------------------------


def test_thinking_enabled() -> None:
    """thinking enabled → enable_thinking true in chat_template_kwargs, the budget kept and passed on."""
    req = translate(thinking={"type": "enabled", "budget_tokens": 8000})
    assert req.thinking == Thinking(True, 8000)
    assert req.chat_body["chat_template_kwargs"] == {"enable_thinking": True}
    assert req.chat_body["thinking_budget_tokens"] == 8000


def test_thinking_disabled_and_adaptive() -> None:
    """thinking disabled → enable_thinking false; adaptive → on with no budget."""
    off = translate(thinking={"type": "disabled"})
    assert off.thinking == Thinking(False) and off.chat_body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "thinking_budget_tokens" not in off.chat_body
    adaptive = translate(thinking={"type": "adaptive"})
    assert adaptive.thinking == Thinking(True, None) and "thinking_budget_tokens" not in adaptive.chat_body


def test_input_is_not_mutated() -> None:
    """The client's body is left as it was (cache_control markers and all)."""
    body: JSON = {"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": BILLING}],
                  "messages": [{"role": "user", "content": [{"type": "text", "text": "a",
                                                             "cache_control": {"type": "ephemeral"}}]}]}
    before = json.dumps(body, sort_keys=True)
    request_to_chat(body, strip_billing_header=True, log=Log())
    assert json.dumps(body, sort_keys=True) == before


# -- a real Claude Code request, when one has been captured -----------------------------------------------------


def read_values(text: str) -> list[Any]:
    """A stream of (pretty-printed) JSON values one after another, as the capture server writes them."""
    decoder, pos, out = json.JSONDecoder(), 0, []
    while text[pos:].strip():
        pos += len(text[pos:]) - len(text[pos:].lstrip())
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)
    return out


def captured_requests(agent: str) -> list[JSON]:
    """The POST /v1/messages bodies an agent's capture logs under fixtures/agents hold."""
    found: list[JSON] = []
    for path in sorted(AGENT_FIXTURES.glob(f"{agent}_*.jsonl")):
        for entry in read_values(path.read_text(encoding="utf-8")):
            where = str(entry.get("path", "")).partition("?")[0]
            if entry.get("method") == "POST" and where == "/v1/messages" and isinstance(entry.get("body"), dict):
                found.append(entry["body"])
    return found


def test_claude_code_capture() -> None:
    """A real Claude Code request translates: billing header gone, all 12 client tools kept, turns as sent."""
    bodies = captured_requests("claude_code")
    if not bodies:
        pytest.skip("no Claude Code capture in tests/fixtures/agents")
    for body in bodies:
        log = Log()
        req = request_to_chat(body, strip_billing_header=True, log=log)
        chat = req.chat_body
        assert req.stripped_billing_header and "x-anthropic-billing-header" not in json.dumps(chat)
        assert chat["messages"][0]["role"] == "system"
        assert chat["messages"][0]["content"].startswith(body["system"][1]["text"])
        assert [t["function"]["name"] for t in chat["tools"]] == [t["name"] for t in body["tools"]]
        assert chat["parallel_tool_calls"] is True and "tool_choice" not in chat
        user = [m for m in chat["messages"] if m["role"] == "user"]
        assert len(user) == len([m for m in body["messages"] if m["role"] == "user"])
        assert isinstance(user[0]["content"], str) and user[0]["content"].endswith("Say OK")
        assert chat["max_tokens"] == body["max_tokens"] and req.stream is True
        assert chat["stream_options"] == {"include_usage": True}
        assert req.thinking == Thinking(False) and chat["chat_template_kwargs"] == {"enable_thinking": False}
        assert "metadata" not in chat and log.calls == []
        kept = request_to_chat(body, strip_billing_header=False, log=Log())
        assert kept.chat_body["messages"][0]["content"].startswith("x-anthropic-billing-header:")
        assert repair_chat_request(chat, Log())["tools"] == chat["tools"]


# -- model aliases ----------------------------------------------------------------------------------------------


ALIASES = {"claude-*haiku*": "qwen3-4b", "claude-*": "qwen3-30b", "gpt-4o": "qwen3-30b", "any-default": ""}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-3-5-haiku-20241022", "qwen3-4b"),
        ("claude-haiku-4-5", "qwen3-4b"),
        ("claude-sonnet-4-5-20250929", "qwen3-30b"),
        ("Claude-Opus-4-1", "qwen3-30b"),
        ("gpt-4o", "qwen3-30b"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("qwen3-8b", "qwen3-8b"),
        ("any-default", "the-default"),
        ("", "the-default"),
    ],
)
def test_resolve_model(name: str, expected: str) -> None:
    """Glob aliases, first match in mapping order; exact names pass through; empty name or target → default."""
    assert resolve_model(name, ALIASES, "the-default") == expected


def test_resolve_model_order_and_no_default() -> None:
    """A broad pattern listed first shadows a specific one; with no default an empty name resolves to None."""
    assert resolve_model("claude-haiku-4-5", {"claude-*": "big", "claude-*haiku*": "small"}, None) == "big"
    assert resolve_model("", {}, None) is None
    assert resolve_model("x", {}, None) == "x"
