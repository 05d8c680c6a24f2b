"""Every use of a private Twisted name, in one place, each with the reason and a test of its assumption.

``tests/unit/test_compat.py`` pins each assumption against the installed Twisted, so an upgrade that breaks one
fails there by name instead of somewhere in the daemon.
"""

from __future__ import annotations

from typing import Any

# The HTTP/1.1 client's "the request never went out" failure: a kept-alive connection the upstream had already
# closed. Only this (and ResponseNeverReceived of a clean close) makes a retry safe.
from twisted.web._newclient import RequestNotSent

# The endpoint factory the Agent builds by default; wrapped to cache one endpoint per origin (see
# upstream.client._CachedEndpoints), since Agent offers no public way to reuse endpoints.
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory, _StandardEndpointFactory

__all__ = [
    "RequestNotSent",
    "StandardEndpointFactory",
    "buffered_bytes",
    "channel_path",
    "client_gone",
    "quiet_pool",
]

StandardEndpointFactory = _StandardEndpointFactory


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


def quiet_pool(pool: HTTPConnectionPool) -> HTTPConnectionPool:
    """No "Starting/Stopping factory" log line per upstream connection: the pool's factory class is private."""
    pool._factory = _QuietClientFactory
    return pool


def channel_path(channel: Any) -> bytes:
    """The path of the request whose headers an ``HTTPChannel`` is reading (``b""`` if unknown). Needed to shape
    a 413 before twisted.web has built the request's ``path``."""
    return getattr(channel, "_path", b"") or b""


def client_gone(request: Any) -> bool:
    """The client's connection is gone (``Request._disconnected``; ``notifyFinish`` errbacks then, but a writer
    needs to know synchronously, before writing or finishing)."""
    return bool(getattr(request, "_disconnected", False))


def buffered_bytes(transport: Any) -> int:
    """Bytes a TCP transport holds in user space, not yet accepted by the socket (``dataBuffer`` from ``offset``
    on, plus ``_tempDataBuffer``); 0 for other transports. For the ``llamashim_client_buffered_bytes`` gauge."""
    total = len(getattr(transport, "dataBuffer", b"")) - int(getattr(transport, "offset", 0))
    return total + sum(len(part) for part in getattr(transport, "_tempDataBuffer", ()))
