"""`rtmx-sync --config /etc/rtmx-sync/config.toml [--check]` runs (or checks) the server;
`rtmx-sync token --key-file FILE --room ROOM --user USER [--ttl SECONDS] [--read-only]`
prints a token signed with the first key of FILE."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys

import uvicorn

from .app import create_app
from .auth import RedactingFilter, TokenVerifier, issue, load_keys
from .config import ConfigError, load_settings

log = logging.getLogger("rtmx_sync.cli")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry)


def log_handler(stream=None) -> logging.Handler:
    """The one handler every logger (uvicorn's included) writes through: JSON
    lines with tokens redacted. A filter on the handler, unlike one on a
    logger, also sees the records propagated from child loggers."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    return handler


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that, on the first SIGTERM/SIGINT, runs the app's
    `begin_drain()` (health 503 so the load balancers move new clients away,
    clients closed with 1012, writes flushed) while still serving, and only
    then lets uvicorn stop accepting and shut down. A second signal during the
    drain exits at once. Without `begin_drain` it behaves like uvicorn.Server."""

    def __init__(self, config: uvicorn.Config, begin_drain=None, drain_timeout_s: float = 20.0) -> None:
        super().__init__(config)
        self.begin_drain = begin_drain
        self.drain_timeout_s = drain_timeout_s
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig, frame) -> None:
        # Runs as a signal handler in the loop's thread, between two bytecodes:
        # nothing else runs until it returns.
        was_exiting = self.should_exit
        super().handle_exit(sig, frame)  # records the signal (re-raised after exit), sets should_exit
        if self.draining:
            self.should_exit = self.force_exit = True  # second signal: stop now
            return
        if self.begin_drain is None or self._loop is None or not self.started or was_exiting:
            return
        self.draining = True
        self.should_exit = False  # keep serving until the drain is done
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        log.info("draining before shutdown (send the signal again to exit at once)")
        try:
            await asyncio.wait_for(self.begin_drain(), timeout=self.drain_timeout_s)
        except TimeoutError:
            log.warning("drain did not finish in %.0f s; shutting down anyway", self.drain_timeout_s)
        except Exception:
            log.exception("drain failed; shutting down anyway")
        finally:
            self.should_exit = True


def token_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rtmx-sync token",
        description="Print a token for USER on ROOM signed with the first key of the key file.",
    )
    parser.add_argument("--key-file", required=True, help="the server.auth_key_file (first key signs)")
    parser.add_argument("--room", required=True, help='room name, or a prefix pattern ending in "*" ("project-42/*")')
    parser.add_argument("--user", required=True, help="the user (sub claim)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds the token is valid (default 3600)")
    parser.add_argument("--read-only", action="store_true", help="the token may read the room, not change it")
    args = parser.parse_args(argv)
    if not args.ttl > 0:
        parser.error("--ttl must be positive")
    if not args.room or not args.user:
        parser.error("--room and --user must not be empty")
    try:
        keys = load_keys(args.key_file)
    except ConfigError as error:
        print(f"rtmx-sync token: {error}", file=sys.stderr)
        return 2
    print(issue(keys[0], args.room, args.user, args.ttl, read_only=args.read_only))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "token":
        return token_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="rtmx-sync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Subcommand: rtmx-sync token --help",
    )
    parser.add_argument("--config", help="TOML configuration file (environment RTMX_SYNC_* overrides it)")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        TokenVerifier.from_settings(settings)  # the key file is readable and its keys long enough
    except ConfigError as error:
        print(f"rtmx-sync: configuration error: {error}", file=sys.stderr)
        return 2
    if args.check:
        print("configuration OK")
        return 0
    logging.basicConfig(level=logging.INFO, handlers=[log_handler()])
    try:
        app = create_app(settings)
    except ConfigError as error:
        print(f"rtmx-sync: configuration error: {error}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        ws_max_size=settings.max_message_bytes,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_config=None,
        # The app believes X-Forwarded-For only from server.trusted_proxies (per-address limits).
        proxy_headers=False,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
    state = getattr(app, "state", None)
    begin_drain = getattr(state, "begin_drain", None) if state is not None else None
    # The drain, then uvicorn's shutdown (up to shutdown_grace_s) and the
    # lifespan's flush must fit in systemd's TimeoutStopSec (the role sets it from shutdown_grace_s).
    drain_timeout_s = max(10.0, 3 * settings.shutdown_grace_s)
    DrainingServer(config, begin_drain=begin_drain, drain_timeout_s=drain_timeout_s).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
