"""Rooms: one pycrdt document per room on each server, kept in step with
local clients (y-websocket protocol), with the other servers (Redis stream)
and with PostgreSQL (the durable log, read back periodically)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Protocol

from pycrdt import (
    Doc,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    read_message,
)

from .bus import RedisBus
from .store import UpdateStore

log = logging.getLogger(__name__)

ROOM_NAME = re.compile(r"^[A-Za-z0-9_.~-][A-Za-z0-9_.~/-]{0,199}$")
# PostgreSQL ids are assigned at INSERT but become visible at COMMIT, possibly
# out of order: re-read this many ids back (applying an update twice is harmless).
RESYNC_OVERLAP = 200


class ProtocolError(ValueError):
    """The client sent something that is not a y-websocket message."""


class Client(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...


@dataclass
class Metrics:
    connections: int = 0
    updates_in: int = 0
    updates_out: int = 0
    remote_updates: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    protocol_errors: int = 0


@dataclass
class Room:
    name: str
    server_id: str
    store: UpdateStore
    bus: RedisBus
    metrics: Metrics
    resync_interval: float
    doc: Doc = field(default_factory=Doc)
    clients: set = field(default_factory=set)
    _pg_seen: int = 0
    _stream_seen: str = "0-0"
    _tasks: list = field(default_factory=list)
    _loaded: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        try:
            self._stream_seen = await self.bus.last_id(self.name)
        except Exception as error:  # Redis down: PostgreSQL alone still converges
            log.warning("room %s: redis unavailable at start: %s", self.name, error)
        await self._resync_from_store()
        self._loaded.set()
        self._tasks = [asyncio.create_task(self._follow_stream()), asyncio.create_task(self._resync_forever())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def join(self, client: Client) -> None:
        await self._loaded.wait()
        self.clients.add(client)
        await client.send_bytes(create_sync_message(self.doc))

    def leave(self, client: Client) -> None:
        self.clients.discard(client)

    async def receive(self, client: Client, message: bytes) -> None:
        """Handle one message from a local client."""
        if len(message) < 2:
            raise ProtocolError("message too short")
        if message[0] == YMessageType.SYNC:
            kind = message[1]
            if kind == YSyncMessageType.SYNC_STEP1:
                reply = handle_sync_message(message[1:], self.doc)
                if reply is not None:
                    await client.send_bytes(reply)
            elif kind in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
                try:
                    update = read_message(message[2:])
                except Exception as error:
                    raise ProtocolError(f"malformed sync message: {error}") from None
                if update != b"\x00\x00":
                    await self._local_update(client, update)
            else:
                raise ProtocolError(f"unknown sync message type {kind}")
        elif message[0] == YMessageType.AWARENESS:
            # Presence is ephemeral: relay to the other local clients only.
            await self._broadcast(message, exclude=client)
        else:
            raise ProtocolError(f"unknown message type {message[0]}")

    async def _local_update(self, sender: Client, update: bytes) -> None:
        try:
            self.doc.apply_update(update)
        except Exception as error:
            raise ProtocolError(f"invalid update: {error}") from None
        self.metrics.updates_in += 1
        await self._broadcast(create_update_message(update), exclude=sender)
        await self.store.append(self.name, update)
        try:
            await self.bus.publish(self.name, update)
        except Exception as error:  # the other servers catch up from PostgreSQL
            log.warning("room %s: redis publish failed: %s", self.name, error)

    def _apply_remote(self, update: bytes) -> bool:
        before = (self.doc.get_state(), self.doc.get_update())
        self.doc.apply_update(update)
        return (self.doc.get_state(), self.doc.get_update()) != before

    async def _remote_update(self, update: bytes) -> None:
        if self._apply_remote(update):
            self.metrics.remote_updates += 1
            await self._broadcast(create_update_message(update))

    async def _broadcast(self, message: bytes, exclude: Client | None = None) -> None:
        for client in list(self.clients):
            if client is exclude:
                continue
            try:
                await client.send_bytes(message)
                self.metrics.updates_out += 1
            except Exception:
                self.clients.discard(client)

    async def _follow_stream(self) -> None:
        while True:
            try:
                for entry_id, server, update, published in await self.bus.read(self.name, self._stream_seen):
                    self._stream_seen = entry_id
                    if server == self.server_id:
                        continue
                    self.metrics.latency_sum += max(0.0, time.time() - published)
                    self.metrics.latency_count += 1
                    await self._remote_update(update)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Redis failover or outage: what was missed comes back from PostgreSQL.
                log.warning("room %s: redis read failed (%s); resyncing from postgres", self.name, error)
                await asyncio.sleep(1)
                await self._resync_quietly()

    async def _resync_from_store(self) -> None:
        for row_id, update in await self.store.load(self.name, max(0, self._pg_seen - RESYNC_OVERLAP)):
            self._pg_seen = max(self._pg_seen, row_id)
            await self._remote_update(update)

    async def _resync_quietly(self) -> None:
        try:
            await self._resync_from_store()
        except Exception as error:
            log.warning("room %s: postgres resync failed: %s", self.name, error)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval)
            await self._resync_quietly()
            try:
                await self.store.compact(self.name)
            except Exception as error:
                log.debug("room %s: compaction skipped: %s", self.name, error)


class RoomRegistry:
    """Rooms with at least one local client; a room is dropped when its last client leaves."""

    def __init__(self, server_id: str, store: UpdateStore, bus: RedisBus, metrics: Metrics, resync_interval: float):
        self._args = (server_id, store, bus, metrics, resync_interval)
        self.rooms: dict[str, Room] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, name: str) -> Room:
        async with self._lock:
            room = self.rooms.get(name)
            if room is None:
                room = Room(name, *self._args)
                await room.start()
                self.rooms[name] = room
            return room

    async def release(self, room: Room, client: Client) -> None:
        room.leave(client)
        async with self._lock:
            if not room.clients and self.rooms.get(room.name) is room:
                del self.rooms[room.name]
                await room.stop()

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            await room.stop()
        self.rooms.clear()
