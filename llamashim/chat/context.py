"""Will a chat prompt fit the model's context window? (pure: the decision; the flow does the counting)

llama-server refuses a prompt of ``n_prompt_tokens >= n_ctx`` (its slot's window; ``tools/server/server-context.cpp``,
``exceeds the available context size``). llamashim asks the same question before the upstream works on the request,
so the refusal is a real HTTP 400 in the client's words even for a stream (whose keep-alives would otherwise have
started), and a busy upstream is never queued for a prompt it will refuse.

Cheap first: no tokenizer yields more tokens than the rendered prompt has bytes (a token covers at least one byte;
byte-fallback tokens exactly one), and the rendered prompt is the request's text plus what the template adds around
it. :func:`token_bound` is the UTF-8 size of everything the template sees (the messages and tools as JSON, whose
quoting and keys are slack of their own; tools as indented JSON, the most verbose way templates render them) plus a
per-message, per-tool and fixed allowance for the template's own text (role markers, default system prompt, tool
preamble, special tokens). A prompt whose bound is below the window fits: no tokenize round-trip. Only above it does
the flow count exactly with the upstream's own template and tokenizer (``/apply-template`` + ``/tokenize``,
:func:`llamashim.chat.tokens.count_prompt_tokens`) and refuse when :func:`overflows` says so. An unknown window means
no pre-check at all; a count that fails (an old build without those routes) sends the request on unchecked.
"""

from __future__ import annotations

import json
from typing import Any

from llamashim import jsonutil
from llamashim.errors import ContextOverflow

PER_MESSAGE = 64  # bytes a template may add around one message (role markers, separators, special tokens)
PER_TOOL = 256  # and around one tool (its XML or JSON wrapping, the parameter list)
FIXED = 1024  # once per prompt (a default system prompt, the tool-use preamble, BOS/EOS, the generation prompt)


def _size(value: Any) -> int:
    """Compact JSON's UTF-8 bytes."""
    return len(jsonutil.dumps(value))


def _indented_size(value: Any) -> int:
    """JSON indented by four (``tojson(indent=4)``, the widest form templates render tools in), UTF-8 bytes."""
    return len(json.dumps(value, ensure_ascii=False, indent=4).encode("utf-8"))


def token_bound(body: dict[str, Any]) -> int:
    """An upper bound on the prompt tokens of chat request ``body`` under any chat template and tokenizer."""
    messages = body.get("messages")
    tools = body.get("tools")
    messages = messages if isinstance(messages, list) else []
    tools = tools if isinstance(tools, list) else []
    template_kwargs = body.get("chat_template_kwargs")
    bound = _size(messages) + PER_MESSAGE * len(messages) + FIXED
    if tools:
        bound += _indented_size(tools) + PER_TOOL * len(tools)
    if template_kwargs:
        bound += _size(template_kwargs)
    return bound


def needs_count(body: dict[str, Any], window: int | None) -> bool:
    """Whether the prompt must be counted exactly: the window is known and the cheap bound does not fit in it."""
    return window is not None and overflows(token_bound(body), window)


def overflows(prompt_tokens: int, window: int) -> bool:
    """llama-server's own test: a prompt of ``window`` tokens or more leaves no room and is refused."""
    return prompt_tokens >= window


def refusal(prompt_tokens: int, window: int) -> ContextOverflow | None:
    """The error a prompt of ``prompt_tokens`` (an exact count) is answered with, or ``None`` when it fits."""
    return ContextOverflow(prompt_tokens, window) if overflows(prompt_tokens, window) else None
