"""Who may go to the upstream now: 503 while a supervised upstream is not ready, and
``limits.max_concurrent_upstream`` — at most N requests at the upstream, a bounded queue behind them, 429 beyond.

The limit is a :class:`twisted.internet.defer.DeferredSemaphore`: a queued request whose client leaves is dropped
from the queue, because Klein cancels the handler's Deferred and the semaphore's ``acquire`` is cancellable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet.defer import DeferredSemaphore

from llamashim.errors import ShimError

T = TypeVar("T")


class Busy(ShimError):
    def __init__(self, active: int, queued: int) -> None:
        super().__init__(
            429,
            f"llamashim is at its upstream concurrency limit ({active} running, {queued} queued); retry later",
            "rate_limit_error",
        )


class Unavailable(ShimError):
    def __init__(self, reason: str) -> None:
        super().__init__(503, reason, "unavailable_error")


def always_available() -> str | None:
    return None


class UpstreamSlots:
    def __init__(
        self,
        max_concurrent: int | None = None,
        max_queue: int = 0,
        unavailable: Callable[[], str | None] = always_available,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.unavailable = unavailable
        self._semaphore = DeferredSemaphore(max_concurrent) if max_concurrent else None

    @property
    def queued(self) -> int:
        return len(self._semaphore.waiting) if self._semaphore is not None else 0

    @property
    def active(self) -> int:
        s = self._semaphore
        return s.limit - s.tokens if s is not None else 0

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` holding a slot: 503 while the upstream is not ready, 429 when the queue is full."""
        reason = self.unavailable()
        if reason is not None:
            raise Unavailable(reason)
        semaphore = self._semaphore
        if semaphore is None:
            return await work()
        if semaphore.tokens == 0 and len(semaphore.waiting) >= self.max_queue:
            raise Busy(self.active, self.queued)
        await semaphore.acquire()
        try:
            return await work()
        finally:
            semaphore.release()
