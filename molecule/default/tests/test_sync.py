"""Sync servers: all active behind HAProxy, a room stays on one server, a
killed server loses nothing (clients reconnect through the VIP)."""

import asyncio
import json
import uuid

from conftest import ADDRESSES, VIP, secret, wait_for
from rtmx_sync.client import YClient, eventually

testinfra_hosts = ["lb1"]

SYNC = {"sync1": "198.18.1.21", "sync2": "198.18.1.22", "sync3": "198.18.1.23"}
SYNC_URL = f"ws://{VIP}:8080"


def _connections(lb) -> dict:
    """Open client connections per server; the minimum of three reads, so that
    HAProxy's short-lived WebSocket health checks are not counted."""
    counts = {name: 10**6 for name in SYNC}
    for _ in range(3):
        for name, address in SYNC.items():
            metrics = lb.check_output(f"curl -sf http://{address}:8765/metrics")
            current = int(next(line.split()[1] for line in metrics.splitlines()
                               if line.startswith("rtmx_sync_connections ")))
            counts[name] = min(counts[name], current)
    return counts


def test_every_sync_server_is_healthy_and_up_in_haproxy(lbs):
    for address in SYNC.values():
        health = json.loads(lbs["lb1"].check_output(f"curl -s http://{address}:8765/health"))
        assert health["status"] == "ok" and health["checks"] == {"redis": "ok", "postgres": "ok"}, health
    auth = f"admin:{secret('haproxy_stats_password')}"
    for name in lbs:
        csv = lbs[name].check_output(f"curl -s -u {auth} 'http://{ADDRESSES[name]}:7000/;csv'")
        status = {row.split(",")[1]: row.split(",")[17] for row in csv.splitlines() if row.startswith("sync_servers,sync")}
        assert status == {"sync1": "UP", "sync2": "UP", "sync3": "UP"}, status


def test_clients_of_one_room_share_a_server_and_converge(lbs):
    room = f"molecule-{uuid.uuid4().hex[:8]}"

    async def scenario():
        a = await YClient(SYNC_URL, room).connect()
        b = await YClient(SYNC_URL, room).connect()
        await a.insert("hello ")
        await b.insert("world")
        await eventually(lambda: str(a.text) == str(b.text) and len(str(a.text)) == 11)
        counts = _connections(lbs["lb1"])
        assert sorted(counts.values())[-1] == 2 and sum(counts.values()) == 2, counts
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_killed_sync_server_loses_nothing(lbs, inventory):
    import testinfra

    room = f"molecule-{uuid.uuid4().hex[:8]}"

    async def scenario():
        a = await YClient(SYNC_URL, room).connect()
        for i in range(20):
            await a.insert(f"{i};")
        # Blocking calls (testinfra) run in threads: the client's event loop keeps answering pings.
        connections = await asyncio.to_thread(_connections, lbs["lb1"])
        holder = next(name for name, n in connections.items() if n == 1)
        node = testinfra.get_host(f"ansible://{holder}?ansible_inventory={inventory}")
        await asyncio.to_thread(node.check_output, "systemctl kill -s KILL rtmx-sync")
        await eventually(lambda: a.closed is not None, what="the client to notice the dead server")
        a.text += "offline;"
        await eventually_connect(a)
        b = await YClient(SYNC_URL, room).connect()
        await eventually(lambda: str(a.text) == str(b.text) and str(b.text).count(";") == 21, within=30)
        await a.close()
        await b.close()
        await asyncio.to_thread(wait_for, lambda: node.service("rtmx-sync").is_running, timeout=30,
                                what=f"{holder} restarted by systemd")

    asyncio.run(scenario())


async def eventually_connect(client, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await client.connect()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
