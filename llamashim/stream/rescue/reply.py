"""The rescue of a non-streamed reply (pure): calls carried as markup in a choice's ``message.content`` become its
``tool_calls`` (content the text left over, trimmed; ``null`` when none), ``finish_reason`` ``stop`` becomes
``tool_calls``; the arguments of the upstream's own calls are repaired against the offered schemas too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamashim.stream.rescue.base import Offered
from llamashim.stream.rescue.detect import rescue_text
from llamashim.stream.tools import new_call_id


def _repaired(call: Any, offered: Offered) -> Any:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or fn.get("name") not in offered or not isinstance(fn.get("arguments"), str):
        return call
    fixed = offered.call(fn["name"], fn["arguments"]).arguments
    return call if fixed == fn["arguments"] else {**call, "function": {**fn, "arguments": fixed}}


def _message(msg: dict[str, Any], offered: Offered, new_id: Callable[[], str]) -> dict[str, Any]:
    out = msg
    calls = msg.get("tool_calls")
    if isinstance(calls, list) and calls:
        repaired = [_repaired(c, offered) for c in calls]
        if any(a is not b for a, b in zip(repaired, calls, strict=True)):
            out = {**out, "tool_calls": repaired}
    content = msg.get("content")
    if isinstance(content, str) and content:
        text, found = rescue_text(content, offered)
        if found:
            existing = out.get("tool_calls")
            rescued = [{"id": new_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                       for c in found]
            out = {**out, "content": text.strip() or None,
                   "tool_calls": [*(existing if isinstance(existing, list) else ()), *rescued]}
    return out


def rescue_reply(reply: dict[str, Any], tools: Any, new_id: Callable[[], str] = new_call_id) -> dict[str, Any]:
    """``reply`` (a ``chat.completion``) with the calls its content carries rescued; the same object when there is
    nothing to change (no tools offered, no markup, arguments already right)."""
    offered = Offered(tools)
    choices = reply.get("choices")
    if not offered or not isinstance(choices, list):
        return reply
    new_choices: list[Any] | None = None
    for pos, choice in enumerate(choices):
        msg = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(msg, dict):
            continue
        fixed = _message(msg, offered, new_id)
        if fixed is msg:
            continue
        assert isinstance(choice, dict)
        new_choice = {**choice, "message": fixed}
        if fixed.get("tool_calls") and choice.get("finish_reason") in ("stop", None):
            new_choice["finish_reason"] = "tool_calls"
        new_choices = new_choices or list(choices)
        new_choices[pos] = new_choice
    return reply if new_choices is None else {**reply, "choices": new_choices}
