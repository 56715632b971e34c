"""Sync servers: all active behind HAProxy, a room stays on one server, a
killed server loses nothing (clients reconnect through the VIP), clients need
a valid token for their room, tokens reach no log, and a rolling restart
loses no edit."""

import asyncio
import json
import threading
import time
import uuid

import pytest
import testinfra
import websockets

from conftest import ADDRESSES, PROJECT_DIR, VIP, playbook, role_default, secret, sync_token, wait_for
from rtmx_sync.client import YClient, eventually

testinfra_hosts = ["lb1"]

SYNC = {"sync1": "198.18.1.21", "sync2": "198.18.1.22", "sync3": "198.18.1.23"}
SYNC_URL = f"ws://{VIP}:8080"


def client(room: str, **token) -> YClient:
    return YClient(SYNC_URL, room, sync_token(room, **token))


def _connections(lb) -> dict:
    """Open client connections per server; the minimum of three reads, so that
    HAProxy's short-lived WebSocket health checks are not counted."""
    counts = {name: 10**6 for name in SYNC}
    for _ in range(3):
        for name, address in SYNC.items():
            metrics = lb.check_output(f"curl -sf http://{address}:8765/metrics")
            # prometheus-client writes every value as a float.
            current = int(float(next(line.split()[1] for line in metrics.splitlines()
                                     if line.startswith("rtmx_sync_connections "))))
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


def test_each_server_may_hold_twice_its_connection_cap_in_descriptors(inventory):
    # Connections over the cap are accepted, then refused with a reason: under systemd's default 1024
    # descriptors a server would fail with EMFILE long before its 5000 connections.
    wanted = 2 * role_default("sync_server", "sync_server_max_connections")
    for name in SYNC:
        node = testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")
        pid = node.check_output("systemctl show -p MainPID --value rtmx-sync")
        (soft,) = [line.split()[3] for line in node.check_output(f"cat /proc/{pid}/limits").splitlines()
                   if line.startswith("Max open files")]
        assert int(soft) >= wanted, (name, soft)


def test_clients_of_one_room_share_a_server_and_converge(lbs):
    room = f"molecule-{uuid.uuid4().hex[:8]}"

    async def scenario():
        a = await client(room).connect()
        b = await client(room).connect()
        await a.insert("hello ")
        await b.insert("world")
        await eventually(lambda: str(a.text) == str(b.text) and len(str(a.text)) == 11)
        counts = await asyncio.to_thread(_connections, lbs["lb1"])
        assert sorted(counts.values())[-1] == 2 and sum(counts.values()) == 2, counts
        # HAProxy names the server that took the connection.
        assert a.ws.response.headers["X-Rtmx-Sync-Server"] == max(counts, key=counts.get)
        await a.close()
        await b.close()

    asyncio.run(scenario())


async def closed_with(url: str, subprotocols=None) -> tuple[int, str]:
    """Connect, read until the server closes; its close code and reason."""
    async with websockets.connect(url, subprotocols=subprotocols, open_timeout=5) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        return closed.value.rcvd.code, closed.value.rcvd.reason


def test_clients_need_a_valid_token_for_their_room():
    room = f"molecule-{uuid.uuid4().hex[:8]}"

    async def scenario():
        assert await closed_with(f"{SYNC_URL}/{room}") == (1008, "authentication required")
        assert (await closed_with(f"{SYNC_URL}/{room}?token={sync_token('another-room')}"))[0] == 1008
        expired = sync_token(room, now=time.time() - 7200)
        assert await closed_with(f"{SYNC_URL}/{room}?token={expired}") == (1008, "token expired")
        forged = sync_token(room)[:-4] + "AAAA"
        assert await closed_with(f"{SYNC_URL}/{room}?token={forged}") == (1008, "invalid token")
        # A writer, a reader with a read-only token: the reader reads, its edits are refused.
        writer = await client(room).connect()
        await writer.insert("written;")
        reader = await client(room, read_only=True).connect()
        await eventually(lambda: str(reader.text) == "written;", what="the read-only client to read")
        await reader.insert("forbidden;")
        await eventually(lambda: reader.closed is not None, what="the read-only client's edit to be refused")
        assert reader.closed[0] == 1008, reader.closed
        assert "forbidden" not in str(writer.text)
        await writer.close()
        # A browser puts its token in the subprotocol header instead of the URL.
        async with websockets.connect(f"{SYNC_URL}/{room}", open_timeout=5,
                                      subprotocols=["rtmx-sync", f"token.{sync_token(room)}"]) as ws:
            assert ws.subprotocol == "rtmx-sync"
            assert (await asyncio.wait_for(ws.recv(), 5))[0] == 0  # the server's sync message

    asyncio.run(scenario())


