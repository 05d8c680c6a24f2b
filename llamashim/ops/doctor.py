"""``llamashim doctor``'s questions to a llama-server: the probes (the judgement is :mod:`.doctor_report`).

:func:`probe` asks, in order: ``GET /health``; ``GET /v1/models`` without a key (is one needed?); ``/props``,
``/slots`` and ``/v1/models``; a tiny tool call, not streamed and then streamed (about 60 tokens each; ``quick``
skips them); and ``POST /v1/embeddings``. It talks through :class:`~llamashim.upstream.client.UpstreamClient`, so
the TLS policy, timeouts and error wording are the daemon's. The reactor is passed in; only ``llamashim.cli``
runs one.

The tool call is the recipe that makes even a 135M model call a tool every time (``../shared/REAL-LLAMA-SERVER.md``):
temperature 0, ``tool_choice: required``, a system line, two earlier turns that called ``get_weather``, and the token
``response`` banned (looked up through ``/tokenize``), which otherwise starts ``<tool_response>`` instead of
``<tool_call>``.
"""

from __future__ import annotations

from typing import Any

from twisted.web.http_headers import Headers

from llamashim import jsonutil
from llamashim.errors import ShimError
from llamashim.ops.doctor_report import Answer, Probes
from llamashim.upstream.body import collect_body
from llamashim.upstream.client import UpstreamClient

MAX_BODY = 8 * 1024 * 1024
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"]},
    },
}


def _turn(n: int, city: str, weather: str) -> list[dict[str, Any]]:
    call = {"id": f"call_{n}", "type": "function",
            "function": {"name": "get_weather", "arguments": jsonutil.dumps({"city": city}).decode()}}
    return [
        {"role": "user", "content": f"Weather in {city}?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{n}", "content": weather},
    ]


def tool_request(model: str | None, stream: bool, banned: int | None) -> dict[str, Any]:
    """The tool-call probe: asks for the weather in Paris after two turns that did the same for Rome and Berlin."""
    body: dict[str, Any] = {
        "model": model or "any",
        "temperature": 0,
        "max_tokens": 60,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "messages": [
            {"role": "system", "content": "You answer every question by calling a tool."},
            *_turn(1, "Rome", "Sunny, 24 C"),
            *_turn(2, "Berlin", "Cloudy, 15 C"),
            {"role": "user", "content": "Weather in Paris?"},
        ],
        "stream": stream,
    }
    if banned is not None:
        body["logit_bias"] = [[banned, False]]
    return body


class Asker:
    """One HTTP question at a time, each answer an :class:`Answer` (never an exception)."""

    def __init__(self, client: UpstreamClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def ask(self, method: bytes, path: bytes, body: Any = None) -> Answer:
        clock = self.client.reactor
        started = clock.seconds()
        headers = Headers({b"accept": [b"application/json, text/event-stream"]})
        data = None
        if body is not None:
            headers.setRawHeaders(b"content-type", [b"application/json"])
            data = jsonutil.dumps(body)
        try:
            response = await self.client.request(method, path, headers, data)
            payload = await collect_body(response, clock, self.timeout, MAX_BODY)
        except ShimError as e:
            return Answer(None, seconds=clock.seconds() - started, error=e.message)
        kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1").lower()
        return Answer(int(response.code), payload, kind, clock.seconds() - started)


def _client(reactor: Any, url: str, api_key: str | None, verify: bool | str, timeout: float) -> UpstreamClient:
    return UpstreamClient(reactor, url, verify=verify, connect_timeout=min(10.0, timeout), idle_timeout=timeout,
                          request_timeout=timeout, api_key=api_key)


async def _banned_token(asker: Asker) -> int | None:
    """The id of the token ``response`` when it is one token in this vocabulary (else no ban)."""
    answer = await asker.ask(b"POST", b"/tokenize", {"content": "response"})
    tokens = answer.json().get("tokens") if answer.status == 200 and isinstance(answer.json(), dict) else None
    if isinstance(tokens, list) and len(tokens) == 1 and isinstance(tokens[0], int):
        return int(tokens[0])
    return None


async def probe(
    reactor: Any, url: str, api_key: str | None = None, verify: bool | str = True, timeout: float = 180.0,
    quick: bool = False,
) -> Probes:
    """Ask ``url`` everything the report needs (see the module docstring)."""
    client = _client(reactor, url, api_key, verify, timeout)
    anonymous = _client(reactor, url, None, verify, timeout)
    asker, anon = Asker(client, timeout), Asker(anonymous, timeout)
    try:
        p = Probes(url, await asker.ask(b"GET", b"/health"), api_key_given=bool(api_key))
        if p.health.status is None:
            return p
        p.anonymous = await anon.ask(b"GET", b"/v1/models")
        if p.anonymous.status == 401 and not api_key:
            return p
        p.props = await asker.ask(b"GET", b"/props")
        p.slots = await asker.ask(b"GET", b"/slots")
        p.models = await asker.ask(b"GET", b"/v1/models")
        data = p.models.json() if p.models.status == 200 else None
        listed = data.get("data") if isinstance(data, dict) else None
        model = listed[0].get("id") if isinstance(listed, list) and listed and isinstance(listed[0], dict) else None
        if not quick:
            banned = await _banned_token(asker)
            p.tool = await asker.ask(b"POST", b"/v1/chat/completions", tool_request(model, False, banned))
            p.tool_stream = await asker.ask(b"POST", b"/v1/chat/completions", tool_request(model, True, banned))
        p.embeddings = await asker.ask(b"POST", b"/v1/embeddings", {"model": model or "any", "input": "hello"})
        return p
    finally:
        for c in (client, anonymous):
            await c.stopService()
