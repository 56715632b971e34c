"""What an operator was sent during a drill (playbooks/drill/alerts.py), the drill report's alert figures
and the checks on them, from synthetic receiver notifications with known answers."""

import importlib.util
import pathlib
import sys
from datetime import UTC, datetime

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRILL = ROOT / "playbooks" / "drill"
sys.path.insert(0, str(DRILL))


def load(name):
    spec = importlib.util.spec_from_file_location(f"drill_{name}", DRILL / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


alerts, checks, report = load("alerts"), load("checks"), load("report")
T0 = 1_800_000_000.0


def stamp(t):
    """Alertmanager's RFC 3339 form, nanoseconds and Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def note(received, status, *sent):
    """A receiver record: `sent` is (alertname, its status, its startsAt)."""
    return {"received_at": received, "summary": {"status": status, "receiver": "critical", "alerts": [
        {"alertname": name, "severity": "critical", "status": state, "startsAt": stamp(started)}
        for name, state, started in sent]}}


FAILOVER = [note(T0 + 24, "firing", ("RtmxPatroniFailover", "firing", T0 + 14)),
            note(T0 + 95, "resolved", ("RtmxPatroniFailover", "resolved", T0 + 14))]


def test_parse_time_reads_nanoseconds():
    assert abs(alerts.parse_time(stamp(T0 + 1.25)) - (T0 + 1.25)) < 1e-5
    assert alerts.parse_time("2026-11-28T03:00:00Z") == datetime(2026, 11, 28, 3, tzinfo=UTC).timestamp()
    assert alerts.parse_time(None) is None


def test_a_failover_page_sent_and_resolved():
    found = alerts.summary(FAILOVER, T0, T0 + 30, ["RtmxPatroniFailover"], [])
    assert found == {"delivered_s": {"RtmxPatroniFailover": 24.0},
                     "resolved_after_heal_s": {"RtmxPatroniFailover": 65.0},
                     "missing": [], "unresolved": [], "unrelated": []}


def test_missing_unresolved_and_unrelated_pages_are_told_apart():
    sent = [note(T0 + 70, "firing", ("RtmxEtcdMemberDown", "firing", T0 + 60), ("RtmxTargetDown", "firing", T0 + 62))]
    found = alerts.summary(sent, T0, T0 + 30, ["RtmxPatroniFailover"], ["RtmxTargetDown"])
    assert found["missing"] == ["RtmxPatroniFailover"]
    assert found["unresolved"] == ["RtmxEtcdMemberDown", "RtmxTargetDown"]
    assert found["unrelated"] == ["RtmxEtcdMemberDown"]


def test_slo_alerts_need_not_resolve_within_the_drill():
    sent = FAILOVER + [note(T0 + 40, "firing", ("RtmxErrorBudgetBurnSlow", "firing", T0 + 30))]
    found = alerts.summary(sent, T0, T0 + 30, ["RtmxPatroniFailover"], ["RtmxErrorBudgetBurnSlow"],
                           ["RtmxErrorBudgetBurnSlow"])
    assert found["unresolved"] == [] and found["unrelated"] == []
    assert found["delivered_s"]["RtmxErrorBudgetBurnSlow"] == 40.0


def test_an_alert_active_before_the_fault_belongs_to_an_earlier_drill():
    # Its resolution arrives during this drill: neither sent nor unrelated here.
    sent = [note(T0 + 5, "resolved", ("RtmxVipMoved", "resolved", T0 - 80))]
    found = alerts.summary(sent, T0, T0 + 30, [], [])
    assert found["delivered_s"] == {} and found["unrelated"] == [] and found["unresolved"] == []


def test_a_second_page_of_the_same_alert_counts_from_its_first():
    sent = FAILOVER + [note(T0 + 130, "firing", ("RtmxPatroniFailover", "firing", T0 + 120))]
    found = alerts.summary(sent, T0, T0 + 30, ["RtmxPatroniFailover"], [])
    assert found["delivered_s"] == {"RtmxPatroniFailover": 24.0}
    assert found["unresolved"] == ["RtmxPatroniFailover"]


class FakeStack:
    """Receiver answers that change with time; the clock advances by each sleep."""

    def __init__(self, timeline):
        self.now, self.timeline, self.calls = T0, timeline, 0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def notifications(self, env, since):
        self.calls += 1
        return [n for n in self.timeline if n["received_at"] <= self.now and n["received_at"] >= since]


def test_collect_waits_for_the_page_then_for_its_resolution(monkeypatch):
    stack = FakeStack(FAILOVER)
    monkeypatch.setattr(alerts, "notifications", stack.notifications)
    out = alerts.collect({}, T0, ["RtmxPatroniFailover"], T0 + 120, 300, clock=stack.clock, sleep=stack.sleep)
    assert out["notifications"] == FAILOVER and T0 + 95 <= stack.now < T0 + 95 + 2 * alerts.POLL_S


def test_collect_gives_up_at_its_deadlines(monkeypatch):
    stack = FakeStack(FAILOVER[:1])
    monkeypatch.setattr(alerts, "notifications", stack.notifications)
    # Never sent: stops at deliver_by (no resolution to wait for).
    assert alerts.collect({}, T0, ["RtmxVipMoved"], T0 + 10, 0, clock=stack.clock, sleep=stack.sleep) == {
        "notifications": []}
    assert T0 + 10 <= stack.now < T0 + 12
    # Sent, never resolved: stops after the resolve timeout.
    out = alerts.collect({}, T0, ["RtmxPatroniFailover"], T0 + 120, 30, clock=stack.clock, sleep=stack.sleep)
    assert out["notifications"] == FAILOVER[:1] and stack.now >= T0 + 24 + 30
    # An ignored alert's resolution is not waited for.
    stack.now = T0 + 30
    alerts.collect({}, T0, ["RtmxPatroniFailover"], T0 + 120, 300, ["RtmxPatroniFailover"], clock=stack.clock,
                   sleep=stack.sleep)
    assert stack.now == T0 + 30


def test_quiet_waits_until_nothing_is_active(monkeypatch):
    stack = FakeStack([])
    monkeypatch.setattr(alerts, "active_alerts", lambda env, ignored: ["RtmxVipMoved"] if stack.now < T0 + 7 else [])
    assert alerts.quiet({}, 300, clock=stack.clock, sleep=stack.sleep) == {"waited_s": 8.0, "active": []}
    monkeypatch.setattr(alerts, "active_alerts", lambda env, ignored: ["RtmxVipMoved"])
    assert alerts.quiet({}, 5, clock=stack.clock, sleep=stack.sleep)["active"] == ["RtmxVipMoved"]


def test_quiet_ignores_the_slo_alerts(monkeypatch):
    monkeypatch.setattr(alerts, "get", lambda url, user, password: [
        {"labels": {"alertname": "RtmxErrorBudgetBurnSlow"}}, {"labels": {"alertname": "RtmxVipMoved"}}])
    env = dict.fromkeys(("RTMX_ALERTMANAGER_URL", "RTMX_ALERTMANAGER_USERNAME", "RTMX_ALERTMANAGER_PASSWORD"), "x")
    assert alerts.active_alerts(env, ["RtmxErrorBudgetBurnSlow"]) == ["RtmxVipMoved"]


def figures(sent, name="leader_node_loss", expect=("RtmxPatroniFailover",), allow=(), active=()):
    d = {"fault_at": T0, "healed_at": T0 + 30, "alerts": {
        "expect": list(expect), "allow": list(allow), "quiet": {"waited_s": 0, "active": list(active)},
        "notifications": sent}}
    return {"drill": name, **report.alert_figures(d)}


def test_report_figures_and_checks_of_a_good_drill():
    f = figures(FAILOVER)
    assert f["alerts_delivered_s"] == {"RtmxPatroniFailover": 24.0}
    assert f["alerts_resolved_after_heal_s"] == {"RtmxPatroniFailover": 65.0}
    assert checks.alert_problems(f) == []


def test_checks_name_every_alerting_problem():
    late = [note(T0 + 150, "firing", ("RtmxPatroniFailover", "firing", T0 + 14)),
            note(T0 + 60, "firing", ("RtmxRedisMasterChanged", "firing", T0 + 50))]
    found = checks.alert_problems(figures(late, active=["RtmxVipMoved"]))
    assert any("still active before the fault" in p for p in found), found
    assert any("RtmxPatroniFailover sent 150.0 s after the fault" in p for p in found), found
    assert any("never resolved" in p for p in found), found
    assert any("does not explain" in p and "RtmxRedisMasterChanged" in p for p in found), found
    assert any("was not sent" in p for p in checks.alert_problems(figures([])))


def test_no_monitoring_no_alert_checks():
    f = {"drill": "leader_node_loss", **report.alert_figures({"fault_at": T0, "healed_at": T0, "alerts": None})}
    assert f["alerts_expected"] is None and checks.alert_problems(f) == []
    # Ansible may hand the record over as its JSON text.
    f = report.alert_figures({"fault_at": T0, "healed_at": T0 + 30, "alerts": "None"})
    assert f["alerts_expected"] is None


def test_error_budget_cost_is_the_longest_write_outage():
    assert report.error_budget_minutes(22.2, 6.0) == 0.37
    assert report.error_budget_minutes(None, 3.0) is None
    assert report.ERROR_BUDGET_MINUTES == 43.8


def test_every_drill_has_alert_expectations_with_known_alert_names():
    import yaml

    play = yaml.safe_load((ROOT / "playbooks" / "failover-drill.yml").read_text())[0]["vars"]
    rules = yaml.safe_load((ROOT / "roles" / "prometheus" / "files" / "rules" / "rtmx-alerts.yml").read_text())
    known = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    assert set(play["drill_alerts"]) == set(checks.EXPECTATIONS)
    named = set(play["drill_alerts_allowed_always"]) | set(play["drill_alerts_node_down"])
    for entry in play["drill_alerts"].values():
        named |= set(entry["expect"]) | (set(entry["allow"]) if isinstance(entry["allow"], list) else set())
    assert named <= known, named - known
    # The failovers page; a replica gone pages the "member missing" alert.
    for drill in ("planned_switchover", "leader_node_loss", "leader_partition"):
        assert play["drill_alerts"][drill]["expect"] == ["RtmxPatroniFailover"]
    assert play["drill_alerts"]["redis_master_loss"]["expect"] == ["RtmxRedisMasterChanged"]
    assert play["drill_alerts"]["lb_vip_loss"]["expect"] == ["RtmxVipMoved"]
    assert play["drill_alerts"]["replica_loss"]["expect"] == ["RtmxPatroniMemberNotRunning"]
    assert set(play["drill_hold_until_alerted"]) <= set(checks.EXPECTATIONS)
