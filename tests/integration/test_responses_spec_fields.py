"""The Responses object carries every field the Open Responses schema requires (toward issue 23's conformance): the
sampling and policy fields echoed as asked or at their neutral values, ``completed_at`` once completed, and
``strict`` on echoed function tools — streamed and not."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.support import ShimFixture
from tests.support import sse_events

SPEC = {"truncation", "presence_penalty", "frequency_penalty", "top_logprobs", "max_tool_calls", "background",
        "service_tier", "safety_identifier", "prompt_cache_key", "completed_at", "temperature", "top_p"}
TOOL = {"type": "function", "name": "read", "description": "Read.", "parameters": {"type": "object"}}


def check(response: dict[str, Any], completed: bool) -> None:
    assert SPEC <= response.keys(), SPEC - response.keys()
    assert response["truncation"] == "disabled" and response["background"] is False
    assert response["temperature"] == 1.0 and response["top_p"] == 1.0 and response["top_logprobs"] == 0
    assert response["presence_penalty"] == 0.5 and response["service_tier"] == "default"
    assert response["prompt_cache_key"] == "conv-1" and response["safety_identifier"] is None
    assert response["tools"][0]["strict"] is None
    assert isinstance(response["completed_at"], int) if completed else response["completed_at"] is None


def test_the_spec_fields_in_every_response_object(shims: ShimFixture) -> None:
    """Non-streamed, and each of response.created / in_progress / completed of a stream: the required fields are
    there; completed_at only on the completed object; presence_penalty reaches the upstream."""
    env = shims.start()
    ask = {"model": "m", "input": "Hi", "tools": [TOOL], "presence_penalty": 0.5, "prompt_cache_key": "conv-1"}
    status, _, body = env.post("/v1/responses", ask)
    assert status == 200
    check(json.loads(body), completed=True)
    assert env.fake.chat_requests()[-1].body["presence_penalty"] == 0.5
    status, _, body = env.post("/v1/responses", {**ask, "stream": True})
    events = {data["type"]: data for _, data in sse_events(body)}
    check(events["response.created"]["response"], completed=False)
    check(events["response.completed"]["response"], completed=True)
