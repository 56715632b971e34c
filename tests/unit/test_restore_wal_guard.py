"""The members' restore_command (roles/patroni/files/rtmx_restore_wal.py): a WAL segment comes from the archive only
when it is part of the current leader's history, so that after a leader loss a replica never replays what the dead
leader archived beyond the new leader's fork point. The decision on its own, then the script end to end against a
fake Patroni REST API and a fake pgbackrest that records how it was called.
"""

import base64
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from role_render import ROOT

SCRIPT = ROOT / "roles" / "patroni" / "files" / "rtmx_restore_wal.py"
spec = importlib.util.spec_from_file_location("rtmx_restore_wal", SCRIPT)
guard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(guard)

MIB16 = 16 * 1024 * 1024
# Timeline 10, segment 5: [0/5000000, 0/6000000).
SEGMENT = "0000000A0000000000000005"
PRIMARY_TL10 = {"state": "running", "role": "master", "timeline": 10}
PRIMARY_TL11 = {"state": "running", "role": "master", "timeline": 11}


def history(*switches):
    """GET /history lines: [parent timeline, switch LSN, reason, timestamp, new leader]."""
    return [[tl, lsn, "no recovery target specified", "2026-11-28T10:00:00+00:00", "pg2"] for tl, lsn in switches]


# The decision


def test_segment_names_map_to_their_lsn_range():
    assert guard.segment_range(SEGMENT, MIB16) == (10, 0x5000000, 0x6000000)
    assert guard.segment_range("0000000B00000001000000FF", MIB16) == (11, (1 << 32) + 0xFF * MIB16, 2 << 32)
    assert guard.segment_range("000000010000000000000003", 64 * 1024 * 1024) == (1, 0xC000000, 0x10000000)


@pytest.mark.parametrize("status", [PRIMARY_TL10, {**PRIMARY_TL10, "role": "primary"}])
def test_a_segment_of_the_leaders_timeline_is_served(status):
    assert guard.decide(SEGMENT, "pg1", status, None)


@pytest.mark.parametrize("switch", [0x6000000, 0x6000028, 0x9000000])
def test_an_ancestor_timeline_segment_ending_at_or_before_the_switch_is_served(switch):
    assert guard.decide(SEGMENT, "pg2", PRIMARY_TL11, history((9, 0x100000), (10, switch)))


def test_an_older_ancestor_timeline_is_looked_up_in_the_whole_history():
    segment = "000000080000000000000002"
    assert guard.decide(segment, "pg2", PRIMARY_TL11, history((8, 0x4000000), (9, 0x5000000), (10, 0x7000000)))
    with pytest.raises(guard.Refused, match="timeline 8 ended at 0/2800000"):
        guard.decide(segment, "pg2", PRIMARY_TL11, history((8, 0x2800000), (9, 0x5000000), (10, 0x7000000)))


def test_timeline_numbers_may_skip_after_a_recovery_to_an_older_timeline():
    """Timeline 8 recovered from timeline 5 (6 and 7 exist elsewhere in the archive): 5's WAL up to its switch
    is the leader's history."""
    leader = {**PRIMARY_TL10, "timeline": 8}
    lines = history((3, 0x2000000), (5, 0x9000000))
    assert guard.decide("000000050000000000000008", "pg2", leader, lines)
    assert guard.decide("000000030000000000000001", "pg2", leader, lines)
    with pytest.raises(guard.Refused, match="timeline 5 ended at 0/9000000"):
        guard.decide("000000050000000000000009", "pg2", leader, lines)
    with pytest.raises(guard.Refused, match="timeline 6 is not in"):
        guard.decide("000000060000000000000008", "pg2", leader, lines)


def test_a_recovery_that_ended_before_its_parents_switch_bounds_the_parent_too():
    """Timeline 11 forked from 10 at 0/9000000; a recovery on timeline 11 ended at 0/5800000, still in the part it
    shares with 10, and made timeline 12: 10's WAL past 0/5800000 is not timeline 12's history."""
    leader = {**PRIMARY_TL10, "timeline": 12}
    lines = history((10, 0x9000000), (11, 0x5800000))
    assert guard.decide("0000000A0000000000000004", "pg2", leader, lines)
    with pytest.raises(guard.Refused, match="timeline 10 ended at 0/5800000"):
        guard.decide(SEGMENT, "pg2", leader, lines)


