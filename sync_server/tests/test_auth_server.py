"""Signed tokens at the server: refused with 1008 and a reason, read-only
grants, tokens presented in a header or a subprotocol, expiry while connected."""

import asyncio
import secrets
import uuid

import pytest
import websockets
from pycrdt import create_update_message

from conftest import YClient, eventually
from rtmx_sync.auth import issue

KEY = secrets.token_urlsafe(48).encode()


def room() -> str:
    return f"auth-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture()
def server(servers, tmp_path):
    (tmp_path / "sync.key").write_bytes(KEY + b"\n")
    return servers(
        "sync-a", RTMX_SYNC_SERVER_AUTH_KEY_FILE=str(tmp_path / "sync.key"), RTMX_SYNC_SERVER_ALLOW_ANONYMOUS="false"
    )


async def close_of(ws) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 15)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_refusals_have_reasons_and_are_counted(server):
    name = room()
    other_key = secrets.token_urlsafe(48).encode()
    cases = [
        ("", "authentication required"),
        (issue(KEY, "another-room", "alice", ttl_s=300), "token not valid for this room"),
        (issue(KEY, name, "alice", ttl_s=10, now=0), "token expired"),
        (issue(other_key, name, "alice", ttl_s=300), "invalid token"),
    ]

    async def scenario():
        for token, reason in cases:
            query = f"?token={token}" if token else ""
            async with websockets.connect(f"{server.url}/{name}{query}") as ws:
                assert await close_of(ws) == (1008, reason)

    run(scenario())
    assert server.refused("auth") == len(cases)


def test_token_in_header_or_subprotocol(server):
    name = room()
    token = issue(KEY, name, "alice", ttl_s=300)

    async def scenario():
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(f"{server.url}/{name}", additional_headers=headers) as ws:
            assert (await ws.recv())[0] == 0
        async with websockets.connect(f"{server.url}/{name}", subprotocols=["rtmx-sync", f"token.{token}"]) as ws:
            assert ws.subprotocol == "rtmx-sync"
            assert (await ws.recv())[0] == 0

    run(scenario())


def test_read_only_token_reads_but_cannot_write(server):
    name = room()

    async def scenario():
        writer = await YClient(server.url, name, token=issue(KEY, name, "alice", ttl_s=300)).connect()
        await writer.insert("shared;")
        reader = await YClient(server.url, name, token=issue(KEY, name, "bob", ttl_s=300, read_only=True)).connect()
        await eventually(lambda: str(reader.text) == "shared;", what="the read-only client to sync")
        await reader.ws.send(create_update_message(b"\x00\x00"))  # an empty update changes nothing: fine
        await reader.ws.send(b"\x01\x01\x00")  # presence: fine
        await writer.insert("more;")
        await eventually(lambda: str(reader.text) == "shared;more;", what="updates to reach the read-only client")
        state = writer.doc.get_state()
        del writer.text[0:7]
        await writer.ws.send(create_update_message(writer.doc.get_update(state)))
        await eventually(lambda: str(reader.text) == "more;", what="a deletion to reach the read-only client")
        # Reconnecting, it sends its delete set (sync step 2): nothing new, so it stays.
        await reader.close()
        await reader.connect()
        await asyncio.wait_for(reader.synced.wait(), 5)
        await writer.insert("again;")
        await eventually(lambda: str(reader.text) == "more;again;", what="the read-only client to stay")
        assert reader.closed is None
        await reader.insert("forbidden;")
        await eventually(lambda: reader.closed is not None, what="the read-only client closed")
        assert reader.closed == (1008, "read-only token")
        assert str(writer.text) == "more;again;"
        await writer.close()

    run(scenario())
    assert server.refused("read_only") == 1


def test_token_expiring_while_connected_closes_the_connection(server):
    name = room()

    async def scenario():
        client = await YClient(server.url, name, token=issue(KEY, name, "alice", ttl_s=2)).connect()
        await asyncio.wait_for(client.synced.wait(), 5)
        await eventually(lambda: client.closed is not None, within=10, what="expiry")
        assert client.closed == (1008, "token expired")

    run(scenario())
    assert server.refused("token_expired") == 1
