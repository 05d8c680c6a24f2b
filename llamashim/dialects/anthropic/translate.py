"""Anthropic Messages requests → internal chat requests (pure): what ``POST /v1/messages`` asks, as an OpenAI body.

The mapping, block by block: ``system`` (a string or text blocks) becomes one system message; ``text`` blocks join
into the message content (``image`` blocks make it a list of parts); ``tool_use`` becomes the assistant's
``tool_calls``; each ``tool_result`` becomes a ``tool`` message, placed before whatever text the same user turn
carries; ``thinking`` becomes the assistant's ``reasoning_content``. What llama-server cannot use (``document``,
``search_result``, server tools, ``cache_control``, ``metadata``, ...) is left out, never refused.

Claude Code starts its system prompt with a ``x-anthropic-billing-header: ...; cch=...;`` block whose value changes
on every request; left in, it makes every prompt differ from the first token on and defeats llama-server's prompt
cache, so it is removed when ``strip_billing_header`` is set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from llamashim import jsonutil
from llamashim.errors import BadRequest
from llamashim.jsonutil import int_or, obj

Log = Callable[..., None]
JSON = dict[str, Any]

BILLING_HEADER = "x-anthropic-billing-header:"
SAMPLING = ("temperature", "top_p", "top_k")
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


class BlockKind(StrEnum):
    """The content block types llamashim reads (all six) and writes (text, thinking, tool_use)."""

    TEXT = "text"
    THINKING = "thinking"
    REDACTED_THINKING = "redacted_thinking"
    TOOL_USE = "tool_use"
    IMAGE = "image"
    TOOL_RESULT = "tool_result"


@dataclass(frozen=True, slots=True)
class Thinking:
    """The request's ``thinking``: on (``enabled`` or ``adaptive``, with the budget when given) or off."""

    enabled: bool
    budget_tokens: int | None = None


@dataclass(slots=True)
class MessagesRequest:
    """One translated ``/v1/messages`` request.

    ``chat_body`` is a plain OpenAI chat body (its ``model`` is the client's name: resolve it before sending);
    ``model`` is the name to echo back; ``thinking`` is ``None`` when the request did not say.
    """

    chat_body: JSON
    model: str
    stream: bool
    thinking: Thinking | None
    stripped_billing_header: bool


