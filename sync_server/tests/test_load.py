"""An overloaded tier recovers by itself: after a burst from many clients (and
one that never reads) a new room opens at once and every edit is stored."""

import asyncio
import os
import socket
import time
import uuid

import websockets

from conftest import YClient, eventually, presence, stored_text

ROOMS = 8
CLIENTS_PER_ROOM = 5
EDITS = 15


async def never_reads(server, name: str) -> websockets.ClientConnection:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    return await websockets.connect(
        f"{server.url}/{name}", sock=sock, max_queue=1, ping_interval=None, compression=None
    )


def test_burst_then_a_new_room_opens_at_once_and_everything_is_stored(servers, postgres_dsn):
    one, two = servers("sync-a"), servers("sync-b")
    prefix = f"load-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{r}" for r in range(ROOMS)]

    async def scenario():
        clients = {
            name: [await YClient((one, two)[(r + c) % 2].url, name).connect() for c in range(CLIENTS_PER_ROOM)]
            for r, name in enumerate(names)
        }
        stuck = await never_reads(one, names[0])

        async def burst(client: YClient, tag: str) -> None:
            for i in range(EDITS):
                await client.insert(f"{tag}.{i};")
                # Presence: relayed, never stored; each client its own state.
                await client.ws.send(presence(i + 1, os.urandom(700).hex(), client.doc.client_id))

        await asyncio.gather(
            *(burst(client, f"{r}.{c}") for r, name in enumerate(names) for c, client in enumerate(clients[name]))
        )

        # Recovered: a new client in a new room completes the handshake within 2 s.
        started = time.monotonic()
        fresh = await YClient(one.url, f"{prefix}-new").connect()
        await asyncio.wait_for(fresh.synced.wait(), 2)
        assert time.monotonic() - started < 2

        expected_edits = CLIENTS_PER_ROOM * EDITS
        for name in names:
            room_clients = clients[name]
            await eventually(
                lambda rc=room_clients: all(
                    str(c.text) == str(rc[0].text) and str(c.text).count(";") == expected_edits for c in rc
                ),
                within=60,
                what=f"room {name} to converge",
            )
            assert stored_text(postgres_dsn, name) == str(room_clients[0].text)
        assert all(client.closed is None for room_clients in clients.values() for client in room_clients)
        for server in (one, two):
            status, body = server.health_report()
            assert status == 200 and body["pending_writes"] == 0 and body["loop_lag_s"] < 1
        await stuck.close()
        await fresh.close()
        for room_clients in clients.values():
            for client in room_clients:
                await client.close()

    run_started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - run_started < 90
