"""Every limit refuses with its close code and reason, and is counted in /metrics."""

import asyncio
import base64
import os
import socket
import uuid

import pytest
import websockets

from conftest import YClient, eventually, presence


def room() -> str:
    return f"limits-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


async def closed_with(ws) -> tuple[int, str]:
    """Read until the server closes; (code, reason)."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def synced(url: str, name: str, **kwargs) -> websockets.ClientConnection:
    """A raw client past the server's first message (the room is open for it)."""
    ws = await websockets.connect(f"{url}/{name}", **kwargs)
    assert (await asyncio.wait_for(ws.recv(), 10))[0] == 0
    return ws


def test_connections_per_server(servers):
    server = servers("sync-a", RTMX_SYNC_SERVER_MAX_CONNECTIONS="2")

    async def scenario():
        first, second = await synced(server.url, room()), await synced(server.url, room())
        async with websockets.connect(f"{server.url}/{room()}") as third:
            assert await closed_with(third) == (1013, "server full, try again later")
        await first.close()
        # A place is free again.
        await eventually(lambda: server.metrics()["rtmx_sync_connections"] == 1)
        again = await synced(server.url, room())
        await again.close()
        await second.close()

    run(scenario())
    assert server.refused("max_connections") == 1


def test_connections_per_address_behind_a_trusted_proxy(servers):
    server = servers(
        "sync-a", RTMX_SYNC_SERVER_MAX_CONNECTIONS_PER_ADDRESS="2", RTMX_SYNC_SERVER_TRUSTED_PROXIES="127.0.0.0/8"
    )

    def via_proxy(address: str) -> dict:
        return {"additional_headers": {"X-Forwarded-For": address}}

    async def scenario():
        kept = [await synced(server.url, room(), **via_proxy("198.51.100.7")) for _ in range(2)]
        async with websockets.connect(f"{server.url}/{room()}", **via_proxy("198.51.100.7")) as third:
            assert await closed_with(third) == (1013, "too many connections from this address")
        # A forged first hop does not help: the proxy's own (last) entry counts.
        forged = via_proxy("203.0.113.1, 198.51.100.7")
        async with websockets.connect(f"{server.url}/{room()}", **forged) as spoofed:
            assert (await closed_with(spoofed))[0] == 1013
        # Another user behind the same proxy is let in.
        other = await synced(server.url, room(), **via_proxy("198.51.100.8"))
        for ws in (*kept, other):
            await ws.close()

    run(scenario())
    assert server.refused("max_connections_per_address") == 2


def test_forwarded_for_from_an_untrusted_peer_is_ignored(servers):
    server = servers(
        "sync-a", RTMX_SYNC_SERVER_MAX_CONNECTIONS_PER_ADDRESS="2", RTMX_SYNC_SERVER_TRUSTED_PROXIES="10.255.0.0/16"
    )

    async def scenario():
        kept = [
            await synced(server.url, room(), additional_headers={"X-Forwarded-For": f"198.51.100.{i}"})
            for i in range(2)
        ]
        headers = {"X-Forwarded-For": "198.51.100.99"}
        async with websockets.connect(f"{server.url}/{room()}", additional_headers=headers) as third:
            assert (await closed_with(third))[0] == 1013
        for ws in kept:
            await ws.close()

    run(scenario())
    assert server.refused("max_connections_per_address") == 1


def test_message_too_big(servers):
    server = servers("sync-a", RTMX_SYNC_SERVER_MAX_MESSAGE_BYTES="2048")

    async def scenario():
        ws = await synced(server.url, room())
        await ws.send(b"\x01" + b"x" * 4096)
        assert (await closed_with(ws))[0] == 1009

    run(scenario())
    assert server.refused("message_too_big") == 1


def test_message_rate(servers):
    server = servers("sync-a", RTMX_SYNC_SERVER_MAX_MESSAGES_PER_SECOND="5")
    name = room()

    async def scenario():
        calm, other = await YClient(server.url, name).connect(), await YClient(server.url, name).connect()
        ws = await synced(server.url, name)
        for _ in range(100):
            await ws.send(b"\x01\x01\x00")  # awareness: relayed, never stored
        assert await closed_with(ws) == (1013, "too many messages, try again later")
        # The other clients of the room are not affected.
        await calm.insert("still here;")
        await eventually(lambda: "still here;" in str(other.text))
        assert calm.closed is None and other.closed is None
        await calm.close()
        await other.close()

    run(scenario())
    assert server.refused("rate_limit") == 1


def test_document_size(servers):
    server = servers("sync-a", RTMX_SYNC_SERVER_MAX_DOCUMENT_BYTES="3000")
    name = room()

    async def scenario():
        writer = await YClient(server.url, name).connect()
        for i in range(10):
            try:
                await writer.insert(f"{i}" * 1000)
            except websockets.ConnectionClosed:
                break
            await asyncio.sleep(0.05)
        await eventually(lambda: writer.closed is not None, what="the writer refused")
        assert writer.closed == (1009, "document too large")
        reader = await YClient(server.url, name).connect()
        await eventually(lambda: len(str(reader.text)) >= 2000, what="what was accepted")
        assert len(str(reader.text)) < 3000
        await reader.close()

    run(scenario())
    assert server.refused("document_too_large") == 1


def test_slow_client_is_closed_and_others_keep_working(servers):
    server = servers("sync-a", RTMX_SYNC_SERVER_MAX_MESSAGES_PER_SECOND="10000", RTMX_SYNC_SYNC_CLIENT_QUEUE_MAX="20")
    name = room()

    async def scenario():
        good = await YClient(server.url, name).connect()
        talker = await YClient(server.url, name).connect()
        # A client that stops reading: a small receive buffer, one queued frame at most.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        slow = await websockets.connect(
            f"{server.url}/{name}", sock=sock, max_queue=1, ping_interval=None, compression=None
        )
        for clock in range(1, 1000):
            if server.refused("slow_client"):
                break
            await talker.ws.send(presence(clock, base64.b64encode(os.urandom(48000)).decode()))  # incompressible
            await asyncio.sleep(0.005)
        assert server.refused("slow_client") == 1
        # The room goes on for the others.
        await talker.insert("after;")
        await eventually(lambda: "after;" in str(good.text), what="the others to keep working")
        assert good.closed is None and talker.closed is None
        # The slow client gets what was already on its way, then the close.
        assert await closed_with(slow) == (1013, "too slow, reconnect")
        await good.close()
        await talker.close()

    run(scenario())


def test_presence_is_bounded(servers):
    """Awareness is a few small states per connection: a huge message or many states close that client only."""
    server = servers("sync-a")
    name = room()

    async def scenario():
        calm = await YClient(server.url, name).connect()
        big = await synced(server.url, name)
        await big.send(presence(1, "x" * 70_000))
        assert await closed_with(big) == (1009, "awareness message too big")
        many = await synced(server.url, name)
        for client_id in range(1, 7):
            await many.send(presence(1, "me", client_id))
        assert await closed_with(many) == (1008, "too many awareness states on one connection")
        await calm.insert("still here;")
        assert calm.closed is None
        await calm.close()

    run(scenario())
    assert server.refused("message_too_big") == 1
