"""A fifth client API, written here as a newcomer would: one package's worth of code (a Dialect, a reply shape and a
DialectRoutes subclass of three lines) plus one registry line (``(*ROUTES, EchoRoutes)``) — nothing in web/, chat/
or config. The daemon then authenticates it by its own key header, opens its own open path, answers its errors in
its own shape before routing work, and runs its requests through the shared chat flow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from klein import Klein
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat.call import ChatCall
from llamashim.dialects.registry import ROUTES
from llamashim.errors import ShimError
from llamashim.modes import ThinkingMode
from llamashim.stream.deltas import DeltaEncoder
from llamashim.stream.items import StreamError
from llamashim.testing.memory import MemoryShim, memory_shim
from llamashim.web.dialect import Dialect
from llamashim.web.respond import read_json_object, send_json
from llamashim.web.routing import DialectRoutes, api_route
from llamashim.web.turn import RequestTurn

# -- the throw-away dialect: everything a new client API brings ------------------------------------------------------


class EchoDialect(Dialect):
    name = "echo"
    stream_content_type = b"text/plain; charset=utf-8"
    key_headers = (b"x-echo-key",)
    open_paths = ("/v1/echo/ping",)

    def error_body(self, err: ShimError) -> bytes:
        return jsonutil.dumps({"echo_error": err.message, "status": err.status})

    def stream_error(self, err: StreamError) -> bytes:
        return b"ERROR " + err.message.encode() + b"\n"


ECHO = EchoDialect()


class EchoEncoder(DeltaEncoder):
    """This dialect only answers whole replies: its stream encoder writes nothing."""


def echo_reply(answer: dict[str, Any]) -> dict[str, Any]:
    return {"echo": answer["choices"][0]["message"]["content"]}


class EchoRoutes(DialectRoutes):
    app = Klein()
    dialect = ECHO
    prefixes = (b"/v1/echo",)

    @api_route(app, "/", route="echo")
    async def echo(self, request: Request) -> bytes | None:
        body = read_json_object(request, 64)
        call = ChatCall(body={"model": "m", "messages": [{"role": "user", "content": body["say"]}]},
                        encoder=EchoEncoder(), reply=echo_reply, reasoning_mode=ThinkingMode.DEFAULT)
        return await self.deps.flow.run(RequestTurn(request, self.deps.clock), call)

    @api_route(app, "/ping", route="echo_ping", methods=("GET",), upstream=False)
    async def ping(self, request: Request) -> bytes:
        return send_json(request, {"pong": True})


WITH_ECHO = (*ROUTES, EchoRoutes)  # the one registry line

# -- what the daemon does with it ------------------------------------------------------------------------------------


@pytest.fixture
def shim() -> Iterator[MemoryShim]:
    shim = memory_shim(dialects=WITH_ECHO, auth={"api_keys": ("sk-echo-secret-1",)},
                       limits={"max_body_bytes": 4096})
    yield shim
    shim.stop()


def test_its_key_header_is_a_key(shim: MemoryShim) -> None:
    """The dialect's own key header authenticates its requests, which run through the shared chat flow."""
    exchange = shim.request("POST", "/v1/echo", {"say": "hi"}, {"x-echo-key": "sk-echo-secret-1"})
    assert exchange.code == 200, bytes(exchange.body)
    assert exchange.json() == {"echo": "Hello, world!"}


def test_without_a_key_the_401_is_in_its_shape(shim: MemoryShim) -> None:
    """Without a key the gate answers 401 before routing, in the dialect's own error shape."""
    exchange = shim.request("POST", "/v1/echo", {"say": "hi"})
    assert exchange.code == 401
    assert set(exchange.json()) == {"echo_error", "status"} and exchange.json()["status"] == 401


def test_its_open_path_needs_no_key(shim: MemoryShim) -> None:
    """The path the dialect declares open is answered without a key (by default, with keys on)."""
    exchange = shim.request("GET", "/v1/echo/ping")
    assert exchange.code == 200 and exchange.json() == {"pong": True}


def test_a_body_too_large_is_refused_in_its_shape(shim: MemoryShim) -> None:
    """A body over limits.max_body_bytes is refused (413) before routing, in the dialect's error shape."""
    exchange = shim.request("POST", "/v1/echo", {"say": "x" * 8000}, {"x-echo-key": "sk-echo-secret-1"})
    assert exchange.code == 413 and "echo_error" in exchange.json()


def test_a_routing_miss_is_in_its_shape(shim: MemoryShim) -> None:
    """A path under its prefix that no route serves is a 404 in its shape, not HTML."""
    exchange = shim.request("GET", "/v1/echo/nothing/here", headers={"x-echo-key": "sk-echo-secret-1"})
    assert exchange.code == 404 and "echo_error" in exchange.json()


def test_its_key_header_is_not_a_key_elsewhere(shim: MemoryShim) -> None:
    """Another dialect's path does not accept the echo key header: keys are per dialect."""
    exchange = shim.request("POST", "/v1/chat/completions", {"model": "m", "messages": []},
                            {"x-echo-key": "sk-echo-secret-1"})
    assert exchange.code == 401 and set(exchange.json()) == {"error"}
