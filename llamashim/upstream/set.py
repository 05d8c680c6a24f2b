"""The upstreams: one :class:`Member` per configured llama-server, the model index over them, and the choice.

:class:`UpstreamSet` is a service owning each member's client (its own connection pool, timeouts, TLS, learnt
facts) and supervisor (when spawned), and a ``TimerService`` that keeps the index and the health fresh: every
``refresh`` seconds each member's ``/v1/models``, ``/props`` and ``/slots`` are read; a member that is down or
loading is probed on ``/health`` with back-off (1, 2, 4 … 60 s) and comes back by itself when it answers (its
:class:`~llamashim.upstream.health.Health`).

:meth:`UpstreamSet.pick` is the routing decision for one request (model → candidates → :func:`choice.choose`);
:meth:`UpstreamSet.failed` marks a member down after a failure before the first byte so the caller can retry on
another (see ``ChatFlow``). What a member's llama-server can do is asked of it and kept with it: whether a model
fills in the middle (:meth:`UpstreamSet.fills_in_the_middle`), and unloading a model (:meth:`UpstreamSet.unload`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from llamashim.config import UpstreamSpec
from llamashim.errors import ShimError
from llamashim.jsonutil import int_or, obj
from llamashim.upstream.body import collect_body, error_message, json_reply
from llamashim.upstream.capabilities import FIM_PROBE, INFILL, UNLOAD, probe_result
from llamashim.upstream.choice import Choice, Load, choose, conversation_key, upstream_tag
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.health import Health, State
from llamashim.upstream.models import ModelIndex, Resolved, Served, UnknownModel, context_window, model_entries
from llamashim.upstream.supervisor import LlamaSupervisor

REFRESH_SECONDS = 30.0
TICK_SECONDS = 1.0
PROBE_TIMEOUT = 10.0  # seconds a /health probe may take (a probe on its way holds back the next one)


@dataclass
class Member:
    """One configured upstream: its settings, client (and supervisor), health, what was last read from it, what
    it was found to do, and llamashim's own count of requests in flight to it."""

    log: ClassVar[Logger] = Logger()

    spec: UpstreamSpec
    client: UpstreamClient
    supervisor: LlamaSupervisor | None = None
    health: Health = field(default_factory=Health)
    in_flight: int = 0
    # what its last refresh read
    idle_slots: int | None = None
    total_slots: int | None = None
    props: dict[str, Any] | None = None
    router: bool = False  # a router-mode llama-server (several models, loaded on demand)
    models_seen: list[str] = field(default_factory=list)  # the ids its /v1/models listed
    fim: dict[str, bool] = field(default_factory=dict)  # model id → fills in the middle (its answer to FIM_PROBE)
    # the refresh: one at a time (others wait for it instead of repeating it)
    last_refresh: float = -1e9
    refreshed: bool = False  # a refresh has run to its end at least once (until then requests wait for it)
    in_progress: Deferred[None] | None = None
    waiters: list[Deferred[None]] = field(default_factory=list)
    limit: DeferredSemaphore | None = field(default=None, init=False)  # max_concurrent: requests beyond it wait
    tag: str = field(default="", init=False)  # upstream_tag(name)

    def __post_init__(self) -> None:
        self.tag = upstream_tag(self.spec.name)  # what a Responses id served here carries
        if self.spec.max_concurrent:
            self.limit = DeferredSemaphore(self.spec.max_concurrent)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def up(self) -> bool:
        return self.health.state is State.UP

    @property
    def loading(self) -> bool:
        return self.health.state is State.LOADING

    @property
    def reason(self) -> str:
        """Why it is not up ("" when it is)."""
        return self.health.reason

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
        if self.health.usable:
            return None
        return self.health.reason or self.health.state.value

    def load(self) -> Load:
        state = self.health.state
        return Load(self.spec.name, state is State.UP, state is State.LOADING, self.not_ready is None,
                    self.in_flight, self.spec.max_concurrent, self.idle_slots, self.total_slots)

    async def fills_in_the_middle(self, model_id: str, headers: Headers | None = None) -> bool:
        """Whether ``model_id`` has FIM tokens here: asked with FIM_PROBE once, the answer kept; ``False`` when
        it cannot be told (asked again next time)."""
        known = self.fim.get(model_id)
        if known is not None:
            return known
        client = self.client
        try:
            response = await client.post_json(INFILL, {**FIM_PROBE, "model": model_id}, headers)
            answer = await collect_body(response, client.reactor, client.idle_timeout, 1024 * 1024)
        except ShimError as e:
            self.log.debug("could not ask {upstream} whether {model} fills in the middle: {message}",
                           upstream=self.name, model=model_id, message=e.message)
            return False
        fim = probe_result(response.code, answer)
        if fim is None:
            self.log.debug("could not tell whether {model} fills in the middle on {upstream} (HTTP {status})",
                           model=model_id, upstream=self.name, status=response.code)
            return False
        self.fim[model_id] = fim
        return fim

    async def unload(self, model_id: str) -> None:
        """Unload ``model_id`` from this router-mode llama-server (``POST /models/unload``); a failure is logged."""
        client = self.client
        try:
            response = await client.post_json(UNLOAD, {"model": model_id})
            await collect_body(response, client.reactor, client.idle_timeout, 1024 * 1024)
        except ShimError as e:
            self.log.warn("could not unload {model} from {upstream}: {message}", model=model_id,
                          upstream=self.name, message=e.message)
            return
        self.log.info("unloaded {model} from {upstream} (HTTP {code})", model=model_id, upstream=self.name,
                      code=response.code)


