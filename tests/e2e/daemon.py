"""Run the real daemon (``twistd -n llamashim``) as a subprocess for end-to-end tests, and wait for processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from llamashim.upstream.supervisor import free_port as free_port  # (the e2e modules import it from here)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Daemon:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    stdout_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


StartShim = Callable[..., AbstractContextManager[Daemon]]  # shim_daemon: (upstream, *flags, sections=, env=)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until the daemon accepts connections (it logs before it listens), failing fast if it died."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llamashim exited with {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port for readiness, with a deadline; not test synchronisation
    raise TimeoutError(f"llamashim did not listen on {port} in time")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until a llama-server's /health says ok, failing fast if it died."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200 and json.load(r).get("status") == "ok":
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)  # polling an external process for readiness, with a deadline
    raise TimeoutError(f"llama-server did not become healthy at {url} in time")


@contextmanager
def running_daemon(
    upstream: str | None, *args: str, env: dict[str, str] | None = None, tmp: Path | None = None
) -> Iterator[Daemon]:
    port = free_port()
    log_dir = tmp or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"llamashim-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if k not in ("UPSTREAM", "LISTEN_PORT", "LISTEN_HOST")}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    cmd = [
        str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "--logfile", str(log_path),
        "llamashim", "--listen", f"tcp:{port}:interface=127.0.0.1",
        *(["--upstream", upstream] if upstream else []), *args,
    ]
    stdout_path = log_path.with_suffix(".out")
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc, time.monotonic() + 30)
        yield Daemon(f"http://127.0.0.1:{port}", port, proc, log_path, stdout_path)
    except RuntimeError:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"llamashim failed to start: {err}") from None
    finally:
        stop_process(proc)


@dataclass
class FakeProcess:
    url: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path

    def requests(self, path: str = "/v1/chat/completions") -> list[int]:
        """The number of tools each ``POST path`` it received offered, in order (from its request lines)."""
        lines = self.stdout_path.read_text(errors="replace").splitlines()
        return [int(line.rpartition("tools=")[2]) for line in lines if line.startswith(f"request POST {path} ")]

    def log(self) -> str:
        """Everything it printed (a line per request, its errors)."""
        return self.stdout_path.read_text(errors="replace")


@contextmanager
def running_fake(*args: str, tmp: Path) -> Iterator[FakeProcess]:
    """The project's fake llama-server as its own process (``python -m llamashim.testing.fake_llama``), for tests
    that need a scripted upstream behind the real daemon and real clients (its flags: ``--tools-prefill``, …)."""
    port = free_port()
    stdout_path = tmp / f"fake-llama-{port}.out"
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llamashim.testing.fake_llama", "--port", str(port), *args],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, time.monotonic() + 30)
        yield FakeProcess(f"http://127.0.0.1:{port}", proc, stdout_path)
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
