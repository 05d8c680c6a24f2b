"""One upstream's health (pure): up, loading, down or probing — one object, changed only by its named transitions.

::

    UP ──failed──▶ DOWN ──probing──▶ PROBING ──became_up──▶ UP
     │                ▲                 │
     └──loading──▶ LOADING ◀──probe_failed(loading)──┘ (or DOWN)

* **up** — requests go to it.
* **loading** — it answered 503 (llama-server loads its model): skipped, probed on ``/health`` from 1 s on.
* **down** — a request failed before its first byte (refused, timed out, 502/504): skipped, probed from 1 s on.
* **probing** — a ``/health`` probe is on its way; none other starts until it has answered.

A probe that gets no healthy answer doubles the wait before the next (1, 2, 4 … :data:`MAX_BACKOFF` s); any
success (a probe, or a request that got its answer) makes it up again. The clock is the caller's: each transition
that schedules a probe takes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_BACKOFF = 60.0
FIRST_PROBE = 1.0  # seconds from a failure to the first probe


class State(StrEnum):
    UP = "up"
    LOADING = "loading"
    DOWN = "down"
    PROBING = "probing"


@dataclass
class Health:
    """The health of one upstream. Read :attr:`state`, :attr:`reason` and :meth:`probe_due`; change it only through
    :meth:`became_up`, :meth:`failed`, :meth:`loading`, :meth:`probing` and :meth:`probe_failed`."""

    state: State = State.UP
    reason: str = ""  # why it is not up (the last failure, or the upstream's own words)
    backoff: float = FIRST_PROBE  # the wait after the last probe that failed
    next_probe: float = 0.0  # when (on the caller's clock) a probe is due, unless up

    @property
    def usable(self) -> bool:
        return self.state is State.UP

    def probe_due(self, now: float) -> bool:
        """Whether a ``/health`` probe should start now: not up, none on its way, and its time has come."""
        return self.state in (State.DOWN, State.LOADING) and now >= self.next_probe

    # -- transitions --------------------------------------------------------------------------------------------

    def became_up(self) -> State:
        """It answered (a probe, or a request): up. Returns the state it was in."""
        was = self.state
        self.state, self.reason, self.backoff = State.UP, "", FIRST_PROBE
        return was

    def failed(self, reason: str, now: float) -> State:
        """A request to it failed before its first byte: down, the first probe in :data:`FIRST_PROBE` s. Returns the
        state it was in."""
        was = self.state
        self.state, self.reason, self.backoff = State.DOWN, reason, FIRST_PROBE
        self.next_probe = now + FIRST_PROBE
        return was

    def loading(self, reason: str, now: float) -> None:
        """A request got 503 (its model is loading): skipped, the next probe in :data:`FIRST_PROBE` s."""
        self.state, self.reason = State.LOADING, reason
        self.next_probe = now + FIRST_PROBE

    def probing(self) -> None:
        """A probe is on its way (no other starts until :meth:`became_up` or :meth:`probe_failed`)."""
        self.state = State.PROBING

    def probe_failed(self, reason: str, now: float, loading: bool = False) -> None:
        """A probe got no healthy answer (``loading``: a 503): loading or down, and the next probe waits twice as
        long as the last one did — or :data:`FIRST_PROBE` s when it was up until now."""
        self.backoff = FIRST_PROBE if self.state is State.UP else min(self.backoff * 2, MAX_BACKOFF)
        self.state, self.reason = (State.LOADING if loading else State.DOWN), reason
        self.next_probe = now + self.backoff
