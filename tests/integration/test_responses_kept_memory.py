"""A Responses answer's end waits for the store, in memory: ``response.completed`` (and a non-streamed reply) goes
out only once the stored row is written — so a follow-up sent at once to another instance sharing the store finds
it — streamed natively or synthesized; a write that fails, or takes longer than ``COMPLETE_TIMEOUT`` (Clock-driven),
still ends the answer, with a line in the log. The store's write is a Deferred the test fires."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llamashim.chat.flow import COMPLETE_TIMEOUT
from llamashim.dialects.responses.routes import ResponsesRoutes
from llamashim.testing.memory import Exchange, MemoryShim, memory_shim
from tests.integration.support import HeldWrites
from tests.support import logged, sse_events

BODY = {"model": "m", "input": "hi", "stream": True}
END = b"event: response.completed"


def shim_with_held_writes(tmp_path: Path, streaming: str = "native") -> tuple[MemoryShim, HeldWrites]:
    shim = memory_shim(responses={"store": True, "store_path": str(tmp_path / "responses.sqlite3")},
                       tools={"streaming": streaming})
    routes = next(r for r in shim.parts.routes if isinstance(r, ResponsesRoutes))
    assert routes.store is not None
    return shim, HeldWrites(routes.store)


def events(exchange: Exchange) -> list[str]:
    return [str(name) for name, _ in sse_events(bytes(exchange.body))]


@pytest.mark.parametrize("streaming", ["native", "synthesize"])
def test_the_end_of_a_stream_waits_for_its_write(tmp_path: Path, streaming: str) -> None:
    """The answer's text is out while its write is in flight, but ``response.completed`` is not, and the response
    stays open; once the write lands, the end follows at once, naming the id that was written."""
    shim, held = shim_with_held_writes(tmp_path, streaming)
    exchange = shim.request("POST", "/v1/responses", BODY)
    shim.flush()
    assert [rid for rid, _ in held.writes] and "response.output_text.done" in events(exchange)
    assert END not in exchange.body and not exchange.ended
    held.land()
    shim.flush()
    assert exchange.complete and events(exchange)[-1] == "response.completed"
    assert sse_events(bytes(exchange.body))[-1][1]["response"]["id"] == held.writes[0][0]
    shim.stop()


def test_a_failed_write_still_ends_the_stream(tmp_path: Path) -> None:
    """A write that fails: the end goes out at once all the same, and the log says which response was not kept."""
    shim, held = shim_with_held_writes(tmp_path)
    with logged() as log:
        exchange = shim.request("POST", "/v1/responses", BODY)
        shim.flush()
        assert END not in exchange.body
        held.refuse()
        shim.flush()
    assert exchange.complete and events(exchange)[-1] == "response.completed"
    assert any(e.get("log_format") == "responses store: could not keep {id}" for e in log)
    shim.stop()


@pytest.mark.parametrize("stream", [True, False])
def test_a_write_that_hangs_delays_the_end_by_the_timeout_at_most(tmp_path: Path, stream: bool) -> None:
    """A write that never lands: the end (a stream's last event, a reply) goes out ``COMPLETE_TIMEOUT`` seconds
    later, not before, with a warning; the write is left to go on."""
    shim, held = shim_with_held_writes(tmp_path)
    with logged() as log:
        exchange = shim.request("POST", "/v1/responses", {**BODY, "stream": stream})
        shim.advance(COMPLETE_TIMEOUT - 0.5)
        assert held.writes and not exchange.ended and END not in exchange.body
        shim.advance(1.0)
    assert exchange.complete and exchange.code == 200
    if stream:
        assert events(exchange)[-1] == "response.completed"
    else:
        assert exchange.json()["status"] == "completed"
    assert [e["log_level"].name for e in log if str(e.get("log_format", "")).startswith("keeping the answer")] == [
        "warn"]
    assert not held.writes[0][1].called  # never cancelled
    held.land()  # (late: nothing more happens)
    shim.flush()
    shim.stop()


@pytest.mark.parametrize("streaming", ["native", "synthesize"])
def test_a_shutdown_while_the_write_is_in_flight_still_sends_the_end(tmp_path: Path, streaming: str) -> None:
    """A shutdown whose drain deadline passes while the answer's write is in flight ends the stream with its held
    ``response.completed`` (the answer is whole), not with nothing and not with ``response.failed``."""
    shim, held = shim_with_held_writes(tmp_path, streaming)
    shim.config = dataclasses.replace(shim.config, shutdown=dataclasses.replace(shim.config.shutdown,
                                                                               drain_timeout=1.0))
    exchange = shim.request("POST", "/v1/responses", BODY)
    shim.flush()
    assert held.writes and END not in exchange.body
    shim.shutdown()
    assert exchange.ended and events(exchange)[-1] == "response.completed", events(exchange)[-3:]
    assert "response.failed" not in events(exchange)
