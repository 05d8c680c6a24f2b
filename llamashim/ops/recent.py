"""What llamashim served lately, for the status page (pure: the clock is passed in).

:class:`RecentRequests` keeps a bounded ring of the last requests and, over the last few minutes, per-interval
samples of completion tokens, prompt tokens and requests. A request is only its time, method, route label,
dialect, status, duration, upstream name and token counts — never a path, a body or a key. The status page's own
polling is not recorded (``ignore_routes``), so it cannot push real requests out of the ring.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_SIZE = 100
DEFAULT_WINDOW = 600.0  # seconds of samples kept
DEFAULT_INTERVAL = 5.0  # seconds per sample


@dataclass(frozen=True)
class Served:
    """One finished request, as the status page shows it."""

    at: float  # when it ended (clock seconds since the epoch)
    method: str
    route: str
    dialect: str
    status: str  # the HTTP status, or "aborted" when the client left
    duration: float  # seconds
    upstream: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    streamed: bool = False
    # what /metrics counts besides (not on the status page)
    bytes_out: int = 0
    ttft: float | None = None  # seconds to the first byte of a stream
    upstream_error: str | None = None  # the kind, when the upstream failed
    model: str | None = None  # the model's friendly name, when an upstream was chosen for it
    cached_tokens: int | None = None  # prompt tokens the upstream's prompt cache served, when it said
    cut: str | None = None  # the limit a runaway stream was cut at (``tools.max_calls`` / ``tools.max_repeats``)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("bytes_out", "ttft", "upstream_error", "cut", "model", "cached_tokens"):
            del out[name]
        out["duration_ms"] = round(out.pop("duration") * 1000, 1)
        return out


@dataclass
class _Bucket:
    index: int  # which interval of the clock this slot holds (slots are reused round-robin)
    completion: float = 0.0
    prompt: float = 0.0
    requests: int = 0


class RecentRequests:
    def __init__(
        self,
        clock: Callable[[], float],
        size: int = DEFAULT_SIZE,
        window: float = DEFAULT_WINDOW,
        interval: float = DEFAULT_INTERVAL,
        ignore_routes: Iterable[str] = ("status",),
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.slots = max(1, math.ceil(window / interval))
        self._ring: deque[Served] = deque(maxlen=size)
        self._buckets: list[_Bucket] = [_Bucket(-1) for _ in range(self.slots)]
        self.ignore_routes = frozenset(ignore_routes)
        self.total = 0

    def record(self, served: Served) -> None:
        """Remember one finished request; its tokens are spread evenly over the time it ran."""
        if served.route in self.ignore_routes:
            return
        self.total += 1
        self._ring.append(served)
        self._bucket(self._index(served.at)).requests += 1
        start = served.at - max(served.duration, 0.0)
        for attr, tokens in (("completion", served.completion_tokens), ("prompt", served.prompt_tokens)):
            if tokens:
                self._spread(attr, float(tokens), start, served.at)

    def _index(self, t: float) -> int:
        return math.floor(t / self.interval)

    def _bucket(self, index: int) -> _Bucket:
        slot = self._buckets[index % self.slots]
        if slot.index != index:
            slot.index, slot.completion, slot.prompt, slot.requests = index, 0.0, 0.0, 0
        return slot

    def _spread(self, attr: str, tokens: float, start: float, end: float) -> None:
        oldest = self._index(self.clock()) - self.slots + 1
        first, last = self._index(start), self._index(end)
        if end <= start or first == last:
            if last >= oldest:
                bucket = self._bucket(last)
                setattr(bucket, attr, getattr(bucket, attr) + tokens)
            return
        for index in range(max(first, oldest), last + 1):
            lo, hi = max(start, index * self.interval), min(end, (index + 1) * self.interval)
            if hi > lo:
                bucket = self._bucket(index)
                setattr(bucket, attr, getattr(bucket, attr) + tokens * (hi - lo) / (end - start))

    def prompt_cache(self) -> dict[str, float]:
        """Per upstream, the share of the recent requests' prompt tokens its prompt cache served (llama-server's
        ``cache_n``), over the requests whose answer said."""
        cached: dict[str, int] = {}
        total: dict[str, int] = {}
        for r in self._ring:
            if r.upstream is not None and r.cached_tokens is not None and r.prompt_tokens:
                cached[r.upstream] = cached.get(r.upstream, 0) + min(r.cached_tokens, r.prompt_tokens)
                total[r.upstream] = total.get(r.upstream, 0) + r.prompt_tokens
        return {name: cached[name] / total[name] for name in total}

    def requests(self) -> list[Served]:
        """The recent requests, newest first."""
        return list(reversed(self._ring))

    def series(self) -> dict[str, Any]:
        """The samples of the window, oldest first, ending with the interval that holds now: completion and prompt
        tokens per second, and requests per interval."""
        last = self._index(self.clock())
        completion: list[float] = []
        prompt: list[float] = []
        requests: list[int] = []
        for index in range(last - self.slots + 1, last + 1):
            slot = self._buckets[index % self.slots]
            fresh = slot.index == index
            completion.append(round(slot.completion / self.interval, 2) if fresh else 0.0)
            prompt.append(round(slot.prompt / self.interval, 2) if fresh else 0.0)
            requests.append(slot.requests if fresh else 0)
        return {
            "interval_s": self.interval,
            "start": (last - self.slots + 1) * self.interval,
            "completion_tokens_per_s": completion,
            "prompt_tokens_per_s": prompt,
            "requests": requests,
        }

    def rate(self, seconds: float = 60.0) -> float:
        """Completion tokens per second over the last ``seconds`` (whole intervals, the current one included)."""
        n = max(1, min(self.slots, math.ceil(seconds / self.interval)))
        values = self.series()["completion_tokens_per_s"][-n:]
        return round(float(sum(values)) / n, 2)
