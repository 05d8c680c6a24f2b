"""The supervised llama-server, with a stand-in child: readiness, 503 until ready, restart with back-off, no orphan."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogPublisher

from llamashim import jsonutil
from llamashim.config import SpawnConfig
from llamashim.upstream.supervisor import LlamaSupervisor
from tests.integration.support import config, fetch, reactor, start_shim, timeout

# A stand-in for llama-server: serves /health (503 "loading" first, then ok) and chat; exits on demand.
CHILD = r'''
import http.server, json, os, sys, time
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
if "--exit-at-once" in args:
    print("fatal: cannot load model", flush=True)
    sys.exit(3)
started = time.monotonic()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _send(self, code, value):
        body = json.dumps(value).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health":
            if time.monotonic() - started < 0.3:
                return self._send(503, {"error": {"code": 503, "message": "Loading model"}})
            return self._send(200, {"status": "ok"})
        if self.path == "/die":
            self._send(200, {}); os._exit(7)
        self._send(200, {"pid": os.getpid()})
print("stand-in llama-server listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "llama-server"
    path.write_text(f"#!{sys.executable}\n{CHILD}")
    path.chmod(0o755)
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def spawn_config(child: Path, *args: str) -> Any:
    cfg = config("http://unused:1")
    import dataclasses

    spawn = SpawnConfig(model="/models/x.gguf", args=tuple(args), binary=str(child))
    return dataclasses.replace(cfg, upstream=dataclasses.replace(cfg.upstream, spawn=spawn))


def events_until(predicate: Any) -> Deferred[dict[str, Any]]:
    d: Deferred[dict[str, Any]] = Deferred()

    def observe(event: dict[str, Any]) -> None:
        if not d.called and predicate(event):
            globalLogPublisher.removeObserver(cast(ILogObserver, observe))
            d.callback(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observe))
    return d


def is_ready(e: dict[str, Any]) -> bool:
    return e.get("log_namespace") == "llamashim.upstream.supervisor" and "ready" in e.get("log_format", "")


@pytest_twisted.ensureDeferred
async def test_ready_then_proxied_restarted_and_stopped(child: Path) -> None:
    """The child is proxied once ready, restarted after it dies (503 meanwhile), and none outlives stop."""
    ready = events_until(is_ready)
    shim = await start_shim(spawn_config(child))
    supervisor = shim.service.supervisor
    assert supervisor is not None
    try:
        first_pid = supervisor.pid
        assert first_pid is not None
        status, _, body = await fetch(shim.url + "/health")
        if supervisor.state != "ready":
            assert status == 503 and "starting" in jsonutil.loads(body)["reason"]
        await timeout(ready)
        status, _, body = await fetch(shim.url + "/props")
        assert status == 200 and jsonutil.loads(body)["pid"] == first_pid
        # the child dies: logged with its exit status, restarted after a back-off, 503 meanwhile
        died = events_until(lambda e: "restarting in" in e.get("log_format", ""))
        ready_again = events_until(is_ready)
        await fetch(shim.url + "/die")
        event = await timeout(died)
        assert "exited with status 7" in event["how"]
        status, _, body = await fetch(shim.url + "/props")
        assert status == 503 and "exited with status 7" in jsonutil.loads(body)["error"]["message"]
        await timeout(ready_again)
        assert supervisor.pid is not None and supervisor.pid != first_pid and alive(supervisor.pid)
        status, _, body = await fetch(shim.url + "/props")
        assert status == 200 and jsonutil.loads(body)["pid"] == supervisor.pid
        last_pid = supervisor.pid
        assert last_pid is not None
    finally:
        await shim.stop()
    assert not alive(first_pid) and not alive(last_pid)  # no orphan


@pytest_twisted.ensureDeferred
async def test_child_that_cannot_start_is_retried_with_growing_back_off(child: Path) -> None:
    """A child that exits at once is restarted with doubling back-off capped at max_backoff; its status is kept."""
    delays: list[float] = []

    def observe(event: dict[str, Any]) -> None:
        if "restarting in" in event.get("log_format", ""):
            delays.append(event["delay"])

    third = events_until(lambda e: "restarting in" in e.get("log_format", "") and len(delays) >= 2)
    globalLogPublisher.addObserver(cast(ILogObserver, observe))
    supervisor = LlamaSupervisor(reactor, SpawnConfig("/m.gguf", ("--exit-at-once",), str(child)), max_backoff=0.4)
    supervisor.backoff = 0.1
    supervisor.startService()
    try:
        event = await timeout(third)
        assert "exited with status 3" in event["how"]
        assert delays[:2] == [0.1, 0.2] and event["delay"] == 0.4  # doubling, capped by max_backoff
        assert supervisor.reason is not None and "status 3" in supervisor.reason
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observe))
        await supervisor.stopService()


def test_url_and_spawn_together_is_a_start_up_error(tmp_path: Path) -> None:
    """upstream.url together with upstream.spawn is a ConfigError when the config is loaded."""
    from llamashim.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("upstream: {url: 'http://x:1', spawn: {model: /m.gguf}}\n")
    with pytest.raises(ConfigError, match="cannot be used together"):
        load_config({"config": str(path)}, {})
