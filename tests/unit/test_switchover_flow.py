"""patroni_switchover's flow against fake Patroni, PgBouncer and HAProxy: once PAUSE went out,
every bouncer gets RESUME for every database, whatever fails."""

import copy
import csv
import http.client
import time

import pytest

from ansible_collections.rtmx.ha.plugins.module_utils.patroni import PatroniError
from ansible_collections.rtmx.ha.plugins.module_utils.pgwire import PgBouncerAdmin, PgError
from ansible_collections.rtmx.ha.plugins.modules import patroni_switchover

MEMBERS = ("pg1", "pg2", "pg3")
LBS = ("198.18.0.31", "198.18.0.32")
DATABASES = ["rtmx", "rtmx_ro"]


def host_of(name):
    return "198.18.0.1%s" % name[-1]


class Exited(SystemExit):
    """What AnsibleModule.exit_json/fail_json end with (sys.exit), carrying the result."""

    def __init__(self, failed, result):
        super().__init__(1 if failed else 0)
        self.failed = failed
        self.result = result


class FakeModule:
    """Just what the flow uses of AnsibleModule, with the module's own defaults."""

    def __init__(self, check_mode=False, **params):
        self.params = {name: copy.deepcopy(spec.get("default"))
                       for name, spec in patroni_switchover.argument_spec().items()}
        self.params.update(params)
        self.check_mode = check_mode
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)

    def exit_json(self, **result):
        raise Exited(False, result)

    def fail_json(self, **result):
        raise Exited(True, result)


class FakePatroni:
    """REST answers of pg1..pg3 in synchronous mode (pg1 leads, pg2 is the sync standby);
    POST /switchover moves the leader, a wider synchronous_node_count makes every replica sync
    (unless sync_follows is off). `calls` holds every request that changes something."""

    def __init__(self):
        self.leader = "pg1"
        self.sync = {"pg2"}
        self.timeline = 1
        self.settings = {"synchronous_mode": True, "synchronous_mode_strict": False, "synchronous_node_count": 1}
        self.calls = []
        self.switchover_error = None
        self.primary_error = None
        self.patch_errors = []
        self.sync_follows = True

    @staticmethod
    def api(name):
        return "http://%s:8008" % host_of(name)

    def cluster(self):
        members = []
        for name in MEMBERS:
            role = "leader" if name == self.leader else "sync_standby" if name in self.sync else "replica"
            member = {"name": name, "role": role, "state": "running", "api_url": self.api(name) + "/patroni",
                      "host": host_of(name), "port": 5432, "timeline": self.timeline}
            if name != self.leader:
                member["lag"] = 0
            members.append(member)
        return {"members": members}

    def config(self):
        return dict(self.settings)

    def member_status(self, base):
        return {"replication": [{"application_name": name, "state": "streaming",
                                 "sync_state": "sync" if name in self.sync else "async"}
                                for name in MEMBERS if name != self.leader]}

    def check_credentials(self):
        """The real one POSTs an empty body Patroni refuses: nothing changes."""

    def switchover(self, leader, candidate=None, scheduled_at=None, timeout=60):
        self.calls.append(("POST /switchover", {"leader": leader, "candidate": candidate}))
        if self.switchover_error:
            raise self.switchover_error
        self.leader, self.sync, self.timeline = candidate, {leader}, self.timeline + 1
        return 200, "Successfully switched over to %s" % candidate

    def is_primary(self, base):
        if self.primary_error:
            raise self.primary_error
        return base == self.api(self.leader)

    def patch_config(self, changes):
        self.calls.append(("PATCH /config", changes))
        error = self.patch_errors.pop(0) if self.patch_errors else None
        if error:
            raise error
        self.settings.update(changes)
        replicas = [name for name in MEMBERS if name != self.leader]
        if self.sync_follows and (self.settings["synchronous_node_count"] or 1) >= len(replicas):
            self.sync = set(replicas)
        return self.config()


class FakeBouncer(PgBouncerAdmin):
    """The admin console of one PgBouncer: records each command and which databases are paused.

    `errors` maps a command to the exception it raises (doing nothing); `hangs` holds commands
    that take effect but whose answer times out (a PAUSE waiting for a transaction)."""

    def __init__(self, host):
        super().__init__(host, "pgbouncer_admin", "secret")
        self.commands = []
        self.paused = set()
        self.errors = {}
        self.hangs = set()

    def run(self, command, timeout=None):
        self.commands.append(command)
        if command in self.errors:
            raise self.errors[command]
        verb, _, database = command.partition(" ")
        if verb == "SHOW":
            return [{"name": name, "paused": "1" if name in self.paused else "0"} for name in DATABASES + ["pgbouncer"]]
        if verb == "PAUSE":
            self.paused.add(database)
        elif verb == "RESUME":
            if database not in self.paused:
                raise PgError("%s: ERROR: database %s is not paused" % (self.address, database))
            self.paused.discard(database)
        if command in self.hangs:
            raise PgError("%s: timed out" % self.address)
        return []


