"""Every Prometheus metric a TwinStack service exports, in one place.

Each running service has its own registry (several services can share a process in tests):
what every service exports (`ServiceMetrics`), and what an operator watches on the platform's
own services (gss: sessions, the queue, starts, nodes; lss: restarts; relay: sockets and
traffic; auth: logins), registered by each of those in its registry as it starts.
Buckets are chosen for what is measured: actions take milliseconds to minutes, and a session
start tens of milliseconds to the queue's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACTION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600)
START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


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


@dataclass
class GssMetrics:
    """Sessions and session nodes as gss knows them: the gauges are read from the database at
    each scrape (`set_sessions`, `set_nodes`), the start durations observed as sessions end
    their start."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.sessions = Gauge("twinstack_sessions", "Sessions by state", ["state"], registry=r)
        self.queue_length = Gauge("twinstack_session_queue_length",
                                  "Sessions waiting for a session node with room", registry=r)
        self.session_start_seconds = Histogram(
            "twinstack_session_start_seconds", "From open_session until the session is ready "
            "or has failed (the wait in the queue included), by session type and outcome",
            ["session_type", "outcome"], buckets=START_BUCKETS, registry=r)
        self.node_connected = Gauge("twinstack_node_connected",
                                    "1 while the session node is connected", ["node"],
                                    registry=r)
        self.node_sessions = Gauge("twinstack_node_sessions", "Live sessions on a session node",
                                   ["node"], registry=r)
        self.node_capacity = Gauge("twinstack_node_capacity",
                                   "Sessions a session node runs at most", ["node"], registry=r)
        self.node_reserved_memory = Gauge(
            "twinstack_node_reserved_memory_bytes", "Memory the live sessions on a node "
            "reserve (their session types' declared needs)", ["node"], registry=r)
        self.node_session_memory = Gauge(
            "twinstack_node_session_memory_bytes", "Memory a node's sessions may take in all, "
            "as the node said", ["node"], registry=r)
        self.node_cpu_load = Gauge("twinstack_node_cpu_load",
                                   "A node's 1-minute load average per core, as it last said",
                                   ["node"], registry=r)
        self.node_memory_used = Gauge("twinstack_node_memory_used_ratio",
                                      "The share of a node's memory in use, as it last said",
                                      ["node"], registry=r)

    def set_sessions(self, by_state: dict[str, int]) -> None:
        for state, count in by_state.items():
            self.sessions.labels(state).set(count)
        self.queue_length.set(by_state.get("queued", 0))

    def set_nodes(self, nodes: list[dict[str, Any]]) -> None:
        """Each node's series from what `list_nodes` tells an administrator."""
        gauges = (self.node_connected, self.node_sessions, self.node_capacity,
                  self.node_reserved_memory, self.node_session_memory, self.node_cpu_load,
                  self.node_memory_used)
        for gauge in gauges:
            gauge.clear()  # a node forgotten since the last scrape has no series
        for node in nodes:
            name = node["name"]
            self.node_connected.labels(name).set(node["state"] == "connected")
            self.node_sessions.labels(name).set(node["live_sessions"])
            self.node_capacity.labels(name).set(node["capacity"])
            self.node_reserved_memory.labels(name).set(node["reserved_mb"] * 2**20)
            if node["memory_mb"] is not None:
                self.node_session_memory.labels(name).set(node["memory_mb"] * 2**20)
            for gauge, key in ((self.node_cpu_load, "cpu"), (self.node_memory_used, "memory")):
                if isinstance(node["load"].get(key), int | float):
                    gauge.labels(name).set(node["load"][key])


@dataclass
class LssMetrics:
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        self.compute_restarts = Counter(
            "twinstack_compute_restarts_total", "Compute services restarted after they "
            "exited, by service", ["service"], registry=self.registry)


@dataclass
class RelayMetrics:
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.sockets = Gauge("twinstack_relay_sockets", "Clients' sockets open on the relay",
                             registry=r)
        self.messages = Counter("twinstack_relay_messages_total",
                                "Messages through the relay, from clients and to clients",
                                ["direction"], registry=r)
        self.message_bytes = Counter("twinstack_relay_message_bytes_total",
                                     "Bytes of those messages", ["direction"], registry=r)

    def passed(self, direction: str, text: str) -> None:
        """One message from or to a client (its UTF-8 size; encoded only if not ASCII)."""
        self.messages.labels(direction).inc()
        self.message_bytes.labels(direction).inc(
            len(text) if text.isascii() else len(text.encode()))


@dataclass
class AuthMetrics:
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        self.logins = Counter("twinstack_logins_total", "Logins by outcome: ok, "
                              "wrong_credentials, throttled", ["outcome"],
                              registry=self.registry)