@dataclass(frozen=True)
class Pick:
    """The routing decision for one request."""

    member: Member
    served: Served
    resolved: Resolved
    choice: Choice
    affinity_key: str | None

    @property
    def window(self) -> int | None:
        """The context window of the chosen upstream's model (see :func:`context_window`)."""
        return context_window(self.served.props if self.served.props is not None else self.member.props)


class UpstreamSet(MultiService):
    log = Logger()

    def __init__(self, reactor: Any, members: Sequence[Member], index: ModelIndex,
                 refresh: float = REFRESH_SECONDS) -> None:
        super().__init__()
        self.reactor = reactor
        self.members = {m.name: m for m in members}
        self.tags = {m.tag: m.name for m in members}  # upstream_tag → name (a previous turn's upstream)
        self.order = [m.name for m in members]
        self.index = index
        self.refresh_seconds = refresh
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
        """Every member's ``/health`` now (a :meth:`probe` of each ready one): name → ``None`` when ok, else why
        not."""
        ready = [m for m in self.members.values() if m.not_ready is None]  # one not ready says why itself
        await DeferredList([self.probe(m) for m in ready], consumeErrors=True)
        return {name: m.why_not() for name, m in self.members.items()}

    def resolve(self, model: str | None) -> Resolved:
        try:
            return self.index.resolve(model)
        except UnknownModel as e:
            known = ", ".join(e.known) or "none (no upstream is answering)"
            raise ShimError(404, f"model '{e.requested}' not found; models here: {known}", "not_found_error",
                            "model_not_found") from None

    def pick(self, model: str | None, messages: Any = None, exclude: frozenset[str] = frozenset(),
             prefer: str | None = None) -> Pick:
        """Choose the upstream for a request naming ``model`` (404 unknown model, 503 none of its upstreams up);
        ``prefer``: the :func:`~llamashim.upstream.choice.upstream_tag` of the upstream that served the
        conversation's previous turn (where its prompt is cached), if the request names one."""
        resolved = self.resolve(model)
        served = [s for s in resolved.model.served if s.upstream not in exclude]
        loads = [self.members[s.upstream].load() for s in served]
        key = conversation_key(resolved.model.name, messages) if len(loads) > 1 else None
        preferred = self.tags.get(prefer) if prefer is not None else None
        choice = choose(loads, key, preferred if preferred not in exclude else None)  # (it failed this request)
        if choice is None:
            why = "; ".join(f"{s.upstream}: {self.members[s.upstream].why_not() or 'loading'}" for s in
                            resolved.model.served)
            raise ShimError(503, f"no upstream for model '{resolved.model.name}' is available ({why})",
                            "unavailable_error")
        member = self.members[choice.name]
        unknown = f"; the previous response's upstream (tag {prefer}) is not configured here" \
            if prefer is not None and preferred is None else ""
        self.log.debug("model {model} -> upstream {upstream}: {reason}{unknown}", model=resolved.model.name,
                       upstream=member.name, reason=choice.reason, unknown=unknown)
        return Pick(member, next(s for s in served if s.upstream == member.name), resolved, choice, key)

    def started(self, pick: Pick) -> None:
        pick.member.in_flight += 1

    def ended(self, pick: Pick) -> None:
        pick.member.in_flight -= 1

    def succeeded(self, member: Member) -> None:
        """A request to ``member`` got its answer: whatever was wrong with it is over."""
        if member.health.state is not State.UP and member.health.became_up() is not State.LOADING:
            self.log.info("upstream {name} is back", name=member.name)

    def failed(self, member: Member, err: ShimError) -> None:
        """``member`` failed a request before its first byte: down (or loading, for a 503) until a ``/health``
        probe says otherwise."""
        now = self.reactor.seconds()
        if err.status == 503:
            member.health.loading(err.message, now)
            return
        if member.health.failed(err.message, now) in (State.UP, State.LOADING):
            self.log.warn("upstream {name} is down ({message}); probing it with back-off", name=member.name,
                          message=err.message)

    # -- what an upstream can do ------------------------------------------------------------------------------

    async def fills_in_the_middle(self, model: str, headers: Headers | None = None) -> bool:
        """Whether ``model`` fills in the middle, asked of the upstream a request for it would go to (once per
        upstream and model id); ``False`` when no upstream can tell."""
        try:
            await self.ensure_index()
            pick = self.pick(model)
        except ShimError as e:
            self.log.debug("no upstream to ask whether {model} fills in the middle: {message}", model=model,
                           message=e.message)
            return False
        return await pick.member.fills_in_the_middle(pick.served.id or model, headers)

    async def unload(self, model: str) -> None:
        """Unload ``model`` from every router-mode upstream serving it; a single-model llama-server keeps its one
        model loaded (nothing to do there)."""
        await self.ensure_index()
        found = self.index.find(model)
        unloads = [Deferred.fromCoroutine(self.members[s.upstream].unload(s.id))
                   for s in (found.served if found is not None else ()) if self.members[s.upstream].router]
        await DeferredList(unloads, consumeErrors=True)

    # -- keeping the index and the health fresh ---------------------------------------------------------------

    def _tick(self) -> Deferred[None]:
        now = self.reactor.seconds()
        work = []
        for member in self.members.values():
            if member.in_progress is not None or member.not_ready is not None:
                continue
            if member.health.probe_due(now):
                work.append(self.probe(member))
            elif member.health.usable and now - member.last_refresh >= self.refresh_seconds:
                work.append(self._refresh_once(member))
        d: Deferred[Any] = DeferredList(work, consumeErrors=True)
        return d.addCallback(lambda _: None)

    def probe(self, member: Member) -> Deferred[None]:
        """Ask ``member``'s ``/health`` now and take the answer: up (its index refreshed when it was not up), or
        loading or down with the next probe later (see :mod:`llamashim.upstream.health`). Never fails."""
        return Deferred.fromCoroutine(self._probe(member))

    async def _probe(self, member: Member) -> None:
        health = member.health
        before = health.state
        if before is not State.UP:
            health.probing()  # the timer starts no other probe of it meanwhile
        reason, loading = await self._ask_health(member)
        if reason is not None:
            health.probe_failed(reason, self.reactor.seconds(), loading)
            return
        if health.became_up() is not State.UP:
            if before is State.DOWN:
                self.log.info("upstream {name} is back", name=member.name)
            await self._refresh_once(member)

    async def _ask_health(self, member: Member) -> tuple[str | None, bool]:
        """``member``'s answer to ``/health``: (``None``, False) when healthy, else (why not, whether it is loading:
        llama-server answers 503 while it loads its model)."""
        try:
            d = member.client.get(b"/health")
            response = await d.addTimeout(PROBE_TIMEOUT, self.reactor)
            data = await collect_body(response, self.reactor, 5.0, 1024 * 1024)
        except ShimError as e:
            return e.message, False
        except defer.TimeoutError:
            return f"upstream /health did not answer within {PROBE_TIMEOUT:g} s", False
        except Exception as e:  # e.g. a body cut short: not healthy either
            return f"upstream /health failed: {str(e) or type(e).__name__}", False
        if response.code == 200:
            return None, False
        message, _ = error_message(data)
        reason = f"upstream: {message}" if message else f"upstream /health answered HTTP {response.code}"
        return reason, response.code == 503

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
        member.models_seen = [e["id"] for e in model_entries(models)]
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
