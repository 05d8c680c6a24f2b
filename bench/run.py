"""The benchmark: llamashim against a direct connection to the same upstream, interleaved, on loopback.

    python -m bench.run            # full run (a few minutes)
    python -m bench.run --quick    # fewer samples (under a minute)
    python -m bench.run --json out.json
    python -m bench.run --workers 2               # everything against llamashim with server.workers: 2
    python -m bench.run --rps-only --workers 1,2  # non-streamed requests/s and CPU per request, 1 vs 2 workers,
                                                  # interleaved (--rounds 3)

Processes: the paced fake upstream (``bench.upstream``), llamashim (``twistd -n llamashim``), and this load generator
(asyncio, raw HTTP/1.1). llamashim's CPU time comes from ``/proc/PID/stat`` and its memory from ``/proc/PID/status``
(with workers: the supervisor's and every worker's, summed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamashim.upstream.supervisor import free_port

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def tree(pid: int) -> list[int]:
    """``pid`` and its children (llamashim's workers, with ``--workers``)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for one in tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_mib(pid: int) -> float:
    total = 0.0
    for one in tree(pid):
        try:
            lines = Path(f"/proc/{one}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:"))
    return total


async def wait_port(port: int, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


# -- a minimal HTTP/1.1 client ------------------------------------------------------------------------------------


@dataclass
class Conn:
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> None:
        if self.writer is None:
            await self.open()
        assert self.writer is not None
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(data)}\r\n\r\n"
        self.writer.write(head.encode() + data)

    async def head(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        return status, headers

    async def body_chunks(self, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        """Yields body pieces as they arrive (chunked or content-length)."""
        assert self.reader is not None
        if "content-length" in headers:
            yield await self.reader.readexactly(int(headers["content-length"]))
            return
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]


async def request_once(conn: Conn, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    await conn.send("POST", path, body, headers or {})
    _, h = await conn.head()
    async for _ in conn.body_chunks(h):
        pass
    return time.perf_counter() - started


@dataclass
class StreamResult:
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    ok: bool = False


async def stream_once(port: int, path: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                      ) -> StreamResult:
    conn = Conn(port)
    result = StreamResult()
    try:
        started = time.perf_counter()
        await conn.send("POST", path, body, headers or {})
        status, h = await conn.head()
        last = None
        tail = b""
        ended = False
        async for piece in conn.body_chunks(h):
            now = time.perf_counter()
            window = tail + piece  # the end marker may be split across reads, and the last event may be long
            ended = ended or any(end in window for end in STREAM_ENDS)
            tail = window[-64:]
            if last is None:
                result.ttft = now - started
            else:
                result.gaps.append(now - last)
            last = now
            result.chunks += piece.count(b"data: ") or piece.count(b"\n")
        result.ok = status == 200 and ended
    except (OSError, asyncio.IncompleteReadError):
        result.ok = False
    finally:
        conn.close()
    return result


# -- the measurements ---------------------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
# How a complete stream ends, per dialect: OpenAI chat, Ollama NDJSON, Responses, Anthropic Messages.
STREAM_ENDS = (b"[DONE]", b'"done":true', b"response.completed", b"event: message_stop")


OFFERED_TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
                 for name in ("read_file", "shell")]


def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "hi"}]


async def nonstream_latency(direct: int, shim: int, n: int) -> dict[str, float]:
    a, b = Conn(direct), Conn(shim)
    body = {"model": "m", "messages": messages()}
    for _ in range(20):  # warm up both paths
        await request_once(a, CHAT, body)
        await request_once(b, CHAT, body)
    d, s = [], []
    for _ in range(n):
        d.append(await request_once(a, CHAT, body))
        s.append(await request_once(b, CHAT, body))
    a.close()
    b.close()
    return {"direct_p50_ms": pct(d, 50) * 1e3, "direct_p99_ms": pct(d, 99) * 1e3,
            "shim_p50_ms": pct(s, 50) * 1e3, "shim_p99_ms": pct(s, 99) * 1e3,
            "added_p50_ms": (pct(s, 50) - pct(d, 50)) * 1e3, "added_p99_ms": (pct(s, 99) - pct(d, 99)) * 1e3}


