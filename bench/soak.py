"""The soak: every dialect, streamed and not, client aborts, slow readers, upstream faults and upstream restarts,
against llamashim in front of the project's fake llama-server, with llamashim's RSS and open descriptors sampled.

    python -m bench.soak                          # 30 minutes, 1 worker
    python -m bench.soak --minutes 5 --workers 2
    python -m bench.soak --seconds 25 --sample-every 1 --restart-every 8   # the CI version (tests/e2e)

Processes: the fake (``python -m llamashim.testing.fake_llama --fault-rate P``: each chat request gets
``drop_mid_stream``, ``http_500``, ``data_error`` or ``close_before_headers`` with probability P), killed (SIGKILL)
and started again on the same port every ``--restart-every`` seconds; llamashim (``twistd -n llamashim --workers N``);
and this client (asyncio, raw HTTP/1.1, ``--concurrency`` loops, each picking a dialect, streamed or not, and how to
read: to the end, aborting after the first piece, or slowly).

At the end it asserts, and exits 1 on a breach:

* **no lost stream**: every streamed 200 that the client read to the end ends with its dialect's terminal frame —
  OpenAI chat ``data: [DONE]``; Responses ``response.completed`` / ``response.failed`` / ``response.incomplete`` /
  ``error``; Anthropic ``message_stop`` / ``error``; Ollama a line with ``"done": true`` or ``"error"``; Gemini a chunk
  with a ``finishReason`` or an ``error`` — as its *last* frame (a stream cut without one is lost);
* **no 5xx from llamashim itself**: a 5xx is the upstream's if its error (in the dialect's JSON shape) names the
  upstream or is the fake's own message (counted as ``upstream 5xx``); any other 5xx, or an error body that is not
  JSON, is llamashim's own and a breach; so is any 4xx (the soak sends only valid requests);
* **RSS and open descriptors flat**: samples (RSS and ``/proc/PID/fd`` summed over the supervisor and every worker)
  every ``--sample-every`` seconds; the first ``--warmup`` fraction is warm-up; of the rest, the last third's maximum
  must stay within ``RSS_MARGIN`` (10 % + 8 MiB) and ``FD_MARGIN`` (10 % + 2 per client loop: each loop holds at most a
  client connection and an upstream one) of the first third's maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.run import ROOT, Conn, rss_mib, start, stop, tree, wait_port
from llamashim.upstream.supervisor import free_port

FAULTS = "drop_mid_stream,http_500,data_error,close_before_headers"
DIALECTS = ("chat", "responses", "anthropic", "ollama", "gemini")
MESSAGES = [{"role": "user", "content": "hi"}]


def fds(pid: int) -> int:
    """Open file descriptors of llamashim: the supervisor's and every worker's."""
    total = 0
    for one in tree(pid):
        try:
            total += len(os.listdir(f"/proc/{one}/fd"))
        except OSError:
            continue
    return total


# -- requests and their terminal frames ---------------------------------------------------------------------------


def request_for(dialect: str, stream: bool) -> tuple[str, dict[str, Any]]:
    """The path and body of one request in ``dialect``."""
    if dialect == "chat":
        return "/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": stream}
    if dialect == "responses":
        return "/v1/responses", {"model": "m", "input": "hi", "stream": stream}
    if dialect == "anthropic":
        return "/v1/messages", {"model": "m", "max_tokens": 64, "messages": MESSAGES, "stream": stream}
    if dialect == "ollama":
        return "/api/chat", {"model": "m", "messages": MESSAGES, "stream": stream}
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/m:{method}", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(event name, data) of each SSE event."""
    out = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if name or data:
            out.append((name, "\n".join(data)))
    return out


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def terminal(dialect: str, body: bytes) -> str | None:
    """How a complete stream ended: ``"ok"``, ``"error"`` (the dialect's error frame), or None (no terminal frame)."""
    if dialect == "ollama":
        lines = [_json(line) for line in body.split(b"\n") if line.strip()]
        last = lines[-1] if lines else None
        if isinstance(last, dict):
            return "error" if "error" in last else "ok" if last.get("done") is True else None
        return None
    events = sse_events(body)
    if not events:
        return None
    name, data = events[-1]
    if dialect == "chat":
        return "ok" if data == "[DONE]" else "error" if "error" in (_json(data) or {}) else None
    if dialect == "responses":
        return {"response.completed": "ok", "response.incomplete": "ok", "response.failed": "error",
                "error": "error"}.get(name)
    if dialect == "anthropic":
        return {"message_stop": "ok", "error": "error"}.get(name)
    value = _json(data)  # gemini
    if not isinstance(value, dict):
        return None
    if "error" in value:
        return "error"
    candidates = value.get("candidates") or [{}]
    return "ok" if candidates[0].get("finishReason") else None


def error_is_upstreams(body: bytes) -> bool | None:
    """Whether a 5xx body (the dialect's error JSON) describes an upstream failure; None if it is not JSON."""
    value = _json(body.decode("utf-8", "replace"))
    if not isinstance(value, dict):
        return None
    err = value.get("error", value)
    message = err.get("message", "") if isinstance(err, dict) else str(err)
    return "upstream" in message.lower() or "fake" in message.lower()


