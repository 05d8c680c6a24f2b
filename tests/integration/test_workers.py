"""``server.workers``: the real daemon (``twistd -n llamashim --workers 2``) supervising two worker processes on one
loopback port, in front of the fake llama-server as a process — where only the wire (and the kernel's
``SO_REUSEPORT`` spreading) shows the behaviour: both workers answer, a killed worker is replaced while requests keep
succeeding, SIGTERM drains every worker, and /metrics and /status.json from either worker describe both."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.daemon import ROOT, _wait_listening, free_port, running_fake, stop_process

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
WORKER = re.compile(r"index=(\d+); pid=(\d+)")


@dataclass
class Workers:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    out: Path

    def log(self) -> str:
        return self.out.read_text(errors="replace")


@contextmanager
def running_workers(upstream: str, tmp: Path, *args: str) -> Iterator[Workers]:
    """``twistd -n llamashim --workers 2`` on a free port, configured by a file (the workers read it too)."""
    port = free_port()
    config = tmp / "llamashim.yaml"
    config.write_text(f"upstream: {{url: {upstream}}}\nresponses: {{store_path: {tmp / 'responses.sqlite3'}}}\n"
                      "shutdown: {drain_timeout: 10}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("UPSTREAM", "LISTEN_PORT", "LISTEN_HOST")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "llamashim", "--config", str(config),
           "--listen", f"tcp:{port}:interface=127.0.0.1", "--workers", "2", *args]
    out = tmp / f"workers-{port}.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, time.monotonic() + 30)
        yield Workers(f"http://127.0.0.1:{port}", port, proc, out)
    finally:
        stop_process(proc, grace=20)


def call(url: str, path: str = "/v1/chat/completions", body: bytes | None = CHAT) -> tuple[int, int, int, bytes]:
    """One request on a new connection: (status, worker index, worker pid, body)."""
    request = urllib.request.Request(url + path, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        found = WORKER.fullmatch(response.headers["x-llamashim-worker"])
        assert found is not None
        return response.status, int(found[1]), int(found[2]), response.read()


def until_both(url: str, path: str = "/v1/chat/completions", body: bytes | None = CHAT) -> dict[int, int]:
    """Requests until both workers have answered one (each listens once it has started; the kernel spreads
    connections by a hash): index → pid."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, index, pid, _ = call(url, path, body)
        assert status == 200
        seen[index] = pid
        if len(seen) == 2:
            return seen
    raise AssertionError(f"only workers {seen} answered in 30 s")


