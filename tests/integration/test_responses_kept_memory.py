"""A Responses answer's end waits for the store, in memory: ``response.completed`` (and a non-streamed reply) goes
out only once the stored row is written — so a follow-up sent at once to another instance sharing the store finds
it — streamed natively or synthesized; a write that fails, or takes longer than ``COMPLETE_TIMEOUT`` (Clock-driven),
still ends the answer, with a line in the log. The store's write is a Deferred the test fires."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from llamashim.chat.flow import COMPLETE_TIMEOUT
from llamashim.dialects.responses.routes import ResponsesRoutes
from llamashim.dialects.responses.store import ResponseStore
from llamashim.testing.memory import Exchange, MemoryShim, memory_shim
from tests.support import logged, sse_events

BODY = {"model": "m", "input": "hi", "stream": True}
END = b"event: response.completed"


class HeldWrites:
    """Stands in for the store's ``put``: each write is a Deferred the test fires (``land``, ``refuse``)."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.writes: list[tuple[str, Deferred[None]]] = []
        store.put = self.put  # type: ignore[method-assign]

    def put(self, owner: str, response: dict[str, Any], input_items: list[Any], conversation: list[Any]
            ) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append((response["id"], d))
        return d

    def land(self) -> None:
        self.writes[-1][1].callback(None)

    def refuse(self) -> None:
        self.writes[-1][1].errback(Failure(OSError("disk says no")))


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
