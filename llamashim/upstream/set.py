"""The upstreams: one :class:`Member` per configured llama-server, the model index over them, and the choice.

:class:`UpstreamSet` is a service owning each member's client (its own connection pool, timeouts, TLS, learnt
facts) and supervisor (when spawned), and a ``TimerService`` that keeps the index and the health fresh: every
``refresh`` seconds each member's ``/v1/models``, ``/props`` and ``/slots`` are read; a member that is down is
probed on ``/health`` with back-off (1, 2, 4 … 60 s) and comes back by itself when it answers.

:meth:`UpstreamSet.pick` is the routing decision for one request (model → candidates → :func:`choice.choose`);
:meth:`UpstreamSet.failed` marks a member down after a failure before the first byte so the caller can retry on
another (see ``ChatFlow``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.logger import Logger

from llamashim.config import UpstreamSpec
from llamashim.errors import ShimError
from llamashim.jsonutil import arr, int_or, obj
from llamashim.upstream.body import collect_body, error_message, json_reply
from llamashim.upstream.choice import AffinityMap, Choice, Load, choose, conversation_key
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.models import ModelIndex, Resolved, Served, UnknownModel
from llamashim.upstream.supervisor import LlamaSupervisor

REFRESH_SECONDS = 30.0
TICK_SECONDS = 1.0
MAX_BACKOFF = 60.0


@dataclass
class Member:
    spec: UpstreamSpec
    client: UpstreamClient
    supervisor: LlamaSupervisor | None = None
    up: bool = True
    reason: str = ""
    loading: bool = False
    in_flight: int = 0
    idle_slots: int | None = None
    total_slots: int | None = None
    props: dict[str, Any] | None = None
    router: bool = False  # a router-mode llama-server (several models, loaded on demand)
    next_probe: float = 0.0
    backoff: float = 1.0
    last_refresh: float = -1e9
    refreshed: bool = False  # a refresh has run to its end at least once (until then requests wait for it)
    in_progress: Deferred[None] | None = None  # a refresh running now (others wait for it instead of repeating it)
    waiters: list[Deferred[None]] = field(default_factory=list)
    limit: DeferredSemaphore | None = None  # max_concurrent: requests beyond it wait here (cancellable)

    def __post_init__(self) -> None:
        if self.spec.max_concurrent:
            self.limit = DeferredSemaphore(self.spec.max_concurrent)
    models_seen: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def not_ready(self) -> str | None:
        """Why this member cannot take any request (a supervised llama-server that is not ready yet)."""
        if self.supervisor is not None:
            return self.supervisor.reason
        return None

    def why_not(self) -> str | None:
        """Why this member should not be chosen now (``None``: it can be)."""
        if self.not_ready is not None:
            return self.not_ready
        if not self.up:
            return self.reason or "down"
        return None

    def load(self) -> Load:
        ready = self.supervisor is None or self.supervisor.reason is None
        return Load(self.spec.name, self.up, self.loading, ready, self.in_flight, self.spec.max_concurrent,
                    self.idle_slots, self.total_slots)


@dataclass(frozen=True)
class Pick:
    """The routing decision for one request."""

    member: Member
    served: Served
    resolved: Resolved
    choice: Choice
    affinity_key: str | None


class UpstreamSet(MultiService):
    log = Logger()

    def __init__(self, reactor: Any, members: Sequence[Member], index: ModelIndex,
                 refresh: float = REFRESH_SECONDS) -> None:
        super().__init__()
        self.reactor = reactor
        self.members = {m.name: m for m in members}
        self.order = [m.name for m in members]
        self.index = index
        self.refresh_seconds = refresh
        self.affinity = AffinityMap()
        for member in members:
            member.client.setServiceParent(self)
            if member.supervisor is not None:
                member.supervisor.setServiceParent(self)  # stopped before the clients (children stop in reverse)
            index.set_upstream(member.name, {"data": []}, None, member.spec.models)
        if len(members) > 1:
            # One upstream has nothing to choose between: its index is read on demand (ensure_index) and a
            # failed request is simply retried on it next time; several need health probes and fresh load.
            ticker = TimerService(TICK_SECONDS, self._tick)
            ticker.clock = reactor
            ticker.setServiceParent(self)

    # -- the one-upstream views -------------------------------------------------------------------------------

    @property
    def default(self) -> Member:
        """Where requests without a model go (the pass-through): the upstream of ``models.default``, else the
        first configured one."""
        if self.index.default:
            for name in self.index.upstreams_of(self.index.default):
                return self.members[name]
        return self.members[self.order[0]]

    def unavailable(self) -> str | None:
        """Why no request can be served at all (no member ready: supervised llama-servers still starting)."""
        reasons = [m.not_ready for m in self.members.values()]
        if all(r is not None for r in reasons):
            if len(reasons) == 1:
                return reasons[0]
            return "no upstream is available: " + "; ".join(f"{n}: {r}" for n, r in zip(self.order, reasons,
                                                                                       strict=True))
        return None

    # -- routing ----------------------------------------------------------------------------------------------

    async def ensure_index(self, max_age: float | None = None) -> None:
        """Read the upstreams' models now when the index was never filled (or is older than ``max_age`` s)."""
        now = self.reactor.seconds()
        stale = [m for m in self.members.values() if m.not_ready is None and (
            not m.refreshed or (max_age is not None and now - m.last_refresh > max_age))]
        if stale:
            await DeferredList([self._refresh_once(m) for m in stale], consumeErrors=True)

    def _refresh_once(self, member: Member) -> Deferred[None]:
        """Fires when a refresh of ``member`` has run: the one already running, or a new one."""
        waiter: Deferred[None] = Deferred()
        member.waiters.append(waiter)  # before starting: a refresh that ends at once releases it too
        if member.in_progress is None:
            running: Deferred[None] = Deferred.fromCoroutine(self._refresh_and_release(member))
            if not running.called:  # a refresh that ended at once has released everyone already
                member.in_progress = running
        return waiter

    async def _refresh_and_release(self, member: Member) -> None:
        try:
            await self.refresh(member)
        finally:
            member.refreshed = True
            member.in_progress = None
            waiters, member.waiters = member.waiters, []
            for waiter in waiters:
                waiter.callback(None)

    async def check_health(self) -> dict[str, str | None]:
        """Every member's ``/health`` now: name → ``None`` when ok, else why not."""
        async def one(member: Member) -> None:
            if member.supervisor is not None and member.supervisor.reason is not None:
                return  # a supervised llama-server that is not ready says why itself
            if await self._healthy(member):
                member.up, member.loading, member.reason = True, False, ""
            elif not member.loading:
                member.up = False

        await DeferredList([Deferred.fromCoroutine(one(m)) for m in self.members.values()], consumeErrors=True)
        return {name: m.why_not() or (m.reason if m.loading else None) for name, m in self.members.items()}

    def resolve(self, model: str | None) -> Resolved:
        try:
            return self.index.resolve(model)
        except UnknownModel as e:
            known = ", ".join(e.known) or "none (no upstream is answering)"
            raise ShimError(404, f"model '{e.requested}' not found; models here: {known}", "not_found_error",
                            "model_not_found") from None

    def pick(self, model: str | None, messages: Any = None, exclude: frozenset[str] = frozenset()) -> Pick:
        """Choose the upstream for a request naming ``model`` (404 unknown model, 503 none of its upstreams up)."""
        resolved = self.resolve(model)
        served = [s for s in resolved.model.served if s.upstream not in exclude]
        loads = [self.members[s.upstream].load() for s in served]
        key = conversation_key(resolved.model.name, messages) if len(loads) > 1 else None
        choice = choose(loads, self.affinity.get(key))
        if choice is None:
            why = "; ".join(f"{s.upstream}: {self.members[s.upstream].why_not() or 'loading'}" for s in
                            resolved.model.served)
            raise ShimError(503, f"no upstream for model '{resolved.model.name}' is available ({why})",
                            "unavailable_error")
        member = self.members[choice.name]
        self.log.debug("model {model} -> upstream {upstream}: {reason}", model=resolved.model.name,
                       upstream=member.name, reason=choice.reason)
        return Pick(member, next(s for s in served if s.upstream == member.name), resolved, choice, key)

    def started(self, pick: Pick) -> None:
        pick.member.in_flight += 1
        self.affinity.put(pick.affinity_key, pick.member.name)

    def ended(self, pick: Pick) -> None:
        pick.member.in_flight -= 1

    def succeeded(self, member: Member) -> None:
        """A request to ``member`` got its answer: whatever was wrong with it is over."""
        if not member.up or member.loading:
            if not member.up:
                self.log.info("upstream {name} is back", name=member.name)
            member.up, member.loading, member.reason, member.backoff = True, False, "", 1.0

    def failed(self, member: Member, err: ShimError) -> None:
        """``member`` failed a request before its first byte: down until a ``/health`` probe says otherwise."""
        if err.status == 503:
            member.loading = True
            member.reason = err.message
            member.next_probe = self.reactor.seconds() + 1.0
            return
        if member.up:
            self.log.warn("upstream {name} is down ({message}); probing it with back-off", name=member.name,
                          message=err.message)
        member.up = False
        member.reason = err.message
        member.backoff = 1.0
        member.next_probe = self.reactor.seconds() + member.backoff
        self.affinity.forget(member.name)

    # -- keeping the index and the health fresh ---------------------------------------------------------------

    def _tick(self) -> Deferred[None]:
        now = self.reactor.seconds()
        work = []
        for member in self.members.values():
            if member.in_progress is not None or member.not_ready is not None:
                continue
            if (not member.up or member.loading) and now >= member.next_probe:
                work.append(Deferred.fromCoroutine(self._probe(member)))
            elif member.up and now - member.last_refresh >= self.refresh_seconds:
                work.append(self._refresh_once(member))
        d: Deferred[Any] = DeferredList(work, consumeErrors=True)
        return d.addCallback(lambda _: None)

    async def _probe(self, member: Member) -> None:
        if await self._healthy(member):
            was_down = not member.up
            member.up, member.loading, member.reason, member.backoff = True, False, "", 1.0
            if was_down:
                self.log.info("upstream {name} is back", name=member.name)
            await self._refresh_once(member)
        else:
            member.backoff = min(member.backoff * 2, MAX_BACKOFF)
            member.next_probe = self.reactor.seconds() + member.backoff

    async def _healthy(self, member: Member) -> bool:
        try:
            response = await member.client.get(b"/health")
            data = await collect_body(response, self.reactor, 5.0, 1024 * 1024)
        except ShimError as e:
            member.reason = e.message
            return False
        if response.code == 200:
            return True
        message, _ = error_message(data)
        member.reason = f"upstream: {message}" if message else f"upstream /health answered HTTP {response.code}"
        member.loading = response.code == 503  # llama-server answers 503 while it loads its model
        return False

    async def refresh(self, member: Member) -> None:
        """Read ``member``'s models, props and slots into the index (failures leave what was known)."""
        client = member.client
        member.last_refresh = self.reactor.seconds()  # also after a failure: not again before the next round
        try:
            models = await self._json(client, b"/v1/models")
        except ShimError as e:
            if e.status in (502, 503, 504):
                self.failed(member, e)
            return
        props = await self._optional_json(client, b"/props")
        props = props if isinstance(props, dict) else None
        member.router = isinstance(props, dict) and props.get("role") == "router"
        member.props = None if member.router else props
        self.index.set_upstream(member.name, models, member.props, member.spec.models)
        member.models_seen = [e.get("id") for e in arr(obj(models).get("data"))] if isinstance(models, dict) \
            else member.models_seen
        if not member.router:
            slots = await self._optional_json(client, b"/slots")
            if isinstance(slots, list):
                member.total_slots = len(slots)
                member.idle_slots = sum(1 for s in slots if isinstance(s, dict) and not s.get("is_processing"))
            else:
                member.total_slots = int_or(obj(obj(props).get("default_generation_settings")).get("n_slots"),
                                            0) or None

    async def _json(self, client: UpstreamClient, path: bytes) -> Any:
        response = await client.get(path)
        return await json_reply(response, self.reactor, client.idle_timeout, path.decode(), 16 * 1024 * 1024)

    async def _optional_json(self, client: UpstreamClient, path: bytes) -> Any:
        try:
            return await self._json(client, path)
        except ShimError:
            return None  # an upstream without /props or /slots (or with /slots off): the rest still works

    def props_by_upstream(self) -> dict[str, Any]:
        return {name: m.props for name, m in self.members.items()}
