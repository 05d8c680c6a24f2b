"""The Gemini API's wire shapes (pure): Google's error object ``{"error": {"code", "message", "status"}}`` with the
status names of ``google.rpc.Code`` (400 ``INVALID_ARGUMENT``, 401 ``UNAUTHENTICATED``, 403 ``PERMISSION_DENIED``, 404
``NOT_FOUND``, 429 ``RESOURCE_EXHAUSTED``, 500 ``INTERNAL``, 503 ``UNAVAILABLE``, 504 ``DEADLINE_EXCEEDED``), before the
first byte and as a stream's last ``data:`` frame; keys from ``x-goog-api-key`` or ``?key=`` (and ``Authorization:
Bearer``, as on every path). A context overflow is worded as Gemini words it."""

from __future__ import annotations

from typing import Any

from llamashim import jsonutil
from llamashim.errors import Described, ShimError, context_overflow, is_context_error
from llamashim.stream.items import StreamError
from llamashim.web.dialect import Dialect

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
SSE_END = b"\r\n\r\n"  # Google ends each SSE frame with CRLF CRLF


def status_name(code: int) -> str:
    """Google's ``status`` for an HTTP status (other 4xx: ``FAILED_PRECONDITION``, other 5xx: ``INTERNAL``)."""
    if code in STATUS_NAMES:
        return STATUS_NAMES[code]
    return "INTERNAL" if code >= 500 else "FAILED_PRECONDITION"


def error_object(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status_name(code)}}


def error_message(err: Described) -> str:
    """The message, a context overflow in Gemini's own words (with the numbers when they are known)."""
    overflow = context_overflow(err)
    if overflow is not None:
        return (f"The input token count ({overflow.prompt_tokens}) exceeds the maximum number of tokens allowed "
                f"({overflow.window}).")
    return err.message


def stream_status(err: StreamError) -> int:
    """The HTTP status a failure after the first byte stands for (the frame's ``code``, which the SDKs raise by)."""
    if is_context_error(err):
        return 400
    code = err.code
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        return code
    return {"timeout_error": 504, "unavailable_error": 503, "upstream_error": 502}.get(err.type, 500)


def stream_error_object(err: StreamError) -> dict[str, Any]:
    return error_object(stream_status(err), error_message(err))


class GeminiDialect(Dialect):
    name = "gemini"
    stream_content_type = b"text/event-stream"
    key_headers = (b"x-goog-api-key",)
    key_query = b"key"

    def error_body(self, err: ShimError) -> bytes:
        return jsonutil.dumps(error_object(self.error_status(err), error_message(err)))

    def error_status(self, err: ShimError) -> int:
        return 400 if is_context_error(err) else err.status

    def stream_error(self, err: StreamError) -> bytes:
        return b"data: " + jsonutil.dumps(stream_error_object(err)) + SSE_END


GEMINI = GeminiDialect()