def request_to_chat(body: Any, *, strip_billing_header: bool, log: Log) -> MessagesRequest:
    """A ``/v1/messages`` body → the internal chat request; :class:`BadRequest` when it is malformed."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    max_tokens = int_or(body.get("max_tokens"), 0)
    if max_tokens <= 0:
        raise BadRequest("max_tokens is required and must be a positive integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    dropped: Counter[str] = Counter()
    system, stripped = _system(body.get("system"), strip_billing_header)
    messages = ([{"role": "system", "content": system}] if system else []) + _messages(body.get("messages"), dropped)
    out: JSON = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": stream}
    if stream:
        out["stream_options"] = {"include_usage": True}
    _sampling(body, out)
    _tools(body, out, log)
    thinking = _thinking(body.get("thinking"), out)
    if dropped:
        kinds = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(dropped.items()))
        log("anthropic: left out content with no chat equivalent: {kinds}", kinds=kinds)
    return MessagesRequest(out, model, stream, thinking, stripped)


# -- system -----------------------------------------------------------------------------------------------------


def _system(value: Any, strip: bool) -> tuple[str, bool]:
    """The system prompt as one string (text blocks joined by a blank line), and whether the header was removed."""
    if value is None:
        return "", False
    if isinstance(value, str):
        if strip and value.startswith(BILLING_HEADER):
            _, _, rest = value.partition("\n")
            return rest, True
        return value, False
    if not isinstance(value, list):
        raise BadRequest("system must be a string or a list of text blocks")
    texts = [_text(b) for b in value if _kind(b) == BlockKind.TEXT]
    if strip and texts and texts[0].startswith(BILLING_HEADER):
        return "\n\n".join(texts[1:]), True
    return "\n\n".join(texts), False


# -- messages ---------------------------------------------------------------------------------------------------


def _messages(value: Any, dropped: Counter[str]) -> list[JSON]:
    if not isinstance(value, list):
        raise BadRequest("messages must be a list")
    if not value:
        raise BadRequest("messages must hold at least one message")
    out: list[JSON] = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise BadRequest(f"messages[{i}] must be an object")
        role = msg.get("role")
        if role is None:
            raise BadRequest(f"messages[{i}].role is missing")
        if role == "system":  # Claude Code sends one mid-conversation to a model it does not know (--continue)
            out.append(_system_turn(msg.get("content"), i))
            continue
        if role not in ("user", "assistant"):
            raise BadRequest(f'messages[{i}].role must be "user", "assistant" or "system"')
        content = msg.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise BadRequest(f"messages[{i}].content must be a string or a list of content blocks")
        elif role == "assistant":
            out.append(_assistant(content, i, dropped))
        else:
            out.extend(_user(content, i, dropped))
    return out


def _system_turn(content: Any, i: int) -> JSON:
    """A system message inside ``messages`` (not Anthropic's API, but sent by Claude Code): its text as a user turn
    where it stands — many chat templates refuse a system message anywhere but first, and moving it into the system
    prompt would change the prompt's cached prefix."""
    if not isinstance(content, (str, list)):
        raise BadRequest(f"messages[{i}].content must be a string or a list of content blocks")
    return {"role": "user", "content": _system(content, False)[0]}


def _assistant(blocks: list[Any], i: int, dropped: Counter[str]) -> JSON:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(blocks):
        match _kind(block):
            case BlockKind.TEXT:
                texts.append(_text(block))
            case BlockKind.THINKING:
                if isinstance(block.get("thinking"), str) and block["thinking"]:
                    reasoning.append(block["thinking"])
            case BlockKind.TOOL_USE:
                calls.append(_tool_call(block, i, j))
            case BlockKind.REDACTED_THINKING:
                pass  # opaque to anything but Anthropic's own models: nothing to log
            case kind:
                dropped[kind] += 1
    out: JSON = {"role": "assistant", "content": "\n\n".join(texts)}
    if calls:
        out["tool_calls"] = calls
    if reasoning:
        out["reasoning_content"] = "\n\n".join(reasoning)
    return out


def _user(blocks: list[Any], i: int, dropped: Counter[str]) -> list[JSON]:
    """One user turn → its tool results (as ``tool`` messages) first, then a user message with the rest."""
    results: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(blocks):
        match _kind(block):
            case BlockKind.TEXT:
                parts.append({"type": "text", "text": _text(block)})
            case BlockKind.IMAGE:
                part = _image(block, dropped)
                if part is not None:
                    parts.append(part)
            case BlockKind.TOOL_RESULT:
                results.append(_tool_result(block, i, j, dropped))
            case kind:
                dropped[kind] += 1
    if parts or not results:
        results.append({"role": "user", "content": _content(parts)})
    return results


def _kind(block: Any) -> str:
    if not isinstance(block, dict):
        return "non-object block"
    kind = block.get("type")
    return kind if isinstance(kind, str) else "untyped block"


def _text(block: JSON) -> str:
    text = block.get("text")
    return text if isinstance(text, str) else ""


def _content(parts: list[JSON]) -> str | list[JSON]:
    """Text-only content as one string (what every chat template takes); with images, the list of parts."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _image(block: JSON, dropped: Counter[str]) -> JSON | None:
    source = obj(block.get("source"))
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type")
        url = f"data:{media if isinstance(media, str) and media else 'image/jpeg'};base64,{source['data']}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        dropped[f"image ({kind} source)"] += 1
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_call(block: JSON, i: int, j: int) -> JSON:
    name = block.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"messages[{i}].content[{j}].name is missing")
    call_id = block.get("id")
    args = block.get("input")
    return {
        "id": call_id if isinstance(call_id, str) and call_id else f"toolu_{i}_{j}",
        "type": "function",
        "function": {"name": name, "arguments": jsonutil.dumps(args if isinstance(args, dict) else {}).decode()},
    }


def _tool_result(block: JSON, i: int, j: int, dropped: Counter[str]) -> JSON:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"messages[{i}].content[{j}].tool_use_id is missing")
    content = block.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for part in content:
            kind = _kind(part)
            if kind == BlockKind.TEXT:
                texts.append(_text(part))
            else:
                dropped[f"{kind} in tool_result"] += 1
        text = "\n\n".join(texts)
    else:
        text = ""
    if block.get("is_error") is True and not text.startswith("Error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


# -- options ----------------------------------------------------------------------------------------------------


def _sampling(body: JSON, out: JSON) -> None:
    for key in SAMPLING:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadRequest(f"{key} must be a number")
        out[key] = value
    stops = body.get("stop_sequences")
    if stops is None:
        return
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest("stop_sequences must be a list of strings")
    if stops:
        out["stop"] = stops


def _tools(body: JSON, out: JSON, log: Log) -> None:
    """Client tools → chat function tools; Anthropic's server tools left out; ``tool_choice`` mapped."""
    value = body.get("tools")
    if value is None:
        return
    if not isinstance(value, list):
        raise BadRequest("tools must be a list")
    tools: list[JSON] = []
    server: list[str] = []
    for k, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{k}] must be an object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            server.append(f"{tool.get('name') or '?'} ({kind})")
            continue
        tools.append(_function(tool, k))
    if server:
        log("anthropic: left out server tools llama-server cannot run: {names}", names=", ".join(server))
    if not tools:
        return
    out["tools"] = tools
    _tool_choice(body.get("tool_choice"), {t["function"]["name"] for t in tools}, out, log)


