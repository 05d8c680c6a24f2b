"""Counting a chat request's prompt tokens with the upstream's own template and tokenizer.

llama-server renders the request with its chat template (``POST /apply-template``, the same parsing as a chat
request, tools included) and tokenizes the result (``POST /tokenize``): the count is what the model will see.
Used by Anthropic's ``/v1/messages/count_tokens`` and OpenAI's ``/v1/responses/input_tokens``.
"""

from __future__ import annotations

from typing import Any

from twisted.web.http_headers import Headers

from llamashim import jsonutil
from llamashim.errors import ShimError
from llamashim.upstream.body import BytesProducer, json_reply
from llamashim.upstream.client import UpstreamClient

TEMPLATE_FIELDS = ("messages", "tools", "tool_choice", "chat_template_kwargs", "parallel_tool_calls")


async def count_prompt_tokens(upstream: UpstreamClient, chat_body: dict[str, Any], headers: Headers) -> int:
    template_body = {k: chat_body[k] for k in TEMPLATE_FIELDS if k in chat_body}
    response = await upstream.request(
        b"POST", b"/apply-template", headers, BytesProducer(jsonutil.dumps(template_body))
    )
    rendered = await json_reply(response, upstream.reactor, upstream.idle_timeout, "/apply-template")
    prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
    if not isinstance(prompt, str):
        raise ShimError(502, "upstream /apply-template answered without a prompt", "upstream_error")
    response = await upstream.request(
        b"POST", b"/tokenize", headers, BytesProducer(jsonutil.dumps({"content": prompt, "add_special": True}))
    )
    tokens = await json_reply(response, upstream.reactor, upstream.idle_timeout, "/tokenize")
    listed = tokens.get("tokens") if isinstance(tokens, dict) else None
    if not isinstance(listed, list):
        raise ShimError(502, "upstream /tokenize answered without tokens", "upstream_error")
    return len(listed)
