"""A fast, paced fake llama-server for the benchmark (asyncio, raw HTTP/1.1, keep-alive).

``POST /v1/chat/completions`` with the usual body plus benchmark fields:

* ``max_tokens`` — chunks to stream (default 50);
* ``bench_rate`` — chunks per second per stream (0: as fast as the socket takes them);
* ``bench_reasoning`` — the first half of the chunks is ``reasoning_content``; ``bench_tools`` — a tool call at the end;
* ``bench_bytes`` — stream this many bytes of big content chunks at full speed (slow-reader test).

``X-Request-Id`` (which llamashim forwards) names a request; ``GET /bench/closed?id=ID`` answers the monotonic time
at which that request's connection was lost (for abort propagation), ``GET /bench/sent?id=ID`` the bytes written for
it, ``GET /bench/peer?id=ID`` the client's port of that connection.
Run: ``python -m bench.upstream --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

CHUNK = (
    '{{"choices":[{{"finish_reason":null,"index":0,"delta":{{"{field}":"{text}"}}}}],"created":1795532742,'
    '"id":"chatcmpl-bench","model":"bench-model","system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}}'
)
ROLE = (
    '{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"created":1795532742,'
    '"id":"chatcmpl-bench","model":"bench-model","system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}'
)
TOOL = (
    '{"choices":[{"finish_reason":null,"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_bench","type":"function",'
    '"function":{"name":"get_weather","arguments":"{\\"city\\": \\"Paris\\"}"}}]}}],"created":1795532742,'
    '"id":"chatcmpl-bench","model":"bench-model","system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}'
)
FINISH = (
    '{{"choices":[{{"finish_reason":"{reason}","index":0,"delta":{{}}}}],"created":1795532742,"id":"chatcmpl-bench",'
    '"model":"bench-model","system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}}'
)
USAGE = (
    '{{"choices":[],"created":1795532742,"id":"chatcmpl-bench","model":"bench-model","system_fingerprint":"b0-unknown",'
    '"object":"chat.completion.chunk","usage":{{"completion_tokens":{n},"prompt_tokens":10,"total_tokens":{t}}},'
    '"timings":{{"prompt_n":10,"prompt_ms":5.0,"predicted_n":{n},"predicted_ms":{ms}}}}}'
)
REPLY = json.dumps({
    "choices": [{"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": "Hello there."}}],
    "created": 1795532742, "model": "bench-model", "system_fingerprint": "b0-unknown", "object": "chat.completion",
    "usage": {"completion_tokens": 3, "prompt_tokens": 10, "total_tokens": 13}, "id": "chatcmpl-bench",
    "timings": {"prompt_n": 10, "prompt_ms": 5.0, "predicted_n": 3, "predicted_ms": 30.0},
}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "llamacpp",
                                                "meta": {"n_ctx": 4096}}]}).encode()

closed: dict[str, float] = {}
sent: dict[str, int] = {}
peers: dict[str, int] = {}  # request id -> the client's (llamashim's) local port of that connection


def frame(text: str) -> bytes:
    data = f"data: {text}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def frames(n: int, reasoning: bool, tools: bool) -> Iterator[bytes]:
    """The stream's frames, made as they are sent (a long stream must not cost its whole size up front)."""
    yield frame(ROLE)
    for i in range(n):
        field = "reasoning_content" if reasoning and i < n // 2 else "content"
        yield frame(CHUNK.format(field=field, text=f"tok{i} "))
    if tools:
        yield frame(TOOL)
    yield frame(FINISH.format(reason="tool_calls" if tools else "stop"))
    yield frame(USAGE.format(n=n, t=n + 10, ms=n * 20.0))
    yield frame("[DONE]")
    yield b"0\r\n\r\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    bench_id = ""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            bench_id = headers.get("x-request-id", "")
            if bench_id:
                peers[bench_id] = writer.get_extra_info("peername")[1]
            path, _, query = target.partition("?")
            if path.startswith("/bench/"):
                key = query.partition("=")[2]
                tables: dict[str, dict[str, Any]] = {"/bench/closed": closed, "/bench/sent": sent, "/bench/peer": peers}
                value = tables[path].get(key)
                data = json.dumps(value).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(data), data))
                continue
            if path in ("/v1/models", "/health", "/props"):
                data = MODELS if path == "/v1/models" else b'{"status":"ok"}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(data), data))
                continue
            req = json.loads(body) if body else {}
            if not req.get("stream"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(REPLY), REPLY))
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            watcher = None
            if bench_id:
                # notice the client leaving at once (EOF), not only at the next write
                watcher = asyncio.get_running_loop().create_task(watch_eof(reader, bench_id))
            try:
                await stream(writer, req, bench_id)
            finally:
                if watcher is not None:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        if bench_id:
            closed.setdefault(bench_id, time.monotonic())
        writer.close()


async def stream(writer: asyncio.StreamWriter, req: dict[str, Any], bench_id: str) -> None:
    if req.get("bench_bytes"):
        await big(writer, int(req["bench_bytes"]), bench_id)
        return
    rate = float(req.get("bench_rate", 0))
    n = int(req.get("max_tokens", 50))
    out = frames(n, bool(req.get("bench_reasoning")), bool(req.get("bench_tools")))
    if rate <= 0:
        while batch := list(itertools.islice(out, 64)):
            writer.write(b"".join(batch))
            await writer.drain()
        return
    interval = 1.0 / rate
    start = time.monotonic()
    for i, f in enumerate(out):
        writer.write(f)
        await writer.drain()
        delay = start + (i + 1) * interval - time.monotonic()
        if delay > 0 and i < n:
            await asyncio.sleep(delay)


async def watch_eof(reader: asyncio.StreamReader, bench_id: str) -> None:
    try:
        while await reader.read(4096):
            pass
    except (ConnectionError, OSError):
        pass
    closed.setdefault(bench_id, time.monotonic())


async def big(writer: asyncio.StreamWriter, total: int, bench_id: str) -> None:
    block = frame(CHUNK.format(field="content", text="x" * 4000))
    done = 0
    while done < total:
        writer.write(block)
        done += len(block)
        sent[bench_id] = done
        await writer.drain()
    writer.write(b"0\r\n\r\n")


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"bench upstream on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
