"""Load with a load generator and an upstream that are not the bottleneck: ``wrk`` against llamashim, nginx serving
llama-server's canned answers behind it; then stream bursts against the paced fake (``bench.upstream``).

    python -m bench.load                      # 3 rounds, workers 1 and 2 interleaved
    python -m bench.load --rounds 1 --seconds 5 --json out.json

Needs the Debian packages ``wrk`` and ``nginx`` (``apt-get install wrk nginx``); it installs nothing itself, and
runs its own nginx (foreground, a temporary prefix, one worker process, no access log) on a free loopback port.

What it measures, for llamashim with ``--workers 1`` and ``--workers 2``:

* non-streamed requests/s: ``wrk -t1 -c32`` POSTing a chat request for ``--seconds`` (after 1 s of warm-up), nginx
  answering ``/v1/chat/completions`` with a static ``chat.completion``; CPU per request from ``/proc`` of every
  llamashim process (supervisor and workers); the ratio of 2 workers to 1. wrk's and nginx's own CPU is reported too,
  to show what is left of the two cores for llamashim;
* the 256-stream burst: 256 streams (50 chunks at 50 chunks/s) started at once, time to first token through
  llamashim minus direct (``bench.run.paced``, the same code as the main benchmark);
* 1,000 paced streams at once (25 chunks at 50 chunks/s): errors (a stream not ending in ``[DONE]``), TTFT;
* the 256-stream burst again with an upstream and a client that cost next to nothing — nginx serving a canned
  llama-server stream (its first chunks at once, then paced by ``limit_rate``) and a client that only looks for the
  first content chunk — so that what remains of the added TTFT is llamashim's own set-up (and what the client's
  share of the same two cores still costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bench.run import ROOT, cpu_seconds, paced, pct, ready, start, start_shim, stop, streams, wait_port
from bench.upstream import MODELS, REPLY
from llamashim.upstream.supervisor import free_port

R = TypeVar("R")

NEEDS = {"wrk": "wrk", "nginx": "nginx"}  # executable -> Debian package

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location = /v1/chat/completions {{ return 200 '{reply}'; }}
        location = /v1/models {{ return 200 '{models}'; }}
        location = /health {{ return 200 '{{"status":"ok"}}'; }}
        location = /props {{ return 200 '{{"status":"ok"}}'; }}
    }}
    server {{  # the burst's upstream: a canned llama-server stream, its first chunks at once, then paced
        listen 127.0.0.1:{stream_port} backlog=1024;
        location = /v1/chat/completions {{ error_page 405 =200 /stream.sse; return 405; }}
        location = /stream.sse {{
            internal; root {prefix}; default_type text/event-stream;
            limit_rate_after {first_chunk}; limit_rate 400;
        }}
        location = /v1/models {{ return 200 '{models}'; }}
        location = /health {{ return 200 '{{"status":"ok"}}'; }}
        location = /props {{ return 200 '{{"status":"ok"}}'; }}
    }}
}}
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
"""


def missing() -> list[str]:
    return [pkg for exe, pkg in NEEDS.items() if shutil.which(exe) is None]


def sse_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "created": 1,
                                   "id": "chatcmpl-bench", "model": "bench-model",
                                   "object": "chat.completion.chunk"}).encode() + b"\n\n"


STREAM_CHUNKS = 10


def start_nginx(prefix: Path, port: int, stream_port: int = 0) -> subprocess.Popen[bytes]:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(exist_ok=True)
    first = sse_chunk({"content": "tok "})
    prefix.chmod(0o755)  # (mkdtemp's 0700: nginx's worker, an unprivileged user, reads stream.sse from here)
    (prefix / "stream.sse").write_bytes(first * STREAM_CHUNKS + sse_chunk({}, "stop") + b"data: [DONE]\n\n")
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, stream_port=stream_port or free_port(),
                                      first_chunk=len(first), reply=REPLY.decode(), models=MODELS.decode()))
    return start(["nginx", "-p", str(prefix), "-c", str(conf)], prefix / "nginx.out")


