"""The composition root below twistd: build the service tree from a validated :class:`Config`."""

from __future__ import annotations

import gc
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger

from llamashim.app import Routes
from llamashim.config import Config
from llamashim.errors import ShimError
from llamashim.gate import Gate, hosts_for_listeners, key_hint
from llamashim.limiter import UpstreamLimiter
from llamashim.logs import observer_for
from llamashim.metrics import Metrics
from llamashim.relay import collect_body
from llamashim.supervisor import LlamaSupervisor
from llamashim.upstream import UpstreamClient
from llamashim.web import ShimSite

log = Logger(namespace="llamashim")


class GCTuning(Service):
    """Less work for the cyclic garbage collector, whose pauses stall every stream at once: the objects alive after
    start-up (modules, the route tree) are frozen out of collection, and young collections run less often."""

    def startService(self) -> None:
        super().startService()
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)


class StartupLog(Service):
    """Says once, at start-up, what this daemon serves and how (never keys)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def startService(self) -> None:
        super().startService()
        c = self.config
        spawn = c.upstream.spawn
        upstream = c.upstream.url if spawn is None else f"a supervised llama-server ({spawn.model})"
        log.info(
            "llamashim listening on {listen} -> upstream {upstream} (tools.streaming={tools}, thinking={thinking})",
            listen=", ".join(c.listen),
            upstream=upstream,
            tools=c.tools.streaming,
            thinking=c.thinking.mode,
        )
        if c.log.verbose:
            log.warn("verbose logging is ON: request and response bodies will be logged")
        keys = c.api_keys()
        if keys:
            log.info("API keys required ({n} configured, ending {hints})", n=len(keys),
                     hints=", ".join(key_hint(k) for k in keys))


class LlamashimService(MultiService):
    """The daemon's service tree. Stopping it drains: stop listening, let in-flight requests finish for up to
    ``shutdown.drain_timeout`` seconds, end the rest with the dialect's terminal error frame, then stop the upstream
    client (and a supervised llama-server)."""

    def __init__(self, reactor: Any, drain_timeout: float) -> None:
        super().__init__()
        self.reactor = reactor
        self.drain_timeout = drain_timeout
        self.listening = MultiService()
        self.site: ShimSite | None = None
        self.log_observer: Any = None
        self.supervisor: LlamaSupervisor | None = None

    def setServiceParent(self, parent: Any) -> None:
        # twistd starts logging after makeService, with the application's ILogObserver component when there is one.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.listening.running:
            await self.listening.stopService()
        if self.site is not None:
            await drain(self.site, self.reactor, self.drain_timeout)
        Service.stopService(self)
        rest = [s for s in reversed(list(self)) if s is not self.listening and s.running]
        for child in rest:
            await maybeDeferred(child.stopService)


def _busy(site: ShimSite) -> list[Any]:
    return [ch for ch in site.open_channels if getattr(ch, "requests", None)]


async def drain(site: ShimSite, reactor: Any, timeout: float) -> None:
    """Wait (up to ``timeout`` s) for in-flight requests; close idle connections; end what is left."""
    for ch in list(site.open_channels):
        if not getattr(ch, "requests", None) and ch.transport is not None:
            ch.transport.loseConnection()
    busy = _busy(site)
    if busy:
        log.info("draining {n} in-flight request(s) for up to {t:g} s", n=len(busy), t=timeout)
    deadline = reactor.seconds() + timeout
    while _busy(site) and reactor.seconds() < deadline:
        await deferLater(reactor, min(0.05, max(0.0, deadline - reactor.seconds())), lambda: None)
    left = _busy(site)
    if left:
        log.warn("ending {n} request(s) still running after {t:g} s (shutdown.drain_timeout)", n=len(left), t=timeout)
    for ch in left:
        for request in list(ch.requests):
            end_for_shutdown(request)
        ch.transport.loseConnection()


def end_for_shutdown(request: Any) -> None:
    message = "llamashim is shutting down"
    hook = getattr(request, "drain", None)
    if hook is not None:
        hook(message)
    elif not request.startedWriting and not request.finished:
        from llamashim.http_util import send_error

        body = send_error(request, ShimError(503, message), getattr(request, "dialect", "openai"))
        request.write(body)
        request.finish()


async def _healthy(upstream: UpstreamClient) -> bool:
    response = await upstream.get(b"/health")
    await collect_body(response, upstream.reactor, 5.0, 1024 * 1024)
    return bool(response.code == 200)


def upstream_healthy(upstream: UpstreamClient) -> Deferred[bool]:
    return Deferred.fromCoroutine(_healthy(upstream))


def with_backlog(description: str, backlog: int = 1024) -> str:
    """TCP/SSL listeners get a listen backlog of 1024 unless the endpoint string sets one: Twisted's default of 50
    drops SYNs when a few dozen clients connect at once, and each then waits a second to retry."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={backlog}"
    return description


def build_service(config: Config, reactor: Any) -> MultiService:
    top = LlamashimService(reactor, config.shutdown.drain_timeout)
    top.setName("llamashim")
    supervisor: LlamaSupervisor | None = None
    upstream_url = config.upstream.url
    if config.upstream.spawn is not None:
        supervisor = LlamaSupervisor(reactor, config.upstream.spawn)
        upstream_url = supervisor.url
    upstream = UpstreamClient(
        reactor,
        upstream_url,
        verify=config.upstream.verify,
        connect_timeout=config.upstream.connect_timeout,
        idle_timeout=config.upstream.idle_timeout,
        request_timeout=config.upstream.request_timeout,
        api_key=config.upstream.api_key,
    )
    upstream.setServiceParent(top)
    if supervisor is not None:
        supervisor.health_check = lambda: upstream_healthy(upstream)
        supervisor.setServiceParent(top)  # stopped before the upstream client (children stop in reverse)
    top.supervisor = supervisor
    routes = Routes(config, upstream)
    if supervisor is not None:
        routes.unavailable = lambda: supervisor.reason
    routes.limiter = UpstreamLimiter(config.limits.max_concurrent_upstream, config.limits.max_queue)
    metrics = Metrics() if config.metrics.enabled else None
    routes.metrics = metrics
    keys = config.api_keys()
    allowed = config.server.allowed_hosts
    gate = Gate(
        api_keys=tuple(k.encode("utf-8") for k in keys),
        open_paths=config.auth.open_paths,
        allowed_hosts=tuple(h.lower() for h in allowed) if allowed is not None else hosts_for_listeners(config.listen),
        cors_origins=config.cors.origins,
    )
    site = ShimSite(
        routes.resource(),
        reactor,
        max_body_bytes=config.limits.max_body_bytes,
        gate=gate,
        header_timeout=config.limits.header_timeout,
        metrics=metrics,
    )
    top.log_observer = observer_for(config.log.format, config.log.level)
    top.site = site
    top.routes = routes  # type: ignore[attr-defined]
    StartupLog(config).setServiceParent(top)
    GCTuning().setServiceParent(top)
    top.listening.setServiceParent(top)
    for description in config.listen:
        strports.service(with_backlog(description), site, reactor=reactor).setServiceParent(top.listening)
    return top
