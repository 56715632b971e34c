"""The modules' own protocol clients against real PostgreSQL and redis-server processes."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ansible_collections.rtmx.ha.plugins.module_utils.pgwire import PgConnection, PgError, ScramClient
from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import (
    RedisConnection,
    RedisError,
    RedisReplyError,
    parse_info,
    query_redis,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "s3cret-'quote"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def postgres():
    """PostgreSQL 15 with scram-sha-256 for `postgres` and md5 for `legacy`."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL binaries not found in {PG_BIN} (make test installs postgresql-15)")
    parent = Path(tempfile.mkdtemp(prefix="rtmx-ha-unit-pg-", dir="/var/tmp"))
    datadir, port = parent / "data", free_port()
    as_postgres = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(parent, "postgres", "postgres")
    pwfile = parent / "pw"
    pwfile.write_text(PASSWORD + "\n")
    shutil.chown(pwfile, "postgres", "postgres") if os.geteuid() == 0 else None
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres",
                    "--auth=scram-sha-256", f"--pwfile={pwfile}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-w", "-l", str(datadir / "log"),
                    "-o", f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    with PgConnection("127.0.0.1", port, "postgres", PASSWORD, "postgres", sslmode="disable") as conn:
        conn.query("SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'old-school'")
    hba = datadir / "pg_hba.conf"
    hba.write_text("host all legacy 127.0.0.1/32 md5\n" + hba.read_text())
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(datadir), "reload"], check=True,
                   stdout=subprocess.DEVNULL)
    yield port
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def redis():
    binary = shutil.which("redis-server")
    if not binary:
        pytest.fail("redis-server is not installed (make test installs Debian's redis-server)")
    port, workdir = free_port(), tempfile.mkdtemp(prefix="rtmx-ha-unit-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir,
                             "--requirepass", PASSWORD], stdout=subprocess.DEVNULL)
    wait_port(port)
    yield port
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def test_scram_matches_the_rfc_7677_vector():
    client = ScramClient("pencil", nonce="rOprNGfwEbeRWgbNEkqO", username="user")
    assert client.first_message() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.final_message(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                 b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(PgError, match="server signature"):
        client.verify(b"v=AAAA")


@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
def test_scram_login_and_multi_statement_query(postgres, sslmode):
    with PgConnection("127.0.0.1", postgres, "postgres", PASSWORD, "postgres", sslmode=sslmode) as conn:
        rows = conn.query("CREATE TEMP TABLE t (a int, b text); INSERT INTO t VALUES (1, NULL), (2, 'x'); "
                          "SELECT a, b FROM t ORDER BY a")
    assert rows == [{"a": "1", "b": None}, {"a": "2", "b": "x"}]


def test_md5_login(postgres):
    with PgConnection("127.0.0.1", postgres, "legacy", "old-school", "postgres", sslmode="disable") as conn:
        assert conn.query("SELECT current_user AS u") == [{"u": "legacy"}]


def test_wrong_password_is_a_clear_error(postgres):
    with pytest.raises(PgError) as err:
        PgConnection("127.0.0.1", postgres, "postgres", "wrong", "postgres", sslmode="disable")
    assert err.value.sqlstate == "28P01"
    assert "password authentication failed" in str(err.value)


def test_server_error_keeps_the_connection_usable(postgres):
    with PgConnection("127.0.0.1", postgres, "postgres", PASSWORD, "postgres") as conn:
        with pytest.raises(PgError) as err:
            conn.query("SELECT * FROM no_such_table")
        assert err.value.sqlstate == "42P01"
        assert conn.query("SELECT 1 AS one") == [{"one": "1"}]


def test_unreachable_server_names_the_address():
    with pytest.raises(PgError, match=r"127\.0\.0\.1:%d" % 1):
        PgConnection("127.0.0.1", 1, "postgres", PASSWORD, timeout=1)


def test_redis_auth_commands_and_info(redis):
    with RedisConnection("127.0.0.1", redis, PASSWORD) as conn:
        assert conn.command("SET", "k", "v\r\nwith newline") == "OK"
        assert conn.command("GET", "k") == "v\r\nwith newline"
        assert conn.command("GET", "missing") is None
        assert conn.command("RPUSH", "l", "a", "b") == 2
        assert conn.command("LRANGE", "l", 0, -1) == ["a", "b"]
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            conn.command("GET", "l")
    node = query_redis("127.0.0.1:%d" % redis, PASSWORD, 2)
    assert node["reachable"] and node["role"] == "master" and node["connected_replicas"] == 0


def test_redis_wrong_password_is_a_clear_error(redis):
    with pytest.raises(RedisError, match="refused the password"):
        RedisConnection("127.0.0.1", redis, "wrong")
    assert "refused the password" in query_redis("127.0.0.1:%d" % redis, "wrong", 2)["error"]


def test_parse_info_reads_replica_lines():
    info = parse_info("# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
                      "slave0:ip=10.0.0.12,port=6379,state=online,offset=42,lag=0\r\n")
    assert info["role"] == "master"
    assert info["slave0"] == {"ip": "10.0.0.12", "port": "6379", "state": "online", "offset": "42", "lag": "0"}
