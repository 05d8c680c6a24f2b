"""Responses API requests → OpenAI chat requests (pure), and the chat conversation a finished response stands for.

:func:`request_to_chat` turns a ``POST /v1/responses`` body (plus the stored conversation of its
``previous_response_id``) into a :class:`ResponsesRequest`: the internal chat body for the shared flow and the fields
the response object echoes. Input items become chat messages (``function_call`` items → assistant ``tool_calls``,
their outputs → ``tool`` messages, ``reasoning`` items → the next assistant message's ``reasoning_content``); tools
become chat function tools, with a per-request :class:`ToolKind` map so the encoder can turn each chat function call
back into the item type the client declared (``function_call``, ``custom_tool_call``, ``local_shell_call``). Hosted
tools (web search, file search, MCP, ...) have no local equivalent and are left out with one debug line.

Only malformed requests are refused (:class:`~llamashim.errors.BadRequest`): an item type or content part a client
might legitimately send but llama-server cannot use is skipped with a debug line. ``log`` is called as a Twisted
``Logger`` method is: ``log(format, **fields)``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from llamashim import jsonutil
from llamashim.errors import BadRequest
from llamashim.jsonutil import arr, obj

Log = Callable[..., None]
JSON = dict[str, Any]



class ToolType(StrEnum):
    """The Responses tool types with a local equivalent (each becomes a chat function tool)."""

    FUNCTION = "function"
    CUSTOM = "custom"
    LOCAL_SHELL = "local_shell"


class ItemType(StrEnum):
    """The Responses output item types: what llamashim writes, and reads back as the input of the next turn."""

    MESSAGE = "message"
    REASONING = "reasoning"
    FUNCTION_CALL = "function_call"
    CUSTOM_TOOL_CALL = "custom_tool_call"
    LOCAL_SHELL_CALL = "local_shell_call"


ENCRYPTED_INCLUDE = "reasoning.encrypted_content"
_BLOB_PREFIX = b"llamashim.v1:"
_SUMMARY_PREFIX = b"llamashim.compaction.v1:"
SUMMARY_HEADING = "Summary of the conversation so far (it replaces the earlier turns):"
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = frozenset(("input_text", "output_text", "text", "summary_text", "reasoning_text"))
_KNOWN_FIELDS = frozenset((
    "model", "input", "instructions", "stream", "store", "previous_response_id", "include", "tools", "tool_choice",
    "parallel_tool_calls", "max_output_tokens", "temperature", "top_p", "text", "reasoning", "metadata", "user",
    "prompt_cache_key", "service_tier", "truncation", "background", "max_tool_calls", "top_logprobs",
    "safety_identifier", "client_metadata", "stream_options", "prompt_cache_retention", "conversation", "prompt",
    "presence_penalty", "frequency_penalty",
))

CUSTOM_PARAMETERS: JSON = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's raw input: free-form text, not JSON."}},
    "required": ["input"],
    "additionalProperties": False,
}
LOCAL_SHELL_NAME = "local_shell"  # the chat function a local_shell tool becomes
LOCAL_SHELL_FUNCTION: JSON = {
    "description": "Run a command on the user's machine and return its output.",
    "parameters": {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "description": "The program and its arguments."},
            "workdir": {"type": "string", "description": "The working directory to run the command in."},
            "timeout_ms": {"type": "integer", "description": "How long the command may run, in milliseconds."},
        },
        "required": ["command"],
    },
}


# -- encrypted reasoning ----------------------------------------------------------------------------------------------


def encrypt_reasoning(text: str) -> str:
    """Reasoning text as an opaque, versioned ``encrypted_content`` blob (a client hands it back next turn)."""
    return base64.urlsafe_b64encode(_BLOB_PREFIX + text.encode("utf-8")).decode("ascii")


def decrypt_reasoning(blob: str) -> str | None:
    """The reasoning text of a blob :func:`encrypt_reasoning` made; ``None`` for any other blob."""
    return _open_blob(blob, _BLOB_PREFIX)


def encrypt_summary(text: str) -> str:
    """A compaction summary as the opaque ``encrypted_content`` of a ``compaction`` item (``/responses/compact``)."""
    return base64.urlsafe_b64encode(_SUMMARY_PREFIX + text.encode("utf-8")).decode("ascii")


def decrypt_summary(blob: str) -> str | None:
    """The summary text of a blob :func:`encrypt_summary` made; ``None`` for any other blob."""
    return _open_blob(blob, _SUMMARY_PREFIX)


def _open_blob(blob: str, prefix: bytes) -> str | None:
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(prefix):
        return None
    try:
        return raw[len(prefix) :].decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- tools ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolKind:
    """What a chat function stands for: a Responses ``function`` (maybe in a ``namespace``), ``custom`` or
    ``local_shell`` tool, under the client's name for it."""

    kind: ToolType
    name: str
    namespace: str | None = None


