"""ASGI application: WebSocket rooms at /<room>, GET /health, GET /metrics.

`app.state.begin_drain()` (async) starts a graceful shutdown: /health turns
503 at once so the load balancers stop sending new clients, then every client
is closed with 1012 and the write buffer is flushed. The command line calls it
on SIGTERM before uvicorn stops accepting connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from ipaddress import ip_address, ip_network

from prometheus_client import CONTENT_TYPE_LATEST
from pycrdt import YMessageType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .auth import AuthError, TokenVerifier, token_from_request
from .bus import RedisBus
from .config import Settings
from .metrics import Metrics
from .rooms import (
    CLOSE_ERROR,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    ROOM_NAME,
    Connection,
    ProtocolError,
    Refused,
    Room,
    RoomRegistry,
)
from .store import UpdateStore

log = logging.getLogger(__name__)

# Health: dependency checks are cached this long and bounded by CHECK_TIMEOUT_S.
CHECK_CACHE_S = 1.0
CHECK_TIMEOUT_S = 1.0
LOOP_TICK_S = 0.25
MAX_LOOP_LAG_S = 2.0


def awaiting(coroutine) -> str:
    """Where a suspended coroutine waits: its chain of awaits, outermost first."""
    where = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is not None:
            where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    return " <- ".join(reversed(where)) or "unknown"


async def finish_within(steps: dict[str, Awaitable], seconds: float) -> list[str]:
    """Run the named steps concurrently for at most `seconds`; the ones still running are logged with where
    they wait, cancelled and left behind (not awaited: a step that ignores cancellation would hang us too).
    Returns their names."""
    tasks = {asyncio.ensure_future(step): name for name, step in steps.items()}
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in tasks:
        if task in pending:
            log.error(
                "shutdown: %s did not finish in %.1f s, left behind; it waits at %s",
                tasks[task],
                seconds,
                awaiting(task.get_coro()),
            )
            task.cancel()
        elif not task.cancelled() and task.exception() is not None:
            log.warning("shutdown: %s failed: %r", tasks[task], task.exception())
    return sorted(tasks[task] for task in pending)


class TokenBucket:
    """`rate` messages a second with bursts of `burst`. A sender may run up a
    debt of another `burst` messages; beyond that it is over the limit."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate) - 1
        self.at = now
        return self.tokens >= -self.burst


def _short(reason: str) -> str:
    # A close reason must fit in a control frame (123 bytes).
    return reason.encode()[:120].decode(errors="ignore")


