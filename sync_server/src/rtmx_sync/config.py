"""Configuration: one TOML file plus RTMX_SYNC_<SECTION>_<KEY> environment overrides,
validated at start with a message that names the bad setting."""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    # [server]
    host: str = "127.0.0.1"
    port: int = 8765
    server_id: str = field(default_factory=socket.gethostname)
    max_message_bytes: int = 1_048_576
    # Authentication: signed tokens (see auth.py) verified with the key in
    # auth_key_file; without a key every client is refused unless
    # allow_anonymous is set (tests, a closed network).
    auth_key_file: str = ""
    allow_anonymous: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    shutdown_grace_s: float = 5.0
    # WebSocket keepalive: a client that answers no ping within the timeout is dropped.
    ping_interval_s: float = 15.0
    ping_timeout_s: float = 10.0
    # Limits: what exceeds them is refused with a close reason and counted.
    max_connections: int = 5000
    max_connections_per_address: int = 200
    max_messages_per_second: float = 100.0
    max_document_bytes: int = 16 * 1_048_576
    # Addresses whose X-Forwarded-For is believed (the HAProxy lbs): per-address
    # limits then count the user's address, not the lb's.
    trusted_proxies: tuple[str, ...] = ()
    # [redis]: either url (plain or through the VIP) or Sentinels.
    redis_url: str = ""
    redis_sentinels: tuple[str, ...] = ()
    redis_sentinel_master: str = "rtmx"
    redis_password: str = ""
    redis_sentinel_password: str = ""
    # [postgres]
    postgres_dsn: str = ""
    # [sync]
    resync_interval_s: float = 2.0
    compaction_threshold: int = 500
    stream_maxlen: int = 10_000
    # Durable writes: up to write_batch_max updates per PostgreSQL round trip
    # over postgres_pool_size connections; while PostgreSQL is unavailable at
    # most write_buffer_max updates wait, then senders are slowed (backpressure).
    write_batch_max: int = 256
    write_buffer_max: int = 20_000
    postgres_pool_size: int = 4
    # Every PostgreSQL and Redis call is bounded by this.
    io_timeout_s: float = 5.0
    # Messages queued for one slow client before it is disconnected (1013).
    client_queue_max: int = 2_000


_SCHEMA: dict[str, dict[str, type]] = {
    "server": {
        "host": str,
        "port": int,
        "server_id": str,
        "max_message_bytes": int,
        "auth_key_file": str,
        "allow_anonymous": bool,
        "tls_cert": str,
        "tls_key": str,
        "shutdown_grace_s": float,
        "ping_interval_s": float,
        "ping_timeout_s": float,
        "max_connections": int,
        "max_connections_per_address": int,
        "max_messages_per_second": float,
        "max_document_bytes": int,
        "trusted_proxies": list,
    },
    "redis": {"url": str, "sentinels": list, "sentinel_master": str, "password": str, "sentinel_password": str},
    "postgres": {"dsn": str},
    "sync": {
        "resync_interval_s": float,
        "compaction_threshold": int,
        "stream_maxlen": int,
        "write_batch_max": int,
        "write_buffer_max": int,
        "postgres_pool_size": int,
        "io_timeout_s": float,
        "client_queue_max": int,
    },
}
_FIELD = {
    ("redis", "url"): "redis_url",
    ("redis", "sentinels"): "redis_sentinels",
    ("redis", "sentinel_master"): "redis_sentinel_master",
    ("redis", "password"): "redis_password",
    ("redis", "sentinel_password"): "redis_sentinel_password",
    ("postgres", "dsn"): "postgres_dsn",
}


_SECTION_OF = {key: section for section, keys in _SCHEMA.items() for key in keys}


def _coerce(name: str, value, kind: type):
    try:
        if kind is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).strip().lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind is int and isinstance(value, bool):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: expected {kind.__name__}, got {value!r}") from None


def load_settings(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the file (if any), apply environment overrides, validate."""
    environ = os.environ if environ is None else environ
    raw: dict[str, dict] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"configuration file {path} is not valid TOML: {error}") from None
    values: dict[str, object] = {}
    for section, content in raw.items():
        if section not in _SCHEMA or not isinstance(content, dict):
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        for key, value in content.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"unknown setting {section}.{key}")
            values[_FIELD.get((section, key), key)] = _coerce(f"{section}.{key}", value, _SCHEMA[section][key])
    for section, keys in _SCHEMA.items():
        for key, kind in keys.items():
            env = f"RTMX_SYNC_{section}_{key}".upper()
            if env in environ:
                values[_FIELD.get((section, key), key)] = _coerce(env, environ[env], kind)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 1 <= s.port <= 65535:
        raise ConfigError(f"setting server.port: {s.port} is not a TCP port")
    if s.max_message_bytes < 1024:
        raise ConfigError("setting server.max_message_bytes must be at least 1024")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("settings server.tls_cert and server.tls_key go together: set both or neither")
    for name in ("tls_cert", "tls_key"):
        value = getattr(s, name)
        if value and not Path(value).is_file():
            raise ConfigError(f"setting server.{name}: file {value} does not exist")
    if not s.postgres_dsn:
        raise ConfigError("setting postgres.dsn is required (e.g. postgresql://rtmx:...@VIP:6432/rtmx)")
    if bool(s.redis_url) == bool(s.redis_sentinels):
        raise ConfigError("set exactly one of redis.url and redis.sentinels")
    for sentinel in s.redis_sentinels:
        host, _, port = sentinel.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"setting redis.sentinels: {sentinel!r} is not host:port")
    if s.resync_interval_s <= 0:
        raise ConfigError("setting sync.resync_interval_s must be positive")
    if s.compaction_threshold < 10:
        raise ConfigError("setting sync.compaction_threshold must be at least 10")
    if not s.auth_key_file and not s.allow_anonymous:
        raise ConfigError(
            "setting server.auth_key_file is required (the token signing key); "
            "set server.allow_anonymous = true only on a closed test network"
        )
    if s.auth_key_file and not Path(s.auth_key_file).is_file():
        raise ConfigError(f"setting server.auth_key_file: file {s.auth_key_file} does not exist")
    for name in (
        "max_connections",
        "max_connections_per_address",
        "max_document_bytes",
        "write_batch_max",
        "write_buffer_max",
        "postgres_pool_size",
        "client_queue_max",
    ):
        if getattr(s, name) < 1:
            raise ConfigError(f"setting {_SECTION_OF[name]}.{name} must be at least 1")
    for name in ("max_messages_per_second", "io_timeout_s", "ping_interval_s", "ping_timeout_s"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"setting {_SECTION_OF[name]}.{name} must be positive")
    for proxy in s.trusted_proxies:
        try:
            ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"setting server.trusted_proxies: {proxy!r} is not an address or CIDR network") from None
