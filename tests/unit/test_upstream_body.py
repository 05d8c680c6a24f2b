"""How an upstream's error answer reaches the flow (pure): its status and message, a media refusal as a 400."""

from __future__ import annotations

import json

from llamashim.upstream.body import upstream_error

REFUSAL = ("image input is not supported - hint: if this is unexpected, you may need to provide the mmproj")


def body(message: str, type_: str = "server_error") -> bytes:
    return json.dumps({"error": {"code": 500, "message": message, "type": type_}}).encode()


def test_an_error_keeps_its_status_and_message() -> None:
    """A llama-server error answer passes with its own status, message and type."""
    err = upstream_error(503, body("Loading model", "unavailable_error"))
    assert (err.status, err.message, err.type) == (503, "Loading model", "unavailable_error")
    assert upstream_error(500, b"").message == "upstream answered HTTP 500"


def test_a_media_refusal_is_a_400_naming_the_fix() -> None:
    """llama-server's 500 for an image (or audio) its model cannot take becomes a 400 invalid_request_error that says
    what is missing (--mmproj); another 500 stays a 500."""
    err = upstream_error(500, body(REFUSAL))
    assert err.status == 400 and err.type == "invalid_request_error"
    assert "cannot read image input" in err.message and "--mmproj" in err.message
    assert upstream_error(500, body(REFUSAL.replace("image", "audio"))).message.startswith(
        "this model cannot read audio input")
    assert upstream_error(500, body("fake internal error")).status == 500
