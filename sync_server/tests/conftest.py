"""Real redis-server and PostgreSQL processes, and rtmx-sync servers, started by the tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Doc, Encoder, Text, create_awareness_message

# The client the tests drive lives in the package.
from rtmx_sync.client import YClient, eventually  # noqa: F401

PG_BIN = Path(os.environ.get("RTMX_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class RedisServer:
    """One redis-server process (no persistence) that a test may stop and start again on the same port."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed (make test installs Debian's redis-server)")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.port), 0.2).close() is None, what="redis")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class PostgresServer:
    """One PostgreSQL 15 cluster that a test may stop and start again on the same port."""

    def __init__(self):
        if not (PG_BIN / "initdb").exists():
            pytest.fail(f"PostgreSQL binaries not found in {PG_BIN} (make test installs postgresql-15)")
        # PostgreSQL refuses to run as root: as root, run it as the postgres user in a directory it owns.
        self.parent = Path(tempfile.mkdtemp(prefix="rtmx-sync-pg-", dir="/var/tmp"))
        self.datadir = self.parent / "data"
        self.port = free_port()
        self.as_postgres = []
        if os.geteuid() == 0:
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.parent, "postgres", "postgres")
        subprocess.run(
            [*self.as_postgres, str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self.as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), *args],
            check=check,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1"
        self._ctl("-w", "-l", str(self.datadir / "log"), "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop", check=False)

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        return [postmaster, *map(int, children)]

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres_dsn():
    server = PostgresServer().start()
    yield server.dsn
    server.remove()


@pytest.fixture()
def own_redis(tmp_path):
    """A Redis of this test's own, which it may stop and start."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture()
def own_postgres():
    """A PostgreSQL of this test's own, which it may stop and start."""
    server = PostgresServer().start()
    yield server
    server.remove()


def series(name: str, labels: dict[str, str]) -> str:
    """A sample's key in parse_metrics: name{a="1",b="2"} (labels sorted)."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as {series (with labels): value}."""
    return {
        series(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class SyncServer:
    """One rtmx-sync process."""

    def __init__(self, name: str, redis_url: str, postgres_dsn: str, **extra: str):
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            "RTMX_SYNC_SERVER_PORT": str(self.port),
            "RTMX_SYNC_SERVER_SERVER_ID": name,
            "RTMX_SYNC_REDIS_URL": redis_url,
            "RTMX_SYNC_POSTGRES_DSN": postgres_dsn,
            "RTMX_SYNC_SYNC_RESYNC_INTERVAL_S": "0.5",
            "RTMX_SYNC_SERVER_ALLOW_ANONYMOUS": "true",
            # uvicorn would believe X-Forwarded-For from 127.0.0.1 itself; the server's trusted_proxies decide.
            "FORWARDED_ALLOW_IPS": "192.0.2.1",
            **extra,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def health(self) -> int:
        return self.health_report()[0]

    def health_report(self) -> tuple[int, dict]:
        """(HTTP status, JSON body) of GET /health."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
            return answer.read().decode()

    def metrics(self) -> dict[str, float]:
        """GET /metrics as {series (with labels): value}, e.g. 'rtmx_sync_refused_total{reason="auth"}'."""
        return parse_metrics(self.metrics_text())

    def sample(self, name: str, **labels: str) -> float:
        """One sample of GET /metrics (0 when absent): sample("rtmx_sync_messages_total", kind="update")."""
        return self.metrics().get(series(name, labels), 0.0)

    def refused(self, reason: str) -> float:
        return self.sample("rtmx_sync_refused_total", reason=reason)

    def start(self) -> SyncServer:
        self.proc = subprocess.Popen([sys.executable, "-m", "rtmx_sync.cli"], env=self.env)
        wait_until(lambda: self.health() == 200, what=f"{self.name} healthy")
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> bool:
        """SIGTERM; True when the server shut down on its own (uvicorn re-raises the signal at the end)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20) in (0, -signal.SIGTERM)


@pytest.fixture()
def servers(redis_url, postgres_dsn):
    """start(name, redis_url=..., postgres_dsn=..., **RTMX_SYNC_* environment): a running server."""
    started: list[SyncServer] = []

    def start(name: str, redis_url: str = redis_url, postgres_dsn: str = postgres_dsn, **extra: str) -> SyncServer:
        server = SyncServer(name, redis_url, postgres_dsn, **extra).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc and server.proc.poll() is None:
            server.kill()


def presence(clock: int, blob: str, client_id: int = 4242) -> bytes:
    """An awareness message: one client's state at `clock` (y-protocols encoding)."""
    update = Encoder()
    update.write_var_uint(1)
    update.write_var_uint(client_id)
    update.write_var_uint(clock)
    update.write_var_string(json.dumps({"blob": blob}))
    return create_awareness_message(update.to_bytes())


def stored_text(dsn: str, name: str) -> str:
    """The room's text as PostgreSQL has it."""
    doc = Doc()
    text = doc.get("text", type=Text)
    with psycopg.connect(dsn) as conn:
        for (update,) in conn.execute("SELECT update FROM rtmx_sync_updates WHERE room = %s ORDER BY id", (name,)):
            doc.apply_update(bytes(update))
    return str(text)
