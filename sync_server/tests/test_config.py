"""Configuration is validated at start with a message naming the setting."""

import pytest

from rtmx_sync.config import ConfigError, load_settings

BASE = {
    "RTMX_SYNC_POSTGRES_DSN": "postgresql://x@h/db",
    "RTMX_SYNC_REDIS_URL": "redis://h:6379/0",
    "RTMX_SYNC_SERVER_ALLOW_ANONYMOUS": "true",
}


def test_minimal_environment_is_enough():
    settings = load_settings(None, BASE)
    assert settings.port == 8765 and settings.redis_url == "redis://h:6379/0"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RTMX_SYNC_SERVER_PORT": "99999"}, "server.port"),
        ({"RTMX_SYNC_SERVER_PORT": "abc"}, "RTMX_SYNC_SERVER_PORT: expected int"),
        ({"RTMX_SYNC_POSTGRES_DSN": ""}, "postgres.dsn is required"),
        ({"RTMX_SYNC_REDIS_SENTINELS": "a:26379"}, "exactly one of redis.url and redis.sentinels"),
        ({"RTMX_SYNC_SERVER_TLS_CERT": "/nonexistent.pem"}, "tls_cert and server.tls_key go together"),
        ({"RTMX_SYNC_SERVER_ALLOW_ANONYMOUS": "false"}, "server.auth_key_file is required"),
        ({"RTMX_SYNC_SERVER_ALLOW_ANONYMOUS": "maybe"}, "RTMX_SYNC_SERVER_ALLOW_ANONYMOUS: expected bool"),
        ({"RTMX_SYNC_SERVER_AUTH_KEY_FILE": "/nonexistent.key"}, "server.auth_key_file: file /nonexistent.key"),
        ({"RTMX_SYNC_SERVER_MAX_CONNECTIONS": "0"}, "server.max_connections must be at least 1"),
        ({"RTMX_SYNC_SYNC_IO_TIMEOUT_S": "0"}, "sync.io_timeout_s must be positive"),
    ],
)
def test_bad_settings_are_named(env, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(None, {**BASE, **env})


def test_file_and_unknown_keys(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        "[server]\nport = 9000\nallow_anonymous = true\n"
        '[redis]\nsentinels = ["a:26379", "b:26379"]\n[postgres]\ndsn = "x"\n'
    )
    settings = load_settings(path, {})
    assert settings.port == 9000 and settings.redis_sentinels == ("a:26379", "b:26379")
    path.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting server\.prot"):
        load_settings(path, {})
