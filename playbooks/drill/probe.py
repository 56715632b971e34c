#!/usr/bin/env python3
"""Drill probes: what clients of the stack see while a fault is injected.

Runs until the stop file appears, then does the final reads and writes one
JSON file of raw observations (report.py turns them into figures):
- a PostgreSQL writer through the VIP (PgBouncer), every acknowledged commit
  recorded, then read back: acknowledged writes lost = RPO;
- a watcher asking every PostgreSQL node directly whether it is writable
  (two at once = split brain), and Patroni who leads;
- a Redis writer through the VIP, then read back; the Sentinels' master;
- an HTTP client of the RTMX API through the VIP: GET /api/status in a
  loop, each request recorded (failed ones too, and which instance answered,
  from HAProxy's X-Rtmx-Api-Server header);
- pycrdt clients editing: through the VIP like users (several rooms, so
  HAProxy spreads them over the servers; the server each lands on is read
  from HAProxy's X-Rtmx-Sync-Server header) and one straight to each server;
  disconnects and reconnects, at the end whether every update reached every
  server, and whether every server serves a new room within 2 s.

Usage: probe.py CONFIG.json  (CONFIG holds credentials: keep it mode 600)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

import psycopg
import redis.asyncio as aioredis

try:  # The sync probe needs the sync server's client (pip install ./sync_server).
    from rtmx_sync.auth import issue
    from rtmx_sync.client import YClient
except ImportError:  # pragma: no cover - reported in the output
    YClient = None

WRITE_TIMEOUT = 15.0  # longer than a PgBouncer pause; slower writes still count as unavailability
TICK = 0.1
NEW_ROOM_MAX_S = 2.0  # a server that takes longer to answer a new room's handshake does not serve
SERVED_BY = "x-rtmx-sync-server"  # HAProxy names the sync server behind a VIP connection
API_PATH = "/api/status"
# Longer than HAProxy's retry of a request a dead instance left unanswered (haproxy_api_timeout_server, 5 s),
# short enough that a request stuck on a lost lb does not stretch the VIP move's gap much.
API_TIMEOUT = 6.5
API_SERVED_BY = "X-Rtmx-Api-Server"


class Probe:
    def __init__(self, config: dict):
        self.cfg = config
        self.run_id = config["run_id"]
        self.stop = asyncio.Event()
        self.pg_writes: list[list] = []  # [start, end, ok, seq, error]
        self.redis_writes: list[list] = []
        self.primaries: list[list] = []  # [t, [writable node names], [unreachable]]
        self.leaders: list[list] = []  # [t, leader or None]
        self.redis_masters: list[list] = []  # [t, master or None]
        self.sync_clients: list[dict] = []
        self.api_requests: list[list] = []  # [start, end, ok, HTTP status or None, instance or error]
        self.sync_token_value = ""
        self.loop_stalls: list[list] = []  # [t, seconds] the probe's event loop did not run
        self.notes: list[str] = []
        self.errors: list[str] = []  # the probe itself broke: its figures cannot be trusted

    # PostgreSQL ------------------------------------------------------------
    def pg_params(self) -> dict:
        pg = self.cfg["pg"]
        return dict(host=pg["host"], port=pg["port"], dbname=pg["dbname"], user=pg["user"], password=pg["password"],
                    connect_timeout=3, autocommit=True, prepare_threshold=None, application_name="rtmx-drill-probe")

    async def pg_writer(self) -> None:
        table = self.cfg["pg"]["table"]
        conn = None
        seq = 0
        while not self.stop.is_set():
            seq += 1
            start = time.time()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(**self.pg_params()), WRITE_TIMEOUT)
                await asyncio.wait_for(
                    conn.execute(f"INSERT INTO {table} (run_id, seq) VALUES (%s, %s)", (self.run_id, seq)),
                    WRITE_TIMEOUT)
                self.pg_writes.append([start, time.time(), True, seq, None])
            except (TimeoutError, psycopg.Error, OSError) as error:
                self.pg_writes.append([start, time.time(), False, seq, (str(error) or type(error).__name__)[:160]])
                if conn is not None:
                    await close_quietly(conn)
                conn = None
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.05)
        if conn is not None:
            await close_quietly(conn)

    async def pg_prepare(self) -> None:
        table = self.cfg["pg"]["table"]
        async with await psycopg.AsyncConnection.connect(**self.pg_params()) as conn:
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (run_id text NOT NULL, seq bigint NOT NULL, "
                               "at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, seq))")

    async def pg_final_read(self) -> dict:
        table = self.cfg["pg"]["table"]
        acked = {w[3] for w in self.pg_writes if w[2]}
        for _attempt in range(30):
            try:
                async with await psycopg.AsyncConnection.connect(**self.pg_params()) as conn:
                    cur = await conn.execute(f"SELECT seq FROM {table} WHERE run_id = %s", (self.run_id,))
                    present = {row[0] for row in await cur.fetchall()}
                    await conn.execute(f"DELETE FROM {table} WHERE run_id = %s", (self.run_id,))
                return {"acked": len(acked), "present": len(present), "lost": sorted(acked - present)[:100],
                        "lost_count": len(acked - present), "read_ok": True}
            except psycopg.Error as error:
                last = str(error)
                await asyncio.sleep(1)
        return {"acked": len(acked), "read_ok": False, "error": last, "lost_count": None}

    async def primary_watcher(self) -> None:
        nodes = [dict(zip(("name", "host"), n.split("=", 1)), port=5432) for n in self.cfg["pg"]["nodes"]]
        conns: dict[str, psycopg.AsyncConnection | None] = {n["name"]: None for n in nodes}
        params = self.pg_params()

        async def ask(node: dict):
            conn = conns[node["name"]]
            try:
                if conn is None:
                    conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(
                        **dict(params, host=node["host"], port=node["port"], connect_timeout=1)), 1.5)
                    conns[node["name"]] = conn
                cur = await asyncio.wait_for(conn.execute("SELECT pg_is_in_recovery()"), 1.0)
                return (await cur.fetchone())[0] is False
            except (TimeoutError, psycopg.Error, OSError):
                if conn is not None:
                    asyncio.ensure_future(close_quietly(conn))
                conns[node["name"]] = None
                return None

        while not self.stop.is_set():
            now = time.time()
            answers = await asyncio.gather(*(ask(n) for n in nodes))
            writable = [n["name"] for n, a in zip(nodes, answers) if a is True]
            unreachable = [n["name"] for n, a in zip(nodes, answers) if a is None]
            self.primaries.append([now, writable, unreachable])
            await asyncio.sleep(0.25)
        for conn in conns.values():
            if conn is not None:
                await close_quietly(conn)

    async def leader_watcher(self) -> None:
        """The leader a majority of Patroni members name: an isolated member keeps a stale view of the
        cluster (its last DCS read), so no single member's answer is the cluster's."""
        urls = self.cfg["patroni_urls"]

        def ask(url: str) -> str | None:
            try:
                with urllib.request.urlopen(url.rstrip("/") + "/cluster", timeout=1) as answer:
                    members = json.load(answer).get("members", [])
            except (OSError, ValueError):
                return None
            leaders = [m["name"] for m in members if m.get("role") in ("leader", "master")
                       and m.get("state") == "running"]
            return leaders[0] if len(leaders) == 1 else None

        while not self.stop.is_set():
            now = time.time()
            named = await asyncio.gather(*(asyncio.to_thread(ask, url) for url in urls))
            self.leaders.append([now, majority_leader(named, len(urls))])
            await asyncio.sleep(0.25)

    # Redis -----------------------------------------------------------------
    async def redis_writer(self) -> None:
        r = self.cfg["redis"]
        client = aioredis.Redis(host=r["host"], port=r["port"], password=r["password"], socket_timeout=2,
                                socket_connect_timeout=2, retry_on_timeout=False)
        seq = 0
        while not self.stop.is_set():
            seq += 1
            start = time.time()
            try:
                await asyncio.wait_for(client.set(f"rtmx:drill:{self.run_id}:{seq}", "1", ex=3600), WRITE_TIMEOUT)
                self.redis_writes.append([start, time.time(), True, seq, None])
            except (TimeoutError, aioredis.RedisError, OSError) as error:
                self.redis_writes.append([start, time.time(), False, seq, (str(error) or type(error).__name__)[:160]])
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.05)
        await client.aclose()

    async def redis_final_read(self) -> dict:
        r = self.cfg["redis"]
        acked = [w[3] for w in self.redis_writes if w[2]]
        client = aioredis.Redis(host=r["host"], port=r["port"], password=r["password"], socket_timeout=3)
        try:
            for _attempt in range(30):
                try:
                    present = set()
                    for i in range(0, len(acked), 500):
                        chunk = acked[i:i + 500]
                        values = await client.mget([f"rtmx:drill:{self.run_id}:{s}" for s in chunk])
                        present.update(s for s, v in zip(chunk, values) if v is not None)
                    lost = sorted(set(acked) - present)
                    return {"acked": len(acked), "present": len(present), "lost": lost[:100], "lost_count": len(lost),
                            "read_ok": True}
                except (aioredis.RedisError, OSError) as error:
                    last = str(error)
                    await asyncio.sleep(1)
            return {"acked": len(acked), "read_ok": False, "error": last, "lost_count": None}
        finally:
            await client.aclose()

    async def master_watcher(self) -> None:
        r = self.cfg["redis"]
        clients = []
        for address in self.cfg["sentinels"]:
            host, port = address.rsplit(":", 1)
            clients.append(aioredis.Redis(host=host, port=int(port), password=self.cfg["sentinel_password"],
                                          socket_timeout=1, socket_connect_timeout=1))

        async def ask(client):
            try:
                addr = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", r["master_name"])
                return "%s:%s" % (addr[0].decode(), addr[1].decode()) if addr else None
            except (aioredis.RedisError, OSError):
                return None

        while not self.stop.is_set():
            now = time.time()
            answers = await asyncio.gather(*(ask(c) for c in clients))
            votes: dict[str, int] = {}
            for a in answers:
                if a:
                    votes[a] = votes.get(a, 0) + 1
            majority = len(clients) // 2 + 1
            master = next((a for a, n in votes.items() if n >= majority), None)
            self.redis_masters.append([now, master])
            await asyncio.sleep(0.25)
        for c in clients:
            await c.aclose()

    # RTMX API -------------------------------------------------------------
    def api_get(self, url: str) -> tuple[bool, int | None, str]:
        """One GET through the VIP: (ok, HTTP status, the instance that answered or the error)."""
        try:
            with urllib.request.urlopen(url, timeout=API_TIMEOUT) as answer:
                body = answer.read()
                status, served_by = answer.status, answer.headers.get(API_SERVED_BY, "?")
            ok = status == 200 and "total" in json.loads(body or b"{}")
            return ok, status, served_by if ok else f"unexpected body from {served_by}"
        except urllib.error.HTTPError as error:
            return False, error.code, f"HTTP {error.code} from {error.headers.get(API_SERVED_BY, '?')}"
        except (OSError, ValueError) as error:
            return False, None, (str(error) or type(error).__name__)[:160]

    async def api_prober(self) -> None:
        url = self.cfg["api"]["vip_url"].rstrip("/") + API_PATH
        while not self.stop.is_set():
            start = time.time()
            ok, status, detail = await asyncio.to_thread(self.api_get, url)
            self.api_requests.append([start, time.time(), ok, status, detail])
            await asyncio.sleep(0.1)

    # Sync servers ----------------------------------------------------------
    def sync_token(self) -> str:
        sync = self.cfg["sync"]
        if not sync.get("auth_key"):
            return ""
        # The first key signs, as on the servers (blank lines and # comments skipped).
        key = next(k for k in (line.strip() for line in sync["auth_key"].splitlines()) if k and not k.startswith("#"))
        return issue(key.encode(), f"{sync['room']}*", "rtmx-drill-probe", 3600)

    def sync_plan(self) -> list[tuple[str, str, str]]:
        """(via, url, room) per client: through the VIP in several rooms, and one straight to each server."""
        sync = self.cfg["sync"]
        plan = [("vip", sync["vip_url"], f"{sync['room']}-vip{i}") for i in range(sync.get("vip_rooms", 0))]
        return plan + [("direct", url, f"{sync['room']}-direct") for url in sync["servers"]]

    def sync_server_name(self, client, via: str, url: str) -> str:
        if via == "vip":
            return client.ws.response.headers.get(SERVED_BY, "?")
        return self.cfg["sync"]["names"].get(url, url)

    async def sync_client(self, via: str, url: str, room: str) -> None:
        servers = self.cfg["sync"]["servers"]
        state = {"via": via, "url": url, "room": room, "sent": [], "disconnects": [], "reconnects": [],
                 "servers_used": []}
        self.sync_clients.append(state)
        number = len(self.sync_clients)  # now, not later: every client's edits must be told apart
        client = YClient(url, room, self.sync_token_value)
        state["client"] = client
        await client.connect(open_timeout=5)
        state["servers_used"].append(self.sync_server_name(client, via, url))
        n = 0
        target = servers.index(url) if via == "direct" else 0
        while not self.stop.is_set():
            if client.closed is not None:
                state["disconnects"].append([time.time(), state["servers_used"][-1], list(client.closed)])
                # Reconnect as a Yjs provider would: through the VIP again, or (direct) to the next server.
                while not self.stop.is_set():
                    if via == "direct":
                        target = (target + 1) % len(servers)
                    try:
                        await client.connect(servers[target] if via == "direct" else url, open_timeout=2)
                        state["reconnects"].append(time.time())
                        state["servers_used"].append(self.sync_server_name(client, via, client.url))
                        break
                    except Exception:  # noqa: BLE001 - any failed handshake
                        await asyncio.sleep(0.2)
            n += 1
            token = f"[{via}{number}:{room}:{n}]"
            try:
                await client.insert(token)
            except Exception:  # noqa: BLE001 - kept locally, synced on reconnect
                pass
            state["sent"].append([time.time(), token])
            await asyncio.sleep(0.25)

    async def serves_new_room(self, url: str, room: str) -> float | str:
        """Seconds until a server completes a new room's sync handshake, or why it did not."""
        started = time.time()
        client = YClient(url, room, self.sync_token_value)
        try:
            await client.connect(open_timeout=NEW_ROOM_MAX_S)
            await asyncio.wait_for(client.synced.wait(), NEW_ROOM_MAX_S)
            return round(time.time() - started, 3)
        except Exception as error:  # noqa: BLE001 - reported per server
            return f"{type(error).__name__}: {error}"[:200]
        finally:
            if client.ws is not None:
                await client.close()

    async def sync_final(self) -> dict:
        def missing(tokens: set, text: str) -> set:
            return {t for t in tokens if t not in text}

        rooms: dict[str, set] = {}
        for c in self.sync_clients:
            rooms.setdefault(c["room"], set()).update(t for _, t in c["sent"])
        start = time.time()
        converged = None
        while time.time() - start < 20:
            if all(c["client"].closed is None and not missing(rooms[c["room"]], str(c["client"].text))
                   for c in self.sync_clients):
                converged = round(time.time() - start, 2)
                break
            await asyncio.sleep(0.1)
        # Every room read back from every server: updates lost anywhere.
        per_server = {}
        for url in self.cfg["sync"]["servers"]:
            lost = 0
            for room, tokens in rooms.items():
                fresh = YClient(url, room, self.sync_token_value)
                try:
                    await fresh.connect(open_timeout=5)
                    deadline = time.time() + 10
                    while missing(tokens, str(fresh.text)) and time.time() < deadline:
                        await asyncio.sleep(0.1)
                    lost = max(lost, len(missing(tokens, str(fresh.text))))
                    await fresh.close()
                except Exception as error:  # noqa: BLE001 - a server that stays down is reported, not fatal
                    lost = f"unreachable: {error}"
                    break
            per_server[url] = lost
        for c in self.sync_clients:
            try:
                await c["client"].close()
            except Exception:  # noqa: BLE001
                pass
        new_room = {}
        for i, url in enumerate(self.cfg["sync"]["servers"]):
            name = self.cfg["sync"]["names"].get(url, url)
            new_room[name] = await self.serves_new_room(url, f"{self.cfg['sync']['room']}-new{i}")
        lost = [v for v in per_server.values() if isinstance(v, int)]
        return {"updates": sum(len(t) for t in rooms.values()), "converged_after_stop_s": converged,
                "missing_per_server": per_server, "updates_lost": max(lost) if lost else None,
                "new_room_s": new_room}

    # Run -------------------------------------------------------------------
    async def loop_watcher(self) -> None:
        """Stalls of the probe's own event loop: its clients could not answer pings meanwhile."""
        while not self.stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(TICK)
            lag = time.monotonic() - before - TICK
            if lag > 1.0:
                self.loop_stalls.append([time.time(), round(lag, 2)])

    async def wait_for_stop(self) -> None:
        deadline = time.time() + self.cfg.get("max_seconds", 1800)
        while not os.path.exists(self.cfg["stop_file"]) and time.time() < deadline:
            await asyncio.sleep(TICK)
        self.stop.set()

    async def run(self) -> dict:
        started = time.time()
        await self.pg_prepare()
        tasks = [self.pg_writer(), self.primary_watcher(), self.leader_watcher(), self.redis_writer(),
                 self.master_watcher(), self.loop_watcher()]
        if self.cfg.get("api", {}).get("vip_url"):
            tasks.append(self.api_prober())
        if YClient is not None and self.cfg.get("sync", {}).get("servers"):
            self.sync_token_value = self.sync_token()
            tasks += [self.sync_client(*client) for client in self.sync_plan()]
        elif self.cfg.get("sync", {}).get("servers"):
            self.errors.append("sync probe skipped: rtmx_sync is not on the controller (pip install ./sync_server)")
        ready = os.path.join(os.path.dirname(self.cfg["out"]), os.path.basename(self.cfg["out"]) + ".ready")
        runners = [asyncio.ensure_future(t) for t in tasks]
        await asyncio.sleep(1.0)
        open(ready, "w").close()
        await self.wait_for_stop()
        results = await asyncio.gather(*runners, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.errors.append(f"probe task failed: {result!r}")
        stopped = time.time()
        final = {"pg": await self.pg_final_read(), "redis": await self.redis_final_read()}
        if self.sync_clients:
            final["sync"] = await self.sync_final()
        return {
            "run_id": self.run_id, "started": started, "stopped": stopped, "notes": self.notes, "errors": self.errors,
            "pg_nodes": [n.split("=", 1)[0] for n in self.cfg["pg"]["nodes"]],
            "pg_writes": self.pg_writes, "redis_writes": self.redis_writes, "primaries": self.primaries,
            "leaders": self.leaders, "redis_masters": self.redis_masters,
            "sync_clients": [{k: v for k, v in c.items() if k != "client"} for c in self.sync_clients],
            "loop_stalls": self.loop_stalls,
            "api_requests": self.api_requests if self.cfg.get("api", {}).get("vip_url") else None,
            "final": final,
        }


def majority_leader(named: list, total: int) -> str | None:
    """The name more than half of all `total` members give (None for no answer), else None."""
    votes: dict[str, int] = {}
    for name in named:
        if name:
            votes[name] = votes.get(name, 0) + 1
    return next((name for name, count in votes.items() if count > total // 2), None)


async def close_quietly(conn) -> None:
    try:
        await asyncio.wait_for(conn.close(), 1)
    except Exception:  # noqa: BLE001 - closing a dead connection
        pass


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    # The file holds credentials: gone once read, so an aborted drill leaves none behind.
    os.unlink(sys.argv[1])
    result = asyncio.run(Probe(config).run())
    tmp = config["out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os.replace(tmp, config["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
