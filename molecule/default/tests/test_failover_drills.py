"""The failover drills and a seeded chaos series, with the probes running.

Collected last (conftest orders drill tests after the others): every drill
kills real processes or whole containers. Asserts the requirement's
correctness bounds; the figures themselves go to the report.
"""

import json
import os
import pathlib
import random

from conftest import playbook

testinfra_hosts = ["pg1"]

FAILOVER_MAX_S = 60  # REQ-DEPLOY-005: failover under 60 seconds
REDIS_MIN_REPLICAS_MAX_LAG_S = 10  # roles/redis default: the loss window min-replicas promises


def run_drills(project_dir, inventory, tmp_path_factory, *extra) -> dict:
    reports = tmp_path_factory.mktemp("drills")
    out = playbook(project_dir, inventory, "playbooks/failover-drill.yml", "-e", f"drill_reports_dir={reports}", *extra,
                   timeout=2400)
    (run,) = [p for p in reports.iterdir() if p.is_dir()]
    report = json.loads((run / "report.json").read_text())
    assert (run / "report.md").exists() and (run / "timeline.svg").read_text().startswith("<svg")
    keep = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / "reports" / "molecule" / run.name
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md", "timeline.svg"):
        (keep / name).write_bytes((run / name).read_bytes())
    print((run / "report.md").read_text())
    assert "Summary:" in out
    return report


def assert_drill_bounds(report: dict) -> None:
    for drill in report["drills"]:
        name = drill["drill"]
        assert drill["verified"], f"{name}: the stack was not whole again: {drill['verify_failed_checks']}"
        assert drill["pg_acked_writes_lost"] == 0, f"{name}: acknowledged commits lost"
        assert drill["max_writable_primaries"] <= 1, f"{name}: two writable primaries at once"
        for key in ("pg_write_unavailability_s", "redis_write_unavailability_s"):
            assert drill[key] is not None and drill[key] < FAILOVER_MAX_S, f"{name}: {key} = {drill[key]}"
        for key in ("time_to_new_leader_s", "time_to_new_master_s"):
            assert drill[key] is None or drill[key] < FAILOVER_MAX_S, f"{name}: {key} = {drill[key]}"
        assert drill["sync_updates_lost"] == 0, f"{name}: sync updates lost: {drill['sync_updates_lost']}"
        if drill["redis_acked_writes_lost"]:
            assert drill["redis_lost_window_s"] <= REDIS_MIN_REPLICAS_MAX_LAG_S, (
                f"{name}: Redis lost writes acknowledged {drill['redis_lost_window_s']} s before the fault")


def test_every_drill_recovers_without_losing_an_acknowledged_commit(project_dir, inventory, tmp_path_factory):
    report = run_drills(project_dir, inventory, tmp_path_factory)
    assert [d["drill"] for d in report["drills"]] == [
        "planned_switchover", "leader_node_loss", "postgres_crash", "leader_partition", "etcd_member_loss",
        "redis_master_loss", "sentinel_minority_loss", "sync_server_loss", "lb_vip_loss"]
    assert_drill_bounds(report)
    by_name = {d["drill"]: d for d in report["drills"]}
    assert by_name["planned_switchover"]["pg_failed_writes"] == 0
    assert by_name["leader_node_loss"]["time_to_new_leader_s"] is not None
    assert by_name["redis_master_loss"]["time_to_new_master_s"] is not None
    sync_loss = by_name["sync_server_loss"]
    killed = [server for server, count in sync_loss["sync_disconnects"].items() if count]
    assert len(killed) <= 1, f"clients of servers that stayed up were disconnected: {sync_loss['sync_disconnects']}"


def test_seeded_chaos_series(project_dir, inventory, tmp_path_factory):
    seed = os.environ.get("RTMX_CHAOS_SEED") or str(random.randrange(1_000_000))
    faults = os.environ.get("RTMX_CHAOS_FAULTS", "2")
    print(f"chaos seed {seed} ({faults} faults): replay with RTMX_CHAOS_SEED={seed} or "
          f"make drill DRILL_ARGS='-e chaos_seed={seed} -e chaos_faults={faults}'")
    report = run_drills(project_dir, inventory, tmp_path_factory, "-e", f"chaos_seed={seed}", "-e", f"chaos_faults={faults}")
    assert report["seed"] == seed and len(report["drills"]) == int(faults)
    assert_drill_bounds(report)
