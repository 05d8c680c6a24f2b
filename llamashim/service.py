"""The composition root below twistd: build the service tree from a validated :class:`Config`."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import ILogObserver, Logger

from llamashim.chat.deps import RouteDeps
from llamashim.chat.flow import ChatFlow, ChatSettings
from llamashim.chat.reasoning_memory import ReasoningMemory
from llamashim.config import Config, ConfigError, UpstreamSpec
from llamashim.dialects.registry import FALLBACK, ROUTES
from llamashim.listeners import worker_listener
from llamashim.ops.logs import observer_for
from llamashim.ops.metrics import Metrics
from llamashim.ops.recent import RecentRequests
from llamashim.ops.recorder import Recorder
from llamashim.ops.workers import WorkerBoard, WorkerInfo
from llamashim.preflight import StartupError
from llamashim.stream.reasoning import ReasoningStyle
from llamashim.upstream.body import collect_body
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.limiter import UpstreamSlots
from llamashim.upstream.models import ModelIndex
from llamashim.upstream.recording import RecordingAgent
from llamashim.upstream.set import Member, UpstreamSet
from llamashim.upstream.supervisor import LlamaSupervisor, free_port
from llamashim.web.gate import Gate, hosts_for_listeners, key_hint
from llamashim.web.own import OwnRoutes
from llamashim.web.root import Root
from llamashim.web.routing import DialectRoutes
from llamashim.web.shutdown import drain
from llamashim.web.site import ShimSite
from llamashim.web.status import StatusPage

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
        specs = c.upstream_specs()

        def where(spec: UpstreamSpec) -> str:
            target = (spec.url or "") if spec.spawn is None else f"a supervised llama-server ({spec.spawn.model})"
            return target if len(specs) == 1 else f"{spec.name}={target}"

        log.info(
            "llamashim listening on {listen} -> upstream {upstream} (tools.streaming={tools}, thinking={thinking})",
            listen=", ".join(c.listen),
            upstream=", ".join(where(spec) for spec in specs),
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

    def __init__(
        self,
        reactor: Any,
        drain_timeout: float,
        site: ShimSite,
        upstreams: UpstreamSet,
        slots: UpstreamSlots,
        log_observer: Any = None,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.drain_timeout = drain_timeout
        self.listening = MultiService()
        self.site = site
        self.upstreams = upstreams
        self.upstream = upstreams.default.client
        self.supervisor = upstreams.default.supervisor
        self.slots = slots
        self.log_observer = log_observer

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
        await drain(self.site, self.reactor, self.drain_timeout)
        Service.stopService(self)
        rest = [s for s in reversed(list(self)) if s is not self.listening and s.running]
        for child in rest:
            await maybeDeferred(child.stopService)


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


def listener(description: str, site: IProtocolFactory, reactor: Any) -> IService:
    """The service listening on the endpoint ``description`` (parsed here and only here). A description Twisted
    cannot use is a one-line :class:`ConfigError`; one the machine refuses, a :class:`StartupError`."""
    try:
        return strports.service(with_backlog(description), site, reactor=reactor)
    except IndexError:
        raise ConfigError(
            f"listener {description!r}: systemd handed over no socket at that index (LISTEN_FDS); "
            "start it through its .socket unit"
        ) from None
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"listener {description!r} is not a valid endpoint: {e}") from None
    except Exception as e:  # e.g. OpenSSL's errors for TLS files the preflight did not foresee
        raise StartupError(f"listener {description!r} cannot be set up: {e}") from None


def build_member(spec: UpstreamSpec, reactor: Any) -> Member:
    """One upstream: its client (own pool, timeouts, TLS) and, when spawned, its supervisor."""
    port = (spec.spawn.port or free_port()) if spec.spawn is not None else None
    url = f"http://127.0.0.1:{port}" if port is not None else spec.url
    assert url is not None
    client = UpstreamClient.from_spec(reactor, spec, url)
    supervisor = None
    if spec.spawn is not None:
        supervisor = LlamaSupervisor(reactor, spec.spawn, lambda: upstream_healthy(client), port)
    return Member(spec, client, supervisor)


@dataclass
class SiteParts:
    """The site over the daemon's resource tree and the collaborators it was built from."""

    site: ShimSite
    upstreams: UpstreamSet
    slots: UpstreamSlots
    flow: ChatFlow
    metrics: Metrics | None
    routes: list[DialectRoutes]
    services: list[IService]  # what runs besides the listeners: the upstream set, route-owned services (a store)


