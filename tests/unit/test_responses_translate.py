"""The Responses request translation: input items, tools, options → an OpenAI chat body, and the stored conversation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamashim.dialects.responses.translate import (
    ResponsesRequest,
    conversation,
    decrypt_reasoning,
    encrypt_reasoning,
    request_to_chat,
)
from llamashim.errors import BadRequest

CAPTURES = Path(os.environ.get("LLAMASHIM_AGENT_CAPTURES") or Path(__file__).resolve().parents[1] / "fixtures/agents")


class Log:
    """A ``log(format, **fields)`` that keeps the formatted lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, fmt: str, **fields: Any) -> None:
        self.lines.append(fmt.format(**fields))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def translate(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> tuple[ResponsesRequest, Log]:
    log = Log()
    return request_to_chat(body, history, log), log


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = translate(body)[0].chat_body["messages"]
    return out


# -- the request as a whole ---------------------------------------------------------------------------------------


def test_string_input_with_instructions_streamed() -> None:
    """A string input is one user message after the instructions' system message; a stream asks for usage."""
    req, _ = translate({"model": "m", "input": "hi", "instructions": "be brief", "stream": True})
    assert req.chat_body == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert req.stream and req.store and req.model == "m" and req.instructions == "be brief"
    assert req.input_messages == [{"role": "user", "content": "hi"}]


def test_defaults_and_echo_fields() -> None:
    """Without options the request is not streamed, stored, and echoes OpenAI's defaults."""
    req, _ = translate({"model": "m", "input": "hi"})
    assert req.chat_body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    fields = req.response_fields()
    assert fields["tool_choice"] == "auto" and fields["tools"] == [] and fields["parallel_tool_calls"] is True
    assert fields["text"] == {"format": {"type": "text"}} and fields["reasoning"] == {"effort": None, "summary": None}
    assert fields["store"] is True and fields["previous_response_id"] is None and fields["metadata"] == {}
    assert not req.include_encrypted_reasoning


def test_sampling_and_flags() -> None:
    """temperature, top_p and max_output_tokens map to chat fields; store, include and metadata are read."""
    req, _ = translate({
        "model": "m", "input": "hi", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64, "store": False,
        "include": ["reasoning.encrypted_content"], "metadata": {"k": "v"}, "previous_response_id": "resp_1",
    })
    body = req.chat_body
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 64)
    assert not req.store and req.include_encrypted_reasoning and req.metadata == {"k": "v"}
    assert req.previous_response_id == "resp_1" and req.max_output_tokens == 64


def test_unknown_fields_ignored_and_logged() -> None:
    """Fields with no chat meaning (user, service_tier, truncation, unknown ones) never reach the chat body."""
    req, log = translate({
        "model": "m", "input": "hi", "user": "u", "service_tier": "flex", "truncation": "auto",
        "prompt_cache_key": "k", "frobnicate": 1,
    })
    assert set(req.chat_body) == {"model", "messages", "stream"}
    assert log.has("frobnicate") and not log.has("service_tier")


def test_reasoning_effort_goes_to_the_template() -> None:
    """reasoning.effort becomes chat_template_kwargs.reasoning_effort; the reasoning object is echoed."""
    req, _ = translate({"model": "m", "input": "hi", "reasoning": {"effort": "high", "summary": "auto"}})
    assert req.chat_body["chat_template_kwargs"] == {"reasoning_effort": "high"}
    assert req.reasoning == {"effort": "high", "summary": "auto"}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "json_schema", "name": "pt", "schema": {"type": "object"}, "strict": True},
         {"type": "json_schema", "json_schema": {"name": "pt", "schema": {"type": "object"}, "strict": True}}),
        ({"type": "json_schema", "schema": {"type": "object"}},
         {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}}),
        ({"type": "json_object"}, {"type": "json_object"}),
        ({"type": "text"}, None),
    ],
)
def test_text_format(fmt: dict[str, Any], expected: dict[str, Any] | None) -> None:
    """text.format maps to response_format (json_schema with name/schema/strict, json_object; text: nothing)."""
    req, _ = translate({"model": "m", "input": "hi", "text": {"format": fmt}})
    assert req.chat_body.get("response_format") == expected and req.text == {"format": fmt}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1], "JSON object"),
        ({"input": 5}, "input must be"),
        ({"input": [{"content": "no role"}]}, "neither a type nor a role"),
        ({"input": [{"type": "message", "content": "x"}]}, "role"),
        ({"input": [{"role": "robot", "content": "x"}]}, "role"),
        ({"input": ["not an object"]}, "input[0] must be an object"),
        ({"input": [{"role": "user", "content": 3}]}, "content"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "call_id"),
        ({"input": [{"type": "function_call", "call_id": "c"}]}, "name"),
        ({"input": "x", "temperature": "hot"}, "temperature"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "model": 3}, "model"),
        ({"input": "x", "tools": {"type": "function"}}, "tools must be a list"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "x", "tool_choice": 3, "tools": [{"type": "function", "name": "f"}]}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "schema"),
    ],
)
def test_malformed_requests_are_bad_requests(body: Any, message: str) -> None:
    """Truly malformed requests are a 400 naming what is wrong."""
    with pytest.raises(BadRequest) as caught:
        request_to_chat(body, None, Log())
    assert message in caught.value.message and caught.value.status == 400


