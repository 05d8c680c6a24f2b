"""What several worker processes (``server.workers``) share, below the composition root that starts them.

The arithmetic is pure: a daemon-wide limit divided among the workers (:func:`share`) and the supervisor's restart
back-off (:func:`restart_delay`). The rest is the one small piece of state the workers share besides their metrics:
the *worker board*, one JSON file per worker in the supervisor's private directory, which each worker rewrites about
once a second (its pid, index, requests in flight and served) and every worker reads to answer ``/status.json`` for
the whole daemon. A file per worker, replaced atomically, needs no locking: a reader sees the old or the new one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.logger import Logger

MAX_BACKOFF = 30.0


def share(limit: int | None, workers: int) -> int | None:
    """One worker's part of a daemon-wide ``limit`` (``None``: no limit): ``ceil(limit / workers)``, at least 1.

    Rounding up keeps every worker useful (a limit of 1 on 2 workers is 1 each: the daemon may then run 2 at once,
    never fewer than configured); the kernel spreads connections evenly enough that dividing is the whole story."""
    if limit is None:
        return None
    return max(1, math.ceil(limit / max(1, workers)))


def restart_delay(failures: int) -> float:
    """Seconds before a worker that died is started again, after ``failures`` quick deaths in a row before this one
    (0 for the first): 1, 2, 4, 8, 16, then 30 s."""
    return min(MAX_BACKOFF, float(2 ** min(failures, 5)))


@dataclass(frozen=True)
class WorkerInfo:
    """This process as one of the daemon's workers: its ``index`` (0 … ``count`` - 1), its pid, and the supervisor's
    private directory (``PROMETHEUS_MULTIPROC_DIR``, where the board lives)."""

    index: int
    count: int
    pid: int
    directory: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "pid": self.pid}


class WorkerBoard:
    """The per-worker files of one daemon: :meth:`publish` writes this worker's, :meth:`read` all of them."""

    log = Logger()

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def path(self, index: int) -> Path:
        return self.directory / f"worker-{index}.json"

    def publish(self, worker: WorkerInfo, fields: Callable[[], dict[str, Any]]) -> None:
        """This worker's line: its identity and ``fields()`` (what is in flight now), replaced atomically."""
        path = self.path(worker.index)
        temporary = path.with_suffix(f".{worker.pid}.tmp")
        try:
            temporary.write_text(json.dumps({**worker.as_json(), **fields()}), encoding="utf-8")
            os.replace(temporary, path)
        except OSError as e:  # the directory went away (the supervisor is stopping): nothing to tell
            self.log.debug("worker board: cannot write {path}: {error}", path=str(path), error=e)

    def read(self) -> list[dict[str, Any]]:
        """Every live worker's last line, by index (a worker that died is removed by the supervisor)."""
        lines = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                lines.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # removed or being replaced this instant
        return sorted(lines, key=lambda line: int(line.get("index", 0)))

    def remove(self, index: int) -> None:
        self.path(index).unlink(missing_ok=True)