@pytest.mark.parametrize(
    "segment, switch",
    [
        (SEGMENT, 0x5800000),  # the fork is inside the segment: its tail is the dead leader's alone
        (SEGMENT, 0x5000000),  # forked right at its start
        ("0000000A0000000000000006", 0x5800000),  # wholly past the fork
    ],
)
def test_a_segment_crossing_or_past_the_fork_is_refused(segment, switch):
    with pytest.raises(guard.Refused, match="timeline 10 ended at .*not leader pg2's history"):
        guard.decide(segment, "pg2", PRIMARY_TL11, history((9, 0x100000), (10, switch)))


@pytest.mark.parametrize(
    "leader, status, lines, reason",
    [
        (None, None, None, "the DCS names no leader"),
        ("pg1", None, None, "leader pg1 does not answer"),
        ("pg1", {"state": "running", "role": "replica", "timeline": 10}, None, "not a running primary"),
        ("pg1", {"state": "starting", "role": "master", "timeline": 10}, None, "not a running primary"),
        ("pg1", {"state": "unknown", "role": "master"}, None, "not a running primary"),
        ("pg1", {**PRIMARY_TL10, "cluster_unlocked": True}, None, "no longer holds the leader key"),
        ("pg1", {"state": "running", "role": "master"}, None, "reports no timeline"),
        ("pg1", {**PRIMARY_TL10, "timeline": 9}, None, "timeline 10 is newer than leader pg1's timeline 9"),
        # Just promoted: the DCS history does not have the new switch yet.
        ("pg2", PRIMARY_TL11, history((8, 0x100000), (9, 0x200000)), "timeline 10 is not in leader pg2's history"),
        ("pg2", PRIMARY_TL11, None, "timeline 10 is not in"),
        ("pg2", {**PRIMARY_TL11, "timeline": 12}, history((9, 1), (11, 0x9000000)), "timeline 10 is not in"),
    ],
)
def test_no_answering_primary_or_no_known_history_refuses(leader, status, lines, reason):
    with pytest.raises(guard.Refused, match=reason):
        guard.decide(SEGMENT, leader, status, lines)


@pytest.mark.parametrize(
    "name, destination",
    [
        ("0000000B.history", "pg_wal/RECOVERYHISTORY"),
        ("0000000A0000000000000005.partial", "pg_wal/RECOVERYXLOG"),
        ("0000000A0000000000000005.00000028.backup", "pg_wal/RECOVERYXLOG"),
        # pg_rewind --restore-target-wal reads the timeline it rewinds, into pg_wal/<segment>.
        (SEGMENT, "/var/lib/postgresql/15/rtmx/pg_wal/" + SEGMENT),
        ("0000000a0000000000000005", "pg_wal/RECOVERYXLOG"),
    ],
)
def test_anything_but_a_segment_for_recovery_passes_through(name, destination):
    assert not guard.is_guarded(name, destination)


def test_a_segment_for_recovery_is_guarded():
    assert guard.is_guarded(SEGMENT, "pg_wal/RECOVERYXLOG")


# The script end to end

USER, PASSWORD = "patroni", "Pw-not-to-be-seen-0123456789"