# -- the client ---------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    workers: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # requests per dialect and streamed or not

    def add(self, key: str, kind: str, example: str = "") -> None:
        self.counts[key] += 1
        self.kinds[kind] += 1
        if example and key not in self.examples:
            self.examples[key] = example[:300]


async def read_body(conn: Conn, headers: dict[str, str], mode: str) -> bytes | None:
    """The whole body, read as ``mode`` says (None: aborted by the client after the first piece)."""
    pieces = []
    async for piece in conn.body_chunks(headers):
        pieces.append(piece)
        if mode == "abort":
            assert conn.writer is not None
            conn.writer.transport.abort()
            return None
        if mode == "slow":
            await asyncio.sleep(0.05)
    return b"".join(pieces)


async def one_request(port: int, rng: random.Random, tally: Tally) -> None:
    dialect = rng.choice(DIALECTS)
    stream = rng.random() < 0.7
    mode = "full" if not stream else rng.choices(("full", "abort", "slow"), (70, 15, 15))[0]
    path, body = request_for(dialect, stream)
    kind = f"{dialect}/{'stream' if stream else 'json'}"
    conn = Conn(port)
    try:
        await conn.send("POST", path, body, {})
        status, headers = await conn.head()
        tally.workers[headers.get("x-llamashim-worker", "")] += 1
        data = await read_body(conn, headers, mode if status == 200 else "full")
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        tally.add("lost" if stream else "cut", kind, f"{kind}: {exc!r}")
        return
    finally:
        conn.close()
    classify(tally, kind, dialect, stream, status, data)


def classify(tally: Tally, kind: str, dialect: str, stream: bool, status: int, data: bytes | None) -> None:
    if data is None:
        tally.add("aborted", kind)
    elif status >= 500:
        upstreams = error_is_upstreams(data)
        tally.add("upstream 5xx" if upstreams else "own 5xx", kind, f"{kind} {status}: {data[:200]!r}")
    elif status != 200:
        tally.add("unexpected status", kind, f"{kind} {status}: {data[:200]!r}")
    elif not stream:
        tally.add("ok" if isinstance(_json(data.decode("utf-8", "replace")), dict) else "bad json", kind, kind)
    else:
        end = terminal(dialect, data)
        tally.add({"ok": "ok", "error": "error frame", None: "lost"}[end], kind, f"{kind}: ...{data[-300:]!r}")


async def client_loop(port: int, seed: int, end: float, tally: Tally) -> None:
    rng = random.Random(seed)
    while time.monotonic() < end:
        await one_request(port, rng, tally)


# -- processes ----------------------------------------------------------------------------------------------------


