"""Sync servers ride through a PostgreSQL switchover and a Redis failover
without a restart: clients keep converging and nothing is lost."""

import asyncio
import json
import uuid

from conftest import ADDRESSES, VIP, leader_name, patroni_cluster, redis_cli, redis_master, secret, sync_token, wait_for
from rtmx_sync.client import YClient, eventually

testinfra_hosts = ["lb1"]

SYNC = {"sync1": "198.18.1.21", "sync2": "198.18.1.22", "sync3": "198.18.1.23"}


def _healthy(lb) -> bool:
    for address in SYNC.values():
        answer = lb.run(f"curl -s http://{address}:8765/health")
        if answer.rc != 0 or json.loads(answer.stdout or "{}").get("status") != "ok":
            return False
    return True


def test_sync_survives_postgres_switchover_and_redis_failover(nodes, lbs):
    rooms = [f"failover-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    node = nodes["pg1"]

    def switch_over() -> tuple[str, str]:
        old = leader_name(node)
        candidate = next(m["name"] for m in patroni_cluster(node)["members"] if m["role"] == "sync_standby")
        body = json.dumps({"leader": old, "candidate": candidate})
        node.check_output(f"curl -sf -u patroni:{secret('patroni_restapi_password')} -X POST -d '{body}' "
                          f"http://{ADDRESSES['pg1']}:8008/switchover")
        return old, candidate

    def redis_failover() -> str:
        old_master = redis_master(nodes)
        assert redis_cli(nodes["pg1"], "SENTINEL", "FAILOVER", "rtmx", sentinel=True) == "OK"
        return old_master

    def settled(candidate: str, old_master: str) -> None:
        wait_for(lambda: leader_name(node) == candidate and all(
            m["state"] in ("running", "streaming") for m in patroni_cluster(node)["members"]),
            timeout=60, what=f"{candidate} to lead with every member running")
        wait_for(lambda: redis_master(nodes) != old_master, timeout=60, what="Redis failover")
        wait_for(lambda: _healthy(lbs["lb1"]), timeout=60, what="every sync server healthy again")

    async def scenario():
        clients = {room: [await YClient(f"ws://{VIP}:8080", room, sync_token(room)).connect() for _ in range(2)]
                   for room in rooms}
        for room, (a, _) in clients.items():
            await a.insert(f"{room}:before;")
        # Blocking calls (testinfra, curl) run in threads: the clients' event loop keeps answering pings.
        _old, candidate = await asyncio.to_thread(switch_over)
        old_master = await asyncio.to_thread(redis_failover)
        for i in range(10):
            for room, (a, b) in clients.items():
                await (a if i % 2 else b).insert(f"{i};")
            await asyncio.sleep(0.5)
        await asyncio.to_thread(settled, candidate, old_master)
        for room, (a, b) in clients.items():
            await eventually(lambda a=a, b=b: str(a.text) == str(b.text) and str(a.text).count(";") == 11, within=30)
            assert all(c.closed is None for c in (a, b)), "a client was disconnected by a backend failover"
        expected = {room: str(a.text) for room, (a, _) in clients.items()}
        for a, b in clients.values():
            await a.close()
            await b.close()
        # Every update reached PostgreSQL: a new client of each room gets the whole document.
        for room, text in expected.items():
            fresh = await YClient(f"ws://{VIP}:8080", room, sync_token(room)).connect()
            await eventually(lambda fresh=fresh, text=text: str(fresh.text) == text, within=30)
            await fresh.close()

    asyncio.run(scenario())
