"""/health says whether this server can serve: a PostgreSQL or Redis outage is
"degraded" (200, clients stay), draining is 503 before clients are closed."""

import asyncio
import os
import signal
import time
import uuid

import pytest
import websockets

from conftest import YClient, eventually, wait_until


def room() -> str:
    return f"health-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


def test_healthy_server_says_ok(servers):
    status, body = servers("sync-a").health_report()
    assert status == 200 and body["status"] == "ok"
    assert body["checks"] == {"postgres": "ok", "redis": "ok"}
    assert body["draining"] is False and body["pending_writes"] == 0 and body["problems"] == []


def test_redis_down_is_degraded_not_down(servers, own_redis):
    server = servers("sync-a", redis_url=own_redis.url)
    name = room()

    async def scenario():
        a = await YClient(server.url, name).connect()
        b = await YClient(server.url, name).connect()
        own_redis.stop()
        await eventually(lambda: server.health_report()[1]["status"] == "degraded", what="redis reported down")
        status, body = server.health_report()
        assert status == 200 and body["checks"]["redis"].startswith("error") and body["checks"]["postgres"] == "ok"
        # Still serving: local clients are relayed, edits stored.
        await a.insert("without redis;")
        await eventually(lambda: "without redis;" in str(b.text))
        own_redis.start()
        await eventually(lambda: server.health_report()[1]["status"] == "ok", what="redis back")
        assert a.closed is None and b.closed is None
        await a.close()
        await b.close()

    run(scenario())


def test_postgres_down_is_degraded_not_down(servers, own_postgres):
    server = servers("sync-a", postgres_dsn=own_postgres.dsn)

    async def scenario():
        a = await YClient(server.url, room()).connect()
        await asyncio.wait_for(a.synced.wait(), 10)
        own_postgres.stop()
        await eventually(lambda: server.health_report()[1]["status"] == "degraded", what="postgres reported down")
        status, body = server.health_report()
        assert status == 200 and body["checks"]["postgres"].startswith("error") and body["checks"]["redis"] == "ok"
        await a.insert("waits;")
        await eventually(lambda: server.health_report()[1]["pending_writes"] == 1, what="the write to wait")
        assert server.health() == 200
        own_postgres.start()
        await eventually(lambda: server.health_report()[1]["status"] == "ok", within=30, what="postgres back")
        await eventually(lambda: server.health_report()[1]["pending_writes"] == 0, what="the write stored")
        assert a.closed is None
        await a.close()

    run(scenario())


def test_health_answers_at_once_while_postgres_hangs(servers, own_postgres):
    """A host that dies without a trace (no RST) leaves queries and connects hanging: /health still answers at
    once (a check slower than HAProxy's timeout would cut every client), "degraded" with the reason."""
    server = servers("sync-a", postgres_dsn=own_postgres.dsn)
    assert server.health_report()[1]["checks"]["postgres"] == "ok"
    frozen = own_postgres.pids()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        answers, deadline = [], time.monotonic() + 6
        while time.monotonic() < deadline:
            started = time.monotonic()
            status, body = server.health_report()
            answers.append((round(time.monotonic() - started, 3), status, body["checks"]["postgres"]))
            time.sleep(0.2)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert max(seconds for seconds, _, _ in answers) < 0.5, answers
    assert {status for _, status, _ in answers} == {200}, answers
    assert answers[-1][2].startswith("error"), answers
    wait_until(lambda: server.health_report()[1]["checks"]["postgres"] == "ok", what="postgres back")


def test_drain_turns_health_503_before_closing_clients(servers):
    # A third of the grace period passes between "draining" and closing the clients.
    server = servers("sync-a", RTMX_SYNC_SERVER_SHUTDOWN_GRACE_S="6")
    name = room()

    async def scenario():
        a = await YClient(server.url, name).connect()
        await a.insert("kept;")
        server.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: server.health() == 503, within=5, what="health 503")
        status, body = server.health_report()
        assert body["status"] == "unavailable" and body["draining"] is True and "draining" in body["problems"]
        assert a.closed is None  # not yet: the load balancers first move new clients away
        async with websockets.connect(f"{server.url}/{name}") as late:
            with pytest.raises(websockets.ConnectionClosed) as refused:
                await late.recv()
            assert refused.value.rcvd.code == 1012
        await eventually(lambda: a.closed is not None, within=10, what="client closed")
        assert a.closed == (1012, "server restarting, reconnect")

    run(scenario())
    assert server.proc.wait(20) in (0, -signal.SIGTERM)
