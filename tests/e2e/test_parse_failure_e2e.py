"""End-to-end: a real llama-server's chat-parse failure is answered, not passed on as a 500.

The trigger (tried on the provisioned build): the Qwen2.5 tool template, a tool offered, and an assistant prefill
that holds a whole ``<tool_call>`` and then prose; the server continues the prose, its parser (which reads the
prefill too) finds text after the call and throws. This build's message carries no text ("The model produced output
that does not match the expected peg-native format"), so llamashim asks again as raw text
(``/apply-template`` + ``/completion``) for the non-streamed answer, and ends the stream with what was streamed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai

from tests.e2e.conftest import RealLlama
from tests.e2e.daemon import Daemon

PREFILL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\nI have'
REQUEST: dict[str, Any] = {
    "model": "any", "temperature": 0, "max_tokens": 12,
    "messages": [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": PREFILL}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
}


def _post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_real_parse_failure_reaches_the_client_as_an_answer(real_llama: RealLlama, shim: Daemon) -> None:
    """The real server answers the request with its parse-failure 500; through llamashim the same request gets a
    chat.completion (the continuation as content, finish stop), streamed and not, and the recovery is logged."""
    status, body = _post(real_llama.url, REQUEST)
    assert status == 500 and b"does not match the expected" in body  # the trigger still triggers
    status, body = _post(shim.url, REQUEST)
    assert status == 200, body
    reply = json.loads(body)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["finish_reason"] == "stop"
    assert reply["choices"][0]["message"]["content"]
    client = openai.OpenAI(base_url=shim.url + "/v1", api_key="x", max_retries=0, timeout=60)
    with client.chat.completions.stream(**REQUEST) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "stop"
    assert "upstream chat parser failed on the answer" in shim.log()
