"""The Responses store: stored responses, their input items and the conversation behind them, in SQLite or PostgreSQL.

A response created with ``store`` (OpenAI's default) is kept so that ``previous_response_id`` can continue its
conversation (Copilot's Responses mode sends only the new turn) and ``GET``/``DELETE /v1/responses/{id}`` work.
It lives in one SQLite file (``responses.store_path``; by default the systemd unit's ``StateDirectory`` or
``~/.local/state/llamashim``), survives a restart, and is pruned by age (``responses.max_age``) and count
(``responses.max_items``) once at start-up and then hourly, by a ``TimerService``. Several workers
(``server.workers``) share the file: it is in WAL mode (readers never wait for the one writer, and a worker's
write is visible to the next read of any other), with sqlite3's 5 s busy timeout for two writers at once, and
worker 0 alone runs the pruner. With ``responses.store_url`` (``postgresql://…``) it lives in PostgreSQL instead,
shared by several llamashim instances: the schema is created on start, and pruning takes a transaction-scoped
advisory lock first, so N instances prune once (the others skip that round). What differs between the two databases
is in :mod:`.sql`.

Every query runs in ``twisted.enterprise.adbapi``'s thread pool (one connection, in the order asked: SQLite serialises
writers anyway), so the reactor never blocks on the disk or the network. When API keys are set, each
row belongs to the key that created it (a hash of it, never the key): another key finds nothing, exactly as for an
unknown id. Nothing here logs a stored
input or output, nor a database URL's password.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from llamashim import jsonutil
from llamashim.dialects.responses.sql import SQLITE, Database, postgres_database

JSON = dict[str, Any]
PRUNE_EVERY = 3600.0
_COLUMNS = ("id", "owner", "created", "response", "input_items", "conversation")


def default_store_path(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """``$STATE_DIRECTORY/responses.sqlite3`` under systemd, else ``~/.local/state/llamashim/responses.sqlite3``."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    base = Path(state) if state else Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / (
        "llamashim"
    )
    return str(base / "responses.sqlite3")


@dataclass(frozen=True)
class Stored:
    response: JSON
    input_items: list[Any]
    conversation: list[JSON]


@dataclass(frozen=True)
class _Write:
    """A write on its way to the database: whose row it is, what it holds, and a Deferred that fires (with
    ``None``, never failing) once the write is done, whether it succeeded or not."""

    owner: str
    stored: Stored
    done: Deferred[None]


