"""``server.workers`` > 1: the twistd process becomes a supervisor of N worker processes.

Each worker is a whole llamashim — ``llamashim serve`` with the supervisor's own options, so it reads the same
configuration file, environment and flags — with its own reactor, started with ``reactor.spawnProcess`` and told its
index in ``LLAMASHIM_WORKER``. The supervisor:

* plans the listeners (:mod:`llamashim.listeners`): on Linux each worker opens its own ``SO_REUSEPORT`` socket;
  elsewhere, and for systemd's sockets, the supervisor holds the socket and passes it down (``childFDs``), its
  descriptor in ``LLAMASHIM_WORKER_FDS``;
* makes a fresh private directory for the workers' shared state (``PROMETHEUS_MULTIPROC_DIR``: prometheus_client's
  multi-process files, and the worker board of :mod:`llamashim.ops.workers`) and removes it at exit;
* runs any supervised llama-server (``upstream.spawn``) itself, once, and tells the workers its URL
  (``LLAMASHIM_WORKER_UPSTREAMS``), so N workers do not start N llama-servers;
* restarts a worker that dies, after 1, 2, 4 … 30 s (a worker that ran a minute starts again at 1 s), logging how it
  ended, and marks it dead for the metrics (``mark_process_dead``) so its gauges leave the sum;
* on SIGTERM (twistd stops the application) sends SIGTERM to every worker — each drains as one process does
  (``shutdown.drain_timeout``) — and exits when all have; one that outlives the drain by 10 s is killed.

A worker holds the read end of a pipe from the supervisor on its standard input: when the supervisor is gone (even
killed outright), the pipe ends and the worker stops, so no worker outlives its supervisor. Workers write their logs
to the supervisor's standard output and error, as ``./run``, ``llamashim serve`` and the systemd unit have them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import mark_process_dead
from twisted.application.service import IService, MultiService, Service
from twisted.internet import stdio
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import llamashim
from llamashim import listeners
from llamashim.config import Config, ConfigError
from llamashim.ops.workers import WorkerBoard, WorkerInfo, restart_delay, share

WORKER_ENV = "LLAMASHIM_WORKER"  # the worker's index (set only in workers)
FDS_ENV = "LLAMASHIM_WORKER_FDS"  # per listener, the inherited descriptor, or empty: its own SO_REUSEPORT socket
UPSTREAMS_ENV = "LLAMASHIM_WORKER_UPSTREAMS"  # JSON {upstream name: URL} of the llama-servers the supervisor runs
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
KILL_AFTER_DRAIN = 10.0  # seconds a worker may outlive shutdown.drain_timeout before it is killed
STEADY = 60.0  # a worker that ran this long had no quick failure: its next restart waits 1 s again

log = Logger(namespace="llamashim.workers")


# -- in a worker ---------------------------------------------------------------------------------------------------


def worker_from_env(environ: Mapping[str, str], count: int) -> WorkerInfo | None:
    """This process as a worker (``None``: it is not one, it may become the supervisor)."""
    index = environ.get(WORKER_ENV)
    if index is None or not environ.get(MULTIPROC_ENV):
        return None
    return WorkerInfo(int(index), count, os.getpid(), environ[MULTIPROC_ENV])


def inherited_fds(environ: Mapping[str, str], listen: Sequence[str]) -> list[int | None]:
    """Per listener, the descriptor the supervisor passed down (``None``: the worker opens its own)."""
    given = environ.get(FDS_ENV, "").split(",")
    return [int(given[i]) if i < len(given) and given[i] else None for i in range(len(listen))]


def worker_config(config: Config, worker: WorkerInfo, environ: Mapping[str, str]) -> Config:
    """The configuration one worker runs with: the daemon-wide limits divided among the workers (each
    ``max_concurrent`` and ``limits.max_concurrent_upstream``: ``ceil(limit / workers)``, at least 1), and the
    supervisor's llama-servers as plain URLs."""
    n = worker.count
    urls: dict[str, str] = json.loads(environ.get(UPSTREAMS_ENV) or "{}")
    upstreams = tuple(
        replace(spec, max_concurrent=share(spec.max_concurrent, n), url=urls.get(spec.name, spec.url),
                spawn=None if spec.name in urls else spec.spawn)
        for spec in config.upstreams
    )
    upstream = config.upstream
    if not config.upstreams and "default" in urls:
        upstream = replace(upstream, url=urls["default"], spawn=None)
    limits = replace(config.limits, max_concurrent_upstream=share(config.limits.max_concurrent_upstream, n))
    return replace(config, upstreams=upstreams, upstream=upstream, limits=limits)


