"""Every Prometheus metric a TwinStack service exports, in one place.

Each running service has its own registry (several services can share a process in tests).
Buckets are chosen for what is measured: actions take milliseconds to minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACTION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600)


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.action_seconds = Histogram(
            "twinstack_action_seconds", "Time to serve an action, by action and outcome",
            ["service", "action", "outcome"], buckets=ACTION_BUCKETS, registry=r)
        self.refused_calls = Counter(
            "twinstack_refused_calls_total", "Calls refused before reaching a handler, by reason",
            ["service", "reason"], registry=r)
        self.certificate_reloads = Counter(
            "twinstack_certificate_reloads_total", "Certificate reloads from disk",
            ["service"], registry=r)
        self.log_records_dropped = Gauge(
            "twinstack_log_records_dropped", "Log records dropped because the logger lagged",
            ["service"], registry=r)
        self.ready = Gauge("twinstack_ready", "1 when the service is ready", ["service"],
                           registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
