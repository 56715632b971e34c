"""Drill figures from synthetic probe observations with known answers."""

import importlib.util
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
REPORT = ROOT / "playbooks" / "drill" / "report.py"
spec = importlib.util.spec_from_file_location("drill_report", REPORT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

T0 = 1_800_000_000.0


def writes(outages, until=60.0, step=0.1):
    """One write every `step` s; those starting inside an outage (start, end) fail."""
    out, seq, t = [], 0, 0.0
    while t < until:
        seq += 1
        ok = not any(a <= t < b for a, b in outages)
        out.append([T0 + t, T0 + t + 0.01, ok, seq, None if ok else "boom"])
        t += step
    return out


def probe(pg_outages=(), redis_outages=(), lost_pg=(), lost_redis=(), leader_change=None, two_primaries=False):
    leaders = [[T0 + t / 4, "pg1" if leader_change is None or t / 4 < leader_change else "pg2"] for t in range(240)]
    primaries = [[T0 + t / 4, ["pg1", "pg2"] if two_primaries and t == 100 else ["pg1" if leader_change is None
                  or t / 4 < leader_change else "pg2"], []] for t in range(240)]
    return {
        "started": T0, "stopped": T0 + 60, "notes": [], "errors": [], "pg_nodes": ["pg1", "pg2", "pg3"],
        "pg_writes": writes(pg_outages), "redis_writes": writes(redis_outages),
        "leaders": leaders, "redis_masters": [[T0 + t / 4, "10.0.0.11:6379"] for t in range(240)],
        "primaries": primaries,
        "sync_clients": [{"via": "vip", "servers_used": ["sync1"], "disconnects": [], "reconnects": []},
                         {"via": "vip", "servers_used": ["sync2", "sync3"],
                          "disconnects": [[T0 + 20, "sync2", [1012, "restart"]]], "reconnects": [T0 + 21.5]},
                         {"via": "direct", "servers_used": ["sync3"], "disconnects": [], "reconnects": []}],
        "final": {"pg": {"acked": 500, "lost": list(lost_pg), "lost_count": len(lost_pg)},
                  "redis": {"acked": 500, "lost": list(lost_redis), "lost_count": len(lost_redis)},
                  "sync": {"updates": 40, "updates_lost": 0, "converged_after_stop_s": 0.3,
                           "new_room_s": {"sync1": 0.05, "sync2": 0.04, "sync3": 0.06}}},
    }


def drill(name="leader_node_loss"):
    return {"name": name, "target": "pg1", "fault_at": T0 + 10, "healed_at": T0 + 40, "verified_at": T0 + 52.5,
            "verify_ok": True, "verify_failed_checks": []}


def test_outage_window_leader_change_and_rto():
    figures = report.drill_figures(drill(), probe(pg_outages=[(12.0, 19.0)], leader_change=25))
    assert 6.9 <= figures["pg_write_unavailability_s"] <= 7.2
    assert 69 <= figures["pg_failed_writes"] <= 71
    assert figures["time_to_new_leader_s"] == 15.0
    assert (figures["leader_before"], figures["leader_after"]) == ("pg1", "pg2")
    assert figures["rto_s"] == 42.5
    assert figures["pg_acked_writes_lost"] == 0
    assert figures["redis_write_unavailability_s"] == 0.0
    assert figures["sync_clients"] == {"vip": 2, "direct": 1}
    assert (figures["sync_vip_disconnects"], figures["sync_direct_disconnects"]) == (1, 0)
    assert figures["sync_disconnected_from"] == ["sync2"] and figures["sync_never_back"] == 0
    assert figures["sync_back_in_sync_s"] == 1.5
    assert figures["sync_new_room_s"] == {"sync1": 0.05, "sync2": 0.04, "sync3": 0.06}


def test_two_outages_report_the_longest_and_the_total():
    figures = report.unavailability(writes([(12.0, 14.0), (30.0, 35.0)]), T0 + 10)
    assert 4.9 <= figures["window_s"] <= 5.2 and 6.9 <= figures["total_s"] <= 7.3


def test_never_recovered_has_no_window():
    assert report.unavailability(writes([(50.0, 99.0)]), T0 + 10)["window_s"] is None


def test_split_brain_and_losses_are_counted():
    figures = report.drill_figures(drill(), probe(lost_pg=[7], lost_redis=[95, 96], two_primaries=True))
    assert figures["max_writable_primaries"] == 2
    assert figures["pg_acked_writes_lost"] == 1
    assert figures["redis_acked_writes_lost"] == 2
    # writes 95 and 96 were acknowledged about 0.5 s before the fault (at 10 s).
    assert 0.4 <= figures["redis_lost_window_s"] <= 0.6


def test_report_files(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(probe(pg_outages=[(12.0, 14.0)], leader_change=14)))
    run = {"run": "20261127T000000Z", "inventory": "lab", "seed": None,
           "drills": [dict(drill(), probe_file=str(tmp_path / "p.json"))]}
    (tmp_path / "drills.json").write_text(json.dumps(run))
    out = subprocess.run([sys.executable, str(REPORT), str(tmp_path / "drills.json"), str(tmp_path / "out")],
                         check=True, capture_output=True, text=True).stdout
    summary = json.loads(out)
    assert summary["drills"] == 1 and summary["pg_acked_writes_lost"] == 0 and summary["all_verified"]
    assert "| leader_node_loss |" in (tmp_path / "out" / "report.md").read_text()
    svg = (tmp_path / "out" / "timeline.svg").read_text()
    assert svg.startswith("<svg") and 'fill="#d62828"' in svg


def test_no_writes_after_the_fault_is_no_window():
    assert report.unavailability(writes([], until=5.0), T0 + 10)["window_s"] is None


def api_requests(outages=(), slow=(), until=60.0, step=0.125):
    """GET /api/status through the VIP every `step` s; those starting inside an outage fail, inside a slow
    spell (start, end, seconds) they take that long; instances in turn."""
    out, t, n = [], 0.0, 0
    while t < until:
        n += 1
        ok = not any(a <= t < b for a, b in outages)
        took = next((s for a, b, s in slow if a <= t < b), 0.01)
        out.append([T0 + t, T0 + t + took, ok, 200 if ok else 503, f"sync{n % 3 + 1}" if ok else "HTTP 503"])
        t += step
    return out


def test_api_figures_without_an_api_probe_are_none():
    figures = report.drill_figures(drill(), probe())
    assert figures["api_requests"] is None and figures["api_failed_requests"] is None
    assert figures["api_longest_gap_s"] is None


def test_api_figures_count_failures_window_and_longest_gap_after_the_fault():
    observed = dict(probe(), api_requests=api_requests(outages=[(20.0, 23.0)], slow=[(30.0, 30.1, 1.5)]))
    figures = report.drill_figures(drill(), observed)  # fault at T0 + 10
    assert figures["api_requests"] == 480
    assert figures["api_failed_requests"] == 24  # 3 s at 8 a second
    assert 2.9 <= figures["api_failure_window_s"] <= 3.2
    assert 3.0 <= figures["api_longest_gap_s"] <= 3.2  # the outage; the one slow answer (1.5 s) is shorter
    assert figures["api_served_by"] == ["sync1", "sync2", "sync3"]


def test_api_never_answering_again_has_no_window():
    observed = dict(probe(), api_requests=api_requests(outages=[(20.0, 60.0)]))
    figures = report.drill_figures(drill(), observed)
    assert figures["api_failure_window_s"] is None


def test_api_requests_before_the_fault_do_not_count():
    observed = dict(probe(), api_requests=api_requests(outages=[(2.0, 5.0)]))
    figures = report.drill_figures(drill(), observed)
    assert figures["api_failed_requests"] == 0 and figures["api_failure_window_s"] == 0.0
    assert figures["api_longest_gap_s"] < 0.2


def test_report_table_has_the_api_columns(tmp_path):
    observed = dict(probe(pg_outages=[(12.0, 14.0)], leader_change=14), api_requests=api_requests())
    (tmp_path / "p.json").write_text(json.dumps(observed))
    run = {"run": "20261127T000000Z", "inventory": "lab", "seed": None,
           "drills": [dict(drill(), probe_file=str(tmp_path / "p.json"))]}
    (tmp_path / "drills.json").write_text(json.dumps(run))
    out = subprocess.run([sys.executable, str(REPORT), str(tmp_path / "drills.json"), str(tmp_path / "out")],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["api_failed_requests"] == {"leader_node_loss": 0}
    table = (tmp_path / "out" / "report.md").read_text()
    assert "API failed requests (VIP)" in table and "API longest gap (s)" in table
