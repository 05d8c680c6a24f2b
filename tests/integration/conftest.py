"""The integration tier's fixtures (the helpers behind them are in :mod:`tests.integration.support`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import ShimFixture


@pytest.fixture
def shims(tmp_path: Path) -> Iterator[ShimFixture]:
    """Starts in-memory shims for one test (one clock, stores under ``tmp_path``) and stops them all afterwards."""
    fixture = ShimFixture(tmp_path)
    yield fixture
    fixture.close()