@dataclass
class ToolMap:
    """The chat tools of one request and the way back from chat function names to Responses tools."""

    chat_tools: list[JSON] = field(default_factory=list)
    kinds: dict[str, ToolKind] = field(default_factory=dict)
    names: dict[tuple[str | None, str], str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def chat_name(self, name: str, namespace: str | None = None) -> str:
        """The chat function name of the Responses tool ``name`` (itself when the tool is not declared)."""
        return self.names.get((namespace, name)) or self.names.get((None, name)) or name


def tool_map(tools: Any) -> ToolMap:
    """Responses ``tools`` → chat function tools; tools without a local equivalent are listed in ``dropped``."""
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("tools must be a list")
    out = ToolMap()
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{i}] must be an object")
        _add_tool(out, tool, None, f"tools[{i}]")
    return out


def _add_tool(out: ToolMap, tool: JSON, namespace: str | None, where: str) -> None:
    kind = tool.get("type")
    name = tool.get("name")
    if kind == "namespace" and isinstance(name, str) and name:
        for j, sub in enumerate(arr(tool.get("tools"))):
            if isinstance(sub, dict):
                _add_tool(out, sub, name, f"{where}.tools[{j}]")
        return
    if kind in (ToolType.FUNCTION, ToolType.CUSTOM) and not (isinstance(name, str) and name):
        raise BadRequest(f"{where}.name is missing")
    match kind:
        case ToolType.FUNCTION:
            fn = _function(tool)
        case ToolType.CUSTOM:
            fn = _custom_function(tool)
        case ToolType.LOCAL_SHELL:
            name, fn = LOCAL_SHELL_NAME, dict(LOCAL_SHELL_FUNCTION)
        case _:
            label = name if isinstance(name, str) else tool.get("server_label")
            out.dropped.append(f"{kind}:{label}" if isinstance(label, str) else str(kind))
            return
    assert isinstance(name, str)
    chat = _unique_name(out, name, namespace)
    if chat is None:
        out.dropped.append(f"{kind}:{name} (duplicate name)")
        return
    out.kinds[chat] = ToolKind(ToolType(kind), name, namespace)
    out.names[(namespace, name)] = chat
    out.chat_tools.append({"type": "function", "function": {"name": chat, **fn}})


def _unique_name(out: ToolMap, name: str, namespace: str | None) -> str | None:
    if name not in out.kinds:
        return name
    qualified = f"{namespace}__{name}" if namespace else None
    if qualified is not None and qualified not in out.kinds:
        return qualified
    return None


def _function(tool: JSON) -> JSON:
    fn: JSON = {}
    if isinstance(tool.get("description"), str):
        fn["description"] = tool["description"]
    if "parameters" in tool and tool["parameters"] is not None:
        fn["parameters"] = tool["parameters"]
    return fn


def _custom_function(tool: JSON) -> JSON:
    description = tool["description"] if isinstance(tool.get("description"), str) else ""
    fmt = obj(tool.get("format"))
    definition = fmt.get("definition")
    if fmt.get("type") == "grammar" and isinstance(definition, str) and definition:
        syntax = fmt["syntax"] if isinstance(fmt.get("syntax"), str) else "formal"
        description = f"{description}\n\nThe input must follow this {syntax} grammar:\n{definition}".lstrip()
    return {"description": description, "parameters": CUSTOM_PARAMETERS}


