"""rtmx's web dashboard and API (what `rtmx serve` runs) with a /health endpoint for HAProxy.

rtmx is not forked: this module builds rtmx's own FastAPI app with
`rtmx.web.app.create_app`, as `rtmx serve` does, and wraps it in a small ASGI
callable that answers GET /health itself and hands every other request,
WebSocket (/ws) and lifespan event to rtmx's app.

The RTM database comes from a release directory (an RTMX project root: its
`rtmx.yaml` and the CSV that names as `rtmx.database`). The data directory
given on the command line is usually a symlink to the current release; it is
resolved once, at start, so a running instance keeps serving the release it
started with while the role switches the link, and picks up the new one when
it is restarted (one instance at a time).

GET /health answers 200 with JSON only while this instance can serve: the
database has been loaded (at least one requirement) and the instance is not
shutting down; 503 otherwise, with the reason. While it cannot serve, every
other request is answered 503 too, so HAProxy retries it on another instance.

Usage:
  rtmx-ha-api --data-dir DIR --host ADDRESS --port PORT [--name NAME] [--forwarded-allow-ips A,B]
  rtmx-ha-api --data-dir DIR --check      (load the database, print a summary, exit 1 if it does not load)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["HealthApp", "Release", "main"]

HEALTH_PATH = "/health"


class Release:
    """One RTM release directory: its configuration and database, loaded and checked."""

    def __init__(self, data_dir: str | os.PathLike):
        self.link = Path(data_dir)
        self.path = Path(os.path.realpath(self.link))
        self.csv: Path | None = None
        self.requirements = 0
        self.error: str | None = None
        self.loaded_at: float | None = None

    def load(self) -> bool:
        """Read rtmx.yaml and the database it names, as rtmx does; remember why when it fails."""
        try:
            from rtmx.config import load_config
            from rtmx.models import RTMDatabase

            config_file = next((self.path / name for name in (".rtmx/config.yaml", "rtmx.yaml", "rtmx.yml")
                                if (self.path / name).is_file()), None)
            if config_file is None:
                raise FileNotFoundError(f"no rtmx.yaml in {self.path}")
            config = load_config(config_file)
            csv = Path(config.database)
            csv = csv if csv.is_absolute() else self.path / csv
            database = RTMDatabase.load(csv)
            self.requirements = len(list(database))
            if not self.requirements:
                raise ValueError(f"{csv} holds no requirement")
            self.csv = csv
            self.error = None
            self.loaded_at = time.time()
            return True
        except Exception as error:  # noqa: BLE001 - any failure makes the instance unable to serve
            self.csv = None
            self.requirements = 0
            self.error = f"{type(error).__name__}: {error}"[:300]
            return False

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> dict:
        return {"release": self.name, "path": str(self.path), "database": str(self.csv) if self.csv else None,
                "requirements": self.requirements, "error": self.error}


class HealthApp:
    """ASGI: GET /health here, everything else to rtmx's app while this instance can serve."""

    def __init__(self, app, release: Release, name: str = ""):
        self.app = app
        self.release = release
        self.name = name
        self.draining = False
        self.started = False

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "shutting down"
        if self.release.csv is None:
            return False, self.release.error or "database not loaded"
        if not self.release.csv.is_file():
            return False, f"{self.release.csv} is gone"
        if not self.started:
            return False, "starting"
        return True, "ok"

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            await self.health(scope, send)
            return
        ok, reason = self.ready()
        if not ok and scope["type"] == "http":
            await respond(send, 503, {"status": "unavailable", "reason": reason, "instance": self.name})
            return
        if not ok:  # a WebSocket handshake: refuse it, the client reconnects through the VIP
            await send({"type": "websocket.close", "code": 1013})
            return
        await self.app(scope, receive, send)

    async def health(self, scope, send) -> None:
        if self.release.csv is None and not self.draining:
            self.release.load()  # a release that failed to load is tried again at each check
        ok, reason = self.ready()
        body = dict(status="ok" if ok else "unavailable", reason=reason, instance=self.name,
                    **{k: v for k, v in self.release.summary().items() if k != "path"})
        await respond(send, 200 if ok else 503, body, head=scope.get("method") == "HEAD")

    async def lifespan(self, scope, receive, send) -> None:
        """rtmx's own lifespan runs inside ours (its file watcher); /health says ok once both started."""

        async def wrapped_receive():
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self.draining = True
            return message

        async def wrapped_send(message):
            if message["type"] == "lifespan.startup.complete":
                self.started = True
            await send(message)

        await self.app(scope, wrapped_receive, wrapped_send)


async def respond(send, status: int, body: dict, head: bool = False) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else payload})


def build(data_dir: str, name: str = "") -> HealthApp:
    """Load the release, then build rtmx's app on its database, as `rtmx serve` does."""
    from rtmx.web.app import create_app

    release = Release(data_dir)
    release.load()
    # rtmx reads rtmx.yaml from the working directory at each request (phase names): the release's.
    os.chdir(release.path)
    csv = release.csv or (release.path / "docs" / "rtm_database.csv")
    return HealthApp(create_app(csv), release, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtmx-ha-api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="release directory (or a symlink to it)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default="", help="instance name, reported by /health")
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                        help="proxies whose X-Forwarded-For/Proto are believed (comma-separated)")
    parser.add_argument("--graceful-shutdown-s", type=float, default=10.0)
    parser.add_argument("--check", action="store_true", help="only load the database and print a summary")
    args = parser.parse_args(argv)

    if args.check:
        release = Release(args.data_dir)
        ok = release.load()
        print(json.dumps(release.summary()))
        if not ok:
            print(f"rtmx-ha-api: the RTM database of {release.path} does not load: {release.error}", file=sys.stderr)
        return 0 if ok else 1

    import uvicorn

    app = build(args.data_dir, args.name)
    print(json.dumps({"event": "starting", "host": args.host, "port": args.port, **app.release.summary()}),
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=True,
                forwarded_allow_ips=args.forwarded_allow_ips, timeout_graceful_shutdown=args.graceful_shutdown_s,
                server_header=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
