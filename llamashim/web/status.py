"""``GET /status`` (a page for people) and ``GET /status.json`` (what the page draws, for machines too).

The JSON says what this llamashim is doing: each upstream with its health, models and slots (from the
:class:`~llamashim.upstream.set.UpstreamSet`, which keeps them fresh), the requests running now (read off the
site that serves the status request), the recent requests and the token-rate samples of
:class:`~llamashim.ops.recent.RecentRequests`. Never bodies, paths, queries or keys. Both routes sit behind the API
keys when keys are set (``auth.open_paths`` can open them); the page asks for a key when ``status.json`` answers 401.

The page is one static file (``status.html``): no framework, no build step, a small inline script that polls
``status.json`` every 2 s and draws an SVG chart. Its Content-Security-Policy allows exactly that script and style
(by hash) and connections to this origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Iterable
from importlib import resources
from typing import Any

from twisted.web.server import Request

from llamashim import __version__
from llamashim.ops.recent import RecentRequests
from llamashim.ops.workers import WorkerBoard, WorkerInfo
from llamashim.upstream.limiter import UpstreamSlots
from llamashim.upstream.set import Member, UpstreamSet
from llamashim.web.context import RequestContext, context_of
from llamashim.web.respond import send_json

PAGE = resources.files("llamashim.web").joinpath("status.html").read_bytes()


def _hashes(tag: str) -> str:
    blocks = re.findall(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), PAGE, re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in blocks)


CSP = (
    f"default-src 'none'; script-src {_hashes('script')}; style-src {_hashes('style')}; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
).encode("ascii")


def upstream_view(member: Member, now: float, prompt_cache: float | None = None) -> dict[str, Any]:
    """One upstream as the status page shows it (a :class:`~llamashim.upstream.set.Member`); ``prompt_cache``: the
    share of its recent prompt tokens served from its prompt cache."""
    health = member.health
    if member.not_ready is not None:
        state = "down"  # a supervised llama-server that is not ready yet (its supervisor says why)
    else:
        state = "ok" if health.usable else health.state.value  # loading, down or probing
    supervisor = member.supervisor
    refreshed = member.last_refresh  # -1e9 until the first refresh
    return {
        "name": member.name,
        "url": member.client.base_url,
        "state": state,
        "reason": member.why_not(),
        "models": list(member.models_seen),
        "in_flight": member.in_flight,
        "idle_slots": member.idle_slots,
        "total_slots": member.total_slots,
        "supervised": None if supervisor is None else {"state": supervisor.state, "pid": supervisor.pid},
        "checked_s_ago": round(now - refreshed, 1) if refreshed >= 0 else None,
        "prompt_cache": None if prompt_cache is None else round(prompt_cache, 3),
    }


def phase_view(ctx: RequestContext, now: float) -> dict[str, Any] | None:
    """Where a running upstream request is: ``queued`` (an upstream chosen, nothing heard from it yet — waiting for
    a slot, or working on a prompt without reporting progress), ``prefill`` (``processed`` of the prompt's ``total``
    tokens, ``cache`` of them from its prompt cache, ``percent``) or ``generating`` (``tokens`` so far,
    ``tokens_per_s`` since the first); ``None`` for a request that goes to no upstream."""
    if ctx.generated or ctx.first_output_at is not None:
        since = ctx.generating_since if ctx.generating_since is not None else ctx.first_output_at
        elapsed = now - since if since is not None else 0.0
        rate = round((ctx.generated - 1) / elapsed, 1) if ctx.generated > 1 and elapsed > 0 else None
        return {"phase": "generating", "tokens": ctx.generated, "tokens_per_s": rate}
    if ctx.prompt_total:
        return {"phase": "prefill", "total": ctx.prompt_total, "cache": ctx.prompt_cache,
                "processed": ctx.prompt_processed,
                "percent": round(100.0 * min(ctx.prompt_processed, ctx.prompt_total) / ctx.prompt_total, 1)}
    return {"phase": "queued"} if ctx.upstream is not None else None


def active_view(request: Any, now: float) -> dict[str, Any]:
    """One running request: its id, method, route label, dialect, upstream, whether it streams, its phase, for how
    long and how many bytes went out (no path, no body)."""
    ctx = context_of(request)
    return {
        "id": ctx.request_id.decode("ascii", "replace"),
        "method": request.method.decode("latin-1"),
        "route": ctx.route,
        "dialect": ctx.dialect.name,
        "upstream": ctx.upstream,
        "streaming": ctx.streaming,
        "phase": phase_view(ctx, now),
        "started": ctx.started,
        "elapsed_s": round(max(0.0, now - ctx.started), 1) if ctx.started else 0.0,
        "bytes_sent": request.sentLength,
    }


def snapshot(
    now: float, started: float, upstreams: Iterable[Member], active: Iterable[Any], recent: RecentRequests,
    unavailable: str | None = None,
) -> dict[str, Any]:
    """The whole ``/status.json`` document."""
    running = sorted((active_view(r, now) for r in active), key=lambda a: a["started"])
    cache = recent.prompt_cache()
    return {
        "llamashim": {"version": __version__, "now": now, "uptime_s": round(now - started, 1),
                      "requests": recent.total, "unavailable": unavailable},
        "upstreams": [upstream_view(m, now, cache.get(m.name)) for m in upstreams],
        "active": running,
        "recent": [r.as_json() for r in recent.requests()],
        "rate": {"completion_tokens_per_s": recent.rate(60.0)},
        "series": recent.series(),
    }


class StatusPage:
    """What ``/status`` and ``/status.json`` answer (routed by :class:`~llamashim.web.own.OwnRoutes`): the page, and
    the snapshot of the upstreams, the requests in flight (the site's set, injected) and the recent ones."""

    def __init__(
        self, upstreams: UpstreamSet, slots: UpstreamSlots, recent: RecentRequests, clock: Any,
        in_flight: Collection[Any], worker: WorkerInfo | None = None, board: WorkerBoard | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.worker = worker  # with server.workers > 1: this worker, and the board every worker writes its line on
        self.board = board
        self.slots = slots
        self.recent = recent
        self.clock = clock
        self.in_flight = in_flight
        self.started = clock.seconds()

    def page(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", CSP)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return PAGE

    def data(self, request: Request) -> bytes:
        running = [r for r in self.in_flight if r is not request]
        members = [self.upstreams.members[name] for name in self.upstreams.order]
        request.setHeader(b"cache-control", b"no-store")
        value = snapshot(self.clock.seconds(), self.started, members, running, self.recent, self.slots.unavailable())
        if self.worker is not None and self.board is not None:
            # Daemon-wide: every live worker's pid, requests in flight and served (from the board). The rest of the
            # document — upstreams' in-flight counts, the running and recent requests, the token rates — is what
            # the worker that answers sees; /metrics is the daemon-wide view of those.
            value["workers"] = {"answered_by": self.worker.as_json(), "workers": self.board.read(),
                                "per_worker": ["upstreams", "active", "recent", "rate", "series"]}
        return send_json(request, value)
