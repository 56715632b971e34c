"""Cross-server routing through Redis streams, one stream per room.

A stream survives a subscriber's reconnect (it reads on from its last id),
unlike pub/sub. What a Redis failover may still lose is recovered from
PostgreSQL by the room's periodic resync, so every server converges.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis
from redis.asyncio.sentinel import Sentinel

from .config import Settings

log = logging.getLogger(__name__)


def stream_key(room: str) -> str:
    return f"rtmx:sync:room:{room}"


class RedisBus:
    def __init__(self, settings: Settings):
        self._settings = settings
        if settings.redis_sentinels:
            sentinels = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in settings.redis_sentinels)]
            self._sentinel = Sentinel(
                sentinels,
                socket_timeout=2,
                sentinel_kwargs={"password": settings.redis_sentinel_password or None, "socket_timeout": 2},
            )
            self.client = self._sentinel.master_for(
                settings.redis_sentinel_master, socket_timeout=10, password=settings.redis_password or None
            )
        else:
            self._sentinel = None
            self.client = redis.Redis.from_url(
                settings.redis_url, socket_timeout=10, password=settings.redis_password or None
            )

    async def ping(self) -> None:
        await self.client.ping()

    async def publish(self, room: str, update: bytes) -> None:
        await self.client.xadd(
            stream_key(room),
            {"u": update, "s": self._settings.server_id, "t": repr(time.time())},
            maxlen=self._settings.stream_maxlen,
            approximate=True,
        )

    async def last_id(self, room: str) -> str:
        entries = await self.client.xrevrange(stream_key(room), count=1)
        return entries[0][0].decode() if entries else "0-0"

    async def read(self, room: str, after: str, block_ms: int = 2000):
        """Entries after `after`: list of (id, server, update, published_at)."""
        answer = await self.client.xread({stream_key(room): after}, block=block_ms, count=500)
        entries = []
        for _key, items in answer or []:
            for entry_id, fields in items:
                entries.append(
                    (entry_id.decode(), fields[b"s"].decode(), bytes(fields[b"u"]), float(fields.get(b"t", b"0")))
                )
        return entries

    async def close(self) -> None:
        await self.client.aclose()