async def streams(port: int, concurrency: int, chunks: int, rate: float) -> tuple[list[StreamResult], float]:
    body = {"model": "m", "messages": messages(), "stream": True, "max_tokens": chunks, "bench_rate": rate}
    started = time.perf_counter()
    results = await asyncio.gather(*(stream_once(port, CHAT, body) for _ in range(concurrency)))
    return list(results), time.perf_counter() - started


async def paced(direct: int, shim: int, pid: int, concurrency: int, chunks: int, rounds: int) -> dict[str, Any]:
    d_all: list[StreamResult] = []
    s_all: list[StreamResult] = []
    rss_peak = 0.0
    cpu = 0.0
    for _ in range(rounds):
        d_res, _ = await streams(direct, concurrency, chunks, 50)
        cpu0 = cpu_seconds(pid)
        task = asyncio.create_task(streams(shim, concurrency, chunks, 50))
        while not task.done():
            rss_peak = max(rss_peak, rss_mib(pid))
            await asyncio.sleep(0.2)
        cpu += cpu_seconds(pid) - cpu0
        s_res, _ = await task
        d_all += d_res
        s_all += s_res
    relayed = rounds * concurrency * (chunks + 4)

    def summary(rs: list[StreamResult]) -> dict[str, float]:
        ttft = [r.ttft for r in rs if r.ok]
        gaps = [g for r in rs if r.ok for g in r.gaps]
        return {"ttft_p50_ms": pct(ttft, 50) * 1e3, "ttft_p99_ms": pct(ttft, 99) * 1e3,
                "gap_p50_ms": pct(gaps, 50) * 1e3, "gap_p99_ms": pct(gaps, 99) * 1e3,
                "gap_max_ms": max(gaps, default=float("nan")) * 1e3, "errors": sum(1 for r in rs if not r.ok)}

    d, s = summary(d_all), summary(s_all)
    return {"concurrency": concurrency, "direct": d, "shim": s, "rss_peak_mib": rss_peak,
            "cpu_us_per_chunk": cpu / relayed * 1e6,
            "added_ttft_p50_ms": s["ttft_p50_ms"] - d["ttft_p50_ms"],
            "added_ttft_p99_ms": s["ttft_p99_ms"] - d["ttft_p99_ms"],
            "added_gap_p50_ms": s["gap_p50_ms"] - d["gap_p50_ms"],
            "added_gap_p99_ms": s["gap_p99_ms"] - d["gap_p99_ms"]}


async def throughput(port: int, pid: int | None, path: str, extra: dict[str, Any], headers: dict[str, str],
                     streams_n: int, chunks: int, body: dict[str, Any] | None = None) -> dict[str, float]:
    """``streams_n`` unpaced streams of ``chunks`` upstream chunks at once: llamashim's CPU per upstream chunk."""
    if body is None:
        body = {"model": "m", "messages": messages(), "stream": True, "max_tokens": chunks, "bench_rate": 0, **extra}
    cpu0 = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    results = await asyncio.gather(*(stream_once(port, path, body, headers) for _ in range(streams_n)))
    elapsed = time.perf_counter() - started
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    total = streams_n * (chunks + 4)
    return {"chunks_per_s": total / elapsed, "cpu_us_per_chunk": cpu / total * 1e6 if pid else float("nan"),
            "cpu_s_per_1000_chunks": cpu / total * 1000 if pid else float("nan"),
            "errors": sum(1 for r in results if not r.ok)}


async def nonstream_rps(port: int, concurrency: int, seconds: float) -> float:
    body = {"model": "m", "messages": messages()}
    count = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        conn = Conn(port)
        while time.perf_counter() < end:
            await request_once(conn, CHAT, body)
            count += 1
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