def _tool_choice(choice: Any, tools: ToolMap, log: Log) -> Any:
    """The chat ``tool_choice`` (``None``: leave it out, which means ``auto``)."""
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice in ("auto", "required", "none"):
            return choice
        log("responses: tool_choice {choice!r} is not auto, required or none; using auto", choice=choice)
        return None
    if not isinstance(choice, dict):
        raise BadRequest("tool_choice must be a string or an object")
    kind = choice.get("type")
    if kind == "allowed_tools":
        return "required" if choice.get("mode") == "required" else "auto"
    name = LOCAL_SHELL_NAME if kind == ToolType.LOCAL_SHELL else choice.get("name")
    if kind in tuple(ToolType) and isinstance(name, str):
        namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
        chat = tools.chat_name(name, namespace)
        if chat in tools.kinds:
            return {"type": "function", "function": {"name": chat}}
    log("responses: tool_choice {choice} names no local tool; using auto", choice=choice)
    return None


# -- input items ------------------------------------------------------------------------------------------------------


class _Builder:
    """Input (or output) items → chat messages, one item at a time."""

    def __init__(self, tools: ToolMap, log: Log) -> None:
        self.tools = tools
        self.log = log
        self.messages: list[JSON] = []
        self.reasoning: list[str] = []

    def item(self, item: Any, i: int) -> None:
        if not isinstance(item, dict):
            raise BadRequest(f"input[{i}] must be an object")
        kind = item.get("type")
        if kind is None:
            if "role" not in item:
                raise BadRequest(f"input[{i}] has neither a type nor a role")
            kind = ItemType.MESSAGE
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self.log("responses: input[{index}] of type {type} has no chat equivalent; skipped", index=i, type=kind)
            return
        handler(self, item, i)

    def finish(self) -> list[JSON]:
        if self.reasoning:
            self.log("responses: reasoning at the end of the input belongs to no assistant message; dropped")
            self.reasoning = []
        return self.messages

    # -- messages

    def message(self, item: JSON, i: int) -> None:
        role = item.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise BadRequest(f"input[{i}].role must be one of user, assistant, system, developer")
        chat_role = _ROLES[role]
        content = self._content(item.get("content"), i, chat_role)
        if chat_role == "assistant":
            self._attach_reasoning(self._append({"role": "assistant", "content": content}))
        else:
            self._append({"role": chat_role, "content": content})

    def _append(self, message: JSON) -> JSON:
        if message["role"] != "assistant" and self.reasoning:
            self.log("responses: reasoning not followed by an assistant message; dropped")
            self.reasoning = []
        self.messages.append(message)
        return message

    def _attach_reasoning(self, message: JSON) -> None:
        if not self.reasoning:
            return
        text = "\n\n".join(self.reasoning)
        self.reasoning = []
        before = message.get("reasoning_content")
        message["reasoning_content"] = f"{before}\n\n{text}" if before else text

    def _content(self, content: Any, i: int, role: str) -> str | list[JSON]:
        if isinstance(content, str):
            return content
        if content is None:
            return ""
        if not isinstance(content, list):
            raise BadRequest(f"input[{i}].content must be a string or a list of parts")
        parts = [p for j, part in enumerate(content) if (p := self._part(part, i, j)) is not None]
        if all(p["type"] == "text" for p in parts):
            return ("" if role == "assistant" else "\n").join(p["text"] for p in parts)
        return parts

    def _part(self, part: Any, i: int, j: int) -> JSON | None:
        if isinstance(part, str):
            return {"type": "text", "text": part}
        if not isinstance(part, dict):
            raise BadRequest(f"input[{i}].content[{j}] must be an object")
        kind = part.get("type")
        text = part.get("refusal") if kind == "refusal" else part.get("text")
        if (kind in _TEXT_PARTS or kind == "refusal") and isinstance(text, str):
            return {"type": "text", "text": text}
        if kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url:
                image: JSON = {"url": url}
                if isinstance(part.get("detail"), str):
                    image["detail"] = part["detail"]
                return {"type": "image_url", "image_url": image}
            self.log("responses: input[{index}].content[{part}]: an image by file_id cannot be fetched; skipped",
                     index=i, part=j)
            return None
        self.log("responses: input[{index}].content[{part}] of type {type} has no chat equivalent; skipped",
                 index=i, part=j, type=kind)
        return None

    # -- tool calls and their outputs

    def _call(self, call_id: str, name: str, arguments: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            last = self._append({"role": "assistant", "content": ""})
        last.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )
        self._attach_reasoning(last)

    def function_call(self, item: JSON, i: int) -> None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"input[{i}].name is missing")
        namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
        args = item.get("arguments")
        text = args if isinstance(args, str) else jsonutil.dumps({} if args is None else args).decode("utf-8")
        self._call(_call_id(item, i), self.tools.chat_name(name, namespace), text)

    def custom_tool_call(self, item: JSON, i: int) -> None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"input[{i}].name is missing")
        value = item.get("input")
        args = jsonutil.dumps({"input": value if isinstance(value, str) else ""}).decode("utf-8")
        self._call(_call_id(item, i), self.tools.chat_name(name), args)

    def local_shell_call(self, item: JSON, i: int) -> None:
        self._call(_call_id(item, i), self.tools.chat_name(LOCAL_SHELL_NAME), shell_arguments(obj(item.get("action"))))

    def call_output(self, item: JSON, i: int) -> None:
        content = self._output_text(item.get("output"), i)
        self._append({"role": "tool", "tool_call_id": _call_id(item, i), "content": content})

    def _output_text(self, output: Any, i: int) -> str:
        if isinstance(output, str):
            return output
        if output is None:
            return ""
        if isinstance(output, dict) and isinstance(output.get("content"), str):
            return str(output["content"])
        if not isinstance(output, list):
            return jsonutil.dumps(output).decode("utf-8")
        texts: list[str] = []
        for part in output:
            p = obj(part)
            if p.get("type") in _TEXT_PARTS and isinstance(p.get("text"), str):
                texts.append(p["text"])
            else:
                self.log("responses: input[{index}].output part of type {type} cannot go in a tool message; "
                         "skipped", index=i, type=p.get("type"))
        return "\n".join(texts)

    # -- reasoning and references

    def reasoning_item(self, item: JSON, i: int) -> None:
        text = reasoning_text(item)
        if text:
            self.reasoning.append(text)
        else:
            self.log("responses: input[{index}] reasoning has no text this server can read; skipped", index=i)

    def item_reference(self, item: JSON, i: int) -> None:
        self.log("responses: input[{index}] item_reference {id} is not resolved; skipped", index=i, id=item.get("id"))

    def compaction(self, item: JSON, i: int) -> None:
        """A ``compaction`` item from ``/responses/compact``: its summary as a user message in its place."""
        blob = item.get("encrypted_content")
        summary = decrypt_summary(blob) if isinstance(blob, str) else None
        if summary is None:
            self.log("responses: input[{index}] compaction was not made by this server; skipped", index=i)
            return
        self._append({"role": "user", "content": f"{SUMMARY_HEADING}\n\n{summary}"})