def wrk(url: str, script: Path, seconds: float, connections: int = 32) -> dict[str, float]:
    """One wrk run: requests/s, requests, errors (non-2xx and socket errors), wrk's own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "requests": requests,
            "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
            "wrk_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def rps_round(out_dir: Path, nginx: subprocess.Popen[bytes], nginx_port: int, workers: int, script: Path,
              seconds: float) -> dict[str, float]:
    port = free_port()
    shim = start_shim(out_dir, port, nginx_port, workers)
    try:
        asyncio.run(ready(port, workers))
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk(url, script, 1.0)  # warm-up
        cpu0, ng0 = cpu_seconds(shim.pid), cpu_seconds(nginx.pid)
        run = wrk(url, script, seconds)
        cpu, ng = cpu_seconds(shim.pid) - cpu0, cpu_seconds(nginx.pid) - ng0
    finally:
        stop(shim)
    served = max(1.0, run["requests"])
    return {**run, "cpu_ms_per_request": cpu / served * 1e3, "shim_cores": cpu / seconds,
            "nginx_cores": ng / seconds, "wrk_cores": run["wrk_cpu_s"] / seconds}


@contextmanager
def running_nginx(stream_port: int = 0) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """nginx in a temporary prefix: (the process, its canned-answers port, the prefix), stopped and removed after."""
    prefix = Path(tempfile.mkdtemp(prefix="llamashim-nginx-"))
    port = free_port()
    nginx = start_nginx(prefix, port, stream_port)
    try:
        asyncio.run(wait_port(stream_port or port))
        yield nginx, port, prefix
    finally:
        stop(nginx, 10)
        shutil.rmtree(prefix, ignore_errors=True)


def interleaved(counts: list[int], rounds: int, measure: Callable[[int], R], describe: Callable[[int, R], str]
                ) -> dict[str, list[R]]:
    """``measure(workers)`` for each worker count in turn, ``rounds`` times (so all see the same load over time)."""
    runs: dict[str, list[R]] = {str(n): [] for n in counts}
    for _ in range(rounds):
        for n in counts:
            r = measure(n)
            runs[str(n)].append(r)
            print(describe(n, r), flush=True)
    return runs


def nonstreamed(out_dir: Path, counts: list[int], rounds: int, seconds: float) -> dict[str, Any]:
    with running_nginx() as (nginx, nginx_port, prefix):
        script = prefix / "post.lua"
        script.write_text(WRK_SCRIPT)
        direct = wrk(f"http://127.0.0.1:{nginx_port}/v1/chat/completions", script, seconds)
        print(f"direct (wrk → nginx): {direct['rps']:.0f} requests/s", flush=True)
        runs = interleaved(
            counts, rounds, lambda n: rps_round(out_dir, nginx, nginx_port, n, script, seconds),
            lambda n, r: f"workers {n}: {r['rps']:.0f} requests/s, {r['cpu_ms_per_request']:.3f} ms CPU per "
                         f"request, cores: llamashim {r['shim_cores']:.2f}, nginx {r['nginx_cores']:.2f}, wrk "
                         f"{r['wrk_cores']:.2f}, errors {r['errors']}")
    return {"direct": direct, "runs": runs}


BURST_REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")
BURST_BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


async def first_token(port: int) -> float | None:
    """One stream, read as cheaply as Python can: seconds until the first content chunk (``None``: none came);
    the rest is read to the end (``Connection: close``)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(BURST_REQUEST % (len(BURST_BODY), BURST_BODY))
    seen, ttft = b"", None
    while data := await reader.read(65536):
        if ttft is None:
            seen += data
            if b'"content":' in seen.partition(b"\r\n\r\n")[2]:
                ttft = time.perf_counter() - started
    writer.close()
    return ttft


async def light_burst(port: int, n: int) -> dict[str, float]:
    ttfts = await asyncio.gather(*(first_token(port) for _ in range(n)))
    ok = [t for t in ttfts if t is not None]
    return {"ttft_p50_ms": pct(ok, 50) * 1e3, "ttft_p99_ms": pct(ok, 99) * 1e3, "errors": n - len(ok)}


async def nginx_burst_round(out_dir: Path, stream_port: int, workers: int) -> dict[str, Any]:
    """The 256-stream burst with an upstream and a client that cost next to nothing: nginx's canned stream and
    :func:`first_token` — what is left of the added TTFT is llamashim's own set-up."""
    port = free_port()
    shim = start_shim(out_dir, port, stream_port, workers)
    try:
        await ready(port, workers)
        await light_burst(port, 32)  # warm-up: connections to the upstream in the pool
        direct = await light_burst(stream_port, 256)
        through = await light_burst(port, 256)
    finally:
        stop(shim)
    return {"direct": direct, "shim": through, "added_ttft_p50_ms": through["ttft_p50_ms"] - direct["ttft_p50_ms"],
            "added_ttft_p99_ms": through["ttft_p99_ms"] - direct["ttft_p99_ms"]}


def nginx_bursts(out_dir: Path, counts: list[int], rounds: int) -> dict[str, list[dict[str, Any]]]:
    stream_port = free_port()
    with running_nginx(stream_port):
        return interleaved(
            counts, rounds, lambda n: asyncio.run(nginx_burst_round(out_dir, stream_port, n)),
            lambda n, r: f"workers {n}: 256-stream burst from nginx, added TTFT p50 {r['added_ttft_p50_ms']:.0f} ms "
                         f"p99 {r['added_ttft_p99_ms']:.0f} ms (direct p50 {r['direct']['ttft_p50_ms']:.0f} ms; "
                         f"errors {r['shim']['errors']})")


