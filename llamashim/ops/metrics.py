"""Prometheus metrics (``GET /metrics``), on a registry of our own (no process-global state).

With several workers (``server.workers``) each worker is a process of its own, and a scrape reaches whichever one
the kernel hands the connection to. So that every scrape describes the whole daemon, the workers use
prometheus_client's multi-process mode: the supervisor gives them a fresh private directory in
``PROMETHEUS_MULTIPROC_DIR`` (read when prometheus_client is imported, so the worker has it from its first line),
every metric value lives in a small memory-mapped file there, one per worker, and :meth:`Metrics.render` merges all
of them with ``MultiProcessCollector`` — counters and histograms summed over live *and* dead workers (a restart loses
no count), gauges per their ``multiprocess_mode`` (``livesum``: only live workers, added). The supervisor marks a dead
worker with ``mark_process_dead``. It is the library's own, maintained mechanism; the alternative, each worker
reporting to the supervisor over a pipe, would be a protocol of our own for the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from llamashim.ops.recent import Served

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("ascii")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Prompt processing on local hardware: from milliseconds (a cache hit) to many minutes (an agent's first prompt).
_PREFILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800)


def merged_registry(multiprocess_dir: str | None) -> CollectorRegistry | None:
    """What a scrape of a worker answers: every worker's files merged (``None``: one process, its own registry)."""
    if multiprocess_dir is None:
        return None
    merged = CollectorRegistry()
    MultiProcessCollector(merged, multiprocess_dir)
    return merged