_HANDLERS: dict[str, Callable[[_Builder, JSON, int], None]] = {
    ItemType.MESSAGE: _Builder.message,
    ItemType.FUNCTION_CALL: _Builder.function_call,
    ItemType.CUSTOM_TOOL_CALL: _Builder.custom_tool_call,
    ItemType.LOCAL_SHELL_CALL: _Builder.local_shell_call,
    "function_call_output": _Builder.call_output,
    "custom_tool_call_output": _Builder.call_output,
    "local_shell_call_output": _Builder.call_output,
    ItemType.REASONING: _Builder.reasoning_item,
    "item_reference": _Builder.item_reference,
    "compaction": _Builder.compaction,
    "compaction_summary": _Builder.compaction,  # Codex's older name for the same item
}


def _call_id(item: JSON, i: int) -> str:
    for key in ("call_id", "id"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return value
    raise BadRequest(f"input[{i}].call_id is missing")


def shell_arguments(action: JSON) -> str:
    """A ``local_shell_call`` action as the JSON arguments of the chat ``local_shell`` function."""
    args: JSON = {"command": [c for c in arr(action.get("command")) if isinstance(c, str)]}
    if isinstance(action.get("working_directory"), str):
        args["workdir"] = action["working_directory"]
    if isinstance(action.get("timeout_ms"), int):
        args["timeout_ms"] = action["timeout_ms"]
    return jsonutil.dumps(args).decode("utf-8")


def reasoning_text(item: JSON) -> str:
    """A reasoning item's text: our own ``encrypted_content``, else its ``content``, else its ``summary``."""
    blob = item.get("encrypted_content")
    if isinstance(blob, str):
        text = decrypt_reasoning(blob)
        if text is not None:
            return text
    for key, sep in (("content", ""), ("summary", "\n\n")):
        texts = [p["text"] for p in arr(item.get(key)) if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if any(texts):
            return sep.join(texts)
    return ""


def orphan_outputs(messages: list[JSON]) -> list[str]:
    """The call ids of tool results in ``messages`` that answer no tool call before them (in order)."""
    called: set[str] = set()
    orphans: list[str] = []
    for message in messages:
        for call in arr(message.get("tool_calls")):
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                called.add(call["id"])
        if message.get("role") == "tool" and message.get("tool_call_id") not in called:
            orphans.append(str(message.get("tool_call_id")))
    return orphans


def input_messages(value: Any, tools: ToolMap, log: Log) -> list[JSON]:
    """A request's ``input`` (a string or a list of items) as chat messages."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise BadRequest("input must be a string or a list of items")
    builder = _Builder(tools, log)
    for i, item in enumerate(value):
        builder.item(item, i)
    return builder.finish()


def _merge_leading_system(messages: list[JSON]) -> list[JSON]:
    """Leading system messages as one (many chat templates take a single system message, first)."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") == "system" and isinstance(
        messages[lead].get("content"), str
    ):
        lead += 1
    if lead < 2:
        return messages
    merged = "\n\n".join(m["content"] for m in messages[:lead] if m["content"])
    return [{"role": "system", "content": merged}, *messages[lead:]]


# -- the request ------------------------------------------------------------------------------------------------------


def _default_text() -> JSON:
    return {"format": {"type": "text"}}


def _default_reasoning() -> JSON:
    return {"effort": None, "summary": None}


@dataclass
class ResponsesRequest:
    """One translated ``POST /v1/responses``: the internal chat body and what the response object echoes.

    ``input_messages`` are the chat messages this request's input became (without the instructions and without the
    prepended history): the store keeps them, plus the answer (:func:`conversation`), for a follow-up turn.
    ``tool_kinds`` maps each chat function name to the Responses tool it stands for.
    """

    chat_body: JSON
    model: str
    stream: bool
    store: bool = True
    previous_response_id: str | None = None
    include_encrypted_reasoning: bool = False
    instructions: str | None = None
    metadata: JSON = field(default_factory=dict)
    tools: list[Any] = field(default_factory=list)
    tool_choice: Any = "auto"
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    text: JSON = field(default_factory=_default_text)
    reasoning: JSON = field(default_factory=_default_reasoning)
    input_messages: list[JSON] = field(default_factory=list)
    tool_kinds: dict[str, ToolKind] = field(default_factory=dict)
    echoed: JSON = field(default_factory=dict)  # the other request fields the spec's response object repeats

    def response_fields(self) -> JSON:
        """The request fields a response object echoes, in OpenAI's order."""
        return {
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": self.reasoning,
            "store": self.store,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "text": self.text,
            "tool_choice": self.tool_choice,
            "tools": [_echoed_tool(t) for t in self.tools],
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "metadata": self.metadata,
            **(self.echoed or _spec_defaults({})),
        }


def _echoed_tool(tool: JSON) -> JSON:
    """A request tool as the response repeats it: a function tool always says ``strict`` (``null``: not asked)."""
    return {**tool, "strict": tool.get("strict")} if tool.get("type") == "function" and "strict" not in tool else tool


def _number(body: JSON, key: str, default: float) -> float:
    value = body.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _spec_defaults(body: JSON) -> JSON:
    """The response fields the Open Responses spec requires that llama-server has no notion of, as the request set
    them or at their neutral values (OpenAI's own defaults)."""
    def text(key: str) -> str | None:
        return body[key] if isinstance(body.get(key), str) else None

    def integer(key: str) -> int | None:
        value = body.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return {
        "truncation": "auto" if body.get("truncation") == "auto" else "disabled",
        "presence_penalty": _number(body, "presence_penalty", 0.0),
        "frequency_penalty": _number(body, "frequency_penalty", 0.0),
        "top_logprobs": integer("top_logprobs") or 0,
        "max_tool_calls": integer("max_tool_calls"),
        "background": False,
        "service_tier": text("service_tier") or "default",
        "safety_identifier": text("safety_identifier"),
        "prompt_cache_key": text("prompt_cache_key"),
    }


def _optional(body: JSON, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest(f"{key} must be {what}")
    return value


def _sampling(body: JSON, chat: JSON) -> tuple[float | None, float | None, int | None]:
    temperature = _optional(body, "temperature", (int, float), "a number")
    top_p = _optional(body, "top_p", (int, float), "a number")
    max_output = _optional(body, "max_output_tokens", int, "an integer")
    if max_output is not None and max_output < 1:
        raise BadRequest("max_output_tokens must be at least 1")
    for key, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_output)):
        if value is not None:
            chat[key] = value
    return temperature, top_p, max_output


