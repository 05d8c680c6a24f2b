"""What the flow's turn leaves behind, in memory: an Ollama load request reaches its upstream like a chat, and a
stream whose terminal event went out is complete even when the client hangs up before the response ends."""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamashim import jsonutil
from llamashim.testing.memory import memory_shim

CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
        b'"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
FINISH = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
         b'"delta":{},"finish_reason":"stop"}]}\n\n'
DONE = b"data: [DONE]\n\n"


class Lingering(Resource):
    """An upstream that sends a whole stream, ``[DONE]`` included, and then keeps the response open."""

    isLeaf = True

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__()
        self.frames = frames

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return jsonutil.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})

    def render_POST(self, request: Request) -> int:
        request.setHeader(b"content-type", b"text/event-stream")
        for frame in self.frames:
            request.write(frame)
        return NOT_DONE_YET


def test_ollama_load_request_with_an_unreachable_upstream_is_a_502() -> None:
    """/api/chat with no messages (Ollama's load request) answers the 502 a chat would when the upstream is down."""
    shim = memory_shim(unreachable=True)
    exchange = shim.request("POST", "/api/chat", {"model": "m"})
    shim.flush()
    assert exchange.code == 502, bytes(exchange.body)
    assert set(exchange.json()) == {"error"} and "unreachable" in exchange.json()["error"]
    chat = shim.request("POST", "/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    shim.flush()
    assert chat.code == 502 and chat.json() == exchange.json()
    shim.stop()


def test_ollama_load_request_with_a_reachable_upstream_loads() -> None:
    """/api/chat with no messages answers done_reason "load" when the model's upstream answers."""
    shim = memory_shim()
    exchange = shim.request("POST", "/api/chat", {"model": "m"})
    shim.flush()
    assert exchange.code == 200 and exchange.json()["done_reason"] == "load"
    shim.stop()


def test_hang_up_after_the_terminal_event_is_no_abort() -> None:
    """A client that leaves once [DONE] arrived, before the response ended, is counted as a 200, not an abort."""
    shim = memory_shim(upstream_resource=Lingering([CHUNK, FINISH, DONE]))
    exchange = shim.request("POST", "/v1/chat/completions",
                            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    shim.flush()
    assert bytes(exchange.body).endswith(DONE) and not exchange.ended
    exchange.abort()
    shim.flush()
    assert shim.metric("llamashim_client_aborts_total", route="chat") == 0
    assert shim.metric("llamashim_requests_total", route="chat", status="200", dialect="openai") == 1
    shim.stop()


def test_hang_up_before_the_terminal_event_is_an_abort() -> None:
    """A client that leaves before the terminal event is counted as an abort."""
    shim = memory_shim(upstream_resource=Lingering([CHUNK]))
    exchange = shim.request("POST", "/v1/chat/completions",
                            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    shim.flush()
    assert bytes(exchange.body).startswith(CHUNK[:20]) and not exchange.ended
    exchange.abort()
    shim.flush()
    assert shim.metric("llamashim_client_aborts_total", route="chat") == 1
    assert shim.metric("llamashim_requests_total", route="chat", status="aborted", dialect="openai") == 1
    shim.stop()