def until_logged(daemon: Workers, pattern: str) -> re.Match[str]:
    """The supervisor's log line matching ``pattern``, once it is written."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(pattern, daemon.log())
        if found is not None:
            return found
        time.sleep(0.02)  # polling another process's log, with a deadline
    raise AssertionError(f"never logged: {pattern}")


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped has closed its sockets too)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[str]:
    with running_fake(tmp=tmp_path) as process:
        yield process.url


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and SO_REUSEPORT: Linux")


def test_two_workers_answer_on_one_port(fake: str, tmp_path: Path) -> None:
    """With --workers 2, chat requests on one port are answered by two processes, both children of twistd."""
    with running_workers(fake, tmp_path) as daemon:
        seen = until_both(daemon.url)
        assert set(seen) == {0, 1} and seen[0] != seen[1]
        assert {parent_of(pid) for pid in seen.values()} == {daemon.proc.pid}
        assert "each with its own SO_REUSEPORT socket" in daemon.log()


def test_a_killed_worker_is_replaced_while_requests_succeed(fake: str, tmp_path: Path) -> None:
    """SIGKILL to a worker: every request still succeeds, and a new process takes its index after a 1 s back-off."""
    with running_workers(fake, tmp_path) as daemon:
        seen = until_both(daemon.url)
        os.kill(seen[1], signal.SIGKILL)
        # Once the supervisor has seen it die, its socket is closed: the kernel sends new connections to the other
        # (a connection caught in the dead socket's accept queue in the instant it dies is reset; README, Workers).
        until_logged(daemon, rf"worker 1 \(pid {seen[1]}\) was killed by signal 9 after [\d.]+ s; restarting it in 1 s")
        deadline = time.monotonic() + 20
        replaced = None
        while replaced is None and time.monotonic() < deadline:  # every request meanwhile must succeed
            status, index, pid, body = call(daemon.url)
            assert status == 200 and b"choices" in body
            assert pid != seen[1]
            if index == 1:
                replaced = pid
        assert replaced is not None and parent_of(replaced) == daemon.proc.pid


def test_sigterm_drains_every_worker_and_exits(tmp_path: Path) -> None:
    """SIGTERM to the supervisor: a stream in flight still ends with [DONE], the workers and the supervisor exit
    (as one process does: twistd's clean stop on SIGTERM), and the workers' private directory is gone."""
    with running_fake("--chunk-interval", "0.2", "--pieces", "10", tmp=tmp_path) as upstream, \
            running_workers(upstream.url, tmp_path) as daemon:
        pids = until_both(daemon.url, "/health", None)
        directory = until_logged(daemon, r"their shared state in (\S+)")
        connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        connection.request("POST", "/v1/chat/completions", STREAM, {"content-type": "application/json"})
        response = connection.getresponse()
        first = response.read1()  # the stream has begun (the role chunk)
        daemon.proc.send_signal(signal.SIGTERM)
        rest = response.read()
        assert first and rest.endswith(b"data: [DONE]\n\n")
        assert daemon.proc.wait(30) in (0, -signal.SIGTERM)
        for pid in pids.values():
            assert not Path(f"/proc/{pid}").exists()
        log = daemon.log()
        assert log.count("was killed by signal 15") + log.count("exited with status 0") == 2, log
        assert directory is not None and not Path(directory[1]).exists()


def test_metrics_and_status_from_either_worker_cover_both(fake: str, tmp_path: Path) -> None:
    """/metrics scraped from each worker counts the chat requests both served; /status.json lists both pids."""
    with running_workers(fake, tmp_path) as daemon:
        until_both(daemon.url)  # both served at least one chat request (two or more in all)
        for _ in range(10):
            assert call(daemon.url)[0] == 200
        scraped: dict[int, float] = {}
        for _ in range(200):
            _, index, _, text = call(daemon.url, "/metrics", None)
            found = re.search(rb'llamashim_requests_total\{dialect="openai",route="chat",status="200"\} (\S+)', text)
            assert found is not None
            scraped[index] = float(found[1])
            if len(scraped) == 2:
                break
        assert set(scraped) == {0, 1} and scraped[0] == scraped[1] >= 12
        status = json.loads(call(daemon.url, "/status.json", None)[3])
        assert sorted(w["index"] for w in status["workers"]["workers"]) == [0, 1]
        assert len({w["pid"] for w in status["workers"]["workers"]}) == 2


def test_previous_response_id_continues_on_the_other_worker(fake: str, tmp_path: Path) -> None:
    """A response stored by one worker (SQLite, WAL) is continued by a request the other worker answers."""
    with running_workers(fake, tmp_path) as daemon:
        _, first, _, body = call(daemon.url, "/v1/responses", json.dumps({"model": "m", "input": "hi"}).encode())
        stored = json.loads(body)["id"]
        follow_up = json.dumps({"model": "m", "input": "again", "previous_response_id": stored}).encode()
        for _ in range(200):
            status, index, _, body = call(daemon.url, "/v1/responses", follow_up)
            assert status == 200 and json.loads(body)["previous_response_id"] == stored
            if index != first:
                return
        raise AssertionError("the other worker never answered")


def test_workers_stop_when_the_supervisor_is_killed(fake: str, tmp_path: Path) -> None:
    """SIGKILL to the supervisor (no chance to stop them): its pipe closes and both workers stop, no orphans."""
    with running_workers(fake, tmp_path) as daemon:
        pids = until_both(daemon.url, "/health", None)
        directory = until_logged(daemon, r"their shared state in (\S+)")[1]
        daemon.proc.kill()
        daemon.proc.wait(10)
        deadline = time.monotonic() + 30
        while not all(gone(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for other processes to exit, with a deadline
        assert all(gone(pid) for pid in pids.values())
        assert "the worker supervisor is gone; stopping" in daemon.log()
        shutil.rmtree(directory)  # the supervisor had no chance to remove it