class FakePatroni:
    """One HTTP server playing the local Patroni (/cluster) and the leader (/patroni, /history)."""

    def __init__(self, require_auth=True):
        self.require_auth = require_auth
        self.requests = []
        self.leader_url = None
        self.patroni = dict(PRIMARY_TL10)
        self.history = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                auth = self.headers.get("Authorization")
                fake.requests.append((self.path, auth))
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if fake.require_auth and auth != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="Patroni"')
                    self.end_headers()
                    return
                body = {
                    "/cluster": lambda: {"members": [
                        {"name": "pg1", "role": "leader", "state": "running", "api_url": fake.leader_url},
                        {"name": "pg2", "role": "replica", "state": "running", "api_url": fake.url + "/patroni"},
                    ]},
                    "/patroni": lambda: fake.patroni,
                    "/history": lambda: fake.history,
                }.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.leader_url = self.url + "/patroni"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def patroni():
    fake = FakePatroni()
    yield fake
    fake.close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def setup(tmp_path, patroni):
    """Patroni's configuration file (as config.yml.j2 writes restapi) and a fake pgbackrest first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "pgbackrest-calls"
    fake = bin_dir / "pgbackrest"
    fake.write_text(
        "#!%s\nimport json, os, sys\n"
        "with open(%r, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(int(os.environ.get('FAKE_PGBACKREST_RC', '0')))\n" % (sys.executable, str(calls))
    )
    fake.chmod(0o755)

    def write_config(address=None, password=PASSWORD):
        config = {
            "scope": "rtmx",
            "name": "pg2",
            "restapi": {
                "listen": address or patroni.url.split("//")[1],
                "connect_address": address or patroni.url.split("//")[1],
                "authentication": {"username": USER, "password": password},
            },
        }
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def run(name=SEGMENT, destination="pg_wal/RECOVERYXLOG", config=None, rc=0):
        env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ.get("PATH", "")), FAKE_PGBACKREST_RC=str(rc),
                   # A proxy from the environment is never used (it would see the credentials).
                   http_proxy="http://127.0.0.1:%d" % closed_port(), no_proxy="")
        argv = [sys.executable, str(SCRIPT), "--config=%s" % (config or write_config()), "--stanza=rtmx", name,
                destination]
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        assert PASSWORD not in result.stdout + result.stderr
        assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in result.stdout + result.stderr
        recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
        calls.unlink(missing_ok=True)
        return result, recorded

    run.write_config = write_config
    return run


def test_a_segment_of_the_leaders_timeline_is_fetched_with_archive_get(setup, patroni):
    result, calls = setup()
    assert result.returncode == 0, result.stderr
    assert calls == [["--stanza=rtmx", "archive-get", SEGMENT, "pg_wal/RECOVERYXLOG"]]
    # Credentials only after the API asked for them.
    assert [(path, auth is not None) for path, auth in patroni.requests] == [
        ("/cluster", False), ("/cluster", True), ("/patroni", False), ("/patroni", True)]


def test_archive_gets_exit_code_is_passed_on(setup):
    result, calls = setup(rc=1)  # not in the archive
    assert result.returncode == 1 and len(calls) == 1


def test_no_credentials_are_sent_when_the_api_asks_none(setup, patroni):
    patroni.require_auth = False
    result, calls = setup()
    assert result.returncode == 0 and len(calls) == 1
    assert all(auth is None for _, auth in patroni.requests)


def test_a_new_leader_serves_the_old_timeline_up_to_its_fork_only(setup, patroni):
    patroni.patroni = dict(PRIMARY_TL11)
    patroni.history = history((9, 0x100000), (10, 0x5800000))
    result, calls = setup("0000000A0000000000000004")
    assert result.returncode == 0 and len(calls) == 1
    result, calls = setup(SEGMENT)
    assert result.returncode == 1 and calls == []
    assert "rtmx restore_command: %s not fetched from the archive: timeline 10 ended at 0/5800000" % SEGMENT \
        in result.stderr
    assert "/history" in [path for path, _ in patroni.requests]


def test_a_leader_that_does_not_answer_gets_its_segments_refused(setup, patroni):
    patroni.leader_url = "http://127.0.0.1:%d/patroni" % closed_port()
    result, calls = setup()
    assert result.returncode == 1 and calls == []
    assert "leader pg1 does not answer" in result.stderr


def test_a_leader_running_as_replica_gets_its_segments_refused(setup, patroni):
    patroni.patroni = {"state": "running", "role": "replica", "timeline": 10}
    result, calls = setup()
    assert result.returncode == 1 and calls == []
    assert "leader pg1 is not a running primary (state running, role replica)" in result.stderr


def test_without_the_local_patroni_nothing_is_served(setup):
    result, calls = setup(config=setup.write_config(address="127.0.0.1:%d" % closed_port()))
    assert result.returncode == 1 and calls == []
    assert "the local Patroni REST API" in result.stderr and "does not answer" in result.stderr


def test_wrong_credentials_refuse_and_say_so_without_the_password(setup, patroni):
    result, calls = setup(config=setup.write_config(password="wrong-" + PASSWORD[::-1]))
    assert result.returncode == 1 and calls == []
    assert "HTTP 401" in result.stderr and PASSWORD[::-1] not in result.stderr


def test_an_unreadable_configuration_refuses(setup, tmp_path):
    result, calls = setup(config=tmp_path / "missing.yml")
    assert result.returncode == 1 and calls == []
    assert "No such file or directory" in result.stderr


@pytest.mark.parametrize(
    "name, destination",
    [("0000000B.history", "pg_wal/RECOVERYHISTORY"), (SEGMENT, "/var/lib/postgresql/15/rtmx/pg_wal/" + SEGMENT)],
)
def test_history_files_and_pg_rewinds_segments_go_straight_to_archive_get(setup, patroni, name, destination):
    patroni.leader_url = "http://127.0.0.1:%d/patroni" % closed_port()  # even with no leader
    result, calls = setup(name, destination)
    assert result.returncode == 0 and calls == [["--stanza=rtmx", "archive-get", name, destination]]
    assert patroni.requests == []
