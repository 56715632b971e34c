"""Several active servers converge through Redis and PostgreSQL."""

import asyncio
import json
import secrets
import uuid

import psycopg
import pytest
import websockets
from prometheus_client import CONTENT_TYPE_LATEST
from pycrdt import Decoder, YMessageType

from conftest import YClient, eventually, presence, wait_until
from rtmx_sync.auth import issue


def room() -> str:
    return f"doc-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


def test_clients_on_two_servers_converge(servers):
    one, two = servers("sync-a"), servers("sync-b")
    name = room()

    async def scenario():
        a = await YClient(one.url, name).connect()
        b = await YClient(two.url, name).connect()
        await a.insert("hello ")
        await b.insert("world ")
        await eventually(lambda: str(a.text) == str(b.text) and len(str(a.text)) == 12)
        for i in range(50):
            await (a if i % 2 else b).insert(f"{i};")
        await eventually(lambda: str(a.text) == str(b.text) and str(a.text).count(";") == 50)
        await a.close()
        await b.close()

    run(scenario())


def test_killed_server_client_reconnects_elsewhere_and_nothing_is_lost(servers):
    one, two = servers("sync-a"), servers("sync-b")
    name = room()

    async def scenario():
        a = await YClient(one.url, name).connect()
        b = await YClient(two.url, name).connect()
        for i in range(20):
            await a.insert(f"a{i};")
        await eventually(lambda: str(b.text).count(";") == 20)
        one.kill()
        await eventually(lambda: a.closed is not None, what="client A to notice the dead server")
        # Edits made while disconnected, then a reconnect to the surviving server.
        a.text += "offline;"
        await a.connect(two.url)
        await b.insert("b-after;")
        await eventually(lambda: str(a.text) == str(b.text) and str(a.text).count(";") == 22)
        await a.close()
        await b.close()

    run(scenario())


def test_document_survives_every_server_restart(servers, postgres_dsn):
    name = room()

    async def write_then_leave():
        one, two = servers("sync-a"), servers("sync-b")
        a = await YClient(one.url, name).connect()
        b = await YClient(two.url, name).connect()
        await a.insert("durable ")
        await b.insert("text")
        await eventually(lambda: str(a.text) == str(b.text) and len(str(a.text)) == 12)
        expected = str(a.text)
        await a.close()
        await b.close()
        assert one.terminate() and two.terminate()
        return expected

    expected = run(write_then_leave())
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM rtmx_sync_updates WHERE room = %s", (name,)).fetchone()[0] >= 2

    async def fresh_client():
        three = servers("sync-c")
        c = await YClient(three.url, name).connect()
        await eventually(lambda: str(c.text) == expected, what="document loaded from PostgreSQL")
        await c.close()

    run(fresh_client())


def test_bad_frames_and_room_names_close_only_that_connection(servers):
    server = servers("sync-a")
    name = room()

    async def scenario():
        good = await YClient(server.url, name).connect()
        async with websockets.connect(f"{server.url}/{name}") as bad:
            await bad.send(b"\x07\x00garbage")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await bad.recv()
            assert closed.value.rcvd.code == 1008
        async with websockets.connect(f"{server.url}/bad%20room%00") as bad_name:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await bad_name.recv()
            assert closed.value.rcvd.code == 1008 and "room" in closed.value.rcvd.reason
        await good.insert("still fine")
        assert good.closed is None
        await good.close()

    run(scenario())
    assert server.health() == 200


def test_token_authentication(servers, tmp_path):
    key = secrets.token_urlsafe(48).encode()
    (tmp_path / "sync.key").write_bytes(key + b"\n")
    server = servers(
        "sync-a", RTMX_SYNC_SERVER_AUTH_KEY_FILE=str(tmp_path / "sync.key"), RTMX_SYNC_SERVER_ALLOW_ANONYMOUS="false"
    )
    name = room()

    async def scenario():
        async with websockets.connect(f"{server.url}/{name}") as anonymous:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await anonymous.recv()
            assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "authentication required"
        token = issue(key, name, "alice", ttl_s=300)
        async with websockets.connect(f"{server.url}/{name}?token={token}") as allowed:
            assert (await allowed.recv())[0] == 0  # SYNC_STEP1 from the server

    run(scenario())


def test_sigterm_closes_clients_so_they_reconnect(servers):
    one = servers("sync-a")

    async def scenario():
        a = await YClient(one.url, room()).connect()
        assert one.terminate()
        await eventually(lambda: a.closed is not None, what="close frame")
        assert a.closed[0] in (1001, 1012)

    run(scenario())


def test_health_and_metrics(servers):
    import urllib.request

    server = servers("sync-a")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=2) as answer:
        body = answer.read().decode()
        assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert "rtmx_sync_connections" in body and "rtmx_sync_cross_server_latency_seconds_count" in body
    assert "# TYPE rtmx_sync_cross_server_latency_seconds histogram" in body
    assert 'rtmx_sync_update_store_seconds_bucket{le="+Inf"} 0.0' in body
    status, health = server.health_report()
    assert status == 200 and server.metrics()["rtmx_sync_connections"] == health["connections"] == 0


def test_websocket_health_endpoint_opens_no_room(servers):
    server = servers("sync-a")

    async def scenario():
        async with websockets.connect(f"{server.url}/_health") as check:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await check.recv()
            assert closed.value.rcvd.code == 1000

    run(scenario())


def test_presence_is_sent_to_joiners_and_removed_when_its_connection_drops(servers):
    """Awareness as the y-websocket reference server keeps it: a joiner gets the presence already there, the
    sender gets its own back (keep-alive), and a connection that drops without saying goodbye is removed."""
    server = servers("sync-a")
    name = room()

    async def next_presence(ws) -> dict:
        async with asyncio.timeout(5):
            while True:
                message = await ws.recv()
                if message[0] == YMessageType.AWARENESS:
                    entries = Decoder(Decoder(message[1:]).read_message())
                    return {
                        entries.read_var_uint(): (entries.read_var_uint(), json.loads(entries.read_var_string()))
                        for _ in range(entries.read_var_uint())
                    }

    async def scenario():
        alice = await websockets.connect(f"{server.url}/{name}")
        await alice.send(presence(1, "alice"))
        assert await next_presence(alice) == {4242: (1, {"blob": "alice"})}  # echoed to the sender
        async with websockets.connect(f"{server.url}/{name}") as bob:
            assert await next_presence(bob) == {4242: (1, {"blob": "alice"})}  # known on join
            alice.transport.abort()  # gone without a removal message of its own
            assert await next_presence(bob) == {4242: (2, None)}

    run(scenario())


def test_room_streams_are_trimmed_and_expire(servers, redis_url):
    """Redis runs with noeviction: a room's stream keeps recent entries only and expires when the room is idle."""
    import redis

    from rtmx_sync.bus import STREAM_IDLE_EXPIRE_S, stream_key

    server = servers("sync-a")
    name = room()

    async def scenario():
        a = await YClient(server.url, name).connect()
        await a.insert("published;")
        await a.close()

    run(scenario())
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: server.sample("rtmx_sync_redis_published_total") >= 1, what="the update published")
    assert server.sample("rtmx_sync_redis_publish_dropped_total") == 0  # XADD, XTRIM and EXPIRE all worked
    assert 0 < client.ttl(stream_key(name)) <= STREAM_IDLE_EXPIRE_S
