"""Plot a benchmark result: added TTFT and llamashim CPU per chunk against concurrency.

    python -m bench.plot bench/results/full.json docs/performance.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src: Path, dest: Path) -> None:
    r = json.loads(src.read_text())
    conc = [p["concurrency"] for p in r["paced"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(conc, [p["added_ttft_p50_ms"] for p in r["paced"]], "o-", label="added TTFT p50")
    a.plot(conc, [p["added_ttft_p99_ms"] for p in r["paced"]], "s-", label="added TTFT p99")
    a.plot(conc, [p["direct"]["ttft_p50_ms"] for p in r["paced"]], "x--", label="direct TTFT p50 (reference)")
    a.set_xscale("log", base=2)
    a.set_xlabel("concurrent streams (50 chunks/s each)")
    a.set_ylabel("ms")
    a.set_title("time to first token added by llamashim")
    a.legend()
    b.plot(conc, [p["cpu_us_per_chunk"] for p in r["paced"]], "o-", label="paced chat streams (incl. request setup)")
    b.axhline(r["throughput"]["chat_transforms"]["cpu_us_per_chunk"], color="gray", linestyle=":",
              label="bursting, transforms on")
    b.axhline(30, color="red", linestyle="--", label="target (transforms on)")
    b.set_xscale("log", base=2)
    b.set_xlabel("concurrent streams")
    b.set_ylabel("µs of llamashim CPU per chunk")
    b.set_title("CPU per chunk")
    b.set_ylim(bottom=0)
    b.legend()
    fig.suptitle(f"llamashim {r['commit']} on {r['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