def _connect(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def sqlite_database(path: str) -> Database:
    return Database(SQLITE, "sqlite3", path, (path,), dict(check_same_thread=False, cp_min=1, cp_max=1,
                                                          cp_openfun=_connect), file=path)


class ResponseStore(MultiService):
    log = Logger()

    def __init__(self, reactor: Any, path: str, max_age: float, max_items: int, url: str | None = None,
                 prune: bool = True) -> None:
        """``url``: a PostgreSQL store instead of the file at ``path``; ``prune``: this process runs the hourly pruner
        (with several workers on one database, worker 0 alone)."""
        super().__init__()
        self.reactor = reactor
        self.path = path
        self.database = postgres_database(url) if url else sqlite_database(path)  # the URL wins
        self.sql = self.database.dialect
        self.max_age = max_age
        self.max_items = max_items
        self.pool: adbapi.ConnectionPool | None = None
        # Writes on their way to the database: a follow-up turn can arrive before the thread has run the INSERT (the
        # stream's last event waits for the write, but a few seconds at most), so reads look here first.
        self._pending: dict[str, _Write] = {}
        self._reasoning_rows: Deferred[list[Any]] = Deferred()  # what thinking.replay kept, read at start
        if prune:
            pruner = TimerService(PRUNE_EVERY, self._prune_logged)
            pruner.clock = reactor
            pruner.setServiceParent(self)

    def startService(self) -> None:
        db = self.database
        if db.file is not None:
            Path(db.file).parent.mkdir(parents=True, exist_ok=True)
        self.pool = adbapi.ConnectionPool(db.module, *db.args, cp_reactor=self.reactor, **db.kwargs)
        ready = self.pool.runInteraction(self._create_schema)
        ready.addCallback(lambda _: self._run("SELECT owner, keys, reasoning, at FROM reasoning ORDER BY at"))
        ready.addCallbacks(self._reasoning_read, self._schema_failed)
        self.log.info("responses store: {path} (kept {days:g} days, at most {n} responses)", path=db.shown,
                      days=self.max_age / 86400, n=self.max_items)
        super().startService()  # the pruner runs once now, then hourly

    def _create_schema(self, txn: Any) -> None:
        for statement in self.sql.schema():
            txn.execute(statement)

    def _schema_failed(self, failure: Failure) -> None:
        self.log.failure("responses store: could not set up {path}", failure, path=self.database.shown)
        self._reasoning_rows.callback([])

    def _reasoning_read(self, rows: list[Any]) -> None:
        self._reasoning_rows.callback([(owner, jsonutil.loads(keys, 0), reasoning, at)
                                       for owner, keys, reasoning, at in rows])

    # -- reasoning carried across turns (thinking.replay): a restart does not lose it -------------------------------

    def load_reasoning(self) -> Deferred[list[Any]]:
        """Fires with the kept reasoning (owner, keys, reasoning, time), oldest first, once the store is open."""
        d: Deferred[list[Any]] = Deferred()

        def hand_over(rows: list[Any]) -> list[Any]:
            d.callback(rows)
            return rows

        self._reasoning_rows.addCallback(hand_over)
        return d

    def save_reasoning(self, owner: str, keys: list[str], reasoning: str, at: float) -> None:
        """Keep one remembered answer's reasoning (never logged)."""
        if self.pool is None:
            return
        self._op("INSERT INTO reasoning (owner, keys, reasoning, at) VALUES (?, ?, ?, ?)", owner,
                 jsonutil.dumps(keys).decode("utf-8"), reasoning, at).addErrback(
            lambda f: self.log.failure("responses store: could not keep reasoning", f))

    def stopService(self) -> Deferred[None]:
        d: Deferred[None] = Deferred.fromCoroutine(self._stop())
        return d

    async def _stop(self) -> None:
        await super().stopService()
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _run(self, sql: str, *args: Any) -> Deferred[list[Any]]:
        assert self.pool is not None, "the responses store is not running"
        return self.pool.runQuery(self.sql.sql(sql), args)  # type: ignore[no-any-return]

    def _op(self, sql: str, *args: Any) -> Deferred[int]:
        assert self.pool is not None, "the responses store is not running"

        def run(txn: Any) -> int:
            txn.execute(self.sql.sql(sql), args)
            return int(txn.rowcount)

        return self.pool.runInteraction(run)  # type: ignore[no-any-return]

    def put(self, owner: str, response: JSON, input_items: list[Any], conversation: list[JSON]) -> Deferred[None]:
        """Keep ``response`` for ``owner``; until the row is written, reads of it are answered from memory. The
        Deferred fires once it is written, or fails with the write."""
        response_id = response["id"]
        written = maybeDeferred(
            self._op, self.sql.upsert("responses", _COLUMNS, "id"),
            response_id, owner, self.reactor.seconds(), jsonutil.dumps(response), jsonutil.dumps(input_items),
            jsonutil.dumps(conversation),
        )
        write = _Write(owner, Stored(response, input_items, conversation), Deferred())
        self._pending[response_id] = write

        def landed(result: Any) -> Any:
            if self._pending.get(response_id) is write:
                del self._pending[response_id]
            write.done.callback(None)
            return result  # the write's own outcome, for the caller

        return written.addBoth(landed).addCallback(lambda _: None)

    async def get(self, owner: str, response_id: str) -> Stored | None:
        """The stored response ``response_id`` of ``owner``, or ``None`` (unknown, expired or someone else's)."""
        pending = self._pending.get(response_id)
        if pending is not None:
            return pending.stored if pending.owner == owner else None
        rows = await self._run(
            "SELECT response, input_items, conversation FROM responses WHERE id = ? AND owner = ? AND created >= ?",
            response_id, owner, self.reactor.seconds() - self.max_age,
        )
        if not rows:
            return None
        response, items, conversation = rows[0]
        return Stored(jsonutil.loads(response, 0), jsonutil.loads(items, 0), jsonutil.loads(conversation, 0))

    async def delete(self, owner: str, response_id: str) -> bool:
        pending = self._pending.get(response_id)
        if pending is not None and pending.owner == owner:
            await pending.done  # a DELETE right after the stream ended must find the row
        return await self._op("DELETE FROM responses WHERE id = ? AND owner = ?", response_id, owner) > 0

    async def prune(self) -> int | None:
        """Drop what is older than ``max_age`` and all but the newest ``max_items``, in one transaction; returns how
        many responses went, or ``None`` when another instance holds the pruning lock (and is pruning now)."""
        assert self.pool is not None, "the responses store is not running"
        gone: int | None = await self.pool.runInteraction(self._prune, self.reactor.seconds() - self.max_age)
        return gone

    def _prune(self, txn: Any, horizon: float) -> int | None:
        q = self.sql.sql
        if self.sql.prune_lock is not None:  # held until this transaction ends
            txn.execute(self.sql.prune_lock)
            if not txn.fetchone()[0]:
                return None
        txn.execute(q("DELETE FROM responses WHERE created < ?"), (horizon,))
        gone = int(txn.rowcount)
        txn.execute(q("DELETE FROM reasoning WHERE at < ?"), (horizon,))
        txn.execute(q("DELETE FROM responses WHERE id NOT IN (SELECT id FROM responses ORDER BY created DESC LIMIT ?)"),
                    (self.max_items,))
        return gone + int(txn.rowcount)

    def _prune_logged(self) -> Deferred[None]:
        async def run() -> None:
            try:
                gone = await self.prune()
            except Exception:  # a TimerService callback must survive its own errors; the next round retries
                self.log.failure("responses store: pruning failed")
                return
            if gone is None:
                self.log.debug("responses store: another instance is pruning; skipped this round")
            elif gone:
                self.log.info("responses store: pruned {n} old response(s)", n=gone)

        return Deferred.fromCoroutine(run())
