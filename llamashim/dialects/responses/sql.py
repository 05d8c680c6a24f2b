"""The SQL the Responses store speaks, per database: SQLite (one file) and PostgreSQL (several instances).

The store's queries are written once, with ``?`` placeholders; a :class:`SqlDialect` turns them into its driver's
placeholders, writes the schema with its own column types, the upsert of a response, and the lock that lets only one
of several instances prune at a time. That is every difference there is, in one place, instead of branches in the
queries. :class:`Database` adds how ``twisted.enterprise.adbapi`` connects (its DB-API module and arguments) and a
name for the log that never shows a password.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llamashim.config import shown_url

# pg_try_advisory_xact_lock's key for pruning: any fixed 64-bit number, the same in every instance (the eight ASCII
# bytes "llamshpr" read as one big-endian number).
PRUNE_LOCK = int.from_bytes(b"llamshpr", "big")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, created {float} NOT NULL, "
    "response {bytes} NOT NULL, input_items {bytes} NOT NULL, conversation {bytes} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_created ON responses (created)",
    "CREATE TABLE IF NOT EXISTS reasoning (owner TEXT NOT NULL, keys TEXT NOT NULL, reasoning TEXT NOT NULL, "
    "at {float} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS reasoning_at ON reasoning (at)",
)


@dataclass(frozen=True)
class SqlDialect:
    """How one database spells the store's SQL."""

    name: str
    placeholder: str  # the driver's paramstyle: "?" (qmark) or "%s" (format)
    float_type: str  # seconds since 1970: PostgreSQL's REAL has 24 bits, minutes apart; DOUBLE PRECISION is needed
    bytes_type: str  # the JSON documents, as bytes
    replace_verb: str | None  # SQLite's INSERT OR REPLACE; None: the standard ON CONFLICT ... DO UPDATE
    prune_lock: str | None  # a query answering one boolean: whether this transaction may prune (None: always)

    def sql(self, query: str) -> str:
        """``query`` (written with ``?`` placeholders and no ``%``) in this dialect's placeholders."""
        assert "%" not in query, "a literal % would be a placeholder for a format-style driver"
        return query.replace("?", self.placeholder)

    def schema(self) -> list[str]:
        """The statements that create the tables and indexes, each a no-op when it exists (run on every start)."""
        return [s.format(float=self.float_type, bytes=self.bytes_type) for s in _SCHEMA]

    def upsert(self, table: str, columns: Sequence[str], key: str) -> str:
        """Insert a row, replacing the one with the same ``key`` (with ``?``, as every query, for :meth:`sql`)."""
        values = ", ".join("?" * len(columns))
        if self.replace_verb is not None:
            return f"{self.replace_verb} INTO {table} ({', '.join(columns)}) VALUES ({values})"
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
                f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


SQLITE = SqlDialect("sqlite", "?", "REAL", "BLOB", "INSERT OR REPLACE", None)
POSTGRES = SqlDialect("postgresql", "%s", "DOUBLE PRECISION", "BYTEA", None,
                      f"SELECT pg_try_advisory_xact_lock({PRUNE_LOCK})")


@dataclass(frozen=True)
class Database:
    """Where the store lives: its dialect, adbapi's DB-API module and connection arguments, and what the log calls
    it (a file's path; a URL without its password)."""

    dialect: SqlDialect
    module: str
    shown: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    file: str | None = None  # SQLite's file, whose directory is made on start


def postgres_database(url: str, connect_timeout: float = 10.0) -> Database:
    """A PostgreSQL database through psycopg (the ``postgres`` extra); adbapi reconnects a connection it lost. One
    connection per instance, as for SQLite: the store's work runs in the order it was asked for (the schema before
    the first read or prune), and its load — a write per stored response, a read per continued one — is small."""
    return Database(POSTGRES, "psycopg", shown_url(url), (url,), dict(
        connect_timeout=max(1, round(connect_timeout)), application_name="llamashim",
        cp_min=1, cp_max=1, cp_reconnect=True, cp_noisy=False))



def unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why the PostgreSQL database at ``url`` cannot be used, in one line without its password; ``None`` when a
    connection opens and answers (asked once at start-up, before twistd listens; blocking is fine there)."""
    try:
        import psycopg
    except ImportError:
        return "needs psycopg, which is not installed (pip install 'llamashim[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout)), application_name="llamashim") as db:
            db.execute("SELECT 1")
    except psycopg.Error as e:
        return _scrubbed(str(e), url) or type(e).__name__
    return None


def _scrubbed(message: str, url: str) -> str:
    """``message`` on one line, with ``url``'s password (if it has one) nowhere in it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    return line.replace(password, "***") if password else line
