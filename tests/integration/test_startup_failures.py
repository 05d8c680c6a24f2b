"""Start-up failures through the real ``twistd -n llamashim`` (and ``llamashim serve``): one line, a non-zero exit,
no traceback, no pid file — for a port in use, bad TLS files, a missing socket directory, a config file that cannot
be read, a spawned llama-server binary or model that does not exist."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamashim import preflight
from llamashim.config import SpawnConfig
from tests.e2e.daemon import _wait_listening, free_port, stop_process
from tests.integration.certs import make_certs

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def start(
    *args: str, cwd: Path, command: tuple[str, ...] = (str(BIN / "twistd"), "-n")
) -> subprocess.CompletedProcess[str]:
    """Run the daemon in ``cwd`` (default pid file: ``cwd/twistd.pid``) until it exits (these all must, at once)."""
    full = [*command, *(["llamashim"] if command[0].endswith("twistd") else []), *args]
    return subprocess.run(full, capture_output=True, text=True, timeout=60, cwd=cwd)


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other process is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_port_in_use_is_one_line_and_exit_1(busy_port: int, tmp_path: Path) -> None:
    """A listener on a port another process holds: `cannot start` naming the port, exit 1, no pid file left."""
    result = start("--listen", f"tcp:{busy_port}:interface=127.0.0.1", "--upstream", "http://127.0.0.1:9",
                   cwd=tmp_path)
    line = assert_one_line(result, 1, "llamashim: cannot start:", f"port {busy_port}", "already in use")
    assert line.startswith("llamashim: cannot start: listener ")
    assert not (tmp_path / "twistd.pid").exists()


def test_llamashim_serve_fails_exactly_like_twistd(busy_port: int, tmp_path: Path) -> None:
    """`llamashim serve` is twistd: the same port failure gives the same line and exit status."""
    args = ("--listen", f"tcp:{busy_port}:interface=127.0.0.1", "--upstream", "http://127.0.0.1:9")
    twistd = start(*args, cwd=tmp_path, command=(str(BIN / "twistd"), "-n", "--pidfile="))
    serve = start(*args, cwd=tmp_path, command=(str(BIN / "llamashim"), "serve"))
    assert (serve.returncode, serve.stderr) == (twistd.returncode, twistd.stderr)
    assert serve.returncode == 1


def test_llamashim_serve_serves(tmp_path: Path) -> None:
    """`llamashim serve --listen ...` runs the daemon in the foreground; it answers until it is stopped."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "llamashim"), "serve", "--listen", f"tcp:{port}:interface=127.0.0.1",
                             "--upstream", "http://127.0.0.1:9"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc, time.monotonic() + 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.read() == b"Ollama is running"
    finally:
        stop_process(proc)
    assert not (tmp_path / "twistd.pid").exists()