class SyncService:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.store = UpdateStore(settings, self.metrics)
        self.bus = RedisBus(settings, self.metrics)
        self.registry = RoomRegistry(settings, self.store, self.bus, self.metrics)
        self.verifier = TokenVerifier.from_settings(settings)
        self._trusted = [ip_network(proxy, strict=False) for proxy in settings.trusted_proxies]
        self.connections: set[Connection] = set()
        self._per_address: Counter[str] = Counter()
        self._none_connected = asyncio.Event()
        self._none_connected.set()
        self.draining = False
        self._drain: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self._last_tick = 0.0
        self._lag = 0.0
        self._checks: asyncio.Task | None = None
        self._checked_at = 0.0
        self._last_checks: dict[str, str] | None = None
        self.metrics.track_state(
            connections=lambda: len(self.connections),
            rooms=lambda: len(self.registry.rooms),
            pending_writes=lambda: self.store.pending,
            write_buffer_max=lambda: self.store.buffer_max,
            loop_lag=self.loop_lag,
            draining=lambda: int(self.draining),
        )

    # Life cycle

    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        await self.store.start()
        self.bus.start()
        self._last_tick = asyncio.get_running_loop().time()
        self._ticker = asyncio.create_task(self._tick_forever())
        log.info("rtmx-sync %s ready", self.settings.server_id)
        try:
            yield
        finally:
            # uvicorn has stopped accepting by now: no point waiting for the load balancers. Every step is
            # bounded: a shutdown that hangs holds up a rolling restart until systemd kills the process.
            await finish_within({"drain": self._drain_once(wait_for_lb=False)}, self.settings.shutdown_grace_s + 1)
            self.registry.close()
            self._ticker.cancel()
            await finish_within({"postgres": self.store.close(), "redis": self.bus.close()}, self.settings.io_timeout_s)

    async def begin_drain(self) -> None:
        """Graceful shutdown within settings.shutdown_grace_s: /health answers 503 at
        once; after a third of it (the load balancers notice) every client is closed
        with 1012 and the write buffer is flushed. Idempotent."""
        await self._drain_once(wait_for_lb=True)

    async def _drain_once(self, wait_for_lb: bool) -> None:
        if self._drain is None:
            self.draining = True
            self._drain = asyncio.create_task(self._drain_all(wait_for_lb))
        await asyncio.shield(self._drain)

    async def _drain_all(self, wait_for_lb: bool) -> None:
        budget = self.settings.shutdown_grace_s
        deadline = time.monotonic() + budget
        log.info("draining: %d clients, %d pending writes", len(self.connections), self.store.pending)
        if wait_for_lb:
            await asyncio.sleep(budget / 3)
        for connection in list(self.connections):
            connection.close(CLOSE_RESTART, "server restarting, reconnect")
        try:
            await asyncio.wait_for(
                asyncio.gather(self._none_connected.wait(), self.store.flush()),
                max(0.1, deadline - time.monotonic()),
            )
        except TimeoutError:
            log.warning(
                "drain: grace period over with %d clients still closing and %d writes pending",
                len(self.connections),
                self.store.pending,
            )

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LOOP_TICK_S)
            self._last_tick = loop.time()
            self._lag = max(0.0, self._last_tick - before - LOOP_TICK_S)

    def loop_lag(self) -> float:
        if self._ticker is None:  # not started (no lifespan yet)
            return 0.0
        since_tick = asyncio.get_running_loop().time() - self._last_tick - LOOP_TICK_S
        return max(self._lag, since_tick, 0.0)

    # HTTP

    async def _dependencies(self) -> dict[str, str]:
        """PostgreSQL and Redis as last seen, probed at most once per CHECK_CACHE_S in a task of its own.
        Only the first call waits for a probe (bounded); later ones report the last results at once, so a
        dependency that hangs (a killed host: no RST) never slows /health past HAProxy's check timeout."""
        now = time.monotonic()
        if self._checks is None or (self._checks.done() and now - self._checked_at > CHECK_CACHE_S):
            self._checked_at = now
            self._checks = asyncio.create_task(self._check_dependencies())
        if self._last_checks is None:
            await asyncio.wait({self._checks}, timeout=2 * CHECK_TIMEOUT_S)
        if self._checks.done():
            self._last_checks = self._checks.result()
        running = now - self._checked_at
        if not self._checks.done() and running > 2 * CHECK_TIMEOUT_S:
            # A probe that has not returned (its cancellation waits on the network): that is an answer too.
            silent = f"error: no answer for {running:.1f}s"
            return {
                name: "ok" if now - component.last_ok < CHECK_CACHE_S else silent
                for name, component in (("postgres", self.store), ("redis", self.bus))
            }
        return self._last_checks or {"postgres": "checking", "redis": "checking"}

    async def _check_dependencies(self) -> dict[str, str]:
        async def check(component, probe) -> str:
            if time.monotonic() - component.last_ok < CHECK_CACHE_S:
                return "ok"
            try:
                await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
            except Exception as error:
                return f"error: {type(error).__name__}: {error}"[:200]
            return "ok"

        postgres, redis = await asyncio.gather(check(self.store, self.store.ping), check(self.bus, self.bus.ping))
        return {"postgres": postgres, "redis": redis}

    async def health(self, _: Request) -> JSONResponse:
        """200 while this server can accept and relay ("ok", or "degraded" when a
        dependency is down: writes wait, clients stay); 503 "unavailable" otherwise."""
        lag = self.loop_lag()
        oldest_start = self.registry.oldest_start()
        problems = []
        if self.draining:
            problems.append("draining")
        if lag > MAX_LOOP_LAG_S:
            problems.append(f"event loop lag {lag:.1f}s")
        if oldest_start is not None and time.monotonic() - oldest_start > 3 * self.settings.io_timeout_s:
            problems.append("a room start is stuck")
        # A full write buffer is not among them: during a PostgreSQL outage every server fills its buffer at
        # once, and backpressure (senders slowed) already handles it; leaving HAProxy would cut every client.
        checks = await self._dependencies()
        if problems:
            status = "unavailable"
        else:
            status = "ok" if all(value == "ok" for value in checks.values()) else "degraded"
        body = {
            "status": status,
            "server": self.settings.server_id,
            "problems": problems,
            "checks": checks,
            "draining": self.draining,
            "pending_writes": self.store.pending,
            "write_buffer_max": self.store.buffer_max,
            "connections": len(self.connections),
            "rooms": len(self.registry.rooms),
            "loop_lag_s": round(lag, 3),
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    async def prometheus(self, _: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # WebSocket

    async def websocket_health(self, websocket: WebSocket) -> None:
        # For load balancer checks: the upgrade works (101), no room is opened.
        await websocket.accept()
        await websocket.close(1000, reason="ok")

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def client_address(self, websocket: WebSocket) -> str:
        """The peer, or behind a trusted proxy the address it forwarded."""
        peer = websocket.client.host if websocket.client else ""
        if not self._is_trusted(peer):
            return peer
        hops = [hop.strip() for value in websocket.headers.getlist("x-forwarded-for") for hop in value.split(",")]
        hops = [hop for hop in hops if hop]
        # The last address a trusted proxy did not add itself: what is left of it may be forged by the client.
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    async def _refuse(self, websocket: WebSocket, code: int, reason: str, metric: str) -> None:
        self.metrics.refuse(metric)
        with contextlib.suppress(Exception):
            await websocket.close(code, reason=_short(reason))

    async def room_endpoint(self, websocket: WebSocket) -> None:
        name = websocket.path_params["room"]
        token, subprotocol = token_from_request(websocket.query_params, websocket.headers)
        # Accept first: a close code and reason can only be sent on an open WebSocket.
        await websocket.accept(subprotocol=subprotocol)
        self.metrics.websocket_connections.inc()
        if self.draining:
            return await self._refuse(websocket, CLOSE_RESTART, "server restarting, reconnect", "draining")
        if not ROOM_NAME.match(name):
            return await self._refuse(websocket, CLOSE_POLICY, "invalid room name", "invalid_room")
        try:
            grant = self.verifier.verify(token, name)
        except AuthError as error:
            return await self._refuse(websocket, CLOSE_POLICY, str(error), "auth")
        address = self.client_address(websocket)
        if len(self.connections) >= self.settings.max_connections:
            return await self._refuse(websocket, CLOSE_TRY_AGAIN, "server full, try again later", "max_connections")
        if self._per_address[address] >= self.settings.max_connections_per_address:
            return await self._refuse(
                websocket, CLOSE_TRY_AGAIN, "too many connections from this address", "max_connections_per_address"
            )
        connection = Connection(websocket, self.metrics, self.settings.client_queue_max, grant.read_only)
        self.connections.add(connection)
        self._none_connected.clear()
        self._per_address[address] += 1
        room = self.registry.acquire(name)
        expiry = None
        if grant.expires_at is not None:
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, grant.expires_at - time.time()),
                connection.close,
                CLOSE_POLICY,
                "token expired",
                "token_expired",
            )
        try:
            await connection.serve(self._read(connection, room))
        finally:
            if expiry is not None:
                expiry.cancel()
            self.registry.release(room, connection)
            self.connections.discard(connection)
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]
            if not self.connections:
                self._none_connected.set()

    async def _read(self, connection: Connection, room: Room) -> None:
        """The connection's receive loop. Its messages are handled in order by a second task, so reading (and so
        answering keepalive pings) goes on while an update waits for PostgreSQL: up to client_queue_max messages
        wait, then reading stops and TCP slows the sender."""
        settings = self.settings
        handler: asyncio.Task | None = None
        inbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=settings.client_queue_max)
        try:
            if not await room.wait_ready(2 * settings.io_timeout_s):
                self.registry.discard(room)
                raise Refused(CLOSE_TRY_AGAIN, "room unavailable, retry", "room_unavailable")
            room.join(connection)
            handler = asyncio.create_task(self._handle(connection, room, inbox))
            bucket = TokenBucket(settings.max_messages_per_second, 2 * settings.max_messages_per_second)
            while True:
                message = await connection.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if message.get("code") == CLOSE_TOO_BIG:
                        # uvicorn enforces ws_max_size (= max_message_bytes) itself and closes with 1009.
                        self.metrics.refuse("message_too_big")
                    break
                data = message.get("bytes")
                if data is None:
                    raise ProtocolError("text frames are not part of the protocol")
                if len(data) > settings.max_message_bytes:
                    raise Refused(CLOSE_TOO_BIG, "message too big", "message_too_big")
                if not bucket.take():
                    raise Refused(CLOSE_TRY_AGAIN, "too many messages, try again later", "rate_limit")
                if data[:1] == AWARENESS:
                    # Presence never waits behind updates held up by PostgreSQL: relayed (to the sender too)
                    # at once, it keeps y-websocket clients, which close after 30 s without a message, connected.
                    await room.receive(connection, data)
                else:
                    await inbox.put(data)
            # The client left: nothing more is sent to it; what it sent is still stored and relayed.
            room.leave(connection)
            await inbox.put(None)
            await asyncio.wait({handler}, timeout=4 * settings.io_timeout_s)
        except Exception as error:
            self._close_for(connection, room, error)
        finally:
            if handler is not None:
                handler.cancel()

    async def _handle(self, connection: Connection, room: Room, inbox: asyncio.Queue) -> None:
        try:
            while (data := await inbox.get()) is not None:
                await room.receive(connection, data)
        except Exception as error:
            self._close_for(connection, room, error)

    def _close_for(self, connection: Connection, room: Room, error: Exception) -> None:
        if isinstance(error, ProtocolError):
            self.metrics.error("protocol")
            log.info("closing a client of room %s: %s", room.name, error)
            connection.close(CLOSE_POLICY, _short(str(error)))
        elif isinstance(error, Refused):
            log.info("closing a client of room %s: %s", room.name, error.reason)
            connection.close(error.code, error.reason, error.metric)
        elif not isinstance(error, WebSocketDisconnect):
            self.metrics.error("internal")
            log.error("room %s: unexpected error on a connection", room.name, exc_info=error)
            connection.close(CLOSE_ERROR, "internal error")


AWARENESS = bytes([YMessageType.AWARENESS])


def create_app(settings: Settings) -> Starlette:
    service = SyncService(settings)
    routes = [
        Route("/health", service.health),
        Route("/metrics", service.prometheus),
        WebSocketRoute("/_health", service.websocket_health),
        WebSocketRoute("/{room:path}", service.room_endpoint),
    ]
    app = Starlette(routes=routes, lifespan=service.lifespan)
    app.state.begin_drain = service.begin_drain
    app.state.service = service
    return app
