"""Durable document state in PostgreSQL: an append-only log of updates per
room, compacted into one merged update once it grows.

`append` returns once the update is committed. Updates wait in a bounded
buffer that writers drain in batches (one multi-row INSERT per round trip)
over a small pool of connections; while PostgreSQL is unavailable they stay
in the buffer and are retried in order, and once the buffer is full `append`
waits for space, which slows the senders down (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

import psycopg
from pycrdt import merge_updates

from .config import Settings
from .metrics import Metrics

log = logging.getLogger(__name__)

# Several servers may start at once on an empty database: concurrent CREATE ...
# IF NOT EXISTS can still collide, so the (implicit) transaction serialises them.
SCHEMA = """
SELECT pg_advisory_xact_lock(hashtext('rtmx_sync_updates schema'));
CREATE TABLE IF NOT EXISTS rtmx_sync_updates (
    id bigserial PRIMARY KEY,
    room text NOT NULL,
    update bytea NOT NULL,
    server text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rtmx_sync_updates_room_id ON rtmx_sync_updates (room, id);
"""

# Ids come from the sequence in the order of the ORDER BY, so sorting the
# returned ids gives each row of the batch its own.
INSERT_BATCH = """
INSERT INTO rtmx_sync_updates (room, update, server)
SELECT room, update, %s FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS batch(room, update, n) ORDER BY n
RETURNING id
"""


BATCH_MAX_BYTES = 4 * 1_048_576


@dataclass
class _Write:
    room: str
    update: bytes
    done: asyncio.Future
    # perf_counter() when append() was called (waiting for buffer space included).
    since: float


@dataclass(frozen=True)
class Compaction:
    """What the log of a room holds after a compaction attempt."""

    rows: int
    size: int
    merged_id: int | None = None
    merged: bytes = b""


class UpdateStore:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self._dsn = settings.postgres_dsn
        self._server_id = settings.server_id
        self.timeout = settings.io_timeout_s
        self._batch_max = settings.write_batch_max
        self.buffer_max = settings.write_buffer_max
        self._pool_size = settings.postgres_pool_size
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots = asyncio.Semaphore(self._pool_size)
        self._buffer: deque[_Write] = deque()
        self._space = asyncio.Semaphore(self.buffer_max)
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._writers: list[asyncio.Task] = []
        self.metrics = metrics or Metrics()
        # monotonic() of the last successful call: a recent one answers the health check.
        self.last_ok = 0.0

    # Connections

    @contextlib.asynccontextmanager
    async def _connection(self):
        await self._slots.acquire()
        conn = None
        try:
            while self._idle and conn is None:
                conn = self._idle.pop()
                if conn.closed or conn.broken:
                    conn = None
            if conn is None:
                # prepare_threshold=None: PgBouncer in transaction pooling has no prepared statements.
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, prepare_threshold=None, connect_timeout=max(2, round(self.timeout))
                )
            yield conn
            self.last_ok = time.monotonic()
        except BaseException:
            # A failed or cancelled call leaves the connection in an unknown state.
            broken, conn = conn, None
            if broken is not None:
                with contextlib.suppress(Exception):
                    await broken.close()
            raise
        finally:
            if conn is not None:
                self._idle.append(conn)
            self._slots.release()

    async def _execute(self, query: str, params=()) -> list[tuple]:
        """One statement on a pool connection, bounded by io_timeout_s (waiting for a connection included)."""
        return await asyncio.wait_for(self._run(query, params), self.timeout)

    async def _run(self, query: str, params) -> list[tuple]:
        async with self._connection() as conn:
            return await _fetch(conn, query, params)

    async def start(self) -> None:
        # A server started during a PostgreSQL failover waits for it instead of exiting.
        delay = 0.5
        while True:
            try:
                await self._execute(SCHEMA)
                break
            except (psycopg.Error, OSError, TimeoutError) as error:
                log.warning("postgres unavailable at start, retrying in %.1f s: %s", delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        # One connection stays free for loads, compactions and health checks.
        self._writers = [asyncio.create_task(self._write_forever()) for _ in range(max(1, self._pool_size - 1))]

    async def close(self) -> None:
        for task in self._writers:
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        while self._idle:
            with contextlib.suppress(Exception):
                await self._idle.pop().close()

    async def ping(self) -> None:
        await self._execute("SELECT 1")

    # Writes

    @property
    def pending(self) -> int:
        """Updates accepted by `append` and not yet committed."""
        return self._pending

    async def append(self, room: str, update: bytes) -> int:
        """Store one update; returns its row id once committed."""
        since = time.perf_counter()
        await self._space.acquire()
        write = _Write(room, update, asyncio.get_running_loop().create_future(), since)
        self._buffer.append(write)
        self._pending += 1
        self._empty.clear()
        self._wakeup.set()
        # Cancelling the caller does not withdraw the write: it still lands.
        return await asyncio.shield(write.done)

    async def flush(self) -> None:
        """Until every accepted update is committed."""
        await self._empty.wait()

    async def _write_forever(self) -> None:
        backoff = 0.0
        while True:
            while not self._buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._next_batch()
            started = time.perf_counter()
            try:
                ids = await self._insert(batch)
            except BaseException as error:
                # Back at the front, in order: retried before anything newer.
                self._buffer.extendleft(reversed(batch))
                if isinstance(error, asyncio.CancelledError):
                    raise
                self.metrics.error("store")
                backoff = min(2.0, max(0.1, backoff * 2))
                log.warning("postgres write of %d updates failed (retrying in %.1fs): %s", len(batch), backoff, error)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            committed = time.perf_counter()
            self.metrics.store_latency.observe(committed - started)
            self.metrics.write_batch_size.observe(len(batch))
            for write, row_id in zip(batch, ids, strict=True):
                self.metrics.update_store.observe(committed - write.since)
                if not write.done.done():
                    write.done.set_result(row_id)
                self._space.release()
            self._pending -= len(batch)
            if not self._pending:
                self._empty.set()

    def _next_batch(self) -> list[_Write]:
        """Up to write_batch_max updates and BATCH_MAX_BYTES (at least one): a batch of large updates must
        still commit within io_timeout_s, or it would be retried as a whole forever."""
        batch, size = [self._buffer.popleft()], 0
        size += len(batch[0].update)
        while self._buffer and len(batch) < self._batch_max and size + len(self._buffer[0].update) <= BATCH_MAX_BYTES:
            size += len(self._buffer[0].update)
            batch.append(self._buffer.popleft())
        return batch

    async def _insert(self, batch: list[_Write]) -> list[int]:
        rows = await self._execute(INSERT_BATCH, (self._server_id, [w.room for w in batch], [w.update for w in batch]))
        return sorted(row[0] for row in rows)

    # Reads

    async def load(self, room: str, after_id: int = 0, skip: list[int] | tuple = ()) -> list[tuple[int, bytes]]:
        """Rows of the room above after_id, in id order, except the ids in skip."""
        rows = await self._execute(
            "SELECT id, update FROM rtmx_sync_updates WHERE room = %s AND id > %s AND NOT id = ANY(%s::bigint[])"
            " ORDER BY id",
            (room, after_id, list(skip)),
        )
        return [(row[0], bytes(row[1])) for row in rows]

    async def compact(self, room: str, min_rows: int) -> Compaction | None:
        """Merge the room's rows into one new row once there are min_rows of them.

        Deletes exactly the rows it merged (a row committed meanwhile stays),
        under the room's advisory lock; None when another server holds it.
        """
        # Four statements and a commit: a few calls' worth of time.
        return await asyncio.wait_for(self._compact(room, min_rows), 3 * self.timeout)

    async def _compact(self, room: str, min_rows: int) -> Compaction | None:
        async with self._connection() as conn, conn.transaction():
            locked = await _fetch(conn, "SELECT pg_try_advisory_xact_lock(hashtext(%s))", (room,))
            if not locked[0][0]:
                return None
            count, size = (
                await _fetch(
                    conn,
                    "SELECT count(*), coalesce(sum(octet_length(update)), 0) FROM rtmx_sync_updates WHERE room = %s",
                    (room,),
                )
            )[0]
            if count < max(2, min_rows):
                return Compaction(count, size)
            rows = await _fetch(conn, "SELECT id, update FROM rtmx_sync_updates WHERE room = %s ORDER BY id", (room,))
            merged = await asyncio.to_thread(merge_updates, *[bytes(row[1]) for row in rows])
            merged_id = (
                await _fetch(
                    conn,
                    "INSERT INTO rtmx_sync_updates (room, update, server) VALUES (%s, %s, %s) RETURNING id",
                    (room, merged, self._server_id),
                )
            )[0][0]
            await _fetch(conn, "DELETE FROM rtmx_sync_updates WHERE id = ANY(%s::bigint[])", ([r[0] for r in rows],))
        log.info("compacted room %s: %d updates into one", room, len(rows))
        return Compaction(1, len(merged), merged_id, merged)


async def _fetch(conn: psycopg.AsyncConnection, query: str, params=()) -> list[tuple]:
    cur = await conn.execute(query, params)
    return await cur.fetchall() if cur.description else []