class _StdinGone(Protocol):
    """The worker's end of the supervisor's pipe: when it closes, the supervisor is gone and the worker stops."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.reactor.running:
            log.warn("the worker supervisor is gone; stopping")
            self.reactor.stop()


class SupervisorWatch(Service):
    """Stops this worker when its standard input (the supervisor's pipe) closes."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        devnull = os.open(os.devnull, os.O_WRONLY)  # StandardIO needs somewhere to write; logs keep the real stdout
        stdio.StandardIO(_StdinGone(self.reactor), stdin=0, stdout=devnull,  # type: ignore[call-arg]  # POSIX's
                         reactor=self.reactor)


# -- the supervisor ------------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    transport: Any = None
    pid: int | None = None
    started: float = 0.0
    failures: int = 0
    restart: IDelayedCall | None = None
    kill: IDelayedCall | None = None


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, pool: WorkerPool, worker: _Worker) -> None:
        self.pool = pool
        self.worker = worker

    def processEnded(self, reason: Failure) -> None:
        self.pool.ended(self.worker, reason)


def how_it_ended(reason: Failure) -> str:
    code = getattr(reason.value, "exitCode", None)
    signal = getattr(reason.value, "signal", None)
    return f"was killed by signal {signal}" if signal is not None else f"exited with status {code}"


class WorkerPool(Service):
    """N worker processes kept running: started at start, restarted with back-off, stopped by SIGTERM."""

    def __init__(self, reactor: Any, count: int, argv: list[str], env: dict[str, str], directory: str,
                 drain_timeout: float, held: Sequence[socket.socket] = ()) -> None:
        self.reactor = reactor
        self.count = count
        self.argv = argv
        self.env = env
        self.directory = directory
        self.drain_timeout = drain_timeout
        self.held = list(held)  # sockets the supervisor bound for the workers: open as long as it runs
        self.child_fds = {sock.fileno(): sock.fileno() for sock in self.held}  # passed down at the same numbers
        self.workers: list[_Worker] = []
        self.stopped: Deferred[None] | None = None

    def startService(self) -> None:
        Service.startService(self)
        self.workers = [_Worker(i) for i in range(self.count)]
        for worker in self.workers:
            self.spawn(worker)

    def spawn(self, worker: _Worker) -> None:
        worker.restart = None
        env = {**self.env, WORKER_ENV: str(worker.index)}
        fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2, **self.child_fds}
        worker.transport = self.reactor.spawnProcess(
            _WorkerProtocol(self, worker), self.argv[0], self.argv, env=env, childFDs=fds)
        worker.pid = worker.transport.pid
        worker.started = self.reactor.seconds()
        log.info("worker {index} started (pid {pid})", index=worker.index, pid=worker.pid)

    def ended(self, worker: _Worker, reason: Failure) -> None:
        pid, how = worker.pid, how_it_ended(reason)
        worker.transport = worker.pid = None
        if worker.kill is not None and worker.kill.active():
            worker.kill.cancel()
        mark_process_dead(pid, self.directory)  # its live gauges leave the sums; its counters stay counted
        WorkerBoard(self.directory).remove(worker.index)
        if not self.running:
            log.info("worker {index} (pid {pid}) {how}", index=worker.index, pid=pid, how=how)
            if self.stopped is not None and all(w.transport is None for w in self.workers):
                self.stopped.callback(None)
            return
        uptime = self.reactor.seconds() - worker.started
        worker.failures = 0 if uptime >= STEADY else worker.failures
        delay = restart_delay(worker.failures)
        worker.failures += 1
        log.warn("worker {index} (pid {pid}) {how} after {uptime:.1f} s; restarting it in {delay:g} s",
                 index=worker.index, pid=pid, how=how, uptime=uptime, delay=delay)
        worker.restart = self.reactor.callLater(delay, self.spawn, worker)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
        alive = [w for w in self.workers if w.transport is not None]
        if not alive:
            return succeed(None)
        self.stopped = Deferred()
        log.info("stopping {n} worker(s): each drains its requests (up to {s:g} s)", n=len(alive),
                 s=self.drain_timeout)
        for worker in alive:
            self.signal(worker, "TERM")
            worker.kill = self.reactor.callLater(self.drain_timeout + KILL_AFTER_DRAIN, self.signal, worker, "KILL")
        return self.stopped

    def signal(self, worker: _Worker, name: str) -> None:
        if worker.transport is None:
            return
        if name == "KILL":
            log.warn("worker {index} (pid {pid}) outlived the drain; killing it", index=worker.index, pid=worker.pid)
        try:
            worker.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass


