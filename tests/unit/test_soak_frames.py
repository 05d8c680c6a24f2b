"""The soak's judgement of how a stream ended and whose a 5xx is (bench/soak.py)."""

from __future__ import annotations

import pytest

from bench.soak import error_is_upstreams, terminal

CHUNK = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'


@pytest.mark.parametrize(("dialect", "body", "end"), [
    ("chat", CHUNK + b"data: [DONE]\n\n", "ok"),
    ("chat", CHUNK + b'data: {"error":{"message":"upstream failed"}}\n\n', "error"),
    ("chat", CHUNK, None),
    ("responses", b'event: response.created\ndata: {}\n\nevent: response.completed\ndata: {}\n\n', "ok"),
    ("responses", b'event: response.created\ndata: {}\n\nevent: response.failed\ndata: {}\n\n', "error"),
    ("responses", b'event: response.created\ndata: {}\n\nevent: response.output_text.delta\ndata: {}\n\n', None),
    ("anthropic", b'event: message_start\ndata: {}\n\nevent: message_stop\ndata: {}\n\n', "ok"),
    ("anthropic", b'event: message_start\ndata: {}\n\nevent: error\ndata: {}\n\n', "error"),
    ("anthropic", b'event: message_start\ndata: {}\n\nevent: message_delta\ndata: {}\n\n', None),
    ("ollama", b'{"done":false}\n{"done":true}\n', "ok"),
    ("ollama", b'{"done":false}\n{"error":"upstream failed"}\n', "error"),
    ("ollama", b'{"done":false}\n', None),
    ("gemini", b'data: {"candidates":[{}]}\r\n\r\ndata: {"candidates":[{"finishReason":"STOP"}]}\r\n\r\n', "ok"),
    ("gemini", b'data: {"candidates":[{}]}\n\ndata: {"error":{"code":502}}\n\n', "error"),
    ("gemini", b'data: {"candidates":[{}]}\n\n', None),
])
def test_terminal_frame_per_dialect(dialect: str, body: bytes, end: str | None) -> None:
    """A stream counts as complete only when its last frame is its dialect's terminal or error frame."""
    assert terminal(dialect, body) == end


def test_a_5xx_is_the_upstreams_only_when_it_says_so() -> None:
    """A 5xx naming the upstream (any dialect's error shape) is the upstream's; others, and HTML, are not."""
    assert error_is_upstreams(b'{"error":{"message":"upstream http://x is unreachable","type":"upstream_error"}}')
    assert error_is_upstreams(b'{"error":"upstream connection failed mid-stream"}')
    assert error_is_upstreams(b'{"error":{"message":"internal error in the encoder"}}') is False
    assert error_is_upstreams(b"<html>500</html>") is None