def test_tokens_reach_no_log(lbs, inventory):
    room = f"molecule-{uuid.uuid4().hex[:8]}"
    token = sync_token(room)

    async def scenario():
        c = await YClient(SYNC_URL, room, token).connect()
        await c.insert("logged?")
        await c.close()

    asyncio.run(scenario())
    # The token's signature is what must not leak, from the lbs' HAProxy logs and every sync server's journal;
    # the connection itself is logged (so the logs were read, not missing).
    signature = token.rsplit(".", 1)[1]
    hosts = dict(lbs)
    hosts.update({name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in SYNC})
    logged = set()
    for name, host in hosts.items():
        logs = host.check_output("journalctl --no-pager -q --since '-10min'")
        assert signature not in logs, f"a sync token reached the logs of {name}"
        if f"/{room}" in logs:
            logged.add("lb" if name in lbs else "sync")
    assert logged == {"lb", "sync"}, f"the connection to {room} is missing from the logs: {logged}"


def test_killed_sync_server_loses_nothing(lbs, inventory):
    import testinfra

    room = f"molecule-{uuid.uuid4().hex[:8]}"

    async def scenario():
        a = await client(room).connect()
        for i in range(20):
            await a.insert(f"{i};")
        holder = a.ws.response.headers["X-Rtmx-Sync-Server"]
        node = testinfra.get_host(f"ansible://{holder}?ansible_inventory={inventory}")
        # Blocking calls (testinfra) run in threads: the client's event loop keeps answering pings.
        await asyncio.to_thread(node.check_output, "systemctl kill -s KILL rtmx-sync")
        await eventually(lambda: a.closed is not None, what="the client to notice the dead server")
        a.text += "offline;"
        await eventually_connect(a)
        b = await client(room).connect()
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
            await asyncio.sleep(0.2)


def test_rolling_restart_loses_no_edit_and_every_client_comes_back(inventory):
    """rolling-restart.yml restarts every sync server, one at a time, while clients in rooms spread over
    all of them edit through the VIP: every client is back after each restart, nothing is lost."""
    rooms = [f"rolling-{uuid.uuid4().hex[:6]}-{i}" for i in range(9)]
    done = threading.Event()
    outcome = {}

    def restart():
        started = time.monotonic()
        try:
            playbook(PROJECT_DIR, inventory, "playbooks/rolling-restart.yml", timeout=600)
            outcome["ok"] = True
        finally:
            outcome["duration_s"] = round(time.monotonic() - started, 1)
            done.set()

    async def edit(c: YClient, gaps: list, served: set):
        n = 0
        while not done.is_set():
            if c.closed is not None:
                lost_at = time.monotonic()
                await eventually_connect(c, timeout=60)
                gaps.append(time.monotonic() - lost_at)
            served.add(c.ws.response.headers["X-Rtmx-Sync-Server"])
            n += 1
            try:
                await c.insert(f"[{id(c)}:{n}]")
            except Exception:  # kept locally, synced on reconnect
                pass
            await asyncio.sleep(0.2)

    async def scenario():
        clients = [await client(room).connect() for room in rooms for _ in range(2)]
        gaps: list[float] = []
        served: set = set()
        worker = threading.Thread(target=restart)
        worker.start()
        await asyncio.gather(*(edit(c, gaps, served) for c in clients))
        await asyncio.to_thread(worker.join)
        assert outcome.get("ok"), "rolling-restart.yml failed"
        assert served == set(SYNC), f"the rooms did not cover every server: {served}"
        for a, b in zip(clients[::2], clients[1::2]):
            await eventually(lambda a=a, b=b: a.closed is None and b.closed is None and str(a.text) == str(b.text),
                             within=30, what="both clients of a room connected and converged")
        expected = {room: str(a.text) for room, a in zip(rooms, clients[::2])}
        for c in clients:
            await c.close()
        for room, text in expected.items():
            fresh = await client(room).connect()
            await eventually(lambda fresh=fresh, text=text: str(fresh.text) == text, within=30,
                             what=f"room {room} read back whole")
            await fresh.close()
        print(f"rolling restart: {outcome['duration_s']} s, {len(gaps)} client reconnects, "
              f"longest client gap {max(gaps, default=0):.2f} s")
        assert gaps, "no client was moved: the restart did not drain anyone"
        assert max(gaps) < 5, f"a client was away {max(gaps):.2f} s"

    asyncio.run(scenario())