# -- input items ----------------------------------------------------------------------------------------------------


def test_message_roles_and_parts() -> None:
    """Message items: developer → system, text parts joined, images as image_url parts, file ids skipped."""
    log = Log()
    req = request_to_chat({"input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            {"type": "input_image", "file_id": "file_1"},
            {"type": "input_file", "file_id": "file_2"},
        ]},
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "x", "annotations": []}, {"type": "refusal", "refusal": "no"},
        ]},
    ]}, None, log)
    assert req.chat_body["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "xno"},
    ]
    assert log.has("file_id cannot be fetched") and log.has("input_file")


def test_function_calls_merge_into_one_assistant_message() -> None:
    """Consecutive function_call items (after the assistant's text) are one assistant message; outputs → tool."""
    msgs = messages({"input": [
        {"role": "user", "content": "weather?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get", "arguments": {"city": "Oslo"}},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "rain"}, {"type": "input_image", "image_url": "x"}]},
    ]})
    assert msgs[1] == {"role": "assistant", "content": "checking", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"city":"Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get", "arguments": '{"city":"Oslo"}'}},
    ]}
    assert msgs[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_custom_and_local_shell_calls() -> None:
    """custom_tool_call → a call with {"input": ...}; local_shell_call → local_shell with command/workdir/timeout."""
    msgs = messages({
        "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "local_shell"}],
        "input": [
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
            {"type": "local_shell_call", "id": "lsh_1", "call_id": "c2", "status": "completed",
             "action": {"type": "exec", "command": ["ls", "-l"], "env": {}, "working_directory": "/tmp",
                        "timeout_ms": 500}},
            {"type": "local_shell_call_output", "id": "c2", "output": '{"output":"a\\n"}'},
        ],
    })
    call = msgs[0]["tool_calls"][0]["function"]
    assert call == {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'}
    assert msgs[1] == {"role": "tool", "tool_call_id": "c1", "content": "done"}
    shell = msgs[2]["tool_calls"][0]
    assert shell["id"] == "c2" and shell["function"]["name"] == "local_shell"
    assert json.loads(shell["function"]["arguments"]) == {"command": ["ls", "-l"], "workdir": "/tmp", "timeout_ms": 500}
    assert msgs[3] == {"role": "tool", "tool_call_id": "c2", "content": '{"output":"a\\n"}'}


def test_reasoning_items_restored_on_the_next_assistant_message() -> None:
    """Reasoning items (content, summary or our encrypted blob) become the next assistant turn's reasoning_content."""
    msgs = messages({"input": [
        {"role": "user", "content": "q1"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "plain"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": encrypt_reasoning("secret ✓")},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a1"}]},
        {"role": "user", "content": "q2"},
        {"type": "reasoning", "id": "rs_3", "summary": [{"type": "summary_text", "text": "s1"},
                                                         {"type": "summary_text", "text": "s2"}]},
        {"role": "assistant", "content": "a2"},
    ]})
    assert msgs[1]["reasoning_content"] == "plain" and msgs[1]["tool_calls"][0]["id"] == "c1"
    assert msgs[3] == {"role": "assistant", "content": "a1", "reasoning_content": "secret ✓"}
    assert msgs[5] == {"role": "assistant", "content": "a2", "reasoning_content": "s1\n\ns2"}


def test_foreign_encrypted_reasoning_ignored() -> None:
    """A reasoning item with only someone else's encrypted_content is skipped (logged), never an error."""
    log = Log()
    req = request_to_chat({"input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "gAAAAABo-not-ours"},
        {"role": "assistant", "content": "a"},
    ]}, None, log)
    assert req.chat_body["messages"][1] == {"role": "assistant", "content": "a"}
    assert log.has("reasoning has no text")


def test_reasoning_without_an_assistant_turn_dropped() -> None:
    """Reasoning followed by a user message (or nothing) is dropped with a log line."""
    log = Log()
    req = request_to_chat({"input": [
        {"type": "reasoning", "id": "r", "summary": [{"type": "summary_text", "text": "t"}]},
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "r2", "summary": [{"type": "summary_text", "text": "t2"}]},
    ]}, None, log)
    assert req.chat_body["messages"] == [{"role": "user", "content": "q"}]
    assert log.has("not followed by an assistant") and log.has("end of the input")


