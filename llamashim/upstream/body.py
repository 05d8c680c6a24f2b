"""Request bodies for the upstream and the upstream's error answers (no I/O of their own)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from llamashim import jsonutil
from llamashim.errors import ShimError


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory (no cooperator, no global reactor)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def error_message(body: bytes | str) -> tuple[str, str | None]:
    """(message, type) from an upstream error body: OpenAI/llama-server error JSON, ``{"error": "..."}`` or text."""
    try:
        value = jsonutil.loads(body)
    except jsonutil.JSONError:
        value = None
    if isinstance(value, dict):
        err = value.get("error", value)
        if isinstance(err, dict):
            kind = err.get("type")
            return str(err.get("message") or ""), kind if isinstance(kind, str) else None
        if isinstance(err, str):
            return err, None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text.strip()[:500], None


def upstream_error(status: int, body: bytes) -> ShimError:
    """An upstream error status passed on with its message."""
    message, type_ = error_message(body)
    if not message:
        message = f"upstream answered HTTP {status}"
    return ShimError(status if status >= 400 else 502, message, type_)
