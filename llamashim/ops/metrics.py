"""Prometheus metrics (``GET /metrics``), on a registry of our own (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from llamashim.ops.recent import Served

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("ascii")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Prompt processing on local hardware: from milliseconds (a cache hit) to many minutes (an agent's first prompt).
_PREFILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llamashim_requests", "Requests answered", ["route", "status", "dialect"], registry=r
        )
        self.active_streams = Gauge("llamashim_active_streams", "Streams being relayed now", registry=r)
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
            "llamashim_client_buffered_bytes", "Response bytes waiting in llamashim for slow clients", registry=r
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

    def watch_upstreams(self, members: Callable[[], Iterable[Any]]) -> None:
        """Per-upstream gauges read at scrape time: in flight, up, idle and total slots."""
        self.registry.register(_UpstreamCollector(members))

    def render(self) -> bytes:
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
