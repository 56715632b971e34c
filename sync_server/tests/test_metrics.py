"""GET /metrics: prometheus-client in one registry per application, histograms
that move when updates flow between two servers, refusals and errors by kind."""

import asyncio
import uuid

import httpx
import psycopg
import websockets
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from conftest import YClient, eventually, parse_metrics, presence
from rtmx_sync.app import create_app
from rtmx_sync.config import Settings
from rtmx_sync.metrics import ERROR_KINDS, MESSAGE_KINDS, REFUSED_REASONS

# Every series and its type, as dashboards and the runbook know them.
SERIES = {
    "rtmx_sync_connections": "gauge",
    "rtmx_sync_rooms": "gauge",
    "rtmx_sync_pending_writes": "gauge",
    "rtmx_sync_write_buffer_max": "gauge",
    "rtmx_sync_event_loop_lag_seconds": "gauge",
    "rtmx_sync_draining": "gauge",
    "rtmx_sync_websocket_connections": "counter",
    "rtmx_sync_messages": "counter",
    "rtmx_sync_updates_in": "counter",
    "rtmx_sync_updates_out": "counter",
    "rtmx_sync_remote_updates": "counter",
    "rtmx_sync_refused": "counter",
    "rtmx_sync_errors": "counter",
    "rtmx_sync_protocol_errors": "counter",
    "rtmx_sync_store_errors": "counter",
    "rtmx_sync_redis_read_errors": "counter",
    "rtmx_sync_redis_published": "counter",
    "rtmx_sync_redis_publish_dropped": "counter",
    "rtmx_sync_update_apply_seconds": "histogram",
    "rtmx_sync_update_store_seconds": "histogram",
    "rtmx_sync_store_latency_seconds": "histogram",
    "rtmx_sync_write_batch_size": "histogram",
    "rtmx_sync_cross_server_latency_seconds": "histogram",
}
HISTOGRAMS = [name for name, kind in SERIES.items() if kind == "histogram"]


def room() -> str:
    return f"metrics-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


def unit_app(server_id: str):
    settings = Settings(
        server_id=server_id,
        allow_anonymous=True,
        redis_url="redis://127.0.0.1:1/0",
        postgres_dsn="postgresql://unused@127.0.0.1:1/unused",
    )
    return create_app(settings)


def scrape(app) -> tuple[str, str]:
    """GET /metrics without the lifespan (no PostgreSQL or Redis): (content type, body)."""

    async def get():
        # ASGITransport sends no lifespan events: the application is not started.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://unit") as client:
            return await client.get("/metrics")

    answer = run(get())
    assert answer.status_code == 200
    return answer.headers["content-type"], answer.text


def assert_histogram(values: dict[str, float], name: str) -> float:
    """The histogram's buckets are cumulative and end in +Inf = _count; returns _count."""
    buckets = sorted(
        (float(key.split('le="')[1].rstrip('"}')), value)
        for key, value in values.items()
        if key.startswith(f"{name}_bucket{{")
    )
    assert len(buckets) >= 10, f"{name}: buckets {buckets}"
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), f"{name}: buckets not cumulative {buckets}"
    assert buckets[-1][0] == float("inf") and counts[-1] == values[f"{name}_count"]
    assert f"{name}_sum" in values
    return values[f"{name}_count"]


def test_each_app_has_its_own_registry_with_every_series():
    one, two = unit_app("unit-a"), unit_app("unit-b")  # a second app: no duplicated series
    m1, m2 = one.state.service.metrics, two.state.service.metrics
    assert m1.registry is not m2.registry
    m1.updates_in.inc(3)
    m1.refuse("auth")
    m1.message("update")
    m1.error("store")
    m1.update_store.observe(0.002)
    m1.cross_server_latency.observe(0.0004)
    one.state.service.draining = True

    content_type, body = scrape(one)
    assert content_type == CONTENT_TYPE_LATEST
    families = {family.name: family.type for family in text_string_to_metric_families(body)}
    process = {name: kind for name, kind in families.items() if name.startswith("process_")}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= set(process)
    assert {name: kind for name, kind in families.items() if name not in process} == SERIES  # no _created series
    assert parse_metrics(body)["process_resident_memory_bytes"] > 0
    values = parse_metrics(body)
    assert values["rtmx_sync_updates_in_total"] == 3
    assert values['rtmx_sync_refused_total{reason="auth"}'] == 1
    assert values['rtmx_sync_messages_total{kind="update"}'] == 1
    assert values['rtmx_sync_errors_total{kind="store"}'] == 1 and values["rtmx_sync_store_errors_total"] == 1
    assert values["rtmx_sync_draining"] == 1 and values["rtmx_sync_connections"] == 0
    assert values['rtmx_sync_update_store_seconds_bucket{le="0.001"}'] == 0
    assert values['rtmx_sync_update_store_seconds_bucket{le="0.0025"}'] == 1
    assert values['rtmx_sync_cross_server_latency_seconds_bucket{le="0.0005"}'] == 1
    for name in HISTOGRAMS:
        assert_histogram(values, name)
    # Labelled series exist at 0 before their first event.
    for reason in REFUSED_REASONS:
        assert f'rtmx_sync_refused_total{{reason="{reason}"}}' in values
    for kind in MESSAGE_KINDS:
        assert f'rtmx_sync_messages_total{{kind="{kind}"}}' in values
    for kind in ERROR_KINDS:
        assert f'rtmx_sync_errors_total{{kind="{kind}"}}' in values

    untouched = parse_metrics(scrape(two)[1])
    assert untouched["rtmx_sync_updates_in_total"] == 0
    assert untouched['rtmx_sync_refused_total{reason="auth"}'] == 0
    assert untouched["rtmx_sync_update_store_seconds_count"] == 0
    assert untouched["rtmx_sync_draining"] == 0
    # Nothing in the library's global registry.
    assert not [family.name for family in REGISTRY.collect() if family.name.startswith("rtmx_sync")]


