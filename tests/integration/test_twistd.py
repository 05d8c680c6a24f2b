"""The real command line: ``twistd -n llamashim`` help, start-up errors, and wiring of ``makeService``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import endpoints
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource
from twisted.web.server import Site

from llamashim.config import FLAGS, ConfigError
from llamashim.service import LlamashimService, listener
from llamashim.tap import Options, makeService

TWISTD = str(Path(sys.executable).with_name("twistd"))
ROOT = Path(__file__).resolve().parents[2]


def twistd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "llamashim", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )


def test_help_lists_every_option() -> None:
    """twistd llamashim --help exits 0 and lists every documented option, which are the flags config declares."""
    result = twistd("--help")
    assert result.returncode == 0
    documented = ("--config", "--listen", "--upstream", "--ca-file", "--insecure", "--thinking-mode",
                  "--tool-streaming", "--verbose", "--spawn-model", "--spawn-args", "--workers")
    assert {f"--{f.name}" for f in FLAGS if f.name} == set(documented)
    for option in documented:
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "file_text", "needle"),
    [
        (["--config", "/nonexistent/llamashim.yaml"], None, "/nonexistent/llamashim.yaml"),
        (["--config", "FILE"], "upstream: {urll: http://x}\n", "unknown key upstream.urll"),
        (["--thinking-mode", "loud"], None, "'loud' is not one of"),
        (["--listen", "bogus:1"], None, "bogus:1"),
        (["--ca-file", "/etc/hostname", "--insecure"], None, "--ca-file and --insecure"),
    ],
)
def test_bad_configuration_is_one_line_and_non_zero(
    tmp_path: Path, args: list[str], file_text: str | None, needle: str
) -> None:
    """Bad configuration exits non-zero with one 'configuration error' line naming it, and no traceback."""
    if file_text is not None:
        path = tmp_path / "c.yaml"
        path.write_text(file_text)
        args = [str(path) if a == "FILE" else a for a in args]
    result = twistd(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llamashim: configuration error:") and needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_make_service_wires_listeners() -> None:
    """makeService builds a LlamashimService with one listener per --listen and a site."""
    options = Options()
    options.parseOptions(
        ["--listen", "tcp:0:interface=127.0.0.1", "--listen", "unix:/tmp/llamashim-test.sock", "--upstream",
         "http://127.0.0.1:9"]
    )
    svc = makeService(options, MemoryReactorClock())
    assert isinstance(svc, LlamashimService)
    assert len(list(svc.listening)) == 2
    assert svc.site is not None


def test_each_endpoint_string_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """makeService turns each --listen endpoint string into an endpoint exactly once (TCP with a backlog of 1024)."""
    parsed: list[str] = []

    def recording(reactor: Any, description: str) -> Any:
        parsed.append(description)
        return serverFromString(reactor, description)

    monkeypatch.setattr(endpoints, "serverFromString", recording)
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--listen", "unix:/tmp/llamashim-once.sock",
                          "--upstream", "http://127.0.0.1:9"])
    makeService(options, MemoryReactorClock())
    assert parsed == ["tcp:0:interface=127.0.0.1:backlog=1024", "unix:/tmp/llamashim-once.sock"]


@pytest.mark.parametrize(
    ("description", "error", "needle"),
    [
        ("bogus:1", ConfigError, "listener 'bogus:1' is not a valid endpoint"),
        ("systemd:domain=INET:index=0", ConfigError, "LISTEN_FDS"),
        ("tcp:0:interface=127.0.0.1:nonsense=1", ConfigError, "is not a valid endpoint"),
    ],
)
def test_an_endpoint_twisted_cannot_use_is_one_line(description: str, error: type[Exception], needle: str) -> None:
    """service.listener says in one line why an endpoint string cannot be listened on, naming it as given."""
    with pytest.raises(error) as e:
        listener(description, Site(Resource()), MemoryReactorClock())
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_systemd_listener_without_a_socket_is_a_clear_error() -> None:
    """A systemd: listener without LISTEN_FDS exits 2 with an error naming LISTEN_FDS, and no traceback."""
    result = twistd("--listen", "systemd:domain=INET:index=0")
    assert result.returncode == 2
    assert "LISTEN_FDS" in result.stderr and "Traceback" not in result.stderr


SERVE_INHERITED = """
import os, socket, sys
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(8)
print(sock.getsockname()[1], flush=True)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "llamashim.socket"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_socket_handed_over_by_systemd_is_served() -> None:
    """A listening socket passed as fd 3 with LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID (as systemd does) is served."""
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_INHERITED, TWISTD, "-n", "--pidfile=", "--logfile=-", "llamashim",
         "--listen", "systemd:domain=INET:index=0", "--upstream", "http://127.0.0.1:9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(), cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        # The socket is listening before twistd starts, so this connects at once and waits for the answer.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert r.read() == b"Ollama is running"
    finally:
        proc.terminate()
        proc.wait(20)
