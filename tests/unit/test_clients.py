"""The modules' clients (psycopg, redis-py) against real PostgreSQL, PgBouncer, redis-server and Sentinel processes.

PostgreSQL 15 has TLS on (a throw-away CA signs a certificate for `localhost`) and one user per
authentication method; PgBouncer 1.18 (transaction pooling, SCRAM) sits in front of it.
"""

import copy
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from ansible_collections.rtmx.ha.plugins.module_utils import pgwire
from ansible_collections.rtmx.ha.plugins.module_utils.pgwire import PgBouncerAdmin, PgConnection, PgError
from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import (
    RedisConnection,
    RedisError,
    RedisReplyError,
    parse_info,
    query_redis,
    query_sentinel,
)
from ansible_collections.rtmx.ha.plugins.modules import ha_verify

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "s3cret-'quote"
APP_PASSWORD = "app-secret"
ADMIN_PASSWORD = "admin-secret"
AS_ROOT = os.geteuid() == 0
AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if AS_ROOT else []


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


def give_to_postgres(*paths):
    if AS_ROOT:
        for path in paths:
            shutil.chown(path, "postgres", "postgres")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def tls():
    """A CA, a server certificate it signs for DNS:localhost only, and another CA."""
    workdir = Path(tempfile.mkdtemp(prefix="rtmx-ha-unit-tls-"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                "-subj", f"/CN=rtmx-ha unit test {ca}", cwd=workdir)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=workdir)
    (workdir / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=workdir)
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(tls):
    """PostgreSQL 15 with TLS; `postgres` and `app` log in with SCRAM, `legacy` with MD5, `plain` with a
    cleartext password, `trusty` without any."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL binaries not found in {PG_BIN} (make test installs postgresql-15)")
    parent = Path(tempfile.mkdtemp(prefix="rtmx-ha-unit-pg-", dir="/var/tmp"))
    datadir, port = parent / "data", free_port()
    give_to_postgres(parent)
    pwfile = parent / "pw"
    pwfile.write_text(PASSWORD + "\n")
    for name in ("server.crt", "server.key"):
        shutil.copy(tls / name, parent / name)
    (parent / "server.key").chmod(0o600)
    give_to_postgres(pwfile, parent / "server.crt", parent / "server.key")
    subprocess.run([*AS_POSTGRES, str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres",
                    "--auth=scram-sha-256", f"--pwfile={pwfile}"], check=True, stdout=subprocess.DEVNULL)
    hba = datadir / "pg_hba.conf"
    hba.write_text("host all legacy 127.0.0.1/32 md5\nhost all plain 127.0.0.1/32 password\n"
                   "host all trusty 127.0.0.1/32 trust\n" + hba.read_text())
    subprocess.run([*AS_POSTGRES, str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-w", "-l", str(datadir / "log"),
                    "-o", f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1 -c ssl=on "
                    f"-c ssl_cert_file={parent / 'server.crt'} -c ssl_key_file={parent / 'server.key'}", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    with PgConnection("127.0.0.1", port, "postgres", PASSWORD, "postgres", sslmode="disable") as conn:
        conn.query("SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'old-school'; "
                   "RESET password_encryption; CREATE ROLE plain LOGIN PASSWORD 'in-the-clear'; "
                   "CREATE ROLE trusty LOGIN; CREATE ROLE app LOGIN PASSWORD '%s'; GRANT ALL ON SCHEMA public TO app"
                   % APP_PASSWORD)
    yield port
    subprocess.run([*AS_POSTGRES, str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def pgbouncer(postgres):
    """PgBouncer (Debian's binary, our own ini) on a loopback port: database rtmx is PostgreSQL's
    `postgres`, transaction pooling, SCRAM for every client, no client TLS."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.fail("pgbouncer is not installed (apt-get install pgbouncer; scripts/ensure-packages.sh @tests should)")
    workdir, port = Path(tempfile.mkdtemp(prefix="rtmx-ha-unit-pgbouncer-")), free_port()
    (workdir / "userlist.txt").write_text('"pgbouncer_admin" "%s"\n"app" "%s"\n' % (ADMIN_PASSWORD, APP_PASSWORD))
    (workdir / "pgbouncer.ini").write_text(f"""[databases]
rtmx = host=127.0.0.1 port={postgres} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
auth_type = scram-sha-256
auth_file = {workdir}/userlist.txt
admin_users = pgbouncer_admin
pool_mode = transaction
ignore_startup_parameters = extra_float_digits,options
""")
    give_to_postgres(workdir, workdir / "userlist.txt", workdir / "pgbouncer.ini")
    proc = subprocess.Popen([*AS_POSTGRES, binary, str(workdir / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        try:
            wait_port(port)
        except OSError:
            log = workdir / "pgbouncer.log"
            pytest.fail("pgbouncer did not start: %s" % (log.read_text() if log.exists() else "no log"))
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


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


@pytest.fixture(scope="module")
def sentinel(redis):
    """One Sentinel (quorum 1) monitoring the redis fixture as `rtmx`, with its own password."""
    binary = shutil.which("redis-server")
    port, workdir = free_port(), Path(tempfile.mkdtemp(prefix="rtmx-ha-unit-sentinel-"))
    config = workdir / "sentinel.conf"
    config.write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\nrequirepass sentinel-pw\n"
                      f'sentinel monitor rtmx 127.0.0.1 {redis} 1\nsentinel auth-pass rtmx "{PASSWORD}"\n')
    proc = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


# PostgreSQL -------------------------------------------------------------------


def test_the_bundled_libpq_can_require_scram():
    assert pgwire.HAS_PSYCOPG and pgwire.libpq_problem() is None
    assert pgwire.pq.version() >= 160000


@pytest.mark.parametrize("sslmode", ["disable", "prefer", "require"])
def test_scram_login_and_multi_statement_query(postgres, sslmode):
    with PgConnection("127.0.0.1", postgres, "postgres", PASSWORD, "postgres", sslmode=sslmode) as conn:
        rows = conn.query("CREATE TEMP TABLE t (a int, b text); INSERT INTO t VALUES (1, NULL), (2, 'x'); "
                          "SELECT a, b FROM t ORDER BY a; SELECT 'last' AS c WHERE false")
        assert rows == []
        rows = conn.query("SELECT a, b FROM t ORDER BY a; COMMIT")
        ssl = conn.query("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert rows == [{"a": "1", "b": None}, {"a": "2", "b": "x"}]
    assert ssl == [{"ssl": "false" if sslmode == "disable" else "true"}]


def test_verify_full_checks_the_certificate_and_the_host_name(postgres, tls):
    with PgConnection("localhost", postgres, "postgres", PASSWORD, "postgres", sslmode="verify-full",
                      sslrootcert=str(tls / "ca.crt")) as conn:
        assert conn.query("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [{"ssl": "true"}]
    with pytest.raises(PgError) as err:
        PgConnection("127.0.0.1", postgres, "postgres", PASSWORD, "postgres", sslmode="verify-full",
                     sslrootcert=str(tls / "ca.crt"))
    assert "127.0.0.1:%d" % postgres in str(err.value) and "does not match host name" in str(err.value)


def test_verify_ca_checks_the_certificate_only(postgres, tls):
    with PgConnection("127.0.0.1", postgres, "postgres", PASSWORD, "postgres", sslmode="verify-ca",
                      sslrootcert=str(tls / "ca.crt")) as conn:
        assert conn.query("SELECT 1 AS one") == [{"one": "1"}]


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_a_certificate_from_another_ca_is_refused(postgres, tls, sslmode):
    with pytest.raises(PgError) as err:
        PgConnection("localhost", postgres, "postgres", PASSWORD, "postgres", sslmode=sslmode,
                     sslrootcert=str(tls / "other-ca.crt"))
    assert "localhost:%d" % postgres in str(err.value) and "certificate verify failed" in str(err.value)


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_verification_without_a_ca_file_is_a_clear_error(postgres, sslmode):
    with pytest.raises(PgError) as err:
        PgConnection("localhost", postgres, "postgres", PASSWORD, "postgres", sslmode=sslmode)
    assert str(err.value) == ("cannot connect to localhost:%d: sslmode=%s verifies the server certificate and "
                              "needs the CA that signed it: give a CA file as sslrootcert" % (postgres, sslmode))


def test_a_missing_ca_file_is_a_clear_error(postgres, tmp_path):
    with pytest.raises(PgError) as err:
        PgConnection("localhost", postgres, "postgres", PASSWORD, "postgres", sslmode="verify-full",
                     sslrootcert=str(tmp_path / "nope.crt"))
    assert "localhost:%d" % postgres in str(err.value)
    assert 'root certificate file "%s" does not exist' % (tmp_path / "nope.crt") in str(err.value)


@pytest.mark.parametrize("user, password, asked", [
    ("legacy", "old-school", "server requested a hashed password"),
    ("plain", "in-the-clear", "server requested a cleartext password"),
    ("trusty", None, "server did not complete authentication"),
])
@pytest.mark.parametrize("sslmode", ["disable", "require"])
def test_anything_but_scram_is_refused(postgres, user, password, asked, sslmode):
    with pytest.raises(PgError) as err:
        PgConnection("127.0.0.1", postgres, user, password, "postgres", sslmode=sslmode)
    message = str(err.value)
    assert message.startswith("cannot connect to PostgreSQL/PgBouncer at 127.0.0.1:%d: " % postgres), message
    assert 'authentication method requirement "scram-sha-256" failed' in message and asked in message
    assert "SCRAM-SHA-256 only" in message


def test_wrong_password_is_a_clear_error(postgres):
    with pytest.raises(PgError) as err:
        PgConnection("127.0.0.1", postgres, "postgres", "wrong", "postgres", sslmode="disable")
    assert "127.0.0.1:%d" % postgres in str(err.value)
    assert 'password authentication failed for user "postgres"' in str(err.value)


def test_server_error_keeps_the_connection_usable(postgres):
    with PgConnection("127.0.0.1", postgres, "postgres", PASSWORD, "postgres") as conn:
        with pytest.raises(PgError) as err:
            conn.query("SELECT * FROM no_such_table")
        assert err.value.sqlstate == "42P01"
        assert str(err.value) == '127.0.0.1:%d: ERROR: relation "no_such_table" does not exist' % postgres
        assert conn.query("SELECT 1 AS one") == [{"one": "1"}]


def test_a_query_without_an_answer_times_out_and_names_the_address(postgres):
    with PgConnection("127.0.0.1", postgres, "postgres", PASSWORD, "postgres", timeout=5) as conn:
        started = time.monotonic()
        with pytest.raises(PgError, match=r"^127\.0\.0\.1:%d: no answer within 1s$" % postgres):
            conn.query("SELECT pg_sleep(30)", timeout=1)
        assert time.monotonic() - started < 4


def test_unreachable_server_names_the_address():
    with pytest.raises(PgError, match=r"cannot connect to PostgreSQL/PgBouncer at 127\.0\.0\.1:1: .*refused"):
        PgConnection("127.0.0.1", 1, "postgres", PASSWORD, timeout=1)


def test_a_libpq_that_cannot_require_scram_is_refused(monkeypatch):
    monkeypatch.setattr(pgwire.pq, "version", lambda: 150013)
    with pytest.raises(PgError) as err:
        PgConnection("127.0.0.1", 1, "postgres", PASSWORD)
    assert "libpq 15.13, which cannot require SCRAM-SHA-256" in str(err.value)


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.params = {name: copy.deepcopy(spec.get("default")) for name, spec in ha_verify.argument_spec().items()}
        self.params.update(params)
        self.check_mode = check_mode


@pytest.mark.parametrize("check_mode", [False, True])
def test_ha_verify_writes_through_pgbouncer(pgbouncer, check_mode):
    """ha_verify's postgres_write check through PgBouncer's transaction pooling, several times (nothing prepared)."""
    module = FakeModule(check_mode=check_mode, pg_host="127.0.0.1", pg_port=pgbouncer, pg_user="app",
                        pg_password=APP_PASSWORD, pg_database="rtmx", pg_sslmode="prefer")
    verifier = ha_verify.Verifier(module)
    for _attempt in range(7):
        verifier.postgres_write(None)
    assert [c["ok"] for c in verifier.checks] == [True] * 7, verifier.checks
    assert verifier.checks[0]["detail"] == "committed through 127.0.0.1:%d on 127.0.0.1" % pgbouncer


def test_ha_verify_names_a_refused_downgrade(postgres):
    module = FakeModule(pg_host="127.0.0.1", pg_port=postgres, pg_user="legacy", pg_password="old-school",
                        pg_database="postgres")
    verifier = ha_verify.Verifier(module)
    verifier.postgres_write(None)
    check = verifier.checks[0]
    address = "127.0.0.1:%d" % postgres
    assert not check["ok"], check
    assert check["detail"].startswith("write through %s failed: cannot connect to PostgreSQL/PgBouncer at %s: "
                                      % (address, address))
    assert "server requested a hashed password" in check["detail"]


# PgBouncer's admin console -------------------------------------------------------


def test_pgbouncer_admin_console_show_pause_resume_reconnect(pgbouncer, postgres):
    admin = PgBouncerAdmin("127.0.0.1:%d" % pgbouncer, "pgbouncer_admin", ADMIN_PASSWORD, timeout=5)
    databases = admin.databases()
    assert set(databases) == {"rtmx", "pgbouncer"}
    assert databases["rtmx"]["paused"] == "0" and databases["rtmx"]["port"] == str(postgres)
    assert admin.run("PAUSE rtmx") == []
    assert admin.databases()["rtmx"]["paused"] == "1"
    assert admin.run("PAUSE rtmx") == []  # PgBouncer 1.18 takes a second PAUSE as well
    assert admin.run("RECONNECT") == []
    assert admin.run("RESUME rtmx") == []
    assert admin.databases()["rtmx"]["paused"] == "0"
    with pytest.raises(PgError) as err:
        admin.run("RESUME rtmx")
    # patroni_switchover ignores exactly this error when it resumes what may not be paused.
    assert "not paused" in str(err.value) and str(err.value).startswith("127.0.0.1:%d: ERROR: " % pgbouncer)


def test_pgbouncer_pause_waiting_for_a_transaction_times_out_and_resume_clears_it(pgbouncer):
    admin = PgBouncerAdmin("127.0.0.1:%d" % pgbouncer, "pgbouncer_admin", ADMIN_PASSWORD, timeout=5)
    with PgConnection("127.0.0.1", pgbouncer, "app", APP_PASSWORD, "rtmx") as client:
        client.query("BEGIN; SELECT 1")  # holds a server connection until COMMIT
        started = time.monotonic()
        with pytest.raises(PgError, match=r"^127\.0\.0\.1:%d: no answer within 1s$" % pgbouncer):
            admin.run("PAUSE rtmx", timeout=1)
        assert time.monotonic() - started < 4
        client.query("COMMIT")
    # The PAUSE cut short is still pending in PgBouncer (why patroni_switchover resumes after any PAUSE it sent).
    assert admin.databases()["rtmx"]["paused"] == "1"
    assert admin.run("RESUME rtmx") == []
    assert admin.databases()["rtmx"]["paused"] == "0"
    with PgConnection("127.0.0.1", pgbouncer, "app", APP_PASSWORD, "rtmx") as client:
        assert client.query("SELECT 1 AS one") == [{"one": "1"}]


def test_pgbouncer_admin_console_refuses_the_extended_protocol(pgbouncer):
    """Why PgConnection sends every query as a simple Query message: the admin console refuses anything else."""
    with PgConnection("127.0.0.1", pgbouncer, "pgbouncer_admin", ADMIN_PASSWORD, "pgbouncer") as admin:
        with pytest.raises(psycopg.errors.ProtocolViolation, match="extended query protocol not supported"):
            psycopg.Cursor(admin.conn).execute("SHOW DATABASES", binary=True)  # binary needs the extended protocol


def test_pgbouncer_wrong_admin_password_names_the_address(pgbouncer):
    admin = PgBouncerAdmin("127.0.0.1:%d" % pgbouncer, "pgbouncer_admin", "wrong", timeout=5)
    with pytest.raises(PgError) as err:
        admin.databases()
    assert "cannot connect to PostgreSQL/PgBouncer at 127.0.0.1:%d" % pgbouncer in str(err.value)
    assert str(err.value).endswith('failed: FATAL: SASL authentication failed')


def test_pgbouncer_without_tls_is_refused_when_tls_is_required(pgbouncer, tls):
    for sslmode, sslrootcert in (("require", None), ("verify-full", str(tls / "ca.crt"))):
        admin = PgBouncerAdmin("127.0.0.1:%d" % pgbouncer, "pgbouncer_admin", ADMIN_PASSWORD, sslmode=sslmode,
                               sslrootcert=sslrootcert)
        with pytest.raises(PgError) as err:
            admin.databases()
        assert "127.0.0.1:%d" % pgbouncer in str(err.value) and "SSL" in str(err.value), str(err.value)


# Redis and Sentinel --------------------------------------------------------------


def test_redis_auth_commands_and_info(redis):
    with RedisConnection("127.0.0.1", redis, PASSWORD) as conn:
        assert conn.command("SET", "k", "v\r\nwith newline") == "OK"
        assert conn.command("GET", "k") == "v\r\nwith newline"
        assert conn.command("GET", "missing") is None
        assert conn.command("RPUSH", "l", "a", "b") == 2
        assert conn.command("LRANGE", "l", 0, -1) == ["a", "b"]
        assert conn.command("SET", "e", "x", "EX", 60) == "OK"
        assert isinstance(conn.command("INFO", "replication"), str)
        with pytest.raises(RedisReplyError, match="^WRONGTYPE"):
            conn.command("GET", "l")
        with pytest.raises(RedisReplyError, match="^ERR unknown command"):
            conn.command("NOSUCHCOMMAND")
        assert conn.command("PING") == "PONG"
    node = query_redis("127.0.0.1:%d" % redis, PASSWORD, 2)
    assert node["reachable"] and node["role"] == "master" and node["connected_replicas"] == 0


def test_redis_wrong_password_is_a_clear_error(redis):
    with pytest.raises(RedisError, match=r"^127\.0\.0\.1:%d refused the password" % redis):
        RedisConnection("127.0.0.1", redis, "wrong")
    assert "refused the password" in query_redis("127.0.0.1:%d" % redis, "wrong", 2)["error"]


def test_redis_without_password_gets_the_error_reply(redis):
    with RedisConnection("127.0.0.1", redis) as conn:
        with pytest.raises(RedisReplyError, match="^NOAUTH"):
            conn.command("GET", "k")


def test_redis_unreachable_names_the_address():
    with pytest.raises(RedisError, match=r"^cannot connect to 127\.0\.0\.1:1: "):
        RedisConnection("127.0.0.1", 1, PASSWORD, timeout=1)
    assert query_redis("127.0.0.1:1", PASSWORD, 1)["error"].startswith("cannot connect to 127.0.0.1:1")


def test_redis_no_answer_times_out(redis):
    """A server that accepts but never answers: the timeout is kept, nothing is retried."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        started = time.monotonic()
        with pytest.raises(RedisError, match=r"127\.0\.0\.1:%d" % mute.getsockname()[1]):
            RedisConnection("127.0.0.1", mute.getsockname()[1], PASSWORD, timeout=1)
        assert time.monotonic() - started < 2.5


def test_sentinel_answers(sentinel, redis):
    answer = query_sentinel("127.0.0.1:%d" % sentinel, "sentinel-pw", "rtmx", 2)
    assert answer["error"] is None, answer
    assert answer["reachable"] and answer["master"] == "127.0.0.1:%d" % redis
    assert answer["quorum"] == 1 and answer["num_other_sentinels"] == 0 and answer["replicas"] == []
    assert answer["ckquorum_ok"] and answer["ckquorum"].startswith("OK ")
    unknown = query_sentinel("127.0.0.1:%d" % sentinel, "sentinel-pw", "nosuchmaster", 2)
    assert unknown["reachable"] and unknown["error"] == "does not monitor a master named 'nosuchmaster'"
    with RedisConnection("127.0.0.1", sentinel, "sentinel-pw") as conn:
        # sentinel_failover recognises Sentinel's refusals by their code.
        with pytest.raises(RedisReplyError, match="^NOGOODSLAVE "):
            conn.command("SENTINEL", "FAILOVER", "rtmx")
    wrong = query_sentinel("127.0.0.1:%d" % sentinel, "wrong", "rtmx", 2)
    assert not wrong["reachable"] and wrong["error"].startswith("127.0.0.1:%d refused the password" % sentinel)


def test_parse_info_reads_replica_lines():
    info = parse_info("# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
                      "slave0:ip=10.0.0.12,port=6379,state=online,offset=42,lag=0\r\n")
    assert info["role"] == "master"
    assert info["slave0"] == {"ip": "10.0.0.12", "port": "6379", "state": "online", "offset": "42", "lag": "0"}