class SupervisorService(MultiService):
    """The supervisor's tree. Stopping it stops the workers first (each drains), then what they used (a supervised
    llama-server), and removes the workers' private directory last."""

    def __init__(self, pool: WorkerPool) -> None:
        super().__init__()
        self.pool = pool

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self.pool.stopService()
        Service.stopService(self)
        for child in reversed(list(self)):
            if child is not self.pool and child.running:
                await maybeDeferred(child.stopService)
        shutil.rmtree(self.pool.directory, ignore_errors=True)


def plan_listeners(listen: Sequence[str], environ: Mapping[str, str]) -> tuple[list[int | None], list[socket.socket]]:
    """Per listener, the descriptor the workers inherit (``None``: each its own ``SO_REUSEPORT`` socket), and the
    sockets the supervisor bound for them (kept open while it runs)."""
    fds: list[int | None] = []
    held: list[socket.socket] = []
    for description in listen:
        index = listeners.systemd_index(description)
        if index is not None:
            if index >= int(environ.get("LISTEN_FDS") or 0):
                raise ConfigError(f"listener {description!r}: systemd handed over no socket at that index "
                                  "(LISTEN_FDS); start it through its .socket unit")
            fds.append(listeners.FIRST_SYSTEMD_FD + index)
        elif listeners.tcp_address(description) is None:
            raise ConfigError(f"listener {description!r}: with server.workers > 1 the listeners must be tcp:, tcp6: "
                              "or systemd: (TLS and Unix sockets: one worker, or a proxy in front)")
        elif listeners.reuse_port_available():
            fds.append(None)
        else:
            sock = listeners.bound_socket(description, reuse_port=False)
            held.append(sock)
            fds.append(sock.fileno())
    return fds, held


def worker_command(plugin_args: Sequence[str]) -> list[str]:
    """A worker's command line: ``llamashim serve`` (twistd in the foreground) with the supervisor's options."""
    return [sys.executable, "-m", "llamashim.cli", "serve", *plugin_args]


def worker_environment(environ: Mapping[str, str], directory: str, fds: Sequence[int | None],
                       upstreams: Mapping[str, str]) -> dict[str, str]:
    """The workers' environment: the supervisor's, this llamashim first on the path, the shared directory, the
    listeners' descriptors and the supervised llama-servers' URLs (systemd's variables describe the supervisor)."""
    env = {k: v for k, v in environ.items() if k not in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
    source = str(Path(llamashim.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (source, environ.get("PYTHONPATH"))))
    env[MULTIPROC_ENV] = directory
    env[FDS_ENV] = ",".join("" if fd is None else str(fd) for fd in fds)
    env[UPSTREAMS_ENV] = json.dumps(dict(upstreams))
    return env


def build_supervisor(config: Config, reactor: Any, plugin_args: Sequence[str], environ: Mapping[str, str],
                     spawned: Sequence[tuple[str, str, IService]] = ()) -> MultiService:
    """The supervisor's service tree: the private directory, the supervised llama-servers (``spawned``: name, URL,
    service), the workers."""
    fds, held = plan_listeners(config.listen, environ)
    directory = tempfile.mkdtemp(prefix="llamashim-workers-")  # mode 0700: the workers' state is no one else's
    env = worker_environment(environ, directory, fds, {name: url for name, url, _ in spawned})
    pool = WorkerPool(reactor, config.server.workers, worker_command(plugin_args), env, directory,
                      config.shutdown.drain_timeout, held)
    pool.child_fds.update({fd: fd for fd in fds if fd is not None})  # systemd's sockets too
    top = SupervisorService(pool)
    top.setName("llamashim")
    for _, _, service in spawned:
        service.setServiceParent(top)
    pool.setServiceParent(top)
    log.info("llamashim supervising {n} workers on {listen} ({how}); their shared state in {directory}",
             n=config.server.workers, listen=", ".join(config.listen), directory=directory,
             how="each with its own SO_REUSEPORT socket" if None in fds else "sharing the supervisor's socket")
    return top