def _function(tool: JSON, k: int) -> JSON:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"tools[{k}].name is missing")
    fn: JSON = {"name": name}
    if isinstance(tool.get("description"), str):
        fn["description"] = tool["description"]
    if "input_schema" in tool:
        fn["parameters"] = tool["input_schema"]  # repair_chat_request normalises odd schemas downstream
    return {"type": "function", "function": fn}


def _tool_choice(value: Any, names: set[str], out: JSON, log: Log) -> None:
    """Anthropic allows parallel tool use unless told not to; llama-server's default is not to, so say so."""
    choice = obj(value)
    if value is not None and not isinstance(value, dict):
        raise BadRequest("tool_choice must be an object")
    out["parallel_tool_calls"] = choice.get("disable_parallel_tool_use") is not True
    if value is None:
        return
    kind = choice.get("type")
    if kind in TOOL_CHOICES:
        out["tool_choice"] = TOOL_CHOICES[kind]
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("tool_choice.name is missing")
        if name in names:
            out["tool_choice"] = {"type": "function", "function": {"name": name}}
        else:
            log("anthropic: tool_choice names {name}, which is not among the tools sent on; left out", name=name)
    else:
        raise BadRequest('tool_choice.type must be "auto", "any", "tool" or "none"')


def _thinking(value: Any, out: JSON) -> Thinking | None:
    """``thinking`` → the chat template's ``enable_thinking`` switch (and the budget llama-server reads)."""
    if value is None:
        return None
    kind = obj(value).get("type")
    if kind == "enabled":
        budget = int_or(value.get("budget_tokens"), 0)
        thinking = Thinking(True, budget if budget > 0 else None)
    elif kind == "adaptive":
        thinking = Thinking(True)
    elif kind == "disabled":
        thinking = Thinking(False)
    else:
        raise BadRequest('thinking.type must be "enabled", "adaptive" or "disabled"')
    out["chat_template_kwargs"] = {"enable_thinking": thinking.enabled}
    if thinking.budget_tokens is not None:
        out["thinking_budget_tokens"] = thinking.budget_tokens
    return thinking