def test_references_and_unknown_items_skipped() -> None:
    """item_reference and item types with no chat meaning (web_search_call, ...) are skipped with a log line."""
    log = Log()
    req = request_to_chat({"input": [
        {"type": "item_reference", "id": "msg_1"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        {"type": "future_thing"},
        {"role": "user", "content": "q"},
    ]}, None, log)
    assert req.chat_body["messages"] == [{"role": "user", "content": "q"}]
    assert log.has("item_reference msg_1") and log.has("web_search_call") and log.has("future_thing")


def test_leading_system_messages_merged() -> None:
    """Instructions and leading system/developer messages become one system message (templates want one)."""
    msgs = messages({"instructions": "A", "input": [
        {"role": "developer", "content": "B"}, {"role": "system", "content": "C"}, {"role": "user", "content": "q"},
        {"role": "developer", "content": "late"},
    ]})
    assert msgs == [
        {"role": "system", "content": "A\n\nB\n\nC"}, {"role": "user", "content": "q"},
        {"role": "system", "content": "late"},
    ]


def test_history_prepended_after_instructions() -> None:
    """The stored conversation goes after this turn's instructions; input_messages is only this turn's input."""
    history = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    req, _ = translate({"instructions": "new rules", "previous_response_id": "resp_1", "input": "q2"}, history)
    assert req.chat_body["messages"] == [{"role": "system", "content": "new rules"}, *history,
                                         {"role": "user", "content": "q2"}]
    assert req.input_messages == [{"role": "user", "content": "q2"}]


# -- tools ------------------------------------------------------------------------------------------------------------


def test_tool_kinds_mapped_kept_and_dropped() -> None:
    """function kept (strict dropped), custom → one string parameter, local_shell mapped, namespace flattened,
    hosted tools left out with one log line naming them."""
    req, log = translate({"input": "x", "tools": [
        {"type": "function", "name": "get", "description": "d", "parameters": {"type": "object"}, "strict": True},
        {"type": "custom", "name": "apply_patch", "description": "Patch files.",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "local_shell"},
        {"type": "namespace", "name": "agents", "description": "sub-agents", "tools": [
            {"type": "function", "name": "spawn", "parameters": {"type": "object", "properties": {}}},
            {"type": "function", "name": "get"},
        ]},
        {"type": "web_search", "external_web_access": False}, {"type": "file_search", "vector_store_ids": []},
        {"type": "mcp", "server_label": "s"}, {"type": "image_generation"}, {"type": "computer_use_preview"},
        {"type": "code_interpreter", "container": {"type": "auto"}},
    ]})
    tools = {t["function"]["name"]: t["function"] for t in req.chat_body["tools"]}
    assert list(tools) == ["get", "apply_patch", "local_shell", "spawn", "agents__get"]
    assert tools["get"] == {"name": "get", "description": "d", "parameters": {"type": "object"}}
    patch = tools["apply_patch"]
    assert patch["parameters"]["required"] == ["input"]
    assert patch["parameters"]["properties"]["input"]["type"] == "string"
    assert patch["description"].startswith("Patch files.") and "lark" in patch["description"]
    assert "start: /.+/" in patch["description"]
    assert tools["local_shell"]["parameters"]["properties"]["command"]["type"] == "array"
    kinds = req.tool_kinds
    assert [kinds[n].kind for n in ("apply_patch", "local_shell", "get")] == ["custom", "local_shell", "function"]
    assert (kinds["agents__get"].name, kinds["agents__get"].namespace) == ("get", "agents")
    dropped = [line for line in log.lines if "no local equivalent" in line]
    assert len(dropped) == 1
    for kind in ("web_search", "file_search", "mcp:", "image_generation", "computer_use_preview", "code_interpreter"):
        assert kind in dropped[0]
    assert len(req.tools) == 10  # echoed as the client sent them


def test_only_hosted_tools_leave_no_tools() -> None:
    """When every tool is hosted, the chat body has no tools and no tool_choice."""
    req, _ = translate({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"})
    assert "tools" not in req.chat_body and "tool_choice" not in req.chat_body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("required", "required"),
        ("none", "none"),
        ({"type": "function", "name": "get"}, {"type": "function", "function": {"name": "get"}}),
        ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
        ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get"}]}, "auto"),
        ({"type": "allowed_tools", "mode": "required", "tools": []}, "required"),
        ({"type": "function", "name": "missing"}, None),
        ({"type": "web_search_preview"}, None),
        ("sometimes", None),
    ],
)
def test_tool_choice_forms(choice: Any, expected: Any) -> None:
    """tool_choice: the string forms pass, named function/custom choices map to chat's form, the rest is auto."""
    req, _ = translate({"input": "x", "tool_choice": choice, "parallel_tool_calls": False, "tools": [
        {"type": "function", "name": "get"}, {"type": "custom", "name": "apply_patch"},
    ]})
    assert req.chat_body.get("tool_choice") == expected and req.tool_choice == choice
    assert req.chat_body["parallel_tool_calls"] is False and req.parallel_tool_calls is False


# -- encrypted reasoning and the stored conversation ------------------------------------------------------------------


@given(st.text())
def test_encrypted_reasoning_round_trips(text: str) -> None:
    """Any reasoning text survives encrypt → decrypt; the blob is URL-safe ASCII."""
    blob = encrypt_reasoning(text)
    assert decrypt_reasoning(blob) == text and blob.isascii() and "+" not in blob and "/" not in blob


@pytest.mark.parametrize("blob", ["", "gAAAAABoAbCdEf", "not base64 !!", "bGxhbWFzaGltLnYyOmhp", "bGxhbWFzaGltLnYxOv8"])
def test_foreign_blobs_decrypt_to_none(blob: str) -> None:
    """Blobs that are not ours (OpenAI's, garbage, another version, bad UTF-8) decrypt to None."""
    assert decrypt_reasoning(blob) is None


def test_conversation_appends_the_assistant_turn() -> None:
    """conversation(): the input messages, then one assistant message with the text, the calls and the reasoning."""
    response = {
        "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "local_shell"},
                  {"type": "namespace", "name": "ns", "description": "", "tools": [{"type": "function", "name": "f"}]}],
        "output": [
            {"id": "rs_1", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r"}],
             "encrypted_content": encrypt_reasoning("r")},
            {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
            {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "namespace": "ns",
             "arguments": "{}", "status": "completed"},
            {"id": "ctc_1", "type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "P"},
            {"id": "lsh_1", "type": "local_shell_call", "call_id": "c3", "status": "completed",
             "action": {"type": "exec", "command": ["ls"], "env": {}}},
        ],
    }
    stored = conversation([{"role": "user", "content": "q"}], response)
    assert stored[0] == {"role": "user", "content": "q"}
    turn = stored[1]
    assert len(stored) == 2 and turn["content"] == "hi" and turn["reasoning_content"] == "r"
    calls = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in turn["tool_calls"]]
    assert calls == [
        ("c1", "f", "{}"), ("c2", "apply_patch", '{"input":"P"}'), ("c3", "local_shell", '{"command":["ls"]}'),
    ]


def test_conversation_of_an_empty_response_is_the_input() -> None:
    """A response without output adds nothing to the stored conversation."""
    assert conversation([{"role": "user", "content": "q"}], {"output": []}) == [{"role": "user", "content": "q"}]


# -- real Codex CLI requests --------------------------------------------------------------------------------------


def _records(text: str) -> list[Any]:
    """The JSON values of a capture file: JSONL or pretty-printed records one after another."""
    decoder, pos, out = json.JSONDecoder(), 0, []
    while text[pos:].strip():
        pos += len(text[pos:]) - len(text[pos:].lstrip())
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)
    return out