async def stream_round(out_dir: Path, up_port: int, workers: int) -> dict[str, Any]:
    port = free_port()
    shim = start_shim(out_dir, port, up_port, workers)
    try:
        await ready(port, workers)
        await streams(port, 32, 5, 50)  # warm-up: connections to the upstream in the pool
        burst = await paced(up_port, port, shim.pid, 256, 50, 1)
        started = time.perf_counter()
        many, _ = await streams(port, 1000, 25, 50)
        elapsed = time.perf_counter() - started
        ttft = [r.ttft for r in many if r.ok]
        return {"burst_256": burst, "paced_1000": {
            "errors": sum(1 for r in many if not r.ok), "ttft_p50_ms": pct(ttft, 50) * 1e3,
            "ttft_p99_ms": pct(ttft, 99) * 1e3, "elapsed_s": elapsed}}
    finally:
        stop(shim)


async def streamed(out_dir: Path, counts: list[int], rounds: int) -> dict[str, list[dict[str, Any]]]:
    up_port = free_port()
    upstream = start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], out_dir / "upstream.log")
    runs: dict[str, list[dict[str, Any]]] = {str(n): [] for n in counts}
    try:
        await wait_port(up_port)
        for _ in range(rounds):
            for n in counts:
                r = await stream_round(out_dir, up_port, n)
                runs[str(n)].append(r)
                b, p = r["burst_256"], r["paced_1000"]
                print(f"workers {n}: 256-stream burst added TTFT p50 {b['added_ttft_p50_ms']:.0f} ms p99 "
                      f"{b['added_ttft_p99_ms']:.0f} ms (errors {b['shim']['errors']}); 1,000 paced streams: "
                      f"errors {p['errors']}, TTFT p50 {p['ttft_p50_ms']:.0f} ms p99 {p['ttft_p99_ms']:.0f} ms",
                      flush=True)
    finally:
        stop(upstream, 20)
    return runs


def report(r: dict[str, Any]) -> str:
    lines = [f"{r['cpus']} CPUs, load average at start {r['loadavg']}; direct wrk → nginx "
             f"{r['nonstreamed']['direct']['rps']:.0f} requests/s",
             "workers | requests/s (rounds) | median | CPU ms/request | cores: llamashim / nginx / wrk | "
             "256-burst added TTFT p50/p99 ms | 1,000 paced: errors, TTFT p50/p99 ms"]
    med: dict[str, float] = {}
    for n, runs in r["nonstreamed"]["runs"].items():
        med[n] = pct([x["rps"] for x in runs], 50)
        s = r["streamed"][n]
        add50 = pct([x["burst_256"]["added_ttft_p50_ms"] for x in s], 50)
        add99 = pct([x["burst_256"]["added_ttft_p99_ms"] for x in s], 50)
        errs = sum(x["paced_1000"]["errors"] for x in s)
        t50, t99 = (pct([x["paced_1000"][k] for x in s], 50) for k in ("ttft_p50_ms", "ttft_p99_ms"))
        rounds = ", ".join(f"{x['rps']:.0f}" for x in runs)
        lines.append(
            f"  {n:>5} | {rounds} | {med[n]:.0f} | "
            f"{pct([x['cpu_ms_per_request'] for x in runs], 50):.3f} | "
            f"{pct([x['shim_cores'] for x in runs], 50):.2f} / {pct([x['nginx_cores'] for x in runs], 50):.2f} / "
            f"{pct([x['wrk_cores'] for x in runs], 50):.2f} | {add50:.0f} / {add99:.0f} | {errs}, {t50:.0f}/{t99:.0f}")
    for n, bursts in r.get("nginx_burst", {}).items():
        lines.append(f"  {n:>5} | 256-burst from nginx, added TTFT p50 (rounds): "
                     + ", ".join(f"{x['added_ttft_p50_ms']:.0f}" for x in bursts)
                     + f" ms; median {pct([x['added_ttft_p50_ms'] for x in bursts], 50):.0f} ms")
    if "1" in med and "2" in med:
        lines.append(f"ratio 2 workers / 1 worker, non-streamed requests/s: {med['2'] / med['1']:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per wrk measurement")
    parser.add_argument("--no-streams", action="store_true", help="only the non-streamed requests/s")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if missing():
        print(f"needs the Debian packages: {' '.join(missing())} (apt-get install {' '.join(missing())})")
        return 2
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    counts = [int(n) for n in args.workers.split(",")]
    result: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    result["nonstreamed"] = nonstreamed(out_dir, counts, args.rounds, args.seconds)
    result["streamed"] = {} if args.no_streams else asyncio.run(streamed(out_dir, counts, args.rounds))
    result["nginx_burst"] = {} if args.no_streams else nginx_bursts(out_dir, counts, args.rounds)
    if not args.no_streams:
        print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