class Lab:
    """The fakes, wired into the module, and a way to run it."""

    def __init__(self, monkeypatch):
        self.patroni = FakePatroni()
        self.bouncers = dict((host, FakeBouncer(host)) for host in LBS)
        self.haproxy_errors = []
        self.haproxy_reads = 0
        monkeypatch.setattr(patroni_switchover, "PatroniClient", lambda *args, **kwargs: self.patroni)
        monkeypatch.setattr(patroni_switchover, "PgBouncerAdmin", lambda host, *args, **kwargs: self.bouncers[host])
        monkeypatch.setattr(patroni_switchover, "fetch_stats", self.fetch_stats)

    def fetch_stats(self, url, username, password, timeout=5):
        """HAProxy routes postgres_rw to the Patroni leader; haproxy_errors are raised first, one per read."""
        self.haproxy_reads += 1
        if self.haproxy_errors:
            error = self.haproxy_errors[0] if len(self.haproxy_errors) == 1 else self.haproxy_errors.pop(0)
            if error is not None:
                raise error
        return {"postgres_rw": dict(
            (name, {"status": "UP" if name == self.patroni.leader else "DOWN", "addr": "%s:5432" % host_of(name)})
            for name in MEMBERS)}

    def run(self, check_mode=False, **params):
        args = dict(patroni_urls=[FakePatroni.api(name) for name in MEMBERS], patroni_password="secret",
                    pgbouncer_pause=True, pgbouncer_hosts=list(LBS), pgbouncer_password="secret",
                    pgbouncer_databases=list(DATABASES),
                    haproxy_stats_urls=["http://%s:7000/" % host for host in LBS], haproxy_stats_password="secret",
                    switchover_timeout=2, sync_standby_timeout=2)
        args.update(params)
        module = FakeModule(check_mode=check_mode, **args)
        with pytest.raises(Exited) as exited:
            patroni_switchover.Switchover(module).run()
        self.warnings = module.warnings
        return exited.value.failed, exited.value.result

    def commands(self, verb):
        return dict((b.address, [c for c in b.commands if c.split(" ")[0] == verb]) for b in self.bouncers.values())

    def switchovers(self):
        return [call for call in self.patroni.calls if call[0] == "POST /switchover"]

    def assert_every_database_resumed(self, still_paused=None):
        """Every bouncer got RESUME for every database after its last PAUSE; only still_paused stays paused."""
        for bouncer in self.bouncers.values():
            for database in DATABASES:
                assert "RESUME %s" % database in bouncer.commands, (bouncer.address, bouncer.commands)
                resume = len(bouncer.commands) - 1 - bouncer.commands[::-1].index("RESUME %s" % database)
                if "PAUSE %s" % database in bouncer.commands:
                    assert bouncer.commands.index("PAUSE %s" % database) < resume, bouncer.commands
            assert bouncer.paused == (still_paused or {}).get(bouncer.address, set()), bouncer.address


@pytest.fixture
def lab(monkeypatch):
    return Lab(monkeypatch)


def test_switchover_pauses_switches_over_and_resumes_every_bouncer(lab):
    failed, result = lab.run(candidate="pg2")
    assert not failed, result["msg"]
    assert result["changed"] and (result["previous_leader"], result["leader"]) == ("pg1", "pg2")
    assert result["resumed_stale_pause"] == []
    for bouncer in lab.bouncers.values():
        assert bouncer.commands == ["SHOW DATABASES", "SHOW DATABASES", "PAUSE rtmx", "PAUSE rtmx_ro",
                                    "RECONNECT", "RESUME rtmx", "RESUME rtmx_ro"]
    assert set(result["timings"]) >= {"pgbouncer_pause", "new_leader_writable", "haproxy_routed", "clients_paused"}
    lab.assert_every_database_resumed()


def test_pause_timeout_refuses_and_resumes_every_bouncer(lab):
    lab.bouncers[LBS[1]].hangs.add("PAUSE rtmx_ro")
    failed, result = lab.run(candidate="pg2")
    assert failed
    lab.assert_every_database_resumed()
    assert "PAUSE rtmx_ro on PgBouncer 198.18.0.32:6432 did not complete" in result["msg"]
    assert "PgBouncer was resumed" in result["msg"]
    assert lab.switchovers() == []


def test_switchover_request_failing_after_pause_resumes_every_bouncer(lab):
    lab.patroni.switchover_error = PatroniError("no Patroni member accepted POST /switchover: timed out")
    failed, result = lab.run(candidate="pg2")
    assert failed
    lab.assert_every_database_resumed()
    assert "switchover request failed" in result["msg"] and "PgBouncer was resumed" in result["msg"]
    assert len(lab.switchovers()) == 1