def _codex_bodies() -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    if not CAPTURES.is_dir():
        return bodies
    for path in sorted(CAPTURES.glob("*.jsonl")):
        for record in _records(path.read_text()):
            body = record.get("body") if isinstance(record, dict) else None
            if str(record.get("path", "")).endswith("/responses") and isinstance(body, dict) and "input" in body:
                bodies.append(body)
    return bodies


CODEX_BODIES = _codex_bodies()


@pytest.mark.skipif(not CODEX_BODIES, reason=f"no Codex Responses captures in {CAPTURES}")
@pytest.mark.parametrize("body", CODEX_BODIES[:20])
def test_real_codex_request_translates(body: dict[str, Any]) -> None:
    """A real Codex CLI request becomes a sane chat body: one system message first, every local tool kept."""
    req, log = translate(body)
    chat = req.chat_body
    roles = [m["role"] for m in chat["messages"]]
    assert roles[0] == "system" and "system" not in roles[1:2] and "user" in roles
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    local = [t for t in body.get("tools", []) if t.get("type") in ("function", "custom", "local_shell")]
    nested = [s for t in body.get("tools", []) if t.get("type") == "namespace" for s in t.get("tools", [])]
    assert len(chat.get("tools", [])) == len(local) + len(nested)
    assert len({t["function"]["name"] for t in chat.get("tools", [])}) == len(chat.get("tools", []))
    assert req.store is (body.get("store") is not False)
    assert req.include_encrypted_reasoning == ("reasoning.encrypted_content" in body.get("include", []))
    json.dumps(chat)
    if any(t.get("type") not in ("function", "custom", "local_shell", "namespace") for t in body.get("tools", [])):
        assert log.has("no local equivalent")
