"""The status page's memory: a bounded ring of recent requests and per-interval token and request samples."""

from __future__ import annotations

from llamashim.ops.recent import RecentRequests, Served


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def served(at: float, duration: float = 1.0, completion: int | None = 10, prompt: int | None = 5,
           route: str = "chat") -> Served:
    return Served(at=at, method="POST", route=route, dialect="openai", status="200", duration=duration,
                  upstream="default", prompt_tokens=prompt, completion_tokens=completion, streamed=True)


def test_ring_keeps_the_newest_first_and_is_bounded() -> None:
    """Only the last ``size`` requests are kept, newest first; the total counts all of them."""
    clock = Clock()
    recent = RecentRequests(clock, size=3)
    for i in range(5):
        recent.record(served(1000.0 + i))
    assert [r.at for r in recent.requests()] == [1004.0, 1003.0, 1002.0]
    assert recent.total == 5


def test_tokens_are_spread_over_the_time_the_request_ran() -> None:
    """A 20 s stream of 200 tokens ending now adds 10 tokens/s to each of its four 5 s intervals; the request
    counts in the interval it ended."""
    clock = Clock(1020.0)
    recent = RecentRequests(clock, window=60.0, interval=5.0)
    recent.record(served(1020.0, duration=20.0, completion=200, prompt=None))
    series = recent.series()
    assert len(series["completion_tokens_per_s"]) == 12 and series["interval_s"] == 5.0
    assert series["completion_tokens_per_s"][-5:] == [10.0, 10.0, 10.0, 10.0, 0.0]
    assert series["requests"][-1] == 1 and sum(series["requests"]) == 1
    assert sum(series["prompt_tokens_per_s"]) == 0.0


def test_samples_older_than_the_window_fall_out() -> None:
    """Samples leave the series once the window has moved past them (slots are reused, not accumulated)."""
    clock = Clock(1000.0)
    recent = RecentRequests(clock, window=30.0, interval=5.0)
    recent.record(served(1000.0, duration=0.0, completion=50))
    assert sum(recent.series()["requests"]) == 1
    clock.now = 1031.0
    assert sum(recent.series()["requests"]) == 0 and sum(recent.series()["completion_tokens_per_s"]) == 0.0
    recent.record(served(1031.0, duration=0.0, completion=5))
    assert recent.series()["completion_tokens_per_s"][-1] == 1.0


def test_rate_over_the_last_minute() -> None:
    """The headline rate is completion tokens per second over the last minute."""
    clock = Clock(1060.0)
    recent = RecentRequests(clock, window=600.0, interval=5.0)
    recent.record(served(1059.0, duration=59.0, completion=600))
    assert 9.0 <= recent.rate(60.0) <= 10.0


def test_status_polls_are_not_recorded() -> None:
    """The status page's own requests do not push real ones out of the ring."""
    recent = RecentRequests(Clock())
    recent.record(served(1000.0, route="status"))
    assert recent.requests() == [] and recent.total == 0


def test_a_record_has_no_path_body_or_key() -> None:
    """What is kept is time, method, route label, dialect, status, duration, upstream and token counts only."""
    assert set(served(1.0).as_json()) == {"at", "method", "route", "dialect", "status", "duration_ms", "upstream",
                                          "prompt_tokens", "completion_tokens", "streamed"}