def _text_format(text: JSON, chat: JSON) -> None:
    fmt = obj(text.get("format"))
    kind = fmt.get("type")
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("text.format.schema must be a JSON schema object")
        spec: JSON = {"name": fmt["name"] if isinstance(fmt.get("name"), str) else "response", "schema": schema}
        if isinstance(fmt.get("strict"), bool):
            spec["strict"] = fmt["strict"]
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}


def _tool_fields(body: JSON, tools: ToolMap, chat: JSON, log: Log) -> None:
    if tools.dropped:
        log("responses: tools with no local equivalent left out: {names}", names=", ".join(tools.dropped))
    if not tools.chat_tools:
        return
    chat["tools"] = tools.chat_tools
    choice = _tool_choice(body.get("tool_choice"), tools, log)
    if choice is not None:
        chat["tool_choice"] = choice
    if isinstance(body.get("parallel_tool_calls"), bool):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def request_to_chat(body: Any, history: list[JSON] | None, log: Log) -> ResponsesRequest:
    """Translate one Responses request; ``history`` is the stored conversation of its ``previous_response_id``."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = _optional(body, "model", str, "a string") or ""
    previous = _optional(body, "previous_response_id", str, "a string")
    instructions = body.get("instructions")
    if not isinstance(instructions, str):
        if instructions is not None:
            log("responses: instructions that are not a string are ignored")
        instructions = None
    unknown = sorted(k for k in body if k not in _KNOWN_FIELDS)
    if unknown:
        log("responses: request fields ignored: {fields}", fields=", ".join(unknown))
    tools = tool_map(body.get("tools"))
    messages_in = input_messages(body.get("input"), tools, log)
    messages: list[JSON] = [{"role": "system", "content": instructions}] if instructions else []
    messages.extend(history or ())
    messages.extend(messages_in)
    stream = body.get("stream") is True
    chat: JSON = {"model": model} if model else {}
    chat["messages"] = _merge_leading_system(messages)
    chat["stream"] = stream
    if stream:
        chat["stream_options"] = {"include_usage": True}
    _tool_fields(body, tools, chat, log)
    temperature, top_p, max_output = _sampling(body, chat)
    for penalty in ("presence_penalty", "frequency_penalty"):  # llama-server applies both
        if isinstance(body.get(penalty), (int, float)) and not isinstance(body[penalty], bool):
            chat[penalty] = body[penalty]
    text = body["text"] if isinstance(body.get("text"), dict) else _default_text()
    _text_format(text, chat)
    reasoning = body["reasoning"] if isinstance(body.get("reasoning"), dict) else _default_reasoning()
    if isinstance(reasoning.get("effort"), str):
        chat["chat_template_kwargs"] = {"reasoning_effort": reasoning["effort"]}
    return ResponsesRequest(
        chat_body=chat,
        model=model,
        stream=stream,
        store=body.get("store") is not False,
        previous_response_id=previous,
        include_encrypted_reasoning=ENCRYPTED_INCLUDE in arr(body.get("include")),
        instructions=instructions,
        metadata=obj(body.get("metadata")),
        tools=[t for t in arr(body.get("tools")) if isinstance(t, dict)],
        tool_choice=body["tool_choice"] if isinstance(body.get("tool_choice"), (str, dict)) else "auto",
        temperature=temperature,
        top_p=top_p,
        max_output_tokens=max_output,
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        text=text,
        reasoning=reasoning,
        input_messages=messages_in,
        tool_kinds=tools.kinds,
        echoed=_spec_defaults(body),
    )


# -- the stored conversation ------------------------------------------------------------------------------------------


def _quiet(*_args: Any, **_fields: Any) -> None:
    return None


def conversation(input_messages: list[JSON], response: JSON) -> list[JSON]:
    """The chat messages to store after ``response``: the input's, then the assistant turn its output stands for."""
    builder = _Builder(tool_map(response.get("tools")), _quiet)
    for i, item in enumerate(arr(response.get("output"))):
        if isinstance(item, dict):
            builder.item(item, i)
    return [*input_messages, *builder.finish()]
