"""The integration tier's fixtures (the helpers behind them are in :mod:`tests.integration.support`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.postgres import Postgres, start_postgres
from tests.integration.support import ShimFixture


@pytest.fixture
def shims(tmp_path: Path) -> Iterator[ShimFixture]:
    """Starts in-memory shims for one test (one clock, stores under ``tmp_path``) and stops them all afterwards."""
    fixture = ShimFixture(tmp_path)
    yield fixture
    fixture.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL (Debian's), started once for the session in a temporary directory and stopped after it."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """The URL of a new, empty database on the session's PostgreSQL (each test its own)."""
    return postgres.url(postgres.new_database())
