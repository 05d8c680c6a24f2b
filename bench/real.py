"""llamashim against a direct connection to a *real* llama-server: added latency and time to first token.

    python -m bench.real http://127.0.0.1:8080 [--n 50]

Starts llamashim in front of the given server, then sends the same tiny requests (``max_tokens`` 1 non-streamed;
streamed with ``max_tokens`` 8, timing the first content chunk) alternately direct and through llamashim.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from bench.run import ROOT, Conn, pct, request_once, wait_port
from llamashim.upstream.supervisor import free_port

BODY = {"model": "any", "messages": [{"role": "user", "content": "Say hi."}], "temperature": 0}


async def ttft(port: int) -> float:
    conn = Conn(port)
    started = time.perf_counter()
    await conn.send("POST", "/v1/chat/completions", {**BODY, "max_tokens": 8, "stream": True}, {})
    _, h = await conn.head()
    first = None
    async for piece in conn.body_chunks(h):
        if first is None and b'"content":"' in piece:
            first = time.perf_counter() - started
    conn.close()
    return first if first is not None else float("nan")


async def main(url: str, n: int) -> None:
    direct = int(url.rsplit(":", 1)[1].rstrip("/"))
    port = free_port()
    twistd = str(Path(sys.executable).with_name("twistd"))
    proc = subprocess.Popen([twistd, "-n", "--pidfile=", "--logfile", "/dev/null", "llamashim", "--listen",
                             f"tcp:{port}:interface=127.0.0.1", "--upstream", url], cwd=ROOT)
    try:
        await wait_port(port)
        a, b = Conn(direct), Conn(port)
        for _ in range(3):
            await request_once(a, "/v1/chat/completions", {**BODY, "max_tokens": 1})
            await request_once(b, "/v1/chat/completions", {**BODY, "max_tokens": 1})
        d, s, dt, st = [], [], [], []
        for _ in range(n):
            d.append(await request_once(a, "/v1/chat/completions", {**BODY, "max_tokens": 1}))
            s.append(await request_once(b, "/v1/chat/completions", {**BODY, "max_tokens": 1}))
            dt.append(await ttft(direct))
            st.append(await ttft(port))
        print(f"real llama-server {url}, {n} interleaved samples each")
        print(f"non-streamed (max_tokens 1): direct p50 {pct(d, 50) * 1e3:.2f} ms, p99 {pct(d, 99) * 1e3:.2f} ms; "
              f"llamashim p50 {pct(s, 50) * 1e3:.2f} ms, p99 {pct(s, 99) * 1e3:.2f} ms; "
              f"added p50 {(pct(s, 50) - pct(d, 50)) * 1e3:.2f} ms")
        print(f"time to first token (streamed): direct p50 {pct(dt, 50) * 1e3:.2f} ms, p99 {pct(dt, 99) * 1e3:.2f} ms; "
              f"llamashim p50 {pct(st, 50) * 1e3:.2f} ms, p99 {pct(st, 99) * 1e3:.2f} ms; "
              f"added p50 {(pct(st, 50) - pct(dt, 50)) * 1e3:.2f} ms")
    finally:
        proc.terminate()
        proc.wait(45)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--n", type=int, default=50)
    ns = parser.parse_args()
    asyncio.run(main(ns.url, ns.n))
