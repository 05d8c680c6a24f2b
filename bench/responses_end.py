"""What waiting for the Responses store costs a stream's end: ``response.completed`` goes out once the stored row is
written (SQLite here, WAL, ``synchronous=NORMAL``).

    python -m bench.responses_end [--turns 300] [--store-path DIR]

In process, on loopback: the fake llama-server, llamashim with its SQLite store in a temporary directory (or
``--store-path``), and an HTTP client sending streamed ``POST /v1/responses`` turns one after another. Prints, per
turn, the flow's own measure of the wait (from the answer's end to the write's commit: the debug line "answer kept in
… ms") as p50 / p90 / p99 / max, and the whole turn's time at the client with the end held back and without it
(alternating, so both see the same machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from llamashim import jsonutil
from llamashim.chat import flow
from llamashim.config import load_config
from llamashim.service import build_service
from llamashim.stream.pipeline import StreamPipeline
from llamashim.testing.fake_llama import FakeLlama

BODY = {"model": "m", "input": "Say hello.", "stream": True}


def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {cuts[49]:.2f}, p90 {cuts[89]:.2f}, p99 {cuts[98]:.2f}, max {max(values):.2f} ms"


def unheld(stages: Any, encoder: Any, hold_end: bool = False) -> StreamPipeline:
    return StreamPipeline(stages, encoder)  # the end goes out as soon as it is encoded (before this change)


async def main(reactor: Any, turns: int, store_dir: str) -> None:
    import treq

    fake = FakeLlama(reactor)
    upstream = reactor.listenTCP(0, Site(fake.resource()), interface="127.0.0.1")
    cfg = load_config({"upstream": f"http://127.0.0.1:{upstream.getHost().port}",
                       "listen": ["tcp:0:interface=127.0.0.1"], "tool_streaming": "native"}, {})
    store_path = str(Path(store_dir) / "responses.sqlite3")
    cfg = dataclasses.replace(cfg, responses=dataclasses.replace(cfg.responses, store_path=store_path))
    service = build_service(cfg, reactor)
    service.startService()
    port = await next(iter(service.listening))._waitingForPort
    url = f"http://127.0.0.1:{port.getHost().port}/v1/responses"
    waits: list[float] = []

    def observe(event: LogEvent) -> None:
        if str(event.get("log_format", "")).startswith("answer kept in"):
            waits.append(float(event["ms"]))

    globalLogPublisher.addObserver(cast(ILogObserver, observe))
    totals: dict[bool, list[float]] = {True: [], False: []}
    for n in range(turns * 2):
        held = n % 2 == 0
        flow.StreamPipeline = StreamPipeline if held else unheld  # type: ignore[attr-defined,assignment]
        started = time.perf_counter()
        response = await treq.post(url, jsonutil.dumps(BODY), headers=Headers({"Content-Type": ["application/json"]}))
        body = await response.content()
        assert body.rstrip().endswith(b"}") and b"response.completed" in body, body[-200:]
        if n >= 20:  # warm-up
            totals[held].append((time.perf_counter() - started) * 1000)
    globalLogPublisher.removeObserver(cast(ILogObserver, observe))
    await service.stopService()
    await upstream.stopListening()
    print(f"{turns} streamed turns each way, SQLite store in {store_dir}")
    print(f"wait for the write before response.completed (flow's measure): {quantiles(waits[10:])}")
    print(f"whole turn at the client, end held back:   {quantiles(totals[True])}")
    print(f"whole turn at the client, end not held:    {quantiles(totals[False])}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--store-path", default=None, help="a directory for the SQLite file (default: a new temp dir)")
    args = parser.parse_args()
    store_dir = args.store_path or tempfile.mkdtemp(prefix="llamashim-bench-")
    react(lambda r: ensureDeferred(main(r, args.turns, store_dir)))


if __name__ == "__main__":
    run()
