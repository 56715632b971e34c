"""ASGI application: WebSocket rooms at /<room>, GET /health, GET /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .bus import RedisBus
from .config import Settings
from .rooms import ROOM_NAME, Metrics, ProtocolError, RoomRegistry
from .store import UpdateStore

log = logging.getLogger(__name__)

# Close codes sent to clients (RFC 6455 and the y-websocket conventions).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012


def create_app(settings: Settings) -> Starlette:
    store = UpdateStore(settings.postgres_dsn, settings.server_id, settings.compaction_threshold)
    bus = RedisBus(settings)
    metrics = Metrics()
    registry = RoomRegistry(settings.server_id, store, bus, metrics, settings.resync_interval_s)
    sockets: set[WebSocket] = set()

    async def health(_: Request) -> JSONResponse:
        checks = {}
        for name, probe in (("redis", bus.ping), ("postgres", store.ping)):
            try:
                await asyncio.wait_for(probe(), timeout=2)
                checks[name] = "ok"
            except Exception as error:
                checks[name] = f"error: {type(error).__name__}: {error}"
        healthy = all(value == "ok" for value in checks.values())
        body = {
            "status": "ok" if healthy else "unavailable",
            "server": settings.server_id,
            "checks": checks,
            "pending_writes": store.pending,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def prometheus(_: Request) -> PlainTextResponse:
        lines = [
            "# TYPE rtmx_sync_connections gauge",
            f"rtmx_sync_connections {metrics.connections}",
            "# TYPE rtmx_sync_rooms gauge",
            f"rtmx_sync_rooms {len(registry.rooms)}",
            "# TYPE rtmx_sync_updates_in_total counter",
            f"rtmx_sync_updates_in_total {metrics.updates_in}",
            "# TYPE rtmx_sync_updates_out_total counter",
            f"rtmx_sync_updates_out_total {metrics.updates_out}",
            "# TYPE rtmx_sync_remote_updates_total counter",
            f"rtmx_sync_remote_updates_total {metrics.remote_updates}",
            "# TYPE rtmx_sync_protocol_errors_total counter",
            f"rtmx_sync_protocol_errors_total {metrics.protocol_errors}",
            "# TYPE rtmx_sync_pending_writes gauge",
            f"rtmx_sync_pending_writes {store.pending}",
            "# TYPE rtmx_sync_cross_server_latency_seconds summary",
            f"rtmx_sync_cross_server_latency_seconds_sum {metrics.latency_sum:.6f}",
            f"rtmx_sync_cross_server_latency_seconds_count {metrics.latency_count}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    def authorised(websocket: WebSocket) -> bool:
        if not settings.auth_token:
            return True
        offered = websocket.query_params.get("token", "")
        header = websocket.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            offered = header[7:]
        return hmac.compare_digest(offered.encode(), settings.auth_token.encode())

    async def websocket_health(websocket: WebSocket) -> None:
        # For load balancer checks: the upgrade works (101), no room is opened.
        await websocket.accept()
        await websocket.close(1000, reason="ok")

    async def room_endpoint(websocket: WebSocket) -> None:
        name = websocket.path_params["room"]
        await websocket.accept()
        if not ROOM_NAME.match(name):
            await websocket.close(CLOSE_POLICY, reason="invalid room name")
            return
        if not authorised(websocket):
            await websocket.close(CLOSE_POLICY, reason="authentication required")
            return
        try:
            room = await registry.acquire(name)
        except Exception as error:
            log.warning("room %s unavailable: %s", name, error)
            await websocket.close(CLOSE_RESTART, reason="room state unavailable, retry")
            return
        sockets.add(websocket)
        metrics.connections += 1
        try:
            await room.join(websocket)
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    raise ProtocolError("text frames are not part of the protocol")
                if len(data) > settings.max_message_bytes:
                    await websocket.close(CLOSE_TOO_BIG, reason="message too big")
                    break
                await room.receive(websocket, data)
        except ProtocolError as error:
            metrics.protocol_errors += 1
            log.info("closing a client of room %s: %s", name, error)
            with contextlib.suppress(Exception):
                await websocket.close(CLOSE_POLICY, reason=str(error)[:120])
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            sockets.discard(websocket)
            metrics.connections -= 1
            await registry.release(room, websocket)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await store.start()
        log.info("rtmx-sync %s ready", settings.server_id)
        try:
            yield
        finally:
            # Graceful shutdown: clients reconnect (to another server through HAProxy).
            for websocket in list(sockets):
                with contextlib.suppress(Exception):
                    await websocket.close(CLOSE_RESTART, reason="server shutting down")
            await registry.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.flush(), timeout=settings.shutdown_grace_s)
            await store.close()
            await bus.close()

    routes = [
        Route("/health", health),
        Route("/metrics", prometheus),
        WebSocketRoute("/_health", websocket_health),
        WebSocketRoute("/{room:path}", room_endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
