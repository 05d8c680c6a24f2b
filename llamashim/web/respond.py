"""Answering a request at the web edge: reading its JSON body, JSON replies, starting a stream."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from llamashim import compat, jsonutil
from llamashim.errors import BadRequest, ShimError
from llamashim.stream.items import StreamError
from llamashim.web.context import context_of

# A stream is never cached, buffered by a reverse proxy (nginx: X-Accel-Buffering) or transformed on the way.
STREAM_HEADERS = {
    b"cache-control": b"no-cache, no-transform",
    b"x-accel-buffering": b"no",
}


def read_body(request: Request) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read()
    return data


def read_json_object(request: Request, max_depth: int) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what is wrong with it."""
    data = read_body(request)
    if not data.strip():
        raise BadRequest("request body is empty; a JSON object is required")
    return json_object(data, max_depth)


def json_object(data: bytes, max_depth: int, what: str = "request body") -> dict[str, Any]:
    """``data`` as a JSON object, or a 400 naming what is wrong with ``what``."""
    try:
        value = jsonutil.loads(data, max_depth)
    except jsonutil.JSONError as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def send_json(request: Request, value: Any, status: int = 200) -> bytes:
    body = value if isinstance(value, bytes) else jsonutil.dumps(value)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def start_stream(request: Request, content_type: bytes) -> None:
    """A 200 streamed answer: never cached or buffered by intermediaries, counted as an active stream."""
    mark = getattr(request, "mark_streaming", None)  # a ShimRequest counts its streams; a test's Request may not
    if mark is not None:
        mark()
    request.setResponseCode(200)
    for name, value in STREAM_HEADERS.items():
        request.setHeader(name, value)
    request.setHeader(b"content-type", content_type)


def end_with_error(request: Request, err: ShimError) -> None:
    """End ``request`` with ``err`` in its dialect's shape: the error body before the first byte, the stream's
    terminal frame after it (the running encoder's own, when the stream registered one). An upstream failure is
    noted in the request context, so ``/metrics`` counts it."""
    ctx = context_of(request)
    ctx.upstream_failed(err)
    if request.finished or compat.client_gone(request):
        return
    if request.startedWriting:
        frame = ctx.terminal_frame
        request.write(frame(err) if frame is not None else
                      ctx.dialect.stream_error(StreamError(err.message, err.type, err.code)))
        request.finish()
        return
    if err.status == 429:
        request.setHeader(b"retry-after", b"1")
    request.write(send_json(request, ctx.dialect.error_body(err), ctx.dialect.error_status(err)))
    request.finish()
