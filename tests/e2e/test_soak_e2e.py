"""End-to-end: a short soak (``python -m bench.soak``) against llamashim with 1 and 2 workers in front of the fake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.daemon import ROOT


@pytest.mark.parametrize("workers", [1, 2])
def test_short_soak_passes(workers: int, tmp_path: Path) -> None:
    """Every dialect, aborts, slow readers, upstream faults and restarts for 20 s: no lost stream, no 5xx of
    llamashim's own, RSS and open fds flat — the soak exits 0 — and the faults did happen."""
    result_path = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "bench.soak", "--seconds", "20", "--workers", str(workers), "--concurrency", "8",
           "--sample-every", "1", "--restart-every", "7", "--fault-rate", "0.1", "--out", str(tmp_path),
           "--json", str(result_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(result_path.read_text())
    counts = result["counts"]
    assert counts["ok"] > 100 and counts["aborted"] > 0, counts
    assert counts.get("error frame", 0) > 0 and counts.get("upstream 5xx", 0) > 0, counts  # faults reached clients
    assert set(result["injected"]) >= {"drop_mid_stream", "http_500"}, result["injected"]
    assert result["restarts"] >= 2
    assert len([w for w in result["workers"] if w]) == (workers if workers > 1 else 0)  # both workers answered