@pytest.mark.parametrize("where, error", [
    ("patroni", http.client.IncompleteRead(b'{"role": "pri', 40)),
    ("haproxy", KeyError("pxname")),
], ids=["IncompleteRead-from-GET-primary", "KeyError-from-the-stats-page"])
def test_unexpected_exception_after_pause_resumes_every_bouncer(lab, where, error):
    if where == "patroni":
        lab.patroni.primary_error = error
    else:
        lab.haproxy_errors = [error]
    failed, result = lab.run(candidate="pg2")
    assert failed
    lab.assert_every_database_resumed()
    assert result["msg"].startswith("unexpected error: %s" % type(error).__name__)
    assert "PgBouncer was resumed" in result["msg"]
    assert "Traceback" in result["exception"]


def test_cut_short_stats_pages_are_read_again(lab):
    lab.haproxy_errors = [csv.Error("line contains NUL"), http.client.IncompleteRead(b"# pxname", 900), None]
    failed, result = lab.run(candidate="pg2")
    assert not failed, result["msg"]
    assert lab.haproxy_reads > 3
    lab.assert_every_database_resumed()


def test_stats_page_that_never_parses_fails_and_resumes_every_bouncer(lab):
    lab.haproxy_errors = [csv.Error("line contains NUL")]
    failed, result = lab.run(candidate="pg2", switchover_timeout=1)
    assert failed
    lab.assert_every_database_resumed()
    assert "HAProxy did not route writes to the new leader pg2" in result["msg"]
    assert "line contains NUL" in result["msg"] and "PgBouncer was resumed" in result["msg"]


def test_failed_reconnect_still_resumes_that_bouncer(lab):
    lab.bouncers[LBS[0]].errors["RECONNECT"] = PgError("198.18.0.31:6432 closed the connection")
    failed, result = lab.run(candidate="pg2")
    assert failed
    lab.assert_every_database_resumed()
    assert result["leader"] == "pg2"
    assert "RECONNECT on 198.18.0.31:6432 failed" in result["msg"]


def test_failed_resume_still_restores_synchronous_node_count(lab):
    lab.bouncers[LBS[0]].errors["RESUME rtmx"] = PgError("198.18.0.31:6432: cannot connect")
    failed, result = lab.run(candidate="pg3")
    assert failed
    lab.assert_every_database_resumed(still_paused={"198.18.0.31:6432": {"rtmx"}})
    assert result["leader"] == "pg3"
    assert "RESUME rtmx on 198.18.0.31:6432 failed" in result["msg"]
    assert "synchronous_node_count was put back to 1" in result["msg"]
    assert lab.patroni.calls[-1] == ("PATCH /config", {"synchronous_node_count": 1})


def test_failed_resume_and_failed_restore_are_both_reported(lab):
    lab.bouncers[LBS[1]].errors["RESUME rtmx_ro"] = PgError("198.18.0.32:6432: cannot connect")
    lab.patroni.patch_errors = [None, PatroniError("no Patroni member accepted PATCH /config")]
    failed, result = lab.run(candidate="pg3")
    assert failed
    lab.assert_every_database_resumed(still_paused={"198.18.0.32:6432": {"rtmx_ro"}})
    assert "RESUME rtmx_ro on 198.18.0.32:6432 failed" in result["msg"]
    assert "synchronous_node_count could not be put back to 1" in result["msg"]
    assert [call[0] for call in lab.patroni.calls] == ["PATCH /config", "POST /switchover", "PATCH /config"]


def test_make_sync_timeout_before_pause_restores_the_count_and_pauses_nothing(lab):
    lab.patroni.sync_follows = False
    failed, result = lab.run(candidate="pg3", sync_standby_timeout=1)
    assert failed
    assert "pg3 did not become a sync standby" in result["msg"]
    assert "synchronous_node_count was put back to 1" in result["msg"]
    assert lab.patroni.calls[-1] == ("PATCH /config", {"synchronous_node_count": 1})
    assert lab.commands("PAUSE") == {"198.18.0.31:6432": [], "198.18.0.32:6432": []}


def test_stale_pause_is_resumed_when_there_is_nothing_to_do(lab):
    for bouncer in lab.bouncers.values():
        bouncer.paused = set(DATABASES)
    failed, result = lab.run(candidate="pg1")
    assert not failed, result["msg"]
    assert result["changed"] and result["leader"] == "pg1"
    assert result["resumed_stale_pause"] == ["198.18.0.31:6432/rtmx", "198.18.0.31:6432/rtmx_ro",
                                             "198.18.0.32:6432/rtmx", "198.18.0.32:6432/rtmx_ro"]
    assert result["msg"].startswith("resumed PgBouncer databases left paused by an interrupted run: 198.18.0.31")
    assert lab.commands("PAUSE") == {"198.18.0.31:6432": [], "198.18.0.32:6432": []}
    assert lab.patroni.calls == []
    lab.assert_every_database_resumed()


