"""Rooms: one pycrdt document per room on each server, kept in step with
local clients (y-websocket protocol), with the other servers (Redis stream)
and with PostgreSQL (the durable log, read back periodically).

An update from a local client is applied to the room's document (which
validates it), stored, and only once it is committed relayed to the room's
other clients and published to the other servers with its row id. Rows are
deduplicated by id: each room remembers the ids it has applied.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque

from pycrdt import (
    Awareness,
    Decoder,
    Doc,
    Encoder,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    get_state,
    get_update,
    handle_sync_message,
    merge_updates,
    read_message,
)

from . import crashpoints
from .bus import RedisBus
from .config import Settings
from .metrics import Metrics
from .store import Compaction, UpdateStore

log = logging.getLogger(__name__)

ROOM_NAME = re.compile(r"^[A-Za-z0-9_.~-][A-Za-z0-9_.~/-]{0,199}$")
EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE = b"\x00"
# Presence is a user's name, colour and cursor: small, and a few states per connection.
AWARENESS_MAX_BYTES = 65_536
AWARENESS_MAX_STATES = 4

# Close codes sent to clients (RFC 6455 and the y-websocket conventions).
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011
CLOSE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
# How long a close frame may wait behind data the client does not read.
CLOSE_TIMEOUT_S = 10.0
# rtmx_sync_messages_total{kind}
SYNC_KINDS = {
    YSyncMessageType.SYNC_STEP1: "sync_step1",
    YSyncMessageType.SYNC_STEP2: "sync_step2",
    YSyncMessageType.SYNC_UPDATE: "update",
}


class ProtocolError(ValueError):
    """The client sent something that is not a y-websocket message."""


class Refused(Exception):
    """A limit or permission: close the connection with this code and reason, counted under `metric`."""

    def __init__(self, code: int, reason: str, metric: str):
        super().__init__(reason)
        self.code, self.reason, self.metric = code, reason, metric


class Connection:
    """One client. What the server sends it goes through a bounded queue
    drained by its own sender task: a room never waits for a slow client."""

    def __init__(self, websocket, metrics: Metrics, queue_max: int, read_only: bool = False):
        self.websocket = websocket
        self.read_only = read_only
        self._metrics = metrics
        self._queue: deque[bytes] = deque()
        self._queue_max = queue_max
        self._queued = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self._reader: asyncio.Task | None = None

    def send(self, message: bytes) -> bool:
        if self.closing is not None:
            return False
        if len(self._queue) >= self._queue_max:
            self.close(CLOSE_TRY_AGAIN, "too slow, reconnect", "slow_client")
            return False
        self._queue.append(message)
        self._queued.set()
        return True

    def close(self, code: int, reason: str, metric: str | None = None) -> None:
        """Close with this code once the message being sent (if any) is out; drops what is queued."""
        if self.closing is not None:
            return
        if metric:
            self._metrics.refuse(metric)
        self.closing = (code, reason)
        self._queue.clear()
        self._queued.set()
        if self._reader is not None and self._reader is not asyncio.current_task():
            # An update it was storing still lands and is relayed (Room._commit is shielded).
            self._reader.cancel()

    async def serve(self, reader) -> None:
        """Run the reader coroutine and the sender until the client leaves or close() is called."""
        self._reader = asyncio.create_task(reader)
        sender = asyncio.create_task(self._send_forever())
        try:
            await asyncio.wait({self._reader})
            if self.closing is None:
                sender.cancel()
            else:
                await asyncio.wait({sender}, timeout=CLOSE_TIMEOUT_S)
        finally:
            self._reader.cancel()
            sender.cancel()
            await asyncio.gather(self._reader, sender, return_exceptions=True)

    async def _send_forever(self) -> None:
        while self.closing is None:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            await self.websocket.send_bytes(self._queue.popleft())
        code, reason = self.closing
        await self.websocket.close(code, reason=reason)


class Room:
    def __init__(self, name: str, settings: Settings, store: UpdateStore, bus: RedisBus, metrics: Metrics):
        self.name = name
        self.settings, self.store, self.bus, self.metrics = settings, store, bus, metrics
        self.doc = Doc()
        self.clients: set[Connection] = set()
        # Joined or joining connections: the room is dropped when the last one leaves.
        self.members = 0
        # Row ids applied above the floor; every row at or below it counts as read.
        self._applied: set[int] = set()
        self._floor = 0
        self._high = 0
        self._marks: deque[tuple[float, int]] = deque()
        # Ids are assigned at INSERT but become visible at COMMIT, possibly out of
        # order: the resync re-reads what was above the high-water mark this long ago.
        self._overlap_s = 4 * settings.io_timeout_s + 2 * settings.resync_interval_s
        # Size of the room's stored log (estimate): sum of the rows applied since load/compaction.
        self.stored_rows = 0
        self.stored_size = 0
        self._size_checked = 0.0
        self.started_at = time.monotonic()
        self.ready = False
        self._resync: asyncio.Task | None = None
        # Presence (y-protocols awareness) of this server's clients: sent to each
        # joiner, removed when the connection that set it leaves.
        self.awareness = Awareness(self.doc)
        self.awareness.set_local_state(None)
        self._presence: dict[Connection, set[int]] = {}
        self._start = asyncio.create_task(self._load())

    # Life cycle

    async def _load(self) -> None:
        try:
            stream_from = await self.bus.last_id(self.name)
        except Exception as error:  # Redis down: PostgreSQL alone still converges
            log.warning("room %s: redis unavailable at start: %s", self.name, error)
            stream_from = self.bus.recent_id()
        while True:  # until it works or the joiners give up (they stop the room)
            try:
                rows = await self.store.load(self.name)
                break
            except Exception as error:
                self.metrics.error("store_read")
                log.warning("room %s: cannot load from postgres (retrying): %s", self.name, error)
                await asyncio.sleep(0.5)
        for row_id, update in rows:
            self._remote(row_id, update)
        self._mark()
        self.bus.follow(self.name, stream_from, self._on_stream)
        self._resync = asyncio.create_task(self._resync_forever())
        self.ready = True

    async def wait_ready(self, within: float) -> bool:
        done, _ = await asyncio.wait({self._start}, timeout=within)
        return bool(done) and not self._start.cancelled() and self._start.exception() is None

    def stop(self) -> None:
        self.bus.unfollow(self.name, self._on_stream)
        self._start.cancel()
        if self._resync is not None:
            self._resync.cancel()

    def join(self, client: Connection) -> None:
        self.clients.add(client)
        client.send(create_sync_message(self.doc))
        present = [i for i in self.awareness.states if i != self.awareness.client_id]
        if present:
            client.send(create_awareness_message(self.awareness.encode_awareness_update(present)))

    def leave(self, client: Connection) -> None:
        self.clients.discard(client)
        gone = [i for i in self._presence.pop(client, ()) if i in self.awareness.states]
        if gone:
            # As y-protocols' removeAwarenessStates: a null state one clock ahead, applied here and relayed.
            removal = Encoder()
            removal.write_var_uint(len(gone))
            for client_id in gone:
                removal.write_var_uint(client_id)
                removal.write_var_uint(self.awareness.meta[client_id]["clock"] + 1)
                removal.write_var_string("null")
            update = removal.to_bytes()
            self.awareness.apply_awareness_update(update, origin=None)
            for client_id in gone:  # a room's presence bookkeeping does not grow with every visitor
                self.awareness.meta.pop(client_id, None)
            self._broadcast(create_awareness_message(update))

    def _presence_update(self, client: Connection, message: bytes) -> None:
        """A client's presence: small, and a few states it brought (a Yjs client has one); a state is removed
        when the connection that brought it leaves."""
        if len(message) > AWARENESS_MAX_BYTES:
            raise Refused(CLOSE_TOO_BIG, "awareness message too big", "message_too_big")
        try:
            update = Decoder(message[1:]).read_message()
            entries = Decoder(update)
            owned = self._presence.setdefault(client, set())
            for _ in range(entries.read_var_uint()):
                client_id, _clock, state = entries.read_var_uint(), entries.read_var_uint(), entries.read_var_string()
                if any(client_id in ids for other, ids in self._presence.items() if other is not client):
                    # Yjs clients pass on the states they learn: the connection that brought a state owns it.
                    continue
                (owned.discard if state in ("", "null") else owned.add)(client_id)
                if len(owned) > AWARENESS_MAX_STATES:
                    raise ProtocolError("too many awareness states on one connection")
            self.awareness.apply_awareness_update(update, origin=client)
        except (ProtocolError, Refused):
            raise
        except Exception as error:
            raise ProtocolError(f"malformed awareness message: {error}") from None

    # Local clients

    async def receive(self, client: Connection, message: bytes) -> None:
        """Handle one message from a local client."""
        if len(message) < 2:
            raise ProtocolError("message too short")
        if message[0] == YMessageType.SYNC:
            kind = message[1]
            if kind in SYNC_KINDS:
                self.metrics.message(SYNC_KINDS[kind])
            if kind == YSyncMessageType.SYNC_STEP1:
                try:
                    reply = handle_sync_message(message[1:], self.doc)
                except Exception as error:
                    raise ProtocolError(f"malformed sync message: {error}") from None
                if reply is not None:
                    client.send(reply)
            elif kind in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
                try:
                    update = read_message(message[2:])
                except Exception as error:
                    raise ProtocolError(f"malformed sync message: {error}") from None
                if update != EMPTY_UPDATE:
                    await self._local_update(client, update)
            else:
                raise ProtocolError(f"unknown sync message type {kind}")
        elif message[0] == YMessageType.AWARENESS:
            self.metrics.message("awareness")
            # Presence is ephemeral: kept for joiners, relayed to the local clients only,
            # the sender too (a lone y-websocket client closes after 30 s without a message).
            self._presence_update(client, message)
            self._broadcast(message)
        else:
            raise ProtocolError(f"unknown message type {message[0]}")

    async def _local_update(self, sender: Connection, update: bytes) -> None:
        started = time.perf_counter()
        try:
            # Only what the room lacks (a reconnecting client re-sends what it had): costs the update's size.
            update = get_update(update, self.doc.get_state())
        except Exception as error:
            raise ProtocolError(f"invalid update: {error}") from None
        validating = time.perf_counter() - started
        if update == EMPTY_UPDATE:
            return
        if sender.read_only:
            if get_state(update) == EMPTY_STATE:
                # Deletions only: a client's sync step 2 always carries its whole delete set. Ignored.
                return
            raise Refused(CLOSE_POLICY, "read-only token", "read_only")
        await self._check_size(len(update))
        started = time.perf_counter()
        try:
            changed = self._apply(update)
            # Part of it may wait for what it builds on (a client back from another server can hold rows
            # this one has not received yet): then the whole update is stored, or nobody would store that part.
            if not self._integrated(update):
                changed = update
        except Exception as error:
            raise ProtocolError(f"invalid update: {error}") from None
        # Validating and applying; not the size check, which may wait for PostgreSQL.
        self.metrics.update_apply.observe(validating + time.perf_counter() - started)
        if changed == EMPTY_UPDATE:
            # Nothing new (e.g. a reconnecting client's delete set, which every sync step 2 carries).
            return
        update = changed
        crashpoints.reached("applied")
        self.metrics.updates_in.inc()
        # Stored, then relayed and published, even if the sender's connection is closed meanwhile.
        await asyncio.shield(self._commit(sender, update))

    async def _commit(self, sender: Connection, update: bytes) -> None:
        row_id = await self.store.append(self.name, update)
        crashpoints.reached("stored")
        # Relayed even when the resync read the row first: it found nothing new in the document then.
        self._record(row_id, len(update))
        self._broadcast(create_update_message(update), exclude=sender)
        crashpoints.reached("relayed")
        self.bus.publish(self.name, row_id, update)
        crashpoints.reached("published")

    async def _check_size(self, size: int) -> None:
        limit = self.settings.max_document_bytes
        now = time.monotonic()
        if self.stored_size + size > limit and now - self._size_checked >= self.settings.resync_interval_s:
            # The estimate counts a merged row on top of the rows it replaced: ask PostgreSQL.
            self._size_checked = now
            try:
                self._compacted(await self.store.compact(self.name, self.settings.compaction_threshold))
            except Exception as error:
                self.metrics.error("store_read")
                log.warning("room %s: cannot measure the stored document: %s", self.name, error)
        if self.stored_size + size > limit:
            raise Refused(CLOSE_TOO_BIG, "document too large", "document_too_large")

    def _broadcast(self, message: bytes, exclude: Connection | None = None) -> None:
        for client in self.clients:
            if client is not exclude and client.send(message):
                self.metrics.updates_out.inc()

    # Rows from PostgreSQL and the other servers

    def _record(self, row_id: int, size: int) -> bool:
        """Note a row as applied; False if it already was."""
        if row_id in self._applied:
            return False
        self._applied.add(row_id)
        self._high = max(self._high, row_id)
        self.stored_rows += 1
        self.stored_size += size
        return True

    def _apply(self, update: bytes) -> bytes:
        """Apply an update; what it changed in the document (EMPTY_UPDATE when nothing)."""
        changes: list[bytes] = []
        subscription = self.doc.observe(lambda event: changes.append(event.update))
        try:
            self.doc.apply_update(update)
        finally:
            self.doc.unobserve(subscription)
        return merge_updates(*changes) if len(changes) > 1 else (changes[0] if changes else EMPTY_UPDATE)

    def _integrated(self, update: bytes) -> bool:
        """Whether every struct and deletion of an applied update is in the document (none left pending)."""
        state = self.doc.get_state()
        if get_state(get_update(update, state)) != EMPTY_STATE:
            return False
        known = _clocks(state)
        # The update's deletions alone: its diff against its own state vector keeps no struct.
        deletions = Decoder(get_update(update, get_state(update)))
        if deletions.read_var_uint() != 0:
            return False
        for _ in range(deletions.read_var_uint()):
            client = deletions.read_var_uint()
            for _ in range(deletions.read_var_uint()):
                clock, length = deletions.read_var_uint(), deletions.read_var_uint()
                if clock + length > known.get(client, 0):
                    return False
        return True

    def _remote(self, row_id: int, update: bytes) -> None:
        """Apply a stored row once; relay what it changed (a compaction's merged row usually changes nothing)."""
        if row_id in self._applied:
            return
        self._record(row_id, len(update))
        try:
            changed = self._apply(update)
        except Exception as error:
            log.error("room %s: row %d is not a valid update, skipped: %s", self.name, row_id, error)
            return
        if changed != EMPTY_UPDATE:
            self.metrics.remote_updates.inc()
            self._broadcast(create_update_message(changed))

    def _on_stream(self, row_id: int, server: str, update: bytes, published: float) -> None:
        if server != self.settings.server_id:
            self.metrics.cross_server_latency.observe(max(0.0, time.time() - published))
        self._remote(row_id, update)

    def _compacted(self, result: Compaction | None) -> None:
        if result is None:  # another server is compacting this room
            return
        if result.merged_id is not None:
            self._remote(result.merged_id, result.merged)
        self.stored_rows, self.stored_size = result.rows, result.size

    def _mark(self) -> None:
        """Remember the high-water mark; raise the floor to the one from overlap_s ago."""
        now = time.monotonic()
        self._marks.append((now, self._high))
        cutoff = now - self._overlap_s
        while len(self._marks) > 1 and self._marks[1][0] <= cutoff:
            self._marks.popleft()
        moment, high = self._marks[0]
        if moment <= cutoff and high > self._floor:
            self._floor = high
            self._applied = {row_id for row_id in self._applied if row_id > high}

    async def _resync_forever(self) -> None:
        threshold = self.settings.compaction_threshold
        while True:
            await asyncio.sleep(self.settings.resync_interval_s)
            try:
                skip = [row_id for row_id in self._applied if row_id > self._floor]
                for row_id, update in await self.store.load(self.name, self._floor, skip):
                    self._remote(row_id, update)
                self._mark()
                if self.stored_rows >= threshold:
                    self._compacted(await self.store.compact(self.name, threshold))
            except Exception as error:
                self.metrics.error("store_read")
                log.warning("room %s: postgres resync failed: %s", self.name, error)


def _clocks(state: bytes) -> dict[int, int]:
    """A Yjs state vector: the next clock of each client."""
    decoder = Decoder(state)
    return {decoder.read_var_uint(): decoder.read_var_uint() for _ in range(decoder.read_var_uint())}


class RoomRegistry:
    """Rooms with at least one local client. A room loads outside any lock:
    joiners wait for its start (bounded), and a room that cannot start is
    discarded so that the next join tries again."""

    def __init__(self, settings: Settings, store: UpdateStore, bus: RedisBus, metrics: Metrics):
        self._args = (settings, store, bus, metrics)
        self.rooms: dict[str, Room] = {}

    def acquire(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, *self._args)
        room.members += 1
        return room

    def discard(self, room: Room) -> None:
        """Stop the room; the next join of its name starts a new one."""
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        room.stop()

    def release(self, room: Room, client: Connection) -> None:
        room.leave(client)
        room.members -= 1
        if room.members == 0:
            self.discard(room)

    def oldest_start(self) -> float | None:
        """monotonic() at which the longest-starting room began, if any is starting."""
        return min((room.started_at for room in self.rooms.values() if not room.ready), default=None)

    def close(self) -> None:
        for room in self.rooms.values():
            room.stop()
        self.rooms.clear()
