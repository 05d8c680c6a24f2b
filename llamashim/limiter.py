"""``limits.max_concurrent_upstream``: at most N requests at the upstream, a bounded queue behind them, 429 beyond.

A queued request whose client leaves is dropped from the queue (its Deferred is cancelled by Klein).
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred

from llamashim.errors import ShimError


class Busy(ShimError):
    def __init__(self, active: int, queued: int) -> None:
        super().__init__(
            429,
            f"llamashim is at its upstream concurrency limit ({active} running, {queued} queued); retry later",
            "rate_limit_error",
        )


class UpstreamLimiter:
    def __init__(self, max_concurrent: int | None, max_queue: int = 0) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.active = 0
        self._waiting: deque[Deferred[None]] = deque()
        self._watchers: list[tuple[int, Deferred[None]]] = []

    def when_queued(self, n: int) -> Deferred[None]:
        """Fires once ``n`` requests are waiting (for tests and diagnostics)."""
        d: Deferred[None] = Deferred()
        if len(self._waiting) >= n:
            d.callback(None)
        else:
            self._watchers.append((n, d))
        return d

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def acquire(self) -> Deferred[None]:
        """Fires when the caller may go to the upstream; must be paired with :meth:`release` once it fired."""
        if self.max_concurrent is None or self.active < self.max_concurrent:
            self.active += 1
            return Deferred.fromCoroutine(_ready())
        if len(self._waiting) >= self.max_queue:
            raise Busy(self.active, len(self._waiting))

        def cancel(d: Deferred[None]) -> None:
            try:
                self._waiting.remove(d)
            except ValueError:
                pass

        d: Deferred[None] = Deferred(cancel)
        self._waiting.append(d)
        for watcher in [w for w in self._watchers if len(self._waiting) >= w[0]]:
            self._watchers.remove(watcher)
            watcher[1].callback(None)
        return d

    def release(self) -> None:
        if self._waiting:
            self._waiting.popleft().callback(None)  # the slot passes straight to the next in line
        else:
            self.active -= 1


async def _ready() -> None:
    return None
