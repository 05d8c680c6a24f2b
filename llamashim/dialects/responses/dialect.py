"""The OpenAI Responses dialect's wire shapes: OpenAI's error body (string ``code``, ``param``) before the first
byte; after it an ``error`` event (the running encoder adds ``response.failed``). Its keep-alives
(``response.in_progress`` events) come from the stream's encoder."""

from __future__ import annotations

from llamashim.dialects.responses.events import error_body, error_message, response_error_code
from llamashim.errors import CONTEXT_CODE, ShimError, is_context_error
from llamashim.stream.items import StreamError
from llamashim.stream.sse import encode_event
from llamashim.web.dialect import Dialect


class ResponsesDialect(Dialect):
    name = "responses"
    stream_content_type = b"text/event-stream; charset=utf-8"

    def error_body(self, err: ShimError) -> bytes:
        return error_body(err)

    def stream_error(self, err: StreamError) -> bytes:
        code = CONTEXT_CODE if is_context_error(err) else response_error_code(err.type, err.code)
        value = {"type": "error", "code": code, "message": error_message(err), "param": None, "sequence_number": 0}
        return encode_event("error", value)


RESPONSES = ResponsesDialect()