def tcp_queues(ports: set[int]) -> int:
    """Bytes queued in the kernel (send + receive queues) on loopback sockets touching ``ports``."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if local in ports or remote in ports:
            tx, rx = (int(x, 16) for x in f[4].split(":"))
            total += tx + rx
    return total


async def get_json(port: int, path: str) -> Any:
    conn = Conn(port)
    await conn.send("GET", path, None, {})
    _, h = await conn.head()
    value = None
    async for piece in conn.body_chunks(h):
        value = json.loads(piece)
    conn.close()
    return value


async def slow_reader(upstream: int, shim: int, pid: int, seconds: float, streams_n: int = 8) -> dict[str, float]:
    """Streams the upstream produces at full speed, read by clients at 1 KB/s: what piles up, and where."""
    rss0 = rss_mib(pid)
    conns = []
    for i in range(streams_n):
        conn = Conn(shim)
        await conn.send("POST", CHAT, {"model": "m", "messages": messages(), "stream": True,
                                       "bench_bytes": 200 * 1024 * 1024}, {"X-Request-Id": f"slow{i}"})
        conns.append(conn)
    read = [0] * streams_n
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, conn in enumerate(conns):
            assert conn.reader is not None
            read[i] += len(await conn.reader.read(1024))
        await asyncio.sleep(1.0)  # each client reads 1 KB/s
    peak = rss_mib(pid)
    buffered = 0.0
    conn_m = Conn(shim)
    await conn_m.send("GET", "/metrics", None, {})
    _, hm = await conn_m.head()
    async for piece in conn_m.body_chunks(hm):
        for line in piece.decode().splitlines():
            if line.startswith("llamashim_client_buffered_bytes "):
                buffered = float(line.split()[1])
    conn_m.close()
    held = []
    sent_total = 0
    for i, conn in enumerate(conns):
        sent = int(await get_json(upstream, f"/bench/sent?id=slow{i}") or 0)
        sent_total += sent
        upstream_side = int(await get_json(upstream, f"/bench/peer?id=slow{i}") or 0)
        assert conn.writer is not None
        client_side = conn.writer.get_extra_info("sockname")[1]
        kernel = tcp_queues({upstream_side, client_side})
        held.append(sent - read[i] - kernel)
    for conn in conns:
        conn.close()
    return {"streams": streams_n, "rss_growth_mib": peak - rss0, "upstream_sent_kib": sent_total / streams_n / 1024,
            "client_read_kib": sum(read) / streams_n / 1024,
            "held_by_llamashim_kib_max": max(held) / 1024, "held_by_llamashim_kib_mean": sum(held) / len(held) / 1024,
            "metrics_buffered_kib_per_stream": buffered / streams_n / 1024}


async def aborts(upstream: int, shim: int, n: int) -> dict[str, float]:
    delays = []
    for i in range(n):
        key = f"abort{i}-{time.monotonic_ns()}"
        conn = Conn(shim)
        await conn.send("POST", CHAT, {"model": "m", "messages": messages(), "stream": True, "max_tokens": 100000,
                                       "bench_rate": 200}, {"X-Request-Id": key})
        _, h = await conn.head()
        assert conn.reader is not None
        await conn.reader.readuntil(b"data: ")
        assert conn.writer is not None
        conn.writer.transport.abort()
        left = time.monotonic()
        conn.close()
        up = Conn(upstream)
        closed = None
        for _ in range(200):
            await up.send("GET", f"/bench/closed?id={key}", None, {})
            _, h2 = await up.head()
            async for piece in up.body_chunks(h2):
                closed = json.loads(piece)
            if closed is not None:
                break
            await asyncio.sleep(0.002)
        up.close()
        if closed is not None:
            delays.append(closed - left)
            if os.environ.get("BENCH_DEBUG"):
                print(i, round((closed - left) * 1000, 2), flush=True)
    return {"abort_p50_ms": pct(delays, 50) * 1e3, "abort_p99_ms": pct(delays, 99) * 1e3, "measured": len(delays)}


# -- orchestration ------------------------------------------------------------------------------------------------


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def throughputs(up_port: int, shim_port: int, pid: int, quick: bool) -> dict[str, Any]:
    """Chunks per second and llamashim's CPU per chunk: direct, pass-through, and each dialect's encoder."""
    n, chunks = (4, 2000) if quick else (8, 5000)
    return {
        "direct": await throughput(up_port, None, CHAT, {}, {}, n, chunks),
        "passthrough": await throughput(shim_port, pid, "/v1/completions", {}, {}, n, chunks),
        "chat_default": await throughput(shim_port, pid, CHAT, {}, {}, n, chunks),
        "chat_transforms": await throughput(shim_port, pid, CHAT, {"bench_reasoning": True, "bench_tools": True},
                                            {"X-Llamashim-Thinking": "show_reasoning"}, n, chunks),
        # the request offers tools, the answer is text: the tool-call rescue watches every content chunk
        "chat_tools": await throughput(shim_port, pid, CHAT, {"tools": OFFERED_TOOLS}, {}, n, chunks),
        # Ollama's request shape: the length goes in options.num_predict (mapped to max_tokens)
        "ollama_ndjson": await throughput(shim_port, pid, "/api/chat", {"options": {"num_predict": chunks}}, {},
                                          n, chunks),
        # the Responses and Anthropic Messages encoders (the length goes in their own fields)
        "responses_sse": await throughput(shim_port, pid, "/v1/responses", {}, {}, n, chunks, body={
            "model": "m", "input": "hi", "stream": True, "max_output_tokens": chunks}),
        "anthropic_sse": await throughput(shim_port, pid, "/v1/messages", {}, {}, n, chunks, body={
            "model": "m", "messages": messages(), "stream": True, "max_tokens": chunks}),
    }


def start_shim(out_dir: Path, shim_port: int, up_port: int, workers: int) -> subprocess.Popen[bytes]:
    twistd = str(Path(sys.executable).with_name("twistd"))
    os.environ["STATE_DIRECTORY"] = str(out_dir)  # the Responses store of the benchmark's llamashim
    return start([twistd, "-n", "--pidfile=", "--logfile", str(out_dir / "llamashim.log"), "llamashim",
                  "--listen", f"tcp:{shim_port}:interface=127.0.0.1", "--upstream", f"http://127.0.0.1:{up_port}",
                  "--tool-streaming", "native", "--workers", str(workers)], out_dir / "llamashim.out")


def stop(proc: subprocess.Popen[bytes], grace: float = 45) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)  # llamashim drains open streams for up to shutdown.drain_timeout (30 s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def ready(port: int, workers: int) -> None:
    """Listening, and (with workers) every worker answering: each opens its own socket as it starts."""
    await wait_port(port)
    seen: set[str] = set()
    end = time.monotonic() + 30
    while workers > 1 and len(seen) < workers and time.monotonic() < end:
        conn = Conn(port)
        await conn.open()
        await conn.send("GET", "/health", None, {})
        _, headers = await conn.head()
        async for _ in conn.body_chunks(headers):
            pass
        conn.close()
        seen.add(headers.get("x-llamashim-worker", ""))


async def rps_only(args: argparse.Namespace) -> dict[str, Any]:
    """Non-streamed requests/s at concurrency 32 and CPU per request, for each worker count, interleaved over
    ``--rounds`` rounds (one upstream for all)."""
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    counts = [int(n) for n in str(args.workers).split(",")]
    up_port = free_port()
    upstream = start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], out_dir / "upstream.log")
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    try:
        await wait_port(up_port)
        for _ in range(args.rounds):
            for n in counts:
                shim_port = free_port()
                shim = start_shim(out_dir, shim_port, up_port, n)
                try:
                    await ready(shim_port, n)
                    await nonstream_rps(shim_port, 32, 1.0)  # warm-up
                    cpu0, started = cpu_seconds(shim.pid), time.perf_counter()
                    rps = await nonstream_rps(shim_port, 32, args.seconds)
                    cpu = cpu_seconds(shim.pid) - cpu0
                    served = rps * (time.perf_counter() - started)
                    runs[n].append({"rps": rps, "cpu_ms_per_request": cpu / served * 1000})
                    print(f"workers {n}: {rps:.0f} requests/s, {cpu / served * 1000:.2f} ms CPU per request",
                          flush=True)
                finally:
                    stop(shim)
    finally:
        stop(upstream, 20)
    return {"cpus": os.cpu_count(), "runs": {str(n): r for n, r in runs.items()}}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    up_port, shim_port = free_port(), free_port()
    upstream = start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], out_dir / "upstream.log")
    shim = start_shim(out_dir, shim_port, up_port, int(args.workers))
    try:
        await wait_port(up_port)
        await ready(shim_port, int(args.workers))
        pid = shim.pid
        results: dict[str, Any] = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
        }
        results["rss_idle_mib"] = rss_mib(pid)
        print("non-streamed latency, concurrency 1 ...", flush=True)
        results["nonstream"] = await nonstream_latency(up_port, shim_port, 200 if quick else 1000)
        results["paced"] = []
        for c in (1, 16, 64, 256):
            print(f"paced streams, concurrency {c} ...", flush=True)
            rounds = 1 if quick or c >= 64 else 3
            results["paced"].append(await paced(up_port, shim_port, pid, c, 50, rounds))
        results["rss_after_mib"] = rss_mib(pid)
        print("throughput ...", flush=True)
        results["throughput"] = await throughputs(up_port, shim_port, pid, quick)
        print("non-streamed requests/s at concurrency 32 ...", flush=True)
        seconds = 3 if quick else 8
        results["nonstream_rps"] = {"direct": await nonstream_rps(up_port, 32, seconds),
                                    "shim": await nonstream_rps(shim_port, 32, seconds)}
        print("slow reader ...", flush=True)
        results["slow_reader"] = await slow_reader(up_port, shim_port, pid, 5 if quick else 15)
        await asyncio.sleep(2)  # let the slow streams' teardown finish before timing aborts
        print("abort propagation ...", flush=True)
        results["aborts"] = await aborts(up_port, shim_port, 50 if quick else 200)
        results["rss_final_mib"] = rss_mib(pid)
        return results
    finally:
        stop(shim)
        stop(upstream, 20)


TARGETS = [
    ("added non-streamed latency p50", lambda r: r["nonstream"]["added_p50_ms"], "ms", 1.0),
    ("added non-streamed latency p99", lambda r: r["nonstream"]["added_p99_ms"], "ms", 3.0),
    ("added TTFT p99 at concurrency 1", lambda r: r["paced"][0]["added_ttft_p99_ms"], "ms", 2.0),
    ("max inter-chunk gap, 256 paced streams", lambda r: r["paced"][3]["shim"]["gap_max_ms"], "ms", 200.0),
    ("errors, 256 paced streams", lambda r: r["paced"][3]["shim"]["errors"], "", 0),
    ("CPU per chunk, transforms on", lambda r: r["throughput"]["chat_transforms"]["cpu_us_per_chunk"], "µs", 30.0),
    ("CPU per chunk, Responses encoder", lambda r: r["throughput"]["responses_sse"]["cpu_us_per_chunk"], "µs", 30.0),
    ("CPU per chunk, Anthropic Messages encoder",
     lambda r: r["throughput"]["anthropic_sse"]["cpu_us_per_chunk"], "µs", 30.0),
    ("non-streamed requests/s, concurrency 32", lambda r: r["nonstream_rps"]["shim"], "/s", -1500.0),
    ("slow reader: bytes buffered in llamashim per stream",
     lambda r: r["slow_reader"]["metrics_buffered_kib_per_stream"], "KiB", 256.0),
    ("abort propagation p99", lambda r: r["aborts"]["abort_p99_ms"], "ms", 10.0),
]


def report(r: dict[str, Any]) -> str:
    lines = [f"llamashim {r['commit']} — {r['machine']['cpus']} CPUs, Python {r['machine']['python']}", ""]
    ns = r["nonstream"]
    lines.append(f"non-streamed, c=1: direct p50 {ns['direct_p50_ms']:.2f} ms p99 {ns['direct_p99_ms']:.2f} ms; "
                 f"llamashim p50 {ns['shim_p50_ms']:.2f} ms p99 {ns['shim_p99_ms']:.2f} ms "
                 f"(ratio p50 {ns['shim_p50_ms'] / ns['direct_p50_ms']:.2f})")
    lines.append("")
    lines.append("paced streams (50 chunks/s): conc | direct TTFT p50/p99 | shim TTFT p50/p99 | added TTFT p50/p99 | "
                 "added gap p50/p99 | max gap | errors | llamashim CPU µs/chunk (incl. request setup)")
    for p in r["paced"]:
        d, s = p["direct"], p["shim"]
        lines.append(
            f"  {p['concurrency']:>4} | {d['ttft_p50_ms']:6.2f}/{d['ttft_p99_ms']:6.2f} | "
            f"{s['ttft_p50_ms']:6.2f}/{s['ttft_p99_ms']:6.2f} | "
            f"{p['added_ttft_p50_ms']:6.2f}/{p['added_ttft_p99_ms']:6.2f}"
            f" | {p['added_gap_p50_ms']:6.2f}/{p['added_gap_p99_ms']:6.2f} | {s['gap_max_ms']:6.1f} | "
            f"{s['errors']} (direct {d['errors']}) | {p['cpu_us_per_chunk']:.1f}")
    lines.append("")
    lines.append("throughput (bursting upstream): mode | chunks/s | llamashim CPU µs/chunk | errors")
    for mode, t in r["throughput"].items():
        lines.append(f"  {mode:16} | {t['chunks_per_s']:9.0f} | {t['cpu_us_per_chunk']:6.1f} | {t['errors']}")
    rps = r["nonstream_rps"]
    lines.append(f"non-streamed requests/s at c=32: direct {rps['direct']:.0f}, llamashim {rps['shim']:.0f} "
                 f"(ratio {rps['shim'] / rps['direct']:.2f})")
    lines.append(f"RSS: idle {r['rss_idle_mib']:.1f} MiB, peak under 256 streams "
                 f"{r['paced'][3]['rss_peak_mib']:.1f} MiB, after {r['rss_after_mib']:.1f} MiB, "
                 f"final {r['rss_final_mib']:.1f} MiB")
    sr = r["slow_reader"]
    lines.append(f"slow readers ({sr['streams']} streams at 1 KB/s, upstream at full speed): llamashim RSS growth "
                 f"{sr['rss_growth_mib']:.1f} MiB; per stream: upstream sent {sr['upstream_sent_kib']:.0f} KiB, "
                 f"client read {sr['client_read_kib']:.0f} KiB, the rest in kernel socket buffers except "
                 f"{sr['held_by_llamashim_kib_max']:.0f} KiB (max; this includes the bench client's and upstream's own "
                 f"asyncio buffers); llamashim's /metrics: {sr['metrics_buffered_kib_per_stream']:.0f} KiB per stream "
                 f"waiting in its write buffers")
    ab = r["aborts"]
    lines.append(f"abort propagation over {ab['measured']} aborts: p50 {ab['abort_p50_ms']:.2f} ms, "
                 f"p99 {ab['abort_p99_ms']:.2f} ms")
    lines.append("")
    lines.append("targets:")
    for name, get, unit, target in TARGETS:
        value = get(r)
        ok = value >= -target if target < 0 else value <= target
        lines.append(f"  {'PASS' if ok else 'MISS'}  {name}: {value:.2f}{unit} (target {'≥' if target < 0 else '≤'} "
                     f"{abs(target):g}{unit})")
    return "\n".join(lines)


def rps_report(r: dict[str, Any]) -> str:
    lines = [f"non-streamed requests/s at c=32 ({r['cpus']} CPUs shared by the load generator, the upstream and "
             "llamashim): workers | requests/s per round | median | CPU ms per request (median)"]
    medians: dict[str, float] = {}
    for n, runs in r["runs"].items():
        rates = [run["rps"] for run in runs]
        medians[n] = pct(rates, 50)
        cpu = pct([run["cpu_ms_per_request"] for run in runs], 50)
        lines.append(f"  {n:>3} | {', '.join(f'{x:.0f}' for x in rates)} | {medians[n]:.0f} | {cpu:.2f}")
    if "1" in medians:
        for n, median in medians.items():
            if n != "1":
                lines.append(f"  ratio {n} workers / 1 worker: {median / medians['1']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workers", default="1", help="llamashim's server.workers (with --rps-only: a list, 1,2)")
    parser.add_argument("--rps-only", action="store_true", help="only non-streamed requests/s per worker count")
    parser.add_argument("--rounds", type=int, default=3, help="--rps-only: rounds, worker counts interleaved")
    parser.add_argument("--seconds", type=float, default=8.0, help="--rps-only: seconds per measurement")
    ns = parser.parse_args()
    if ns.rps_only:
        res = asyncio.run(rps_only(ns))
        text = rps_report(res)
    else:
        res = asyncio.run(main(ns))
        text = report(res)
    print(text)
    if ns.json:
        ns.json.write_text(json.dumps(res, indent=2))