def build_site(
    config: Config,
    reactor: Any,
    members: list[Member],
    unavailable: Callable[[], str | None] | None = None,
    dialects: Sequence[type[DialectRoutes]] = ROUTES,
    worker: WorkerInfo | None = None,
) -> SiteParts:
    """The site and everything behind it, for ``members`` (the in-memory test tier passes its own) and the
    ``dialects`` the registry lists (a test may add one); ``worker``: this process is one of several workers."""
    recorder = Recorder(config.log.record, config.log.record_max_bytes, reactor) if config.log.record else None
    if recorder is not None:  # the upstream side of each recording: every member's agent notes its requests
        for member in members:
            client = member.client
            client.agent = RecordingAgent(client.agent, recorder.tapes, reactor, client.base_url.encode("utf-8"))
    upstreams = UpstreamSet(reactor, members, ModelIndex(config.models.aliases, config.models.default))
    slots = UpstreamSlots(config.limits.max_concurrent_upstream, config.limits.max_queue,
                          unavailable if unavailable is not None else upstreams.unavailable)
    flow = ChatFlow(upstreams, chat_settings(config), ReasoningMemory(reactor, config.thinking.replay))
    deps = RouteDeps(config, upstreams, flow, slots, reactor, worker.index if worker is not None else 0)
    metrics = None
    if config.metrics.enabled:
        metrics = Metrics(multiprocess_dir=worker.directory if worker is not None else None)
    if metrics is not None:
        metrics.watch_upstreams(lambda: upstreams.members.values())
    routes = [factory(deps) for factory in dialects]
    recent = RecentRequests(reactor.seconds)  # /status: the recent requests and token rates
    in_flight: set[Any] = set()
    board = WorkerBoard(worker.directory) if worker is not None else None
    status = StatusPage(upstreams, slots, recent, reactor, in_flight, worker, board)
    root = Root(routes, OwnRoutes(deps, metrics, status).resource(), FALLBACK)
    allowed = config.server.allowed_hosts
    open_paths = config.auth.open_paths
    if open_paths is None:  # each dialect's own, and llamashim's
        open_paths = (*OwnRoutes.open_paths, *(p for d in root.dialects() for p in d.open_paths))
    gate = Gate(
        api_keys=tuple(k.encode("utf-8") for k in config.api_keys()),
        open_paths=open_paths,
        allowed_hosts=tuple(h.lower() for h in allowed) if allowed is not None else hosts_for_listeners(config.listen),
        cors_origins=config.cors.origins,
    )
    site = ShimSite(
        root,
        reactor,
        max_body_bytes=config.limits.max_body_bytes,
        gate=gate,
        header_timeout=config.limits.header_timeout,
        metrics=metrics,
        recent=recent,
        in_flight=in_flight,
        recorder=recorder,
        worker_header=f"index={worker.index}; pid={worker.pid}".encode("ascii") if worker is not None else None,
    )
    services: list[IService] = [upstreams]
    services += [owned for r in routes for owned in r.services()]
    return SiteParts(site, upstreams, slots, flow, metrics, routes, services)


def build_service(config: Config, reactor: Any, worker: WorkerInfo | None = None,
                  fds: Sequence[int | None] = ()) -> LlamashimService:
    """The daemon (one process), or one of its workers (``worker``; ``fds``: per listener, the socket inherited
    from the supervisor, or ``None`` for the worker's own ``SO_REUSEPORT`` socket)."""
    members = [build_member(spec, reactor) for spec in config.upstream_specs()]
    parts = build_site(config, reactor, members, worker=worker)
    top = LlamashimService(
        reactor,
        config.shutdown.drain_timeout,
        parts.site,
        parts.upstreams,
        parts.slots,
        observer_for(config.log.format, config.log.level),
    )
    top.setName("llamashim")
    for owned in parts.services:
        owned.setServiceParent(top)
    StartupLog(config).setServiceParent(top)
    GCTuning().setServiceParent(top)
    top.listening.setServiceParent(top)
    if worker is None:
        for description in config.listen:
            listener(description, parts.site, reactor).setServiceParent(top.listening)
        return top
    for description, fd in zip(config.listen, list(fds) or [None] * len(config.listen), strict=True):
        worker_listener(description, parts.site, reactor, fd).setServiceParent(top.listening)
    board_line(worker, parts, reactor).setServiceParent(top)
    return top


def board_line(worker: WorkerInfo, parts: SiteParts, reactor: Any) -> IService:
    """About once a second, this worker's line on the board (pid, requests in flight and served) and its gauges in
    the shared metrics files — what another worker answering /status.json or /metrics reads."""
    board = WorkerBoard(worker.directory)
    site = parts.site
    started = reactor.seconds()

    def publish() -> None:
        recent = site.recent
        board.publish(worker, lambda: {"in_flight": len(site.in_flight), "started": started,
                                       "requests": recent.total if recent is not None else None})
        if parts.metrics is not None:
            parts.metrics.refresh()

    timer = TimerService(1.0, publish)
    timer.clock = reactor
    return timer


def chat_settings(config: Config) -> ChatSettings:
    return ChatSettings(
        tools_mode=config.tools.streaming,
        chunk_size=config.tools.chunk_size,
        max_calls=config.tools.max_calls,
        max_repeats=config.tools.max_repeats,
        synthesis_heartbeat=config.tools.heartbeat,
        stream_heartbeat=config.server.heartbeat,
        max_reply_bytes=max(config.limits.max_body_bytes, 64 * 1024 * 1024),
        style=ReasoningStyle(prefix=config.thinking.prefix, separator=config.thinking.separator),
        verbose=config.log.verbose,
        thinking_debug=config.thinking.debug,
    )
