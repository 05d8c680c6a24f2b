"""Plot a benchmark result: added TTFT and llamashim CPU per chunk against concurrency (``bench.run``'s JSON), or
requests/s and the burst's added TTFT per round for 1 and 2 workers (``bench.load``'s JSON).

    python -m bench.plot bench/results/full.json docs/performance.png
    python -m bench.plot load.json docs/workers.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def main(src: Path, dest: Path) -> None:
    r = json.loads(src.read_text())
    if "nonstreamed" in r:
        return workers(r, dest)
    conc = [p["concurrency"] for p in r["paced"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(conc, [p["added_ttft_p50_ms"] for p in r["paced"]], "o-", label="added TTFT p50")
    a.plot(conc, [p["added_ttft_p99_ms"] for p in r["paced"]], "s-", label="added TTFT p99")
    a.plot(conc, [p["direct"]["ttft_p50_ms"] for p in r["paced"]], "x--", label="direct TTFT p50 (reference)")
    a.set_xscale("log", base=2)
    _label(a, "concurrent streams (50 chunks/s each)", "ms", "time to first token added by llamashim", ylim=False)
    b.plot(conc, [p["cpu_us_per_chunk"] for p in r["paced"]], "o-", label="paced chat streams (incl. request setup)")
    b.axhline(r["throughput"]["chat_transforms"]["cpu_us_per_chunk"], color="gray", linestyle=":",
              label="bursting, transforms on")
    b.axhline(30, color="red", linestyle="--", label="target (transforms on)")
    b.set_xscale("log", base=2)
    _label(b, "concurrent streams", "µs of llamashim CPU per chunk", "CPU per chunk")
    _save(fig, f"llamashim {r['commit']} on {r['machine']['cpus']} CPUs", dest)


def workers(r: dict[str, Any], dest: Path) -> None:
    """``bench.load``: non-streamed requests/s per round and the 256-stream burst's added TTFT, per worker count."""
    runs, streamed = r["nonstreamed"]["runs"], r.get("streamed", {})
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for n in sorted(runs):
        rounds = range(1, len(runs[n]) + 1)
        a.plot(rounds, [x["rps"] for x in runs[n]], "o-", label=f"{n} worker{'s' if n != '1' else ''}")
        burst = [x["burst_256"] for x in streamed.get(n, []) if "burst_256" in x]
        b.plot(range(1, len(burst) + 1), [x["shim"]["ttft_p50_ms"] - x["direct"]["ttft_p50_ms"] for x in burst],
               "o-", label=f"{n} worker{'s' if n != '1' else ''}")
    for axis in (a, b):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    _label(a, "round (interleaved)", "non-streamed requests/s", "wrk -c32 through llamashim (nginx upstream)")
    _label(b, "round", "ms", "256-stream burst: added TTFT p50")
    _save(fig, f"llamashim workers on {r['cpus']} CPUs (load average at start {r['loadavg'][0]})", dest)


def _label(axis: Any, xlabel: str, ylabel: str, title: str, ylim: bool = True) -> None:
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    if ylim:
        axis.set_ylim(bottom=0)
    axis.legend()


def _save(fig: Any, title: str, dest: Path) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
