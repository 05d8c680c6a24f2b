"""The whole suite: state (the Responses store's default SQLite file) lives in a temporary directory, never in
the developer's ``~/.local/state`` — daemons the tests start inherit it."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ["STATE_DIRECTORY"] = tempfile.mkdtemp(prefix="llamashim-test-state-")