@dataclass
class Upstream:
    port: int
    out: Path
    fault_rate: float
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def spawn(self) -> None:
        self.proc = start([sys.executable, "-m", "llamashim.testing.fake_llama", "--port", str(self.port),
                           "--chunk-interval", "0.02", "--pieces", "20", "--fault-rate", str(self.fault_rate),
                           "--faults", FAULTS, "--seed", str(self.restarts)], self.out.with_suffix(f".{self.restarts}"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


async def restarter(up: Upstream, every: float, end: float) -> None:
    """Kill the upstream and start it again on the same port every ``every`` seconds."""
    while time.monotonic() + every < end:
        await asyncio.sleep(every)
        up.kill()
        await asyncio.sleep(0.5)
        up.restarts += 1
        up.spawn()
        await wait_port(up.port)


async def sampler(pid: int, every: float, end: float, samples: list[tuple[float, float, int]]) -> None:
    started = time.monotonic()
    while time.monotonic() < end:
        samples.append((time.monotonic() - started, rss_mib(pid), fds(pid)))
        await asyncio.sleep(every)


def start_shim(out_dir: Path, port: int, up_port: int, workers: int) -> subprocess.Popen[bytes]:
    twistd = str(Path(sys.executable).with_name("twistd"))
    os.environ["STATE_DIRECTORY"] = str(out_dir)
    return start([twistd, "-n", "--pidfile=", "--logfile", str(out_dir / "llamashim.log"), "llamashim",
                  "--listen", f"tcp:{port}:interface=127.0.0.1", "--upstream", f"http://127.0.0.1:{up_port}",
                  "--workers", str(workers)], out_dir / "llamashim.out")


# -- verdict ------------------------------------------------------------------------------------------------------

RSS_MARGIN = (0.10, 8.0)  # fraction, MiB


def flat(samples: list[tuple[float, float, int]], warmup: float, concurrency: int) -> dict[str, Any]:
    """The first and last thirds' maxima after warm-up, and whether each stays within its margin."""
    rest = samples[int(len(samples) * warmup):]
    third = max(1, len(rest) // 3)
    first, last = rest[:third], rest[-third:]
    rss0, rss1 = max(s[1] for s in first), max(s[1] for s in last)
    fd0, fd1 = max(s[2] for s in first), max(s[2] for s in last)
    rss_limit = rss0 * (1 + RSS_MARGIN[0]) + RSS_MARGIN[1]
    fd_limit = fd0 * 1.10 + 2 * concurrency
    return {"samples": len(samples), "rss_first_max_mib": rss0, "rss_last_max_mib": rss1,
            "rss_limit_mib": rss_limit, "rss_flat": rss1 <= rss_limit, "fd_first_max": fd0, "fd_last_max": fd1,
            "fd_limit": fd_limit, "fd_flat": fd1 <= fd_limit,
            "rss_min_mib": min(s[1] for s in samples), "rss_max_mib": max(s[1] for s in samples)}


BREACHES = ("lost", "cut", "own 5xx", "unexpected status", "bad json")


def verdict(tally: Tally, shape: dict[str, Any]) -> list[str]:
    found = [f"{tally.counts[k]} {k}" for k in BREACHES if tally.counts[k]]
    if not shape["rss_flat"]:
        found.append(f"RSS grew: {shape['rss_first_max_mib']:.1f} → {shape['rss_last_max_mib']:.1f} MiB "
                     f"(limit {shape['rss_limit_mib']:.1f})")
    if not shape["fd_flat"]:
        found.append(f"open fds grew: {shape['fd_first_max']} → {shape['fd_last_max']} (limit {shape['fd_limit']:.0f})")
    return found


def summary(args: argparse.Namespace, tally: Tally, shape: dict[str, Any], up: Upstream, elapsed: float,
            breaches: list[str]) -> str:
    total = sum(v for k, v in tally.counts.items() if k != "tracebacks")
    lines = [f"soak: {elapsed:.0f} s, {args.workers} worker(s), {args.concurrency} client loops, {total} requests "
             f"({total / elapsed:.0f}/s), fault rate {args.fault_rate}, {up.restarts} upstream restarts",
             "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.counts.items()) if k != "tracebacks"),
             "requests: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.kinds.items())),
             "answered by worker: " + ", ".join(f"{k or '-'} {v}" for k, v in sorted(tally.workers.items())),
             f"RSS MiB: min {shape['rss_min_mib']:.1f}, first third max {shape['rss_first_max_mib']:.1f}, "
             f"last third max {shape['rss_last_max_mib']:.1f} (limit {shape['rss_limit_mib']:.1f}); "
             f"open fds: first third max {shape['fd_first_max']}, last third max {shape['fd_last_max']} "
             f"(limit {shape['fd_limit']:.0f}); "
             f"{shape['samples']} samples"]
    lines.append(f"llamashim's log: {tally.counts['tracebacks']} tracebacks / unhandled errors (not a breach)")
    lines += [f"  e.g. {k}: {v}" for k, v in tally.examples.items() if k in (*BREACHES, "upstream 5xx", "error frame")]
    lines.append("PASS" if not breaches else "BREACH: " + "; ".join(breaches))
    return "\n".join(lines)


async def soak(args: argparse.Namespace) -> int:
    out_dir = Path(args.out or ROOT / "bench" / "results" / f"soak-{os.getpid()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    duration = args.seconds if args.seconds else args.minutes * 60
    up = Upstream(free_port(), out_dir / "fake.out", args.fault_rate)
    up.spawn()
    port = free_port()
    shim = start_shim(out_dir, port, up.port, args.workers)
    tally, samples = Tally(), list[tuple[float, float, int]]()
    try:
        await wait_port(up.port)
        await wait_port(port)
        started = time.monotonic()
        end = started + duration
        await asyncio.gather(sampler(shim.pid, args.sample_every, end, samples),
                             restarter(up, args.restart_every, end),
                             *(client_loop(port, i, end, tally) for i in range(args.concurrency)))
        elapsed = time.monotonic() - started
    finally:
        stop(shim)
        up.kill()
    shape = flat(samples, args.warmup, args.concurrency)
    injected = Counter(line.split()[1] for f in out_dir.glob("fake.[0-9]*")
                       for line in f.read_text(errors="replace").splitlines() if line.startswith("fault "))
    logs = [out_dir / "llamashim.log", out_dir / "llamashim.out"]
    tally.counts["tracebacks"] = sum(line.startswith(("Traceback", "Unhandled")) or " Traceback " in line
                                     or " Unhandled " in line for p in logs if p.exists()
                                     for line in p.read_text(errors="replace").splitlines())
    breaches = verdict(tally, shape)
    print(summary(args, tally, shape, up, elapsed, breaches), flush=True)
    print("faults the upstream injected: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())), flush=True)
    if args.json:
        result = {"counts": tally.counts, "kinds": tally.kinds, "workers": tally.workers, "shape": shape,
                  "samples": samples, "restarts": up.restarts, "injected": injected, "breaches": breaches}
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if breaches else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=0.0, help="the duration in seconds (overrides --minutes)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16, help="client loops")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="the share of upstream answers with a fault")
    parser.add_argument("--restart-every", type=float, default=120.0, help="seconds between upstream restarts")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS/fd samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="the fraction of samples that is warm-up")
    parser.add_argument("--out", help="directory for the processes' logs (default bench/results/soak-PID)")
    parser.add_argument("--json", help="write the counts and samples here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(soak(parse())))