@pytest.mark.parametrize(
    ("which", "needles"),
    [
        ("missing", ("cannot read the TLS private key", "No such file or directory")),
        ("not-pem", ("holds no PEM private key",)),
        ("cert-not-pem", ("holds no PEM certificate",)),
        ("mismatch", ("does not belong to the certificate",)),
    ],
)
def test_bad_tls_files_are_one_line(which: str, needles: tuple[str, ...], tmp_path: Path) -> None:
    """An ssl: listener whose key or certificate is missing, not PEM, or not one pair: one line naming the file."""
    certs = make_certs(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    key, cert = {
        "missing": (tmp_path / "nope.key", certs.cert),
        "not-pem": (junk, certs.cert),
        "cert-not-pem": (certs.key, junk),
        "mismatch": (certs.key, certs.ca),
    }[which]
    result = start("--listen", f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1",
                   "--upstream", "http://127.0.0.1:9", cwd=tmp_path)
    assert_one_line(result, 1, "llamashim: cannot start:", *needles)


def test_unix_socket_in_a_missing_directory(tmp_path: Path) -> None:
    """A unix: listener in a directory that does not exist: one line naming the directory."""
    result = start("--listen", f"unix:{tmp_path}/no/such/dir/llamashim.sock", "--upstream", "http://127.0.0.1:9",
                   cwd=tmp_path)
    assert_one_line(result, 1, f"directory {tmp_path}/no/such/dir does not exist")


def test_unreadable_config_file(tmp_path: Path) -> None:
    """A config file that cannot be read (here: a directory) is a configuration error, exit 2."""
    result = start("--config", str(tmp_path), cwd=tmp_path)
    assert_one_line(result, 2, "configuration error", "cannot be read")


def test_spawned_model_that_does_not_exist(tmp_path: Path) -> None:
    """--spawn-model with a file that does not exist stops start-up instead of restarting llama-server forever."""
    result = start("--spawn-model", str(tmp_path / "missing.gguf"), "--listen", "tcp:0:interface=127.0.0.1",
                   cwd=tmp_path)
    assert_one_line(result, 1, "cannot start", "missing.gguf does not exist")


def test_spawned_binary_that_does_not_exist(tmp_path: Path) -> None:
    """upstream.spawn.binary that does not exist: one line naming it and the key."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    config = tmp_path / "c.yaml"
    config.write_text(f"upstream:\n  spawn: {{model: {model}, binary: {tmp_path}/bin/llama-server}}\n")
    result = start("--config", str(config), "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path)
    assert_one_line(result, 1, f"{tmp_path}/bin/llama-server does not exist", "upstream.spawn.binary")


# -- the checks themselves ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "kind", "args"),
    [
        ("tcp:8080:interface=127.0.0.1", "tcp", {"port": "8080", "interface": "127.0.0.1"}),
        ("tcp6:8080:interface=\\:\\:1", "tcp6", {"port": "8080", "interface": "::1"}),
        ("ssl:443:privateKey=k.pem:certKey=c.pem", "ssl", {"port": "443", "privateKey": "k.pem", "certKey": "c.pem"}),
        ("unix:/run/l.sock:mode=660", "unix", {"address": "/run/l.sock", "mode": "660"}),
        ("systemd:domain=INET:index=0", "systemd", {"domain": "INET", "index": "0"}),
    ],
)
def test_split_endpoint(description: str, kind: str, args: dict[str, str]) -> None:
    """Endpoint strings split as Twisted reads them (positional arguments by kind, `\\:` a literal colon)."""
    assert preflight.split_endpoint(description) == (kind, args)


def test_a_free_port_and_a_live_unix_socket(tmp_path: Path) -> None:
    """A free port passes (and is free again after); a unix socket another process serves does not pass."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    preflight.check_listener(f"tcp:{port}:interface=127.0.0.1")
    preflight.check_listener(f"tcp:{port}:interface=127.0.0.1")
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        with pytest.raises(preflight.StartupError, match="another process is serving"):
            preflight.check_listener(f"unix:{path}")
    preflight.check_listener(f"unix:{path}")  # a stale socket file: Twisted replaces it


def test_a_binary_that_is_not_executable(tmp_path: Path) -> None:
    """A llama-server binary that exists but cannot be executed is named as such."""
    binary, model = tmp_path / "llama-server", tmp_path / "m.gguf"
    binary.write_text("#!/bin/sh\n")
    model.write_bytes(b"GGUF")
    with pytest.raises(preflight.StartupError, match="is not executable"):
        preflight.check_spawn("default", SpawnConfig(str(model), binary=str(binary)))
    binary.chmod(0o755)
    preflight.check_spawn("default", SpawnConfig(str(model), binary=str(binary)))


def test_an_unreachable_store_database_is_one_line(tmp_path: Path) -> None:
    """responses.store_url to a port nothing listens on: `cannot start` naming the URL without its password, exit 1."""
    config = tmp_path / "c.yaml"
    config.write_text(f"responses: {{store_url: 'postgresql://shim:s3cret-pw@127.0.0.1:{free_port()}/llamashim'}}\n")
    result = start("--config", str(config), "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path)
    line = assert_one_line(result, 1, "llamashim: cannot start: responses.store_url postgresql://shim@127.0.0.1:",
                           "/llamashim: connection failed")
    assert "s3cret-pw" not in result.stderr + result.stdout, line
    assert not (tmp_path / "twistd.pid").exists()


@pytest.mark.parametrize(("url", "status", "needle"), [
    ("postgresql://shim:s3cret-pw@db:port/llamashim", 2, "configuration error: responses.store_url in "),
    ("postgresql://shim:s3cret-pw@127.0.0.1/llamashim?no_such_option=1", 1, 'invalid URI query parameter'),
])
def test_a_malformed_store_url_is_one_line(tmp_path: Path, url: str, status: int, needle: str) -> None:
    """A store_url that is no URL is a configuration error (exit 2); one psycopg cannot use stops start-up (exit 1);
    both in one line without the password."""
    config = tmp_path / "c.yaml"
    config.write_text(f"responses: {{store_url: '{url}'}}\n")
    result = start("--config", str(config), "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path)
    assert_one_line(result, status, needle)
    assert "s3cret-pw" not in result.stderr + result.stdout