def test_histograms_and_counters_move_when_updates_flow_between_servers(servers, postgres_dsn):
    one, two = servers("sync-a"), servers("sync-b")
    name, updates = room(), 12

    async def scenario():
        a = await YClient(one.url, name).connect()
        b = await YClient(two.url, name).connect()
        # Handshakes done: the clients' sync step 2 (empty) are in, nothing of them is stored.
        await asyncio.wait_for(asyncio.gather(a.synced.wait(), b.synced.wait()), 10)
        for i in range(updates):
            await a.insert(f"{i};")
        await eventually(lambda: str(b.text).count(";") == updates, what="updates relayed to the other server")
        await a.ws.send(presence(1, "alice"))
        await eventually(lambda: one.sample("rtmx_sync_messages_total", kind="awareness") == 1, what="presence")
        # Cross-server latency is observed on the receiving server, as the Redis entries arrive.
        await eventually(lambda: two.sample("rtmx_sync_cross_server_latency_seconds_count") > 0, what="latency")
        await a.close()
        await b.close()

    run(scenario())
    with psycopg.connect(postgres_dsn) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM rtmx_sync_updates WHERE room = %s AND server = 'sync-a'", (name,)
        ).fetchone()[0]
    assert stored == updates

    sender = one.metrics()
    assert sender['rtmx_sync_messages_total{kind="update"}'] == updates
    assert sender['rtmx_sync_messages_total{kind="sync_step1"}'] == 1
    assert sender['rtmx_sync_messages_total{kind="sync_step2"}'] == 1
    assert sender["rtmx_sync_updates_in_total"] == updates
    assert sender["rtmx_sync_websocket_connections_total"] == 1
    assert assert_histogram(sender, "rtmx_sync_update_apply_seconds") == updates
    # One observation per stored update, from append() to its commit.
    assert assert_histogram(sender, "rtmx_sync_update_store_seconds") == stored
    assert sender["rtmx_sync_update_store_seconds_sum"] > 0
    batches = assert_histogram(sender, "rtmx_sync_write_batch_size")
    assert 1 <= batches <= updates and sender["rtmx_sync_write_batch_size_sum"] == updates
    assert assert_histogram(sender, "rtmx_sync_store_latency_seconds") == batches
    assert sender["rtmx_sync_redis_published_total"] == updates
    assert assert_histogram(sender, "rtmx_sync_cross_server_latency_seconds") == 0  # its own entries do not count

    receiver = two.metrics()
    latencies = assert_histogram(receiver, "rtmx_sync_cross_server_latency_seconds")
    assert 0 < latencies <= updates
    assert receiver["rtmx_sync_cross_server_latency_seconds_sum"] >= 0
    assert receiver["rtmx_sync_remote_updates_total"] == updates  # each row applied once, by Redis or resync
    assert receiver['rtmx_sync_messages_total{kind="update"}'] == 0
    assert assert_histogram(receiver, "rtmx_sync_update_store_seconds") == 0


def test_refusals_and_errors_are_counted_by_kind(servers):
    server = servers("sync-a")

    async def scenario():
        async with websockets.connect(f"{server.url}/{'x' * 201}") as invalid:
            await invalid.wait_closed()
        assert invalid.close_code == 1008
        async with websockets.connect(f"{server.url}/{room()}") as garbage:
            await garbage.send(b"\x07\x00")  # no such message type
            await garbage.wait_closed()
        assert garbage.close_code == 1008

    run(scenario())
    values = server.metrics()
    assert values['rtmx_sync_refused_total{reason="invalid_room"}'] == 1
    assert sum(values[f'rtmx_sync_refused_total{{reason="{reason}"}}'] for reason in REFUSED_REASONS) == 1
    assert server.refused("invalid_room") == 1 and server.refused("auth") == 0
    assert values['rtmx_sync_errors_total{kind="protocol"}'] == 1
    assert values["rtmx_sync_protocol_errors_total"] == 1
    assert sum(values[f'rtmx_sync_errors_total{{kind="{kind}"}}'] for kind in ERROR_KINDS) == 1
    assert values["rtmx_sync_websocket_connections_total"] == 2
