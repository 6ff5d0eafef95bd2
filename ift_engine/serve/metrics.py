"""Prometheus metrics of the service (prometheus-client), in a registry of its own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .batching import BatchStats


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ift_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "ift_errors", "Requests answered with an error (4xx/5xx)", ["route"], registry=self.registry
        )
        self.latency = Histogram(
            "ift_request_seconds",
            "Request latency",
            ["route"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ift_batch_size",
            "Requests per batched model call",
            ["target"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "ift_queue_depth", "Requests waiting for a batch", ["target"], registry=self.registry
        )

    def batch_stats(self, target: str) -> BatchStats:
        return BatchStats(
            on_batch=self.batch_size.labels(target).observe,
            on_depth=self.queue_depth.labels(target).set,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
