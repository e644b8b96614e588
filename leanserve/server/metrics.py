"""Prometheus metrics, all in one place, every series labelled with `profile` and `model`.

Recorded once, around the engine stream (`observe_stream`), so every engine reports alike:
TTFT = request received to first token, TPOT = between tokens, e2e = received to last token.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from leanserve.engines.base import Delta, MemoryStats

PREFIX = "leanserve"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RATE_WINDOW_S = 10.0
REJECT_REASONS = ("queue_full", "timeout", "body_timeout")


class _LiveCollector(Collector):
    """Figures computed at scrape time: memory, and generation tokens/s over the last window."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["profile", "model"]
        values = [self._m.profile, self._m.model]
        rate = GaugeMetricFamily(
            f"{PREFIX}_generation_tokens_per_second",
            f"Generated tokens per second over the last {RATE_WINDOW_S:.0f} s",
            labels=labels,
        )
        rate.add_metric(values, self._m.generation_rate())
        yield rate
        memory = GaugeMetricFamily(f"{PREFIX}_memory_bytes", "Memory in use, by what measures it", labels=[*labels, "kind"])
        stats = self._m.memory_source() if self._m.memory_source else None
        if stats is not None:
            for kind, value in _memory_kinds(stats):
                memory.add_metric([*values, kind], float(value))
        yield memory


def _memory_kinds(stats: MemoryStats) -> list[tuple[str, int]]:
    kinds = [("process_rss", stats.process_rss), ("gpu_allocated", stats.gpu_allocated),
             ("gpu_reserved", stats.gpu_reserved), ("gpu_nvml_used", stats.gpu_used_nvml), ("weights", stats.weights),
             ("kv_cache", stats.kv_cache)]
    return [(k, v) for k, v in kinds if v is not None]


class ServerMetrics:
    def __init__(self, profile: str, model: str) -> None:
        self.profile, self.model = profile, model
        self.registry = CollectorRegistry()
        self.memory_source: Callable[[], MemoryStats] | None = None
        self._recent: deque[tuple[float, int]] = deque()
        r, labels = self.registry, ["profile", "model"]
        self.e2e = Histogram(f"{PREFIX}_request_latency_seconds", "End-to-end request latency",
                             labels, buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "Time from request to first generated token",
                              labels, buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram(f"{PREFIX}_time_per_output_token_seconds", "Time between generated tokens",
                              labels, buckets=TPOT_BUCKETS, registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens processed", labels, registry=r)
        self.generation_tokens = Counter(f"{PREFIX}_generation_tokens", "Tokens generated", labels, registry=r)
        self.cached_tokens = Counter(f"{PREFIX}_prompt_tokens_cached", "Prompt tokens whose KV the engine already "
                                     "held (its prefix cache), so it did not compute them", labels, registry=r)
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests finished, by route and status code",
                                [*labels, "route", "status"], registry=r)
        self.running = Gauge(f"{PREFIX}_requests_running", "Generations that have produced a token and not finished",
                             labels, registry=r)
        self.waiting = Gauge(f"{PREFIX}_requests_waiting", "Generations submitted that have no token yet",
                             labels, registry=r)
        self.in_flight = Gauge(f"{PREFIX}_requests_in_flight", "Generation requests holding an admission slot "
                               "(what --max-queue bounds)", labels, registry=r).labels(profile, model)
        self.rejected = Counter(f"{PREFIX}_requests_rejected", "Requests turned away (429 queue_full, 408 "
                                "body_timeout) or aborted (504 timeout), by reason", [*labels, "reason"], registry=r)
        self.artifact_size = Gauge(f"{PREFIX}_artifact_size_bytes", "Size on disk of the weights being served",
                                   labels, registry=r)
        self.info = Info(f"{PREFIX}_model", "What is being served", registry=r)
        self.registry.register(_LiveCollector(self))
        for metric in (self.e2e, self.ttft, self.tpot, self.prompt_tokens, self.cached_tokens, self.generation_tokens,
                       self.running, self.waiting, self.artifact_size):
            metric.labels(profile, model)  # export zero-valued series from the start
        for reason in REJECT_REASONS:
            self.rejected.labels(profile, model, reason)

    def describe_model(self, *, method: str, bits: int, engine: str, base_model: str, artifact_bytes: int) -> None:
        self.info.info({"profile": self.profile, "model": self.model, "method": method, "bits": str(bits),
                        "engine": engine, "base_model": base_model})
        self.artifact_size.labels(self.profile, self.model).set(artifact_bytes)

    def count_request(self, route: str, status: int) -> None:
        self.requests.labels(self.profile, self.model, route, str(status)).inc()

    def count_rejected(self, reason: str) -> None:
        self.rejected.labels(self.profile, self.model, reason).inc()

    def _trim_recent(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    def generation_rate(self) -> float:
        self._trim_recent(time.monotonic())
        return sum(n for _, n in self._recent) / RATE_WINDOW_S

    async def observe_stream(self, stream: AsyncIterator[Delta], prompt_len: int, started: float) -> AsyncIterator[Delta]:
        """Pass deltas through, timing them. `started` is when the HTTP request arrived."""
        lab = (self.profile, self.model)
        self.prompt_tokens.labels(*lab).inc(prompt_len)
        waiting, running = self.waiting.labels(*lab), self.running.labels(*lab)
        waiting.inc()
        state = "waiting"
        last = None
        try:
            async for delta in stream:
                now = time.perf_counter()
                n = len(delta.token_ids)
                if delta.cached_tokens:
                    self.cached_tokens.labels(*lab).inc(delta.cached_tokens)
                if n:
                    if last is None:
                        self.ttft.labels(*lab).observe(now - started)
                        waiting.dec()
                        running.inc()
                        state = "running"
                    else:
                        per_token = (now - last) / n
                        for _ in range(n):
                            self.tpot.labels(*lab).observe(per_token)
                    last = now
                    self.generation_tokens.labels(*lab).inc(n)
                    # trimmed here too, not only when /metrics is scraped: a server nobody scrapes
                    # would otherwise keep one entry per token for ever (found by the soak review)
                    self._trim_recent(stamp := time.monotonic())
                    self._recent.append((stamp, n))
                yield delta
            self.e2e.labels(*lab).observe(time.perf_counter() - started)
        finally:
            (waiting if state == "waiting" else running).dec()
