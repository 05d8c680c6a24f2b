"""The typed per-request state: :class:`RequestContext`, one per request, on ``ShimRequest.ctx``.

Routes and the chat flow write it (route label, dialect, usage, time to first upstream byte, prompt progress and
first output, upstream error kind, the drain and terminal-frame hooks of a running stream); the site reads it for the
access line and ``/metrics``, the status page for the running requests, and the shutdown drain calls its hooks.
Nothing else is attached to the ``Request``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamashim.errors import ShimError
from llamashim.stream.usage import Usage
from llamashim.upstream.recording import Tape
from llamashim.web.dialect import Dialect


@dataclass
class RequestContext:
    dialect: Dialect
    request_id: bytes = b"-"
    route: str = "passthrough"  # the bounded metrics label; routes set it
    started: float = 0.0
    upstream: str | None = None  # the upstream's name, once one was chosen
    model: str | None = None  # the model's friendly name, once an upstream was chosen for it
    upstream_ttfb: float | None = None  # seconds from sending upstream to its response headers
    upstream_error: str | None = None  # the error kind (ShimError.type) when the upstream failed
    usage: Usage | None = None  # the tokens the answer used, when the upstream said
    streaming: bool = False
    first_byte_at: float | None = None  # any byte, keep-alives included
    first_output_at: float | None = None  # the first real output of a stream (never a keep-alive)
    # How far the upstream is (llamashim.stream.progress): the prompt's tokens, those its cache served, those
    # processed (cached ones included; all 0 until it says), the answer's tokens, and when the first of them came.
    prompt_total: int = 0
    prompt_cache: int = 0
    prompt_processed: int = 0
    generated: int = 0
    generating_since: float | None = None
    client_gone: bool = False
    delivered: bool = False  # the stream's terminal event went out: a hang-up after it is no abort
    cut: str | None = None  # why llamashim ended the stream before the upstream did (a runaway model)
    tape: Tape | None = None  # log.record: this request's recording, while it runs
    # A running stream's hooks: end it now with its terminal frame (drain), or give the terminal frame for an error.
    drain: Callable[[str], None] | None = None
    terminal_frame: Callable[[ShimError], bytes] | None = None
    logged: bool = False
    owner: str = ""  # whose request: a hash of the API key that passed the gate ("" without keys)

    def upstream_failed(self, err: ShimError) -> None:
        """Count an upstream-side failure (502/504 or a mid-stream error) once per request."""
        if self.upstream_error is None and (err.status in (502, 504) or err.type in ("upstream_error",
                                                                                    "timeout_error")):
            self.upstream_error = err.type


def owner_of(key: bytes | None) -> str:
    """A request's owner: a hash of its API key (never the key), or ``""`` without keys."""
    return hashlib.sha256(key).hexdigest()[:32] if key else ""


def context_of(request: Any) -> RequestContext:
    """The request's context (a bare ``Request`` built by a test gets a fresh one in the generic dialect)."""
    ctx = getattr(request, "ctx", None)
    if ctx is None:
        ctx = request.ctx = RequestContext(Dialect())
    return ctx