def test_stale_pause_is_resumed_before_a_switchover(lab):
    lab.bouncers[LBS[1]].paused = {"rtmx"}
    failed, result = lab.run(candidate="pg2")
    assert not failed, result["msg"]
    assert result["resumed_stale_pause"] == ["198.18.0.32:6432/rtmx"]
    assert "resumed PgBouncer databases left paused by an interrupted run: 198.18.0.32:6432/rtmx" in result["msg"]
    assert lab.bouncers[LBS[1]].commands[:4] == ["SHOW DATABASES", "RECONNECT", "RESUME rtmx", "SHOW DATABASES"]
    assert result["leader"] == "pg2"
    lab.assert_every_database_resumed()


def test_stale_pause_that_cannot_be_resumed_stops_the_run(lab):
    lab.bouncers[LBS[0]].paused = {"rtmx"}
    lab.bouncers[LBS[0]].errors["RESUME rtmx"] = PgError("198.18.0.31:6432: cannot connect")
    failed, result = lab.run(candidate="pg2")
    assert failed
    assert "RESUME rtmx on 198.18.0.31:6432 failed" in result["msg"]
    assert result["resumed_stale_pause"] == ["198.18.0.31:6432/rtmx"]
    assert lab.switchovers() == [] and lab.commands("PAUSE")["198.18.0.31:6432"] == []


def test_stale_pause_in_check_mode_is_reported_not_resumed(lab):
    lab.bouncers[LBS[0]].paused = {"rtmx"}
    failed, result = lab.run(check_mode=True, candidate="pg1")
    assert not failed, result["msg"]
    assert result["changed"]
    assert result["resumed_stale_pause"] == ["198.18.0.31:6432/rtmx"]
    assert result["msg"].startswith("would resume PgBouncer databases left paused by an interrupted run")
    for bouncer in lab.bouncers.values():
        assert bouncer.commands == ["SHOW DATABASES"]
    assert lab.bouncers[LBS[0]].paused == {"rtmx"}


def test_unreachable_bouncer_at_the_start_is_a_warning_then_refused_before_pausing(lab):
    lab.bouncers[LBS[1]].errors["SHOW DATABASES"] = PgError("cannot connect to PgBouncer at 198.18.0.32:6432")
    failed, result = lab.run(candidate="pg2")
    assert failed
    assert "PgBouncer admin console at 198.18.0.32:6432 does not answer" in result["msg"]
    assert "198.18.0.32:6432" in lab.warnings[0]
    assert lab.commands("PAUSE") == {"198.18.0.31:6432": [], "198.18.0.32:6432": []}
    assert lab.switchovers() == []


# Check mode: nothing POSTed or PATCHed, nothing paused; the result says what would happen.

def assert_nothing_changed(lab):
    assert lab.patroni.calls == []
    for bouncer in lab.bouncers.values():
        assert bouncer.commands == ["SHOW DATABASES"] and bouncer.paused == set()


def test_check_mode_make_sync_says_what_it_would_do(lab):
    failed, result = lab.run(check_mode=True, candidate="pg3")
    assert not failed, result["msg"]
    assert result["changed"] and result["plan"]["action"] == "make_sync"
    assert result["msg"] == "would make pg3 a sync standby (synchronous_node_count), then switch over to it"
    assert (result["leader"], result["candidate"]) == ("pg1", "pg3")
    assert_nothing_changed(lab)


def test_check_mode_wait_sync_says_what_it_would_do_without_waiting(lab):
    lab.patroni.sync = set()
    started = time.monotonic()
    failed, result = lab.run(check_mode=True, sync_standby_timeout=30)
    assert time.monotonic() - started < 5
    assert not failed, result["msg"]
    assert result["changed"] and result["plan"]["action"] == "wait_sync"
    assert result["msg"] == "would wait up to 30s for a sync standby, then switch over"
    assert result["leader"] == "pg1"
    assert_nothing_changed(lab)


def test_check_mode_switchover_says_what_it_would_do(lab):
    failed, result = lab.run(check_mode=True)
    assert not failed, result["msg"]
    assert result["changed"] and result["msg"] == "would switch over from pg1 to pg2"
    assert_nothing_changed(lab)


def test_make_sync_then_switchover_puts_the_count_back(lab):
    failed, result = lab.run(candidate="pg3")
    assert not failed, result["msg"]
    assert lab.patroni.calls == [("PATCH /config", {"synchronous_node_count": 2}),
                                 ("POST /switchover", {"leader": "pg1", "candidate": "pg3"}),
                                 ("PATCH /config", {"synchronous_node_count": 1})]
    lab.assert_every_database_resumed()
