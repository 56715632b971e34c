"""Real redis-server and PostgreSQL processes, and rtmx-sync servers, started by the tests."""

from __future__ import annotations

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

import pytest

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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make test installs Debian's redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    wait_until(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() is None, what="redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def postgres_dsn():
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL binaries not found in {PG_BIN} (make test installs postgresql-15)")
    # PostgreSQL refuses to run as root: as root, run it as the postgres user in a directory it owns.
    parent = Path(tempfile.mkdtemp(prefix="rtmx-sync-pg-", dir="/var/tmp"))
    datadir = parent / "data"
    port = free_port()
    as_postgres = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(parent, "postgres", "postgres")
    subprocess.run(
        [*as_postgres, str(PG_BIN / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            *as_postgres,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(datadir),
            "-w",
            "-l",
            str(datadir / "log"),
            "-o",
            f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(
        [*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"], stdout=subprocess.DEVNULL
    )
    shutil.rmtree(parent, ignore_errors=True)


class SyncServer:
    """One rtmx-sync process."""

    def __init__(self, name: str, redis_url: str, postgres_dsn: str, **extra: str):
        self.name = name
        self.port = free_port()
        self.env = dict(
            os.environ,
            RTMX_SYNC_SERVER_PORT=str(self.port),
            RTMX_SYNC_SERVER_SERVER_ID=name,
            RTMX_SYNC_REDIS_URL=redis_url,
            RTMX_SYNC_POSTGRES_DSN=postgres_dsn,
            RTMX_SYNC_SYNC_RESYNC_INTERVAL_S="0.5",
            RTMX_SYNC_SERVER_ALLOW_ANONYMOUS="true",
            **extra,
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def health(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

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
    started: list[SyncServer] = []

    def start(name: str, **extra: str) -> SyncServer:
        server = SyncServer(name, redis_url, postgres_dsn, **extra).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc and server.proc.poll() is None:
            server.kill()
