"""The API instances' ASGI wrapper (roles/api_server/files/rtmx-ha-api): /health says 200 only while the
instance can serve, and a request it cannot serve is answered 503 (HAProxy retries it elsewhere)."""

import asyncio
import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "rtmx_ha_api", ROOT / "roles" / "api_server" / "files" / "rtmx-ha-api" / "src" / "rtmx_ha_api" / "__init__.py")
wrapper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wrapper)


class LoadedRelease(wrapper.Release):
    """A release whose database loaded (rtmx itself is not needed here)."""

    def __init__(self, path: pathlib.Path, loads: bool = True):
        super().__init__(path)
        self.loads = loads

    def load(self) -> bool:
        self.csv = self.path / "docs" / "rtm_database.csv" if self.loads else None
        self.requirements = 5 if self.loads else 0
        self.error = None if self.loads else "RTMError: RTM database is empty"
        return self.loads


async def rtmx_app(scope, receive, send):
    """Stands for rtmx's FastAPI app: answers every request 200, runs its lifespan."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"rtmx"})


def call(app, path: str, kind: str = "http") -> tuple[int | None, bytes, list]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": kind, "path": path, "method": "GET", "headers": []}, receive, send))
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (start["status"] if start else None), body, sent


def lifespan(app, *events: str) -> list:
    """Run the lifespan protocol through the wrapper with these events (startup, shutdown)."""
    incoming = [{"type": f"lifespan.{e}"} for e in events]
    out = []

    async def receive():
        return incoming.pop(0) if incoming else await asyncio.sleep(3600)

    async def send(message):
        out.append(message["type"])

    async def run():
        task = asyncio.ensure_future(app({"type": "lifespan"}, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(run())
    return out


def instance(tmp_path, loads=True):
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "rtm_database.csv").write_text("req_id\nREQ-1\n")
    release = LoadedRelease(tmp_path, loads)
    release.load()
    return wrapper.HealthApp(rtmx_app, release, "sync1")


def test_health_is_503_until_rtmx_started_then_200(tmp_path):
    app = instance(tmp_path)
    status, body, _ = call(app, "/health")
    assert status == 503 and json.loads(body)["reason"] == "starting"
    assert lifespan(app, "startup") == ["lifespan.startup.complete"]
    status, body, _ = call(app, "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["instance"] == "sync1" and health["requirements"] == 5


def test_requests_pass_to_rtmx_only_while_it_can_serve(tmp_path):
    app = instance(tmp_path)
    assert call(app, "/api/status")[0] == 503
    lifespan(app, "startup")
    assert call(app, "/api/status")[:2] == (200, b"rtmx")


def test_a_database_that_does_not_load_is_503_with_the_reason(tmp_path):
    app = instance(tmp_path, loads=False)
    lifespan(app, "startup")
    status, body, _ = call(app, "/health")
    assert status == 503 and json.loads(body)["reason"] == "RTMError: RTM database is empty"
    assert call(app, "/")[0] == 503


def test_a_websocket_is_refused_while_it_cannot_serve(tmp_path):
    app = instance(tmp_path)
    _, _, sent = call(app, "/ws", kind="websocket")
    assert sent == [{"type": "websocket.close", "code": 1013}]


def test_shutdown_turns_health_to_503(tmp_path):
    app = instance(tmp_path)
    lifespan(app, "startup", "shutdown")
    status, body, _ = call(app, "/health")
    assert status == 503 and json.loads(body)["reason"] == "shutting down"


def test_a_database_file_that_disappears_is_503(tmp_path):
    app = instance(tmp_path)
    lifespan(app, "startup")
    (tmp_path / "docs" / "rtm_database.csv").unlink()
    status, body, _ = call(app, "/health")
    assert status == 503 and "is gone" in json.loads(body)["reason"]


def test_release_is_resolved_once_through_the_link(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "current").symlink_to(tmp_path / "r1")
    release = wrapper.Release(tmp_path / "current")
    (tmp_path / "current").unlink()
    (tmp_path / "r2").mkdir()
    (tmp_path / "current").symlink_to(tmp_path / "r2")
    assert release.name == "r1"  # a running instance keeps its release until it is restarted