class Metrics:
    """Every metric, on ``registry``; ``multiprocess_dir``: the workers' ``PROMETHEUS_MULTIPROC_DIR`` (``None``: one
    process)."""

    def __init__(self, registry: CollectorRegistry | None = None, multiprocess_dir: str | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.merged = merged_registry(multiprocess_dir)
        self._refreshers: list[Callable[[], None]] = []
        r = self.registry
        self.requests = Counter(
            "llamashim_requests", "Requests answered", ["route", "status", "dialect"], registry=r
        )
        self.active_streams = Gauge("llamashim_active_streams", "Streams being relayed now", registry=r,
                                    multiprocess_mode="livesum")
        self.ttft = Histogram(
            "llamashim_time_to_first_byte_seconds",
            "From request received to the first response body byte, streamed chat routes",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "llamashim_time_to_first_token_seconds",
            "From request received to the first real output of a stream (keep-alives do not count)",
            ["route"],
            buckets=_PREFILL_BUCKETS,
            registry=r,
        )
        self.prefill = Histogram(
            "llamashim_prefill_seconds",
            "Prompt processing time the upstream reported (llama-server's timings.prompt_ms)",
            ["route"],
            buckets=_PREFILL_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "llamashim_request_duration_seconds", "Request duration", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("llamashim_tokens", "Tokens reported by the upstream's usage", ["kind"], registry=r)
        # the prompt cache at work (llama-server's timings.cache_n vs prompt_n): how routing keeps conversations warm
        self.prompt_tokens = Counter(
            "llamashim_prompt_tokens", "Prompt tokens per upstream and model: served from its prompt cache (cached) "
            "or processed", ["upstream", "model", "source"], registry=r)
        self.upstream_errors = Counter(
            "llamashim_upstream_errors", "Upstream failures by kind, before or after the first byte", ["kind"],
            registry=r,
        )
        self.cut_streams = Counter(
            "llamashim_cut_streams", "Answers cut at a runaway limit (tools.max_calls, tools.max_repeats)", ["limit"],
            registry=r,
        )
        self.client_aborts = Counter(
            "llamashim_client_aborts", "Clients that left before the answer ended", ["route"], registry=r
        )
        self.buffered = Gauge(
            "llamashim_client_buffered_bytes", "Response bytes waiting in llamashim for slow clients", registry=r,
            multiprocess_mode="livesum",
        )
        self.bytes_out = Counter("llamashim_response_bytes", "Response body bytes sent to clients", registry=r)

        self.upstream_requests = Counter(
            "llamashim_upstream_requests", "Requests by the upstream that served them", ["upstream", "status"],
            registry=r,
        )

    def count(self, served: Served) -> None:
        """One finished request: its status, duration, bytes, tokens, time to first byte and failure kind."""
        route = served.route
        self.requests.labels(route, served.status, served.dialect).inc()
        if served.upstream is not None:
            self.upstream_requests.labels(served.upstream, served.status).inc()
        self.duration.labels(route).observe(served.duration)
        self.bytes_out.inc(served.bytes_out)
        if served.status == "aborted":
            self.client_aborts.labels(route).inc()
        if served.streamed:
            self.active_streams.dec()
            if served.ttft is not None:
                self.ttft.labels(route).observe(served.ttft)
        if served.prompt_tokens is not None:
            self.tokens.labels("prompt").inc(served.prompt_tokens)
        if served.completion_tokens is not None:
            self.tokens.labels("completion").inc(served.completion_tokens)
        if served.prompt_tokens is not None and served.cached_tokens is not None and served.upstream is not None:
            model = served.model or "-"
            cached = min(served.cached_tokens, served.prompt_tokens)
            self.prompt_tokens.labels(served.upstream, model, "cached").inc(cached)
            self.prompt_tokens.labels(served.upstream, model, "processed").inc(served.prompt_tokens - cached)
        if served.upstream_error is not None:
            self.upstream_errors.labels(served.upstream_error).inc()
        if served.cut is not None:
            self.cut_streams.labels(served.cut).inc()

    def timed(self, route: str, first_token: float | None, prefill: float | None) -> None:
        """One finished request's time to first token and prompt processing time, in seconds, where known."""
        if first_token is not None:
            self.first_token.labels(route).observe(first_token)
        if prefill is not None:
            self.prefill.labels(route).observe(prefill)

    def watch_buffered(self, buffered: Callable[[], float]) -> None:
        """``llamashim_client_buffered_bytes`` read off ``buffered()``: at scrape time (one process), or at every
        :meth:`refresh` (workers: a scrape may reach another worker, which reads this one's file)."""
        if self.merged is None:
            self.buffered.set_function(buffered)
        else:
            self._refreshers.append(lambda: self.buffered.set(buffered()))

    def watch_upstreams(self, members: Callable[[], Iterable[Any]]) -> None:
        """Per-upstream gauges: in flight, up, idle slots — read at scrape time in one process; with workers, gauges
        every worker refreshes (:meth:`refresh`), in flight added over the live workers, up and idle slots as the
        worker that looked last saw them."""
        if self.merged is None:
            self.registry.register(_UpstreamCollector(members))
            return
        labels = ["upstream"]
        in_flight = Gauge("llamashim_upstream_in_flight", "Requests at this upstream now", labels,
                          registry=self.registry, multiprocess_mode="livesum")
        up = Gauge("llamashim_upstream_up", "1 when the upstream takes requests", labels, registry=self.registry,
                   multiprocess_mode="livemostrecent")
        idle = Gauge("llamashim_upstream_idle_slots", "Idle slots at the last look (/slots)", labels,
                     registry=self.registry, multiprocess_mode="livemostrecent")

        def refresh() -> None:
            for member in members():
                in_flight.labels(member.name).set(member.in_flight)
                up.labels(member.name).set(1.0 if member.why_not() is None and not member.loading else 0.0)
                if member.idle_slots is not None:
                    idle.labels(member.name).set(member.idle_slots)

        self._refreshers.append(refresh)

    def refresh(self) -> None:
        """Write this worker's gauges that are read off its state (nothing to do in one process)."""
        for refresher in self._refreshers:
            refresher()

    def render(self) -> bytes:
        if self.merged is not None:
            self.refresh()
            return generate_latest(self.merged)
        return generate_latest(self.registry)


class _UpstreamCollector(Collector):
    def __init__(self, members: Callable[[], Iterable[Any]]) -> None:
        self.members = members

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily("llamashim_upstream_in_flight", "Requests at this upstream now",
                                      labels=["upstream"])
        up = GaugeMetricFamily("llamashim_upstream_up", "1 when the upstream takes requests", labels=["upstream"])
        idle = GaugeMetricFamily("llamashim_upstream_idle_slots", "Idle slots at the last look (/slots)",
                                 labels=["upstream"])
        for member in self.members():
            in_flight.add_metric([member.name], member.in_flight)
            up.add_metric([member.name], 1.0 if member.why_not() is None and not member.loading else 0.0)
            if member.idle_slots is not None:
                idle.add_metric([member.name], member.idle_slots)
        yield from (in_flight, up, idle)
