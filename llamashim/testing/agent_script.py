"""A scripted agent turn for the fake llama-server (pure): what a model would answer an agent to complete one tool
loop — write a file with exact content, then say it is done — decided from what the agent sent.

Every client dialect reaches the upstream as an OpenAI chat request, so one script serves every agent:

* a request whose conversation already holds a tool result → the final text (an agent may add its own user text
  after the result, e.g. Claude Code's reminders, so where the result sits does not matter);
* a request that offers a file-writing tool (a string parameter for the path and one for the content) → a call of it;
  failing that, a shell tool (a ``command``/``cmd`` parameter, a string or an argv array) → a call writing the file
  with ``printf``;
* anything else (an agent's side requests: titles, summaries, quota checks) → a short plain answer.

The agent's own tool then writes the file; the test checks the file and the final text. Used by the agent matrix
(``python -m llamashim.testing.fake_llama --write-file PATH --write-content TEXT``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# the names agents give a file-writing tool's parameters, most specific first
_PATH_KEYS = ("file_path", "filePath", "absolute_path", "path", "filename", "file", "target_file")
_CONTENT_KEYS = ("content", "contents", "file_text", "text", "new_content", "data", "new_text")
_COMMAND_KEYS = ("command", "cmd")
_WRITE_WORDS = ("write", "create", "save")


@dataclass(frozen=True)
class Answer:
    """One scripted answer: content pieces and tool calls (name, arguments JSON text)."""

    content: tuple[str, ...] = ()
    tool_calls: tuple[tuple[str, str], ...] = ()


def _function(tool: Any) -> Mapping[str, Any] | None:
    fn = tool.get("function") if isinstance(tool, Mapping) else None
    return fn if isinstance(fn, Mapping) and isinstance(fn.get("name"), str) else None


def _properties(fn: Mapping[str, Any]) -> Mapping[str, Any]:
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    return props if isinstance(props, Mapping) else {}


def _filler(schema: Any) -> Any:
    """A harmless value for a required parameter the script has no meaning for."""
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return {"boolean": False, "integer": 0, "number": 0, "array": [], "object": {}}.get(kind, "") \
        if isinstance(kind, str) else ""


def _required(fn: Mapping[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    params = fn.get("parameters")
    needed = params.get("required") if isinstance(params, Mapping) else None
    props = _properties(fn)
    for key in needed if isinstance(needed, list) else ():
        if isinstance(key, str) and key not in chosen:
            chosen[key] = _filler(props.get(key))
    return chosen


def _first(props: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in props), None)


class Script(Protocol):
    """What the fake asks a script: the answer to one chat request."""

    def answer(self, body: Mapping[str, Any]) -> Answer: ...


@dataclass(frozen=True)
class AgentScript:
    """Write ``content`` to ``path`` with whichever tool the agent offers, then answer ``final``."""

    path: str
    content: str
    final: str = "Done: the file is written."

    def answer(self, body: Mapping[str, Any]) -> Answer:
        """The answer to one chat request ``body``."""
        if _holds_tool_result(body.get("messages")):
            return Answer(content=(self.final,))
        tools = body.get("tools")
        functions = [fn for fn in map(_function, tools if isinstance(tools, list) else ()) if fn is not None]
        call = self._write_call(functions) or self._shell_call(functions)
        if call is None:
            return Answer(content=("OK",))
        return Answer(tool_calls=(call,))

    def _write_call(self, functions: list[Mapping[str, Any]]) -> tuple[str, str] | None:
        candidates = []
        for fn in functions:
            props = _properties(fn)
            path_key, content_key = _first(props, _PATH_KEYS), _first(props, _CONTENT_KEYS)
            if path_key is None or content_key is None:
                continue
            named = any(word in fn["name"].lower() for word in _WRITE_WORDS)
            candidates.append((not named, fn, path_key, content_key))
        if not candidates:
            return None
        _, fn, path_key, content_key = min(candidates, key=lambda c: c[0])
        args = _required(fn, {path_key: self.path, content_key: self.content})
        return fn["name"], json.dumps(args)

    def _shell_call(self, functions: list[Mapping[str, Any]]) -> tuple[str, str] | None:
        script = f"printf %s {shlex.quote(self.content)} > {shlex.quote(self.path)}"
        for fn in functions:
            props = _properties(fn)
            key = _first(props, _COMMAND_KEYS)
            if key is None:
                continue
            schema = props[key]
            is_argv = isinstance(schema, Mapping) and schema.get("type") == "array"
            args = _required(fn, {key: ["bash", "-lc", script] if is_argv else script})
            return fn["name"], json.dumps(args)
        return None


@dataclass(frozen=True)
class FirstToolScript:
    """Call the first offered tool (its required parameters filled by type), then answer ``final`` once the
    conversation holds the result: a deterministic tool call for conformance suites (``--call-tools``)."""

    final: str = "Done."

    def answer(self, body: Mapping[str, Any]) -> Answer:
        tools = body.get("tools")
        functions = [fn for fn in map(_function, tools if isinstance(tools, list) else ()) if fn is not None]
        if not functions or _holds_tool_result(body.get("messages")):
            return Answer(content=(self.final,))
        return Answer(tool_calls=((functions[0]["name"], json.dumps(_required(functions[0], {}))),))


def _holds_tool_result(messages: Any) -> bool:
    """The conversation holds a tool result (the loop's second half)."""
    return isinstance(messages, list) and any(isinstance(m, Mapping) and m.get("role") == "tool" for m in messages)
