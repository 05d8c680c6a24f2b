"""Graceful shutdown: stop listening, let in-flight streams finish up to shutdown.drain_timeout, end the rest."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError

from llamashim import jsonutil
from llamashim.testing.fake_llama import FakeLlama
from tests.integration.support import config, fetch, listen, reactor, start_shim, timeout

STREAM = jsonutil.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
OLLAMA = jsonutil.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


async def setup(drain: float, pieces: int, interval: float) -> tuple[FakeLlama, Any, Any]:
    fake = FakeLlama(reactor)
    fake.content = [f"t{i} " for i in range(pieces)]
    fake.chunk_interval = interval
    port, url = listen(fake.resource())
    cfg = config(url, {"tool_streaming": "native"})
    cfg = dataclasses.replace(cfg, shutdown=dataclasses.replace(cfg.shutdown, drain_timeout=drain))
    return fake, await start_shim(cfg), port


@pytest_twisted.ensureDeferred
async def test_in_flight_stream_finishes_within_the_drain_timeout() -> None:
    """On stop, new connections are refused while an in-flight stream still completes to [DONE]."""
    fake, shim, port = await setup(drain=5, pieces=10, interval=0.02)
    try:
        arrived = fake.next_request()
        stream = Deferred.fromCoroutine(fetch(shim.url + "/v1/chat/completions", "POST", STREAM))
        await timeout(arrived)
        stopped = shim.stop()
        try:  # no longer listening
            await fetch(shim.url + "/health")
            raise AssertionError("still accepting connections while draining")
        except ConnectionRefusedError:
            pass
        status, _, body = await timeout(stream)
        assert status == 200 and body.endswith(b"data: [DONE]\n\n") and b"t9 " in body
        await timeout(stopped)
    finally:
        await port.stopListening()


async def next_chat(fake: FakeLlama) -> Any:
    """The next chat request at the fake (routes may ask for /v1/models or /props first)."""
    while True:
        seen = await timeout(fake.next_request())
        if seen.path.endswith("/chat/completions"):
            return seen


@pytest_twisted.ensureDeferred
async def test_streams_still_running_after_the_timeout_end_with_an_error_frame() -> None:
    """After drain_timeout, OpenAI and Ollama streams end with a shutting-down error and upstream is closed."""
    fake, shim, port = await setup(drain=0.3, pieces=1000, interval=0.05)
    try:
        arrived = Deferred.fromCoroutine(next_chat(fake))
        openai_stream = Deferred.fromCoroutine(fetch(shim.url + "/v1/chat/completions", "POST", STREAM))
        await timeout(arrived)  # the OpenAI stream's own chat request, not a window lookup before it
        arrived = Deferred.fromCoroutine(next_chat(fake))
        ollama_stream = Deferred.fromCoroutine(fetch(shim.url + "/api/chat", "POST", OLLAMA))
        upstream = await timeout(arrived)
        started = reactor.seconds()
        await timeout(shim.stop())
        assert reactor.seconds() - started < 3
        status, _, body = await timeout(openai_stream)
        last = body.rstrip(b"\n").split(b"\n\n")[-1]
        assert status == 200 and b"shutting down" in last and b"[DONE]" not in body
        status, _, body = await timeout(ollama_stream)
        assert status == 200 and jsonutil.loads(body.splitlines()[-1]) == {"error": "llamashim is shutting down"}
        await timeout(upstream.lost)  # and the upstream connection was closed, so generation stops
    finally:
        await port.stopListening()
