"""The Anthropic Messages dialect's wire shapes: ``{"type":"error","error":{...}}`` with Anthropic's statuses
(503 → 529 ``overloaded_error``; llama-server's context overflow → 400 "prompt is too long"), ``event: error`` after
the first byte. (Its keep-alives — ``message_start``, then ``ping`` — come from the stream's encoder.)"""

from __future__ import annotations

from llamashim.dialects.anthropic.errors import error_response, stream_error_event
from llamashim.errors import ShimError
from llamashim.stream.items import StreamError
from llamashim.web.dialect import Dialect


class AnthropicDialect(Dialect):
    name = "anthropic"
    key_headers = (b"x-api-key",)
    stream_content_type = b"text/event-stream; charset=utf-8"

    def error_body(self, err: ShimError) -> bytes:
        return error_response(err.status, err.message)[1]

    def error_status(self, err: ShimError) -> int:
        return error_response(err.status, err.message)[0]

    def stream_error(self, err: StreamError) -> bytes:
        return stream_error_event(err)


ANTHROPIC = AnthropicDialect()
