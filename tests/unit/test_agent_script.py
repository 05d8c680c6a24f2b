"""The scripted agent turn the fake llama-server plays for the agent matrix: which tool it calls, with what."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from llamashim.testing.agent_script import AgentScript, Answer, FirstToolScript

SCRIPT = AgentScript("/tmp/x/out.txt", "it's 'quoted'\nline two\n", final="All done.")


def tool(name: str, props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": props, "required": required if required is not None else list(props)}}}


STRING = {"type": "string"}
# the file-writing and shell tools of the agents in the matrix, as they reach the upstream (OpenAI chat shape)
CLAUDE_WRITE = tool("Write", {"file_path": STRING, "content": STRING})
CLAUDE_BASH = tool("Bash", {"command": STRING, "timeout": {"type": "number"}, "description": STRING}, ["command"])
CODEX_SHELL = tool("shell", {"command": {"type": "array", "items": STRING}, "workdir": STRING,
                             "timeout_ms": {"type": "number"}}, ["command"])
GEMINI_WRITE = tool("write_file", {"file_path": STRING, "content": STRING})
OPENCODE_WRITE = tool("write", {"content": STRING, "filePath": STRING})
CLINE_EDITOR = tool("editor", {"path": STRING, "old_text": {"anyOf": [STRING, {"type": "null"}]}, "new_text": STRING,
                               "insert_line": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}, ["path", "new_text"])
CLINE_COMMANDS = tool("run_commands", {"commands": {"type": "array", "items": STRING}})
READ = tool("Read", {"file_path": STRING, "limit": {"type": "integer"}}, ["file_path"])
EDIT = tool("Edit", {"file_path": STRING, "old_string": STRING, "new_string": STRING, "replace_all": {
    "type": "boolean"}}, ["file_path", "old_string", "new_string"])


def call_of(answer: Answer) -> tuple[str, dict[str, Any]]:
    [(name, args)] = answer.tool_calls
    return name, json.loads(args)


def ask(tools: list[dict[str, Any]], messages: list[dict[str, Any]] | None = None) -> Answer:
    return SCRIPT.answer({"messages": messages or [{"role": "user", "content": "write it"}], "tools": tools})


def test_a_write_tool_is_called_with_the_path_and_content() -> None:
    """Offered Claude Code's tools (Read, Edit, Write, Bash), the script calls Write with file_path and content."""
    assert call_of(ask([READ, EDIT, CLAUDE_WRITE, CLAUDE_BASH])) == (
        "Write", {"file_path": SCRIPT.path, "content": SCRIPT.content})


def test_each_agents_parameter_names_are_used() -> None:
    """Gemini CLI's write_file, opencode's write (filePath) and Cline's editor (path, new_text: it creates a missing
    file) get their own parameter names."""
    assert call_of(ask([GEMINI_WRITE])) == ("write_file", {"file_path": SCRIPT.path, "content": SCRIPT.content})
    assert call_of(ask([OPENCODE_WRITE])) == ("write", {"filePath": SCRIPT.path, "content": SCRIPT.content})
    assert call_of(ask([READ, CLINE_COMMANDS, CLINE_EDITOR])) == (
        "editor", {"path": SCRIPT.path, "new_text": SCRIPT.content})


def test_without_a_write_tool_a_shell_command_writes_the_file(tmp_path: Path) -> None:
    """Offered only a shell (a string command, or Codex's argv array), the command it gets writes the exact content."""
    for shell in (CLAUDE_BASH, CODEX_SHELL):
        script = AgentScript(str(tmp_path / "out.txt"), SCRIPT.content)
        name, args = call_of(script.answer({"messages": [], "tools": [READ, shell]}))
        command = args["command"]
        argv = command if isinstance(command, list) else ["bash", "-c", command]
        subprocess.run(argv, check=True, timeout=10)
        assert name == shell["function"]["name"] and (tmp_path / "out.txt").read_text() == SCRIPT.content
        assert isinstance(command, list) == (shell is CODEX_SHELL)


def test_required_parameters_it_has_no_meaning_for_are_filled_by_type() -> None:
    """A required parameter beyond path and content gets an empty value of its schema's type (not left out)."""
    extra = tool("create_file", {"path": STRING, "file_text": STRING, "overwrite": {"type": "boolean"}})
    assert call_of(ask([extra])) == ("create_file", {"path": SCRIPT.path, "file_text": SCRIPT.content,
                                                     "overwrite": False})
    assert shlex.quote(SCRIPT.content) in call_of(ask([CLAUDE_BASH]))[1]["command"]


def test_after_a_tool_result_the_final_text_comes() -> None:
    """Once the conversation holds a tool result (even with the agent's own user text after it): the final text."""
    call = {"id": "a", "type": "function", "function": {"name": "Write", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "write it"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "a", "content": "ok"},
        {"role": "user", "content": "<system-reminder>…</system-reminder>"},
    ]
    assert ask([CLAUDE_WRITE], messages) == Answer(content=("All done.",))


def test_side_requests_get_plain_text() -> None:
    """A request offering no usable tool (a title or summary request) gets a short plain answer, no call."""
    assert ask([]) == Answer(content=("OK",)) and ask([READ]) == Answer(content=("OK",))


def test_the_first_tool_script_calls_the_first_offered_tool_then_finishes() -> None:
    """--call-tools: the first offered tool with its required parameters (a string one as ""), then the final text
    once a tool result is in the conversation; plain text when no tool is offered."""
    weather = tool("get_weather", {"location": STRING, "unit": STRING}, ["location"])
    script = FirstToolScript("Sunny.")
    assert call_of(script.answer({"messages": [], "tools": [weather, READ]})) == ("get_weather", {"location": ""})
    after = [{"role": "user", "content": "?"}, {"role": "tool", "tool_call_id": "a", "content": "20C"}]
    assert script.answer({"messages": after, "tools": [weather]}) == Answer(content=("Sunny.",))
    assert script.answer({"messages": []}) == Answer(content=("Sunny.",))
