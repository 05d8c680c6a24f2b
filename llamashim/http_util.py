"""Small I/O-edge helpers shared by the route modules: request bodies, JSON answers, error answers."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.web.iweb import IBodyProducer
from twisted.web.server import Request
from zope.interface import implementer

from llamashim import jsonutil
from llamashim.errors import BadRequest, ShimError
from llamashim.sse import SSE_HEADERS


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory (no cooperator, no global reactor)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Any:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


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
    try:
        value = jsonutil.loads(data, max_depth)
    except jsonutil.JSONError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value


def send_json(request: Request, value: Any, status: int = 200) -> bytes:
    body = value if isinstance(value, bytes) else jsonutil.dumps(value)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def send_error(request: Request, err: ShimError, dialect: str) -> bytes:
    from llamashim import errors

    if dialect == "ollama":
        body = errors.ollama_error(err.message)
    else:
        body = errors.openai_error(err.message, err.type, err.code)
    return send_json(request, body, err.status)


def start_stream(request: Request, content_type: bytes) -> None:
    """A 200 streamed answer: never cached or buffered by intermediaries, counted as an active stream."""
    mark = getattr(request, "mark_streaming", None)
    if mark is not None:
        mark()
    request.setResponseCode(200)
    for name, value in SSE_HEADERS.items():
        request.setHeader(name, value)
    request.setHeader(b"content-type", content_type)


def start_sse(request: Request) -> None:
    start_stream(request, SSE_HEADERS[b"content-type"])


def upstream_error(status: int, body: bytes) -> ShimError:
    """An upstream error status passed on with its message (OpenAI or llama-server error JSON, or text)."""
    message = ""
    type_ = None
    try:
        value = jsonutil.loads(body)
    except jsonutil.JSONError:
        value = None
    if isinstance(value, dict):
        err = value.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            type_ = err.get("type") if isinstance(err.get("type"), str) else None
        elif isinstance(err, str):
            message = err
    if not message:
        message = body.decode("utf-8", "replace").strip()[:500] or f"upstream answered HTTP {status}"
    if status < 400:
        status = 502
    return ShimError(status, message, type_)
