"""`rtmx-sync --config /etc/rtmx-sync/config.toml`"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys

import uvicorn

from .app import create_app
from .config import ConfigError, load_settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtmx-sync", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (environment RTMX_SYNC_* overrides it)")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"rtmx-sync: configuration error: {error}", file=sys.stderr)
        return 2
    if args.check:
        print("configuration OK")
        return 0
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        ws_max_size=settings.max_message_bytes,
        ws_ping_interval=15,
        ws_ping_timeout=10,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_config=None,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
