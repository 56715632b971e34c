"""Durable document state in PostgreSQL: an append-only log of updates per
room, compacted into one merged update once it grows.

Writes that fail (PostgreSQL failover in progress) stay queued in memory and
are retried in order until they land; an update is durable once `append`
has returned True or the queue has flushed it.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from pycrdt import merge_updates

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS rtmx_sync_updates (
    id bigserial PRIMARY KEY,
    room text NOT NULL,
    update bytea NOT NULL,
    server text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rtmx_sync_updates_room_id ON rtmx_sync_updates (room, id);
"""


class UpdateStore:
    def __init__(self, dsn: str, server_id: str, compaction_threshold: int = 500):
        self._dsn = dsn
        self._server_id = server_id
        self._threshold = compaction_threshold
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._pending: list[tuple[str, bytes]] = []
        self._flusher: asyncio.Task | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # prepare_threshold=None: PgBouncer in transaction pooling has no prepared statements.
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, prepare_threshold=None, connect_timeout=5
            )
        return self._conn

    async def _execute(self, query: str, params=()):
        async with self._lock:
            try:
                conn = await self._connection()
                return await conn.execute(query, params)
            except psycopg.Error:
                if self._conn is not None:
                    await self._conn.close()
                self._conn = None
                raise

    async def start(self) -> None:
        await self._execute(SCHEMA)

    async def close(self) -> None:
        await self.flush()
        if self._flusher:
            self._flusher.cancel()
        if self._conn is not None:
            await self._conn.close()

    async def ping(self) -> None:
        await self._execute("SELECT 1")

    async def append(self, room: str, update: bytes) -> bool:
        """Store one update; queue it for retry when PostgreSQL is unavailable."""
        if not self._pending:
            try:
                await self._insert(room, update)
                return True
            except psycopg.Error as error:
                log.warning("postgres write failed, queueing: %s", error)
        self._pending.append((room, update))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever())
        return False

    async def _insert(self, room: str, update: bytes) -> None:
        await self._execute(
            "INSERT INTO rtmx_sync_updates (room, update, server) VALUES (%s, %s, %s)", (room, update, self._server_id)
        )

    async def flush(self) -> None:
        while self._pending:
            room, update = self._pending[0]
            await self._insert(room, update)
            self._pending.pop(0)

    async def _flush_forever(self) -> None:
        while self._pending:
            try:
                await self.flush()
            except psycopg.Error:
                await asyncio.sleep(1)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def load(self, room: str, after_id: int = 0) -> list[tuple[int, bytes]]:
        cur = await self._execute(
            "SELECT id, update FROM rtmx_sync_updates WHERE room = %s AND id > %s ORDER BY id", (room, after_id)
        )
        return [(row[0], bytes(row[1])) for row in await cur.fetchall()]

    async def compact(self, room: str) -> bool:
        """Merge a long log into its newest row (ids stay monotonic for pollers)."""
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                locked = await (
                    await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (room,))
                ).fetchone()
                if not locked[0]:
                    return False
                rows = await (
                    await conn.execute("SELECT id, update FROM rtmx_sync_updates WHERE room = %s ORDER BY id", (room,))
                ).fetchall()
                if len(rows) < self._threshold:
                    return False
                merged = merge_updates(*[bytes(r[1]) for r in rows])
                last = rows[-1][0]
                await conn.execute("UPDATE rtmx_sync_updates SET update = %s WHERE id = %s", (merged, last))
                await conn.execute("DELETE FROM rtmx_sync_updates WHERE room = %s AND id < %s", (room, last))
        log.info("compacted room %s: %d updates into one", room, len(rows))
        return True
