"""Repair of chat requests before they reach llama-server: tool schemas and tool-call messages (pure).

Clients send tools in many slightly broken shapes; llama-server rejects (or 500s on) most of them. Each repair here is
logged once, at debug level, with the tool's name. A request that needs nothing is returned as the same object, and
nothing is copied that is not changed, so 128 well-formed tools (what Copilot sends) cost almost nothing.
Shapes that cannot be repaired are a 400 naming the index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamashim import jsonutil
from llamashim.errors import BadRequest
from llamashim.stream.tools import new_call_id

Log = Callable[..., None]
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_SCHEMA_KEYWORDS = frozenset(
    ("type", "properties", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "items", "$schema", "$defs")
)


def repair_chat_request(body: dict[str, Any], log: Log) -> dict[str, Any]:
    """The request with every repair DESIGN.md lists applied (``body`` itself when none was needed)."""
    out = body
    if "functions" in out and "tools" not in out:
        out = _legacy_functions(out, log)
    if "tools" in out:
        out = _repair_tools(out, log)
    messages = out.get("messages")
    if messages is not None:
        if not isinstance(messages, list):
            raise BadRequest("messages must be a list")
        fixed = _repair_messages(messages, log)
        if fixed is not messages:
            out = {**out, "messages": fixed}
    return out


def _legacy_functions(body: dict[str, Any], log: Log) -> dict[str, Any]:
    functions = body["functions"]
    if not isinstance(functions, list):
        raise BadRequest("functions must be a list")
    out = {k: v for k, v in body.items() if k not in ("functions", "function_call")}
    out["tools"] = [{"type": "function", "function": f} for f in functions]
    log("repaired request: legacy functions -> tools ({n} functions)", n=len(functions))
    call = body.get("function_call")
    if call is not None and "tool_choice" not in body:
        if isinstance(call, str):
            out["tool_choice"] = call  # "auto" / "none"
        elif isinstance(call, dict) and isinstance(call.get("name"), str):
            out["tool_choice"] = {"type": "function", "function": {"name": call["name"]}}
    return out


def _repair_tools(body: dict[str, Any], log: Log) -> dict[str, Any]:
    tools = body["tools"]
    if tools is None or tools == []:
        out = {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")}
        log("repaired request: empty tools removed (with tool_choice)")
        return out
    if not isinstance(tools, list):
        raise BadRequest(f"tools must be a list, got {type(tools).__name__}")
    fixed: list[Any] | None = None
    for i, tool in enumerate(tools):
        new = repair_tool(tool, i, log)
        if new is not tool:
            if fixed is None:
                fixed = list(tools)
            fixed[i] = new
    if fixed is None:
        return body
    return {**body, "tools": fixed}


def repair_tool(tool: Any, index: int, log: Log) -> Any:
    if not isinstance(tool, dict):
        raise BadRequest(f"tools[{index}] must be an object")
    out = tool
    fn = tool.get("function")
    if fn is None and isinstance(tool.get("name"), str):
        # a bare function definition where a tool was expected
        fn = {k: v for k, v in tool.items() if k != "type"}
        out = {"type": "function", "function": fn}
        log("repaired tool {name}: bare function wrapped as a tool", name=fn["name"])
    if not isinstance(fn, dict):
        raise BadRequest(f"tools[{index}].function must be an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"tools[{index}].function.name is missing")
    if out.get("type") != "function":
        if out.get("type") not in (None, ""):
            raise BadRequest(f"tools[{index}].type must be \"function\", got {out.get('type')!r}")
        out = {**out, "type": "function"}
        log("repaired tool {name}: missing type set to function", name=name)
    params = fn.get("parameters")
    new_params = repair_parameters(params, index, name, log)
    if new_params is not params or "parameters" not in fn:
        out = {**out, "function": {**fn, "parameters": new_params}}
    return out


def repair_parameters(params: Any, index: int, name: str, log: Log) -> Any:
    if params is None:
        log("repaired tool {name}: missing parameters set to an empty object schema", name=name)
        return dict(EMPTY_SCHEMA, properties={})
    if isinstance(params, str):
        try:
            parsed = jsonutil.loads(params)
        except jsonutil.JSONError:
            raise BadRequest(f"tools[{index}].function.parameters is a string that is not JSON") from None
        log("repaired tool {name}: parameters given as a JSON string, parsed", name=name)
        return repair_parameters(parsed, index, name, log)
    if not isinstance(params, dict):
        raise BadRequest(f"tools[{index}].function.parameters must be a JSON schema object")
    if not params:
        log("repaired tool {name}: empty parameters set to an empty object schema", name=name)
        return dict(EMPTY_SCHEMA, properties={})
    if not (_SCHEMA_KEYWORDS & params.keys()) and all(isinstance(v, dict) for v in params.values()):
        log("repaired tool {name}: bare property map wrapped in an object schema", name=name)
        return {"type": "object", "properties": params}
    if params.get("type") == "object" and "properties" not in params:
        log("repaired tool {name}: object schema without properties given properties {{}}", name=name)
        return {**params, "properties": {}}
    return params


def _repair_messages(messages: list[Any], log: Log) -> list[Any]:
    fixed: list[Any] | None = None
    pending_ids: list[str] = []  # ids generated for calls whose tool results carry no tool_call_id
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise BadRequest(f"messages[{i}] must be an object")
        new = msg
        calls = msg.get("tool_calls")
        if calls is not None and msg.get("role") == "assistant":
            if not isinstance(calls, list):
                raise BadRequest(f"messages[{i}].tool_calls must be a list")
            new_calls = _repair_calls(calls, i, log)
            if new_calls is not calls:
                new = {**new, "tool_calls": new_calls}
            pending_ids = [c.get("id", "") for c in new_calls if isinstance(c, dict)]
            if msg.get("content") is None:
                new = {**new, "content": ""}
                log("repaired message {index}: null content beside tool_calls set to \"\"", index=i)
        elif msg.get("role") == "tool":
            if not msg.get("tool_call_id") and pending_ids:
                new = {**msg, "tool_call_id": pending_ids.pop(0)}
                log("repaired message {index}: tool result given its call's id", index=i)
            elif msg.get("tool_call_id") in pending_ids:
                pending_ids.remove(msg["tool_call_id"])
        if new is not msg:
            if fixed is None:
                fixed = list(messages)
            fixed[i] = new
    return messages if fixed is None else fixed


def _repair_calls(calls: list[Any], index: int, log: Log) -> list[Any]:
    fixed: list[Any] | None = None
    for j, call in enumerate(calls):
        if not isinstance(call, dict):
            raise BadRequest(f"messages[{index}].tool_calls[{j}] must be an object")
        new = call
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise BadRequest(f"messages[{index}].tool_calls[{j}].function must be an object")
        args = fn.get("arguments")
        if not isinstance(args, str):
            text = "{}" if args is None else jsonutil.dumps(args).decode("utf-8")
            new = {**new, "function": {**fn, "arguments": text}}
            log("repaired tool call {name}: arguments given as an object, sent as a JSON string", name=fn.get("name"))
        if not call.get("id"):
            new = {**new, "id": new_call_id()}
            log("repaired tool call {name}: missing id generated", name=fn.get("name"))
        if call.get("type") != "function":
            new = {**new, "type": "function"}
        if new is not call:
            if fixed is None:
                fixed = list(calls)
            fixed[j] = new
    return calls if fixed is None else fixed
