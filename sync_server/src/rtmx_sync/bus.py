"""Cross-server routing through Redis streams, one stream per room.

Every entry carries the update's PostgreSQL row id: an update is published
only once it is stored, so Redis is a shortcut, never the only copy. A
publish that fails is dropped (the other servers find the row at their next
resync); one reader task per server follows the streams of all its rooms with
one blocking XREAD and reads on from its last id after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import redis.asyncio as redis
from redis.asyncio.sentinel import Sentinel

from .config import Settings
from .metrics import Metrics

log = logging.getLogger(__name__)

# Updates waiting to be published; beyond this the oldest are dropped (they are in PostgreSQL).
OUTBOX_MAX = 10_000
PUBLISH_BATCH = 256
READ_COUNT = 500

# (row id, server, update, published at)
Handler = Callable[[int, str, bytes, float], None]


STREAM_KEEP_S = 120
STREAM_IDLE_EXPIRE_S = 3600


def stream_key(room: str) -> str:
    return f"rtmx:sync:room:{room}"


class RedisBus:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self._settings = settings
        self.timeout = settings.io_timeout_s
        # A blocking XREAD must come back well within the socket timeout.
        self._block_ms = max(10, min(500, int(self.timeout * 500)))
        timeouts = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        if settings.redis_sentinels:
            sentinels = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in settings.redis_sentinels)]
            sentinel = Sentinel(
                sentinels,
                sentinel_kwargs={"password": settings.redis_sentinel_password or None, **timeouts},
                **timeouts,
            )
            self.client = sentinel.master_for(
                settings.redis_sentinel_master, password=settings.redis_password or None, **timeouts
            )
        else:
            self.client = redis.Redis.from_url(settings.redis_url, password=settings.redis_password or None, **timeouts)
        self._outbox: deque[tuple[str, int, bytes, float]] = deque()
        self._outbox_ready = asyncio.Event()
        self._follows: dict[str, tuple[str, Handler]] = {}
        self._follows_ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.metrics = metrics or Metrics()
        # monotonic() of the last successful call: a recent one answers the health check.
        self.last_ok = 0.0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._publish_forever()), asyncio.create_task(self._read_forever())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    async def _call(self, awaitable):
        result = await asyncio.wait_for(awaitable, self.timeout)
        self.last_ok = time.monotonic()
        return result

    async def ping(self) -> None:
        await self._call(self.client.ping())

    # Publishing

    def publish(self, room: str, row_id: int, update: bytes) -> None:
        """Queue a stored update for the other servers (never waits)."""
        if len(self._outbox) >= OUTBOX_MAX:
            self._outbox.popleft()
            self.metrics.redis_publish_dropped.inc()
        self._outbox.append((room, row_id, update, time.time()))
        self._outbox_ready.set()

    async def _publish_forever(self) -> None:
        while True:
            while not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), PUBLISH_BATCH))]
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for room, row_id, update, published in batch:
                        pipe.xadd(
                            stream_key(room),
                            {"u": update, "i": row_id, "s": self._settings.server_id, "t": repr(published)},
                            maxlen=self._settings.stream_maxlen,
                            approximate=True,
                        )
                        # Only recent entries matter (older ones come back from PostgreSQL by resync): trimmed
                        # by age, and a room's stream expires when idle, so Redis (noeviction) never fills.
                        pipe.xtrim(
                            stream_key(room), minid=f"{int((published - STREAM_KEEP_S) * 1000)}-0", approximate=True
                        )
                        pipe.expire(stream_key(room), STREAM_IDLE_EXPIRE_S)
                    await self._call(pipe.execute())
                self.metrics.redis_published.inc(len(batch))
            except Exception as error:
                self.metrics.redis_publish_dropped.inc(len(batch))
                self.metrics.error("redis_publish")
                log.warning("redis publish of %d updates failed (resync delivers them): %s", len(batch), error)
                await asyncio.sleep(0.5)

    # Following

    async def last_id(self, room: str) -> str:
        entries = await self._call(self.client.xrevrange(stream_key(room), count=1))
        return entries[0][0].decode() if entries else "0-0"

    @staticmethod
    def recent_id(seconds: float = 10.0) -> str:
        """A stream id from a little while ago, when Redis cannot say its last one (stream ids are times)."""
        return f"{int((time.time() - seconds) * 1000)}-0"

    def follow(self, room: str, after: str, handler: Handler) -> None:
        self._follows[room] = (after, handler)
        self._follows_ready.set()

    def unfollow(self, room: str, handler: Handler) -> None:
        # Only this handler's: a new room of the same name may follow already.
        if room in self._follows and self._follows[room][1] == handler:
            del self._follows[room]

    async def _read_forever(self) -> None:
        backoff = 0.0
        while True:
            if not self._follows:
                self._follows_ready.clear()
                await self._follows_ready.wait()
                continue
            streams = {stream_key(room): after for room, (after, _handler) in self._follows.items()}
            try:
                answer = await self._call(self.client.xread(streams, block=self._block_ms, count=READ_COUNT))
            except Exception as error:
                self.metrics.error("redis_read")
                backoff = min(2.0, max(0.2, backoff * 2))
                log.warning("redis read failed (retrying in %.1fs; resync covers the gap): %s", backoff, error)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            for key, entries in answer or []:
                room = key.decode().removeprefix(stream_key(""))
                for entry_id, fields in entries:
                    followed = self._follows.get(room)
                    if followed is None:
                        break
                    self._follows[room] = (entry_id.decode(), followed[1])
                    try:
                        followed[1](int(fields[b"i"]), fields[b"s"].decode(), bytes(fields[b"u"]), float(fields[b"t"]))
                    except Exception as error:  # a malformed entry must not stop the other rooms
                        # Counted as kind="redis_read", but not in rtmx_sync_redis_read_errors_total (XREAD).
                        self.metrics.errors.labels(kind="redis_read").inc()
                        log.warning("room %s: bad stream entry %s: %s", room, entry_id, error)
            # Let the rooms' connections run between two large reads.
            await asyncio.sleep(0)
