"""A minimal y-websocket client on pycrdt: what a Yjs provider does. Used by
the tests, the drills and operators checking a deployment by hand."""

from __future__ import annotations

import asyncio

import websockets
from pycrdt import (
    Doc,
    Text,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)


class YClient:
    """Edits the shared text "text" of one room; reconnect with connect() again."""

    def __init__(self, url: str, room: str, token: str = ""):
        self.url, self.room, self.token = url.rstrip("/"), room, token
        self.doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self.ws = None
        self.closed: tuple[int | None, str | None] | None = None
        # Set when the server has answered this connection's sync step 1 (the handshake is complete).
        self.synced = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def connect(self, url: str | None = None, open_timeout: float = 10.0) -> YClient:
        self.url = (url or self.url).rstrip("/")
        self.closed = None
        self.synced.clear()
        query = f"?token={self.token}" if self.token else ""
        self.ws = await websockets.connect(f"{self.url}/{self.room}{query}", max_size=None, open_timeout=open_timeout)
        await self.ws.send(create_sync_message(self.doc))
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message[0] == YMessageType.SYNC:
                    if message[1] == YSyncMessageType.SYNC_STEP2:
                        self.synced.set()
                    reply = handle_sync_message(message[1:], self.doc)
                    if reply is not None:
                        await self.ws.send(reply)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = (self.ws.close_code, self.ws.close_reason)

    async def insert(self, text: str) -> None:
        """Append text locally and send the update (kept locally if the send fails)."""
        state = self.doc.get_state()
        self.text += text
        await self.ws.send(create_update_message(self.doc.get_update(state)))

    async def close(self) -> None:
        await self.ws.close()
        if self._reader:
            await self._reader


async def eventually(check, within: float = 15.0, what: str = "convergence") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
