"""The Responses store's SQL dialects (SQLite, PostgreSQL) and ``responses.store_url``: placeholders, schema types,
the upsert, the pruning lock, and a database URL's password kept out of logs, errors and reprs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llamashim.config import ConfigError, ResponsesConfig, load_config, shown_url
from llamashim.dialects.responses.sql import POSTGRES, PRUNE_LOCK, SQLITE, _scrubbed, postgres_database
from llamashim.dialects.responses.store import ResponseStore

SECRET = "pa55-w0rd"
URL = f"postgresql://shim:{SECRET}@db.example:5433/llamashim"
COLUMNS = ("id", "owner", "created", "response")


def test_placeholders_are_the_drivers() -> None:
    """Queries are written once with ?; SQLite keeps it (qmark), psycopg gets %s (format), every one of them."""
    query = "SELECT a FROM t WHERE id = ? AND owner = ? LIMIT ?"
    assert SQLITE.sql(query) == query
    assert POSTGRES.sql(query) == "SELECT a FROM t WHERE id = %s AND owner = %s LIMIT %s"


def test_a_literal_percent_is_refused() -> None:
    """A % in a query would be a placeholder to psycopg: the dialect refuses the query rather than mis-bind it."""
    with pytest.raises(AssertionError):
        POSTGRES.sql("SELECT a FROM t WHERE b LIKE 'x%'")


def test_postgres_schema_types() -> None:
    """PostgreSQL's schema keeps times as DOUBLE PRECISION (its REAL is float4: minutes apart at today's epoch) and
    the JSON documents as BYTEA; every statement is IF NOT EXISTS (it runs on every start of every instance)."""
    schema = POSTGRES.schema()
    assert len(schema) == 4 and all(" IF NOT EXISTS " in s for s in schema)
    assert "created DOUBLE PRECISION NOT NULL" in schema[0] and "at DOUBLE PRECISION NOT NULL" in schema[2]
    assert "response BYTEA NOT NULL" in schema[0] and not any(" REAL " in s or "BLOB" in s for s in schema)


def test_sqlite_schema_is_what_it_was() -> None:
    """SQLite's schema (REAL, BLOB) opens an existing file unchanged: every statement runs, twice, on sqlite3."""
    schema = SQLITE.schema()
    assert "created REAL NOT NULL" in schema[0] and "conversation BLOB NOT NULL" in schema[0]
    db = sqlite3.connect(":memory:")
    for statement in schema + schema:
        db.execute(statement)
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")} == {
        "responses", "responses_created", "reasoning", "reasoning_at"}


def test_upsert_per_dialect() -> None:
    """SQLite replaces with INSERT OR REPLACE; PostgreSQL with ON CONFLICT on the key, updating every other column."""
    assert SQLITE.sql(SQLITE.upsert("responses", COLUMNS, "id")) == (
        "INSERT OR REPLACE INTO responses (id, owner, created, response) VALUES (?, ?, ?, ?)")
    assert POSTGRES.sql(POSTGRES.upsert("responses", COLUMNS, "id")) == (
        "INSERT INTO responses (id, owner, created, response) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
        "SET owner = EXCLUDED.owner, created = EXCLUDED.created, response = EXCLUDED.response")


def test_pruning_lock() -> None:
    """PostgreSQL prunes under a transaction-scoped advisory lock tried (never waited for) with one fixed key, so it
    ends with the transaction even on a pooled connection; SQLite (one process's file) takes none."""
    assert POSTGRES.prune_lock == f"SELECT pg_try_advisory_xact_lock({PRUNE_LOCK})"
    assert -(2**63) <= PRUNE_LOCK < 2**63
    assert SQLITE.prune_lock is None


def test_postgres_database_connects_through_psycopg() -> None:
    """adbapi gets psycopg, the URL as conninfo, a connect timeout, one reconnecting connection; the log gets the URL
    without its password."""
    db = postgres_database(URL, connect_timeout=3.2)
    assert (db.dialect, db.module, db.args, db.file) == (POSTGRES, "psycopg", (URL,), None)
    assert db.kwargs["connect_timeout"] == 3 and db.kwargs["cp_max"] == 1 and db.kwargs["cp_reconnect"] is True
    assert db.shown == "postgresql://shim@db.example:5433/llamashim"


def test_the_url_wins_over_the_path() -> None:
    """A store given a URL uses PostgreSQL whatever its path; without one, the SQLite file."""
    assert ResponseStore(None, "/x/r.sqlite3", 60.0, 10, URL).sql is POSTGRES
    sqlite = ResponseStore(None, "/x/r.sqlite3", 60.0, 10)
    assert sqlite.sql is SQLITE and sqlite.database.file == "/x/r.sqlite3"


@pytest.mark.parametrize(("url", "shown"), [
    (URL, "postgresql://shim@db.example:5433/llamashim"),
    ("postgres://db.example/llamashim", "postgres://db.example/llamashim"),
    (f"postgresql://shim@db.example/ls?sslmode=require&password={SECRET}", "postgresql://shim@db.example/ls"),
    (f"postgresql://sh:im:{SECRET}@[::1]:5432/ls", "postgresql://sh@[::1]:5432/ls"),
])
def test_shown_url_has_no_password(url: str, shown: str) -> None:
    """What the log shows of a database URL: user, host, port and database; never the password (nor the query)."""
    assert shown_url(url) == shown


def test_store_url_from_the_config_file(tmp_path: Path) -> None:
    """responses.store_url is read from the file (empty: none), and a config's repr does not show it."""
    path = tmp_path / "c.yaml"
    path.write_text(f"responses: {{store_url: '{URL}'}}\n")
    config = load_config({"config": str(path)}, {})
    assert config.responses.store_url == URL
    assert SECRET not in repr(config) and SECRET not in repr(config.responses)
    path.write_text("responses: {store_url: ''}\n")
    assert load_config({"config": str(path)}, {}).responses == ResponsesConfig()


@pytest.mark.parametrize(("url", "message"), [
    (f"mysql://shim:{SECRET}@db/x", "expected a postgresql://user:password@host:port/database URL (scheme mysql)"),
    ("db.example/x", "scheme missing"),
    (f"postgresql://shim:{SECRET}@db:5x/x", "postgresql://shim@db:5x/x is not a valid URL (its port?)"),
    (f"postgresql://shim:{SECRET}@db:5432", "postgresql://shim@db:5432 names no database"),
    (5432, "expected a postgresql:// URL, got a int"),
])
def test_a_malformed_store_url_is_one_line_without_the_password(tmp_path: Path, url: object, message: str) -> None:
    """A store_url that is no postgresql:// URL is a configuration error naming the key, never echoing the password."""
    path = tmp_path / "c.yaml"
    path.write_text(f"responses: {{store_url: {url!r}}}\n")  # (a Python repr is YAML for these)
    with pytest.raises(ConfigError) as raised:
        load_config({"config": str(path)}, {})
    text = str(raised.value)
    assert "responses.store_url" in text and message in text and SECRET not in text and "\n" not in text


def test_driver_errors_are_scrubbed() -> None:
    """A driver's error, as a start-up error shows it: on one line, with the URL's password starred out."""
    error = f'connection failed: password authentication failed for user "shim"\nDETAIL: "{SECRET}" tried'
    assert _scrubbed(error, URL) == (
        'connection failed: password authentication failed for user "shim"; DETAIL: "***" tried')
