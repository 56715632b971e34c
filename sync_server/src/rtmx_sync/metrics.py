"""Prometheus metrics of one server, on prometheus-client.

Each `Metrics` has a `CollectorRegistry` of its own (not the library's global
one), so that several applications in one process do not collide; GET /metrics
renders it. Gauges that are the server's state (connections, rooms, pending
writes, ...) are read when scraped (`track_state`), counters and histograms are
updated where things happen. The call sites stay short: `metrics.updates_in.inc()`,
`metrics.refuse("rate_limit")`, `metrics.error("store")`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

# Durations on a LAN real-time system: 100 µs (applying a small update) to 10 s (a failover).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Updates per INSERT (sync.write_batch_max is 256 by default).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# Label values present from the start (at 0), so that rate() and absent() work before the first event.
REFUSED_REASONS = (
    "auth",
    "read_only",
    "token_expired",
    "max_connections",
    "max_connections_per_address",
    "message_too_big",
    "rate_limit",
    "document_too_large",
    "slow_client",
    "room_unavailable",
    "draining",
    "invalid_room",
)
MESSAGE_KINDS = ("sync_step1", "sync_step2", "update", "awareness")
ERROR_KINDS = ("protocol", "store", "store_read", "redis_publish", "redis_read", "internal")


class Metrics:
    """The server's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, open file descriptors: the server's own cost.
        ProcessCollector(registry=registry)

        def counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
            # prometheus-client appends _total to a counter's name.
            return Counter(name, documentation, labels, registry=registry)

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=registry)

        def histogram(name: str, documentation: str, buckets=LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, documentation, buckets=buckets, registry=registry)

        # State, read at scrape time (track_state).
        self.connections = gauge("rtmx_sync_connections", "WebSocket clients connected to a room on this server.")
        self.rooms = gauge("rtmx_sync_rooms", "Rooms open on this server.")
        self.pending_writes = gauge("rtmx_sync_pending_writes", "Updates accepted and not yet committed to PostgreSQL.")
        self.write_buffer_max = gauge(
            "rtmx_sync_write_buffer_max", "Capacity of the write buffer (sync.write_buffer_max)."
        )
        self.loop_lag = gauge("rtmx_sync_event_loop_lag_seconds", "How late the event loop runs its timers.")
        self.draining = gauge("rtmx_sync_draining", "1 while the server drains (shutdown), else 0.")

        # Traffic.
        self.websocket_connections = counter(
            "rtmx_sync_websocket_connections", "WebSocket connections opened to a room path (refused ones included)."
        )
        self.messages = counter("rtmx_sync_messages", "y-websocket messages received from clients, by kind.", ("kind",))
        self.updates_in = counter("rtmx_sync_updates_in", "Local clients' updates applied to their room (then stored).")
        self.updates_out = counter("rtmx_sync_updates_out", "Messages (updates, presence) relayed to local clients.")
        self.remote_updates = counter(
            "rtmx_sync_remote_updates", "Stored rows from other servers or PostgreSQL applied."
        )
        self.refused = counter(
            "rtmx_sync_refused", "Connections refused or closed for a limit, by reason.", ("reason",)
        )

        # Errors: all of them by kind, and the older per-kind series.
        self.errors = counter("rtmx_sync_errors", "Errors by kind.", ("kind",))
        self.protocol_errors = counter("rtmx_sync_protocol_errors", "Connections closed for a protocol error.")
        self.store_errors = counter("rtmx_sync_store_errors", "PostgreSQL write batches that failed (retried).")
        self.redis_read_errors = counter("rtmx_sync_redis_read_errors", "Redis stream reads (XREAD) that failed.")
        self._legacy_errors = {
            "protocol": self.protocol_errors,
            "store": self.store_errors,
            "redis_read": self.redis_read_errors,
        }

        self.update_apply = histogram(
            "rtmx_sync_update_apply_seconds", "Validating and applying a local client's update to the room's document."
        )

        # PostgreSQL.
        self.update_store = histogram(
            "rtmx_sync_update_store_seconds", "From append() to commit of one update: the durable-write latency."
        )
        self.store_latency = histogram("rtmx_sync_store_latency_seconds", "One INSERT round trip of a write batch.")
        self.write_batch_size = histogram("rtmx_sync_write_batch_size", "Updates per INSERT.", BATCH_BUCKETS)

        # Redis and the other servers.
        self.redis_published = counter("rtmx_sync_redis_published", "Updates published to the Redis streams.")
        self.redis_publish_dropped = counter(
            "rtmx_sync_redis_publish_dropped",
            "Updates not published (Redis error or full outbox; resync delivers them).",
        )
        self.cross_server_latency = histogram(
            "rtmx_sync_cross_server_latency_seconds",
            "From publishing an update on another server (time in the Redis entry) to applying it here.",
        )

        for reason in REFUSED_REASONS:
            self.refused.labels(reason=reason)
        for kind in MESSAGE_KINDS:
            self.messages.labels(kind=kind)
        for kind in ERROR_KINDS:
            self.errors.labels(kind=kind)

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason=reason).inc()

    def message(self, kind: str) -> None:
        self.messages.labels(kind=kind).inc()

    def error(self, kind: str) -> None:
        """One error of this kind (ERROR_KINDS), also counted in its older series if it has one."""
        self.errors.labels(kind=kind).inc()
        legacy = self._legacy_errors.get(kind)
        if legacy is not None:
            legacy.inc()

    def track_state(
        self,
        *,
        connections: Callable[[], float],
        rooms: Callable[[], float],
        pending_writes: Callable[[], float],
        write_buffer_max: Callable[[], float],
        loop_lag: Callable[[], float],
        draining: Callable[[], float],
    ) -> None:
        """Read these gauges from the server's state at each scrape."""
        self.connections.set_function(connections)
        self.rooms.set_function(rooms)
        self.pending_writes.set_function(pending_writes)
        self.write_buffer_max.set_function(write_buffer_max)
        self.loop_lag.set_function(loop_lag)
        self.draining.set_function(draining)

    def render(self) -> bytes:
        """Prometheus text exposition of this registry, without the <name>_created series."""
        return generate_latest(_WithoutCreated(self.registry))

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent), e.g. value("rtmx_sync_refused_total", reason="auth")."""
        return self.registry.get_sample_value(name, labels) or 0.0


class _WithoutCreated:
    """The registry's metrics without the _created samples (each counter's and histogram's
    creation time): they would double the series in the text format and nobody reads them.
    prometheus-client can only drop them process-wide (disable_created_metrics)."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self):
        for metric in self._registry.collect():  # fresh Metric objects at each collect
            metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric
