"""gpt-oss (OpenAI Harmony): ``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}<|call|>``, or
the recipient before the channel: ``<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>{…}``.

Source: llama.cpp ``common/chat-parser.cpp`` ``common_chat_parse_gpt_oss`` (``tool_call1_regex`` / ``tool_call2_regex``:
`` to=functions.NAME`` before or after ``<|channel|>(analysis|commentary)``, an optional ``<|constrain|>json``, then
``<|message|>`` and JSON); ``tests/test-chat.cpp``; template ``models/templates/openai-gpt-oss-120b.jinja``. A header
without a ``to=functions.`` recipient (reasoning, a final answer) is not a call and stays text.
"""

from __future__ import annotations

import re

from llamashim.stream.rescue.base import MORE, NO, Found, Miss, Offered, Verdict, json_args, lit, wait, ws

OPENERS = ("<|channel|>", "<|start|>")
_MESSAGE = "<|message|>"
_RECIPIENT = re.compile(r"\bto=functions\.([^\s<]+)")
_HEADER_LIMIT = 256


def parse(text: str, i: int, opener: str, offered: Offered, final: bool) -> Verdict:
    at = text.find(_MESSAGE, i, i + _HEADER_LIMIT)
    if at < 0:
        return wait(final) if len(text) - i < _HEADER_LIMIT else NO
    m = _RECIPIENT.search(text, i, at)
    if m is None or m.group(1) not in offered:
        return NO
    got = json_args(text, ws(text, at + len(_MESSAGE)), m.group(1), offered, final)
    if isinstance(got, Miss):
        return got
    end, call = got
    k = ws(text, end)
    for token in ("<|call|>", "<|end|>"):
        after = lit(text, k, token, final)
        if after is MORE:
            return MORE
        if isinstance(after, int):
            return Found(after, (call,))
    return Found(end, (call,))
