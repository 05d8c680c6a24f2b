"""The Responses store on a real SQLite file and adbapi's thread pool: a write in flight answers reads from memory and
is awaited by a DELETE; a failed write leaves nothing behind it and never costs the client its answer; a store that
cannot be set up says so in the log."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import ILogObserver, Logger, globalLogPublisher

from llamashim import jsonutil
from llamashim.dialects.responses.store import ResponseStore, Stored
from llamashim.testing.fake_llama import FakeLlama
from tests.integration.support import config, fetch, listen, reactor, start_shim, timeout

JSON = dict[str, Any]
RESPONSE = {"id": "resp_1", "object": "response", "output": []}
TURNS = [{"role": "user", "content": "Hi"}]
REFUSE_WRITES = "CREATE TRIGGER refuse BEFORE INSERT ON responses BEGIN SELECT RAISE(ABORT, 'disk says no'); END;"


def started(path: Path) -> ResponseStore:
    store = ResponseStore(reactor, str(path), max_age=3600.0, max_items=10)
    store.startService()
    return store


@pytest_twisted.async_yield_fixture
async def store(tmp_path: Path) -> AsyncIterator[ResponseStore]:
    s = started(tmp_path / "responses.sqlite3")
    yield s
    await timeout(s.stopService())


async def get(store: ResponseStore, owner: str, response_id: str = "resp_1") -> Stored | None:
    return await timeout(Deferred.fromCoroutine(store.get(owner, response_id)))


async def delete(store: ResponseStore, owner: str, response_id: str = "resp_1") -> bool:
    return await timeout(Deferred.fromCoroutine(store.delete(owner, response_id)))


def refuse_writes(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(REFUSE_WRITES)
    db.close()


@pytest_twisted.ensureDeferred
async def test_a_write_in_flight_answers_reads_from_memory(store: ResponseStore) -> None:
    """Until its INSERT has run, a kept response is read from memory (its owner only), then from the database."""
    written = store.put("alice", RESPONSE, ["Hi"], TURNS)
    assert not written.called  # the thread has not run the INSERT yet
    assert await get(store, "alice") == Stored(RESPONSE, ["Hi"], TURNS)
    assert await get(store, "bob") is None
    await timeout(written)
    assert await get(store, "alice") == Stored(RESPONSE, ["Hi"], TURNS)


@pytest_twisted.ensureDeferred
async def test_delete_right_after_a_write_finds_the_row(store: ResponseStore) -> None:
    """A DELETE sent while the write is in flight waits for it, deletes the row, and nothing is left to read."""
    written = store.put("alice", RESPONSE, [], TURNS)
    assert await delete(store, "bob") is False
    assert await delete(store, "alice") is True
    await timeout(written)
    assert await get(store, "alice") is None


@pytest_twisted.ensureDeferred
async def test_a_failed_write_leaves_nothing_behind(store: ResponseStore) -> None:
    """A write the database refuses fails its Deferred; no read is answered from memory after it, and a DELETE
    waiting for it finds nothing (and does not hang)."""
    await get(store, "alice")  # the schema is in place
    refuse_writes(store.path)
    written = store.put("alice", RESPONSE, [], TURNS)
    deleted = Deferred.fromCoroutine(store.delete("alice", "resp_1"))
    with pytest.raises(sqlite3.IntegrityError, match="disk says no"):
        await timeout(written)
    assert await timeout(deleted) is False
    assert await get(store, "alice") is None


@pytest_twisted.ensureDeferred
async def test_a_store_that_cannot_be_set_up_says_so(tmp_path: Path) -> None:
    """A store path SQLite cannot open (here a directory) is logged as a failure when the store starts."""
    events: list[JSON] = []
    (tmp_path / "responses.sqlite3").mkdir()
    s = ResponseStore(reactor, str(tmp_path / "responses.sqlite3"), max_age=3600.0, max_items=10)
    s.log = Logger(observer=cast(ILogObserver, events.append))
    s.startService()
    try:
        with pytest.raises(sqlite3.OperationalError):
            await get(s, "alice")  # queued behind the schema on the one connection
    finally:
        await timeout(s.stopService())
    failures = [e for e in events if "log_failure" in e]
    assert [e["log_format"] for e in failures][:1] == ["responses store: could not set up {path}"]
    assert failures[0]["log_failure"].check(sqlite3.OperationalError)


@pytest_twisted.ensureDeferred
async def test_a_failed_write_costs_the_client_nothing(tmp_path: Path) -> None:
    """POST /v1/responses answers its response when the store refuses the write; the log says which one was not
    kept, and it is not retrievable."""
    port, url = listen(FakeLlama(reactor).resource())
    store_path = tmp_path / "responses.sqlite3"
    settings = tmp_path / "llamashim.yaml"
    settings.write_text(json.dumps({"responses": {"store_path": str(store_path)}}))
    shim = await start_shim(config(url, {"config": str(settings), "tool_streaming": "native"}))
    events: list[JSON] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        code, _, _ = await fetch(shim.url + "/v1/responses/resp_none")  # the store is up (its schema is in)
        assert code == 404
        refuse_writes(str(store_path))
        body = jsonutil.dumps({"model": "m", "input": "Hi"})
        code, _, data = await fetch(shim.url + "/v1/responses", "POST", body, {"Content-Type": "application/json"})
        assert code == 200
        response = json.loads(data)
        assert response["status"] == "completed" and response["output"][0]["type"] == "message"
        code, _, _ = await fetch(shim.url + "/v1/responses/" + response["id"])
        assert code == 404
    finally:
        globalLogPublisher.removeObserver(observer)
        await timeout(shim.stop())
        await timeout(maybeDeferred(port.stopListening))
    [failed] = [e for e in events if e.get("log_format") == "responses store: could not keep {id}"]
    assert failed["id"] == response["id"] and failed["log_failure"].check(sqlite3.IntegrityError)
