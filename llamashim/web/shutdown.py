"""Graceful drain on stop: finish what is in flight, up to a deadline, then end the rest in each dialect's shape.

The site tracks its in-flight requests (added when a request is dispatched, removed by its ``notifyFinish``), so
the drain waits on those Deferreds with ``addTimeout`` instead of polling.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import DeferredList, TimeoutError
from twisted.logger import Logger

from llamashim.errors import ShimError
from llamashim.web.context import context_of
from llamashim.web.respond import end_with_error

log = Logger(namespace="llamashim")
MESSAGE = "llamashim is shutting down"


async def drain(site: Any, reactor: Any, timeout: float) -> None:
    """Close idle connections; wait up to ``timeout`` s for in-flight requests; end what is left."""
    busy = {r.channel for r in site.in_flight}
    for channel in list(site.open_channels):
        if channel not in busy and channel.transport is not None:
            channel.transport.loseConnection()
    waiting = list(site.in_flight)
    if waiting:
        log.info("draining {n} in-flight request(s) for up to {t:g} s", n=len(waiting), t=timeout)
        done = DeferredList([r.notifyFinish() for r in waiting], consumeErrors=True)
        done.addTimeout(timeout, reactor)
        try:
            await done
        except TimeoutError:
            pass
    left = list(site.in_flight)
    if left:
        log.warn("ending {n} request(s) still running after {t:g} s (shutdown.drain_timeout)", n=len(left), t=timeout)
    for request in left:
        end_for_shutdown(request)
    for channel in list(site.open_channels):
        if channel.transport is not None:
            channel.transport.loseConnection()


def end_for_shutdown(request: Any) -> None:
    """End one request now: a running stream through its own drain hook (terminal frame, upstream closed), anything
    else with a 503 in its dialect's shape."""
    ctx = context_of(request)
    if ctx.drain is not None:
        ctx.drain(MESSAGE)
    else:
        end_with_error(request, ShimError(503, MESSAGE, "unavailable_error"))
