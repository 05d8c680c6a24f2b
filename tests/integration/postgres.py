"""A real PostgreSQL for the tests, from Debian's package (``./run-tests`` installs ``postgresql`` when it is missing).

:func:`start_postgres` runs ``initdb`` into a new temporary directory (trust authentication, superuser ``postgres``)
and ``pg_ctl start`` on a free loopback port, its Unix socket in that directory (never /run/postgresql); ``stop``
stops it (``pg_ctl stop -m fast``) and removes the directory. PostgreSQL refuses to run as root: as root, both run as
``nobody``, who owns the directory. Each test takes a database of its own (:meth:`Postgres.new_database`), so tests
never see each other's rows. The fixtures (``postgres`` for the session, ``pg_url`` per test) are in conftest.py.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from llamashim.upstream.supervisor import free_port

START_TIMEOUT = 60


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    assert found, "Debian's postgresql package is needed (./run-tests installs it with apt)"
    return Path(found[-1]).parent


def _as_owner(argv: list[str]) -> list[str]:
    """``argv`` as the user who owns the data directory: ``nobody`` when we are root (initdb refuses root)."""
    return ["runuser", "-u", "nobody", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Postgres:
    """A running PostgreSQL: its directory, port and bin directory; ``url`` for one of its databases."""

    root: Path
    port: int
    bin: Path
    _databases: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""  # trust authentication: any password is accepted
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database's name."""
        name = f"test_{len(self._databases) + 1}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        self._databases.append(name)
        return name

    def restart(self) -> None:
        """Restart the server (fast: every open connection is ended), same port and data."""
        subprocess.run(_as_owner([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w",
                                  "-l", str(self.root / "server.log"), "restart"]),
                       capture_output=True, timeout=START_TIMEOUT, check=True)

    def stop(self) -> None:
        """Stop the server (fast: open connections are ended) and remove its directory."""
        subprocess.run(_as_owner([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w",
                                  "stop"]), capture_output=True, timeout=START_TIMEOUT, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres:
    """initdb and start a PostgreSQL of our own (see the module's docstring)."""
    bin_dir = binaries()
    root = Path(tempfile.mkdtemp(prefix="llamashim-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    data = root / "data"
    run = subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                    "-E", "UTF8", "--no-sync"]), capture_output=True, text=True, timeout=START_TIMEOUT)
    if run.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {run.stderr.strip()}")
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    run = subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                                    "-t", str(START_TIMEOUT), "-o", options, "start"]),
                         capture_output=True, text=True, timeout=START_TIMEOUT + 10)
    server = Postgres(root, port, bin_dir)
    if run.returncode != 0:
        log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
        server.stop()
        raise RuntimeError(f"pg_ctl start failed: {run.stderr.strip()} {log[-2000:]}")
    return server
