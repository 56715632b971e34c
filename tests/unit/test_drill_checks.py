"""playbooks/drill/checks.py: a broken probe or a misbehaving stack fails the drill, a good run passes."""

import copy
import importlib.util
import pathlib
import re

from test_drill_report import T0, drill, probe, report

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("drill_checks", ROOT / "playbooks" / "drill" / "checks.py")
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)


def figures(name="leader_node_loss", api_instance_lost=False, **changes):
    """A leader loss as the probe would see it: outage, new leader, then the stack whole."""
    observed = probe(pg_outages=[(12.0, 30.0)], redis_outages=[(12.0, 20.0)], leader_change=28)
    observed["sync_clients"][1]["disconnects"], observed["sync_clients"][1]["reconnects"] = [], []
    for key, value in changes.items():
        observed[key] = value
    # As run_one.yml records it (a rendered boolean).
    record = dict(drill(name), target_address="198.18.1.11", api_instance_lost=str(api_instance_lost))
    return report.drill_figures(record, observed)


def problems(*drills):
    return checks.problems({"drills": list(drills)})


def test_a_good_leader_loss_passes():
    assert problems(figures()) == []


def test_a_probe_that_writes_nothing_fails():
    assert any("pg probe acknowledged 0 writes" in p for p in problems(figures(pg_writes=[])))
    assert any("redis probe acknowledged 0 writes" in p for p in problems(figures(redis_writes=[])))


def test_a_probe_task_that_crashed_fails():
    assert any("probe error: probe task failed" in p for p in problems(figures(errors=["probe task failed: boom"])))


def test_a_watcher_that_cannot_connect_fails():
    blind = [[T0 + t / 4, [], ["pg1", "pg2", "pg3"]] for t in range(240)]
    found = problems(figures(primaries=blind))
    assert any("reached no PostgreSQL node in 240 of 240" in p for p in found)
    assert any("never saw a writable primary" in p for p in found)


def test_a_failed_read_back_fails():
    observed = probe(pg_outages=[(12.0, 30.0)], leader_change=28)
    observed["final"]["redis"] = {"acked": 500, "read_ok": False, "error": "down", "lost_count": None}
    assert any("redis read-back failed" in p for p in problems(report.drill_figures(drill(), observed)))
    observed["final"]["sync"] = {"updates": 40, "updates_lost": None, "missing_per_server": {"ws://s1:8765": "x"}}
    found = problems(report.drill_figures(drill(), observed))
    assert any("sync read-back failed" in p for p in found) and any("unreachable after" in p for p in found)


def test_a_leader_drill_without_a_new_leader_fails():
    no_change = report.drill_figures(drill("leader_partition"), probe(pg_outages=[(12.0, 30.0)]))
    assert any("no new leader" in p for p in problems(no_change))


def test_a_fault_on_the_wrong_node_fails():
    wrong = copy.deepcopy(figures())
    wrong["target"] = "pg2"
    assert any("was not the leader" in p for p in problems(wrong))


def test_sync_server_loss_must_disconnect_exactly_the_killed_servers_clients():
    base = probe()
    record = dict(drill("sync_server_loss"), target="sync2", target_address="s2")
    assert problems(report.drill_figures(record, base)) == []
    nobody = copy.deepcopy(base)
    nobody["sync_clients"][1]["disconnects"], nobody["sync_clients"][1]["reconnects"] = [], []
    assert any("only those of the killed sync2" in p for p in problems(report.drill_figures(record, nobody)))
    everybody = copy.deepcopy(base)
    everybody["sync_clients"][2]["disconnects"] = [[T0 + 20, "sync3", [1006, ""]]]
    everybody["sync_clients"][2]["reconnects"] = [T0 + 20.5]
    assert any("only those of the killed" in p for p in problems(report.drill_figures(record, everybody)))
    slow = copy.deepcopy(base)
    slow["sync_clients"][1]["reconnects"] = [T0 + 23]
    assert any("back after 3.0 s (at most 2.0 s)" in p for p in problems(report.drill_figures(record, slow)))
    never = copy.deepcopy(base)
    never["sync_clients"][1]["reconnects"] = []
    assert any("never followed by a reconnect" in p for p in problems(report.drill_figures(record, never)))


def test_a_database_fault_must_not_disconnect_sync_clients_through_the_vip():
    observed = probe(pg_outages=[(12.0, 30.0)], leader_change=28)
    found = problems(report.drill_figures(dict(drill(), target_address="198.18.1.11"), observed))
    assert any("1 sync clients through the VIP and 0 direct were disconnected (from sync2)" in p for p in found)


def test_an_lb_loss_may_cut_vip_clients_but_not_direct_ones():
    record = dict(drill("lb_vip_loss"), target="lb1")
    observed = probe()
    assert problems(report.drill_figures(record, observed)) == []
    observed["sync_clients"][2]["disconnects"] = [[T0 + 20, "sync3", [1006, ""]]]
    observed["sync_clients"][2]["reconnects"] = [T0 + 20.2]
    assert any("1 direct sync clients were disconnected" in p for p in problems(report.drill_figures(record, observed)))


def test_a_sync_server_that_does_not_serve_a_new_room_fails():
    wedged = figures()
    wedged["sync_new_room_s"] = {"sync1": 0.05, "sync2": "TimeoutError: ", "sync3": 2.5}
    found = problems(wedged)
    assert any("sync2 did not serve a new room" in p for p in found)
    assert any("sync3 did not serve a new room within 2.0 s: 2.5" in p for p in found)
    unasked = figures()
    unasked["sync_new_room_s"] = {}
    assert any("no sync server was asked to serve a new room" in p for p in problems(unasked))


def test_a_probe_without_vip_clients_fails():
    direct_only = figures()
    direct_only["sync_clients"] = {"vip": 0, "direct": 3}
    assert any("no sync probe client went through the VIP" in p for p in problems(direct_only))


def test_lost_commits_split_brain_and_slow_failover_fail():
    found = problems(report.drill_figures(drill(), probe(pg_outages=[(12.0, 75.0)], lost_pg=[3], two_primaries=True,
                                                         leader_change=28)))
    assert any("acknowledged commits lost" in p for p in found)
    assert any("2 writable primaries at once" in p for p in found)
    assert any("pg write unavailability None" in p for p in found)  # never recovered before the probe stopped


def test_every_catalogued_drill_has_expectations_in_catalogue_order():
    playbook = (ROOT / "playbooks" / "failover-drill.yml").read_text()
    catalog = re.search(r"drill_catalog:\n((?:\s+- \w+\n)+)", playbook).group(1).split()
    disaster = re.search(r"drill_dr_catalog: \[([\w, ]+)\]", playbook).group(1).split(", ")
    assert [name for name in catalog if name != "-"] + disaster == list(checks.EXPECTATIONS)


def test_the_probe_takes_the_leader_a_majority_of_members_name():
    spec = importlib.util.spec_from_file_location("drill_probe", ROOT / "playbooks" / "drill" / "probe.py")
    probe_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe_module)
    majority_leader = probe_module.majority_leader
    assert majority_leader(["pg1", "pg1", "pg1"], 3) == "pg1"
    # The isolated old leader still names itself; the two others already name the new one.
    assert majority_leader(["pg1", "pg2", "pg2"], 3) == "pg2"
    assert majority_leader(["pg1", None, None], 3) is None  # one member is no majority
    assert majority_leader([None, "pg2", "pg2"], 3) == "pg2"  # the dead leader does not answer
    assert majority_leader(["pg1", "pg2", None], 3) is None


def api_figures(name="leader_node_loss", api_instance_lost=False, **api):
    """figures() with the API probe: `api` goes to test_drill_report.api_requests()."""
    from test_drill_report import api_requests

    return figures(name, api_instance_lost=api_instance_lost, api_requests=api_requests(**api))


def test_no_api_tier_no_api_check():
    assert not [p for p in problems(figures()) if "API" in p]


def test_api_requests_answered_throughout_pass():
    assert problems(api_figures()) == []


def test_a_failed_api_request_fails_a_drill_that_hit_neither_an_api_instance_nor_an_lb():
    found = problems(api_figures(outages=[(20.0, 20.2)]))
    assert any(re.search(r"2 API requests through the VIP failed .* although no API instance or lb was hit", p)
               for p in found), found


def test_an_api_probe_that_asked_nothing_fails():
    found = problems(figures(api_requests=[]))
    assert any("API probe sent 0 requests" in p for p in found), found


def test_api_server_loss_may_fail_requests_only_within_the_detection_window():
    assert [p for p in problems(api_figures("api_server_loss", outages=[(20.0, 45.0)])) if "API" in p] == []
    found = problems(api_figures("api_server_loss", outages=[(12.0, 45.0)]))
    assert any(f"at most the health-check detection window, {checks.API_DETECTION_WINDOW_S} s" in p
               for p in found), found
    # Never answered again: no window at all is a failure too.
    assert any("failed for None s" in p for p in problems(api_figures("api_server_loss", outages=[(20.0, 60.0)])))


def test_a_node_loss_that_took_an_api_instance_with_it_is_judged_like_an_api_server_loss():
    # The lab kills a sync node's whole container, and the sync nodes carry API instances too.
    assert [p for p in problems(api_figures("sync_server_loss", True, outages=[(20.0, 20.4)])) if "API" in p] == []
    found = problems(api_figures("sync_server_loss", True, outages=[(12.0, 45.0)]))
    assert any("at most the health-check detection window" in p for p in found), found


def test_api_server_loss_keeps_every_other_expectation():
    assert checks.EXPECTATIONS["api_server_loss"]["sync_disconnects"] == 0
    assert checks.API_DETECTION_WINDOW_S == 30  # REQ-DEPLOY-005: API checked every 10 s, unhealthy after 3


def test_lb_loss_bounds_the_api_gap_like_the_sync_clients_vip_back_time():
    assert [p for p in problems(api_figures("lb_vip_loss", outages=[(20.0, 27.0)])) if "API" in p] == []
    found = problems(api_figures("lb_vip_loss", outages=[(20.0, 32.0)]))
    assert any(f"at most {checks.SYNC_VIP_MOVE_BACK_MAX_S} s" in p and "API answers" in p for p in found), found


def test_chaos_series_do_not_draw_the_new_drills():
    # Drills added after seeds were published come last and are excluded: a seed replays its series.
    assert list(checks.EXPECTATIONS)[-5:] == ["api_server_loss", "replica_loss", "cluster_loss", "bad_change",
                                              "etcd_majority_loss"]
    assert checks.CHAOS_EXCLUDED == tuple(list(checks.EXPECTATIONS)[-5:])


def test_the_playbook_catalogues_match_the_expectations():
    import yaml

    play = yaml.safe_load((ROOT / "playbooks" / "failover-drill.yml").read_text())[0]["vars"]
    assert play["drill_catalog"] + play["drill_dr_catalog"] == list(checks.EXPECTATIONS)
    assert play["drill_chaos_catalog"] == [d for d in checks.EXPECTATIONS if d not in checks.CHAOS_EXCLUDED]
    assert set(play["drill_hold"]) <= set(checks.EXPECTATIONS) and "api_server_loss" in play["drill_hold"]
    assert play["drill_hold"]["api_server_loss"] > checks.API_DETECTION_WINDOW_S


# Disaster recovery (issue 12).
def disaster(name, dr, pg_outages=((12.0, 40.0),), lost_pg=(), **changes):
    observed = probe(pg_outages=pg_outages, lost_pg=lost_pg)
    observed["sync_clients"][1]["disconnects"], observed["sync_clients"][1]["reconnects"] = [], []
    observed.update(changes)
    return report.drill_figures(dict(drill(name), target="pg1,pg2,pg3", dr=dr), observed)


CLUSTER_RESTORED = {"restore_ok": "True", "restore_s": "61.2", "archive_timeout_s": "60"}


def test_a_cluster_restored_losing_only_the_archive_window_passes():
    # Writes every 0.1 s from T0; the fault at T0 + 10: seqs 51-100 were acknowledged 5 s before it and less.
    figures = disaster("cluster_loss", CLUSTER_RESTORED, lost_pg=range(51, 101))
    assert figures["dr"] == {"restore_ok": True, "restore_s": 61.2, "archive_timeout_s": 60}
    assert figures["pg_lost_window_s"] == 4.99 and figures["pg_acked_writes_lost"] == 50
    assert problems(figures) == []


def test_commits_lost_beyond_the_archive_window_fail(monkeypatch):
    monkeypatch.setattr(checks, "ARCHIVE_PUSH_SLACK_S", 0)
    found = problems(disaster("cluster_loss", dict(CLUSTER_RESTORED, archive_timeout_s="2"), lost_pg=range(51, 101)))
    assert any("50 acknowledged commits lost, the earliest acknowledged 4.99 s before the fault (at most the "
               "archive window, 2 s)" in p for p in found)
    # Without the cluster's archive_timeout nothing may be lost.
    found = problems(disaster("cluster_loss", {"restore_ok": "True"}, lost_pg=range(51, 101)))
    assert any("at most the archive window, 0 s" in p for p in found)


def test_a_failed_or_slow_restore_fails():
    found = problems(disaster("cluster_loss", dict(CLUSTER_RESTORED, restore_ok="False")))
    assert any("the restore or rebuild failed" in p for p in found)
    slow = problems(disaster("cluster_loss", CLUSTER_RESTORED, pg_outages=((12.0, 59.0),)))
    assert slow == []  # 47 s: within the 5-minute goal
    assert checks.EXPECTATIONS["cluster_loss"]["pg_max_s"] == checks.CLUSTER_LOSS_RTO_GOAL_S <= checks.DR_RTO_MAX_S


def test_bad_change_must_bring_back_every_row_unchanged():
    good = {"restore_ok": "True", "rows_written": "1000", "rows_recovered": "1000", "rows_identical": "True"}
    assert problems(disaster("bad_change", good, pg_outages=())) == []
    found = problems(disaster("bad_change", dict(good, rows_recovered="998", rows_identical="False"), pg_outages=()))
    assert any("998 of 1000 dropped rows copied back (identical: False)" in p for p in found)
    assert any("dropped rows copied back" in p for p in problems(disaster("bad_change", {"restore_ok": "True"},
                                                                          pg_outages=())))


def test_etcd_majority_loss_must_keep_writes_until_the_rebuild():
    rebuilt = {"restore_ok": "True", "etcd_rebuilt_s": "15.0", "dcs_restored_s": "15.6"}
    # healed at T0 + 40: an outage after it (the re-election on the empty DCS) is allowed, within bounds.
    assert problems(disaster("etcd_majority_loss", rebuilt, pg_outages=((42.0, 50.0),))) == []
    found = problems(disaster("etcd_majority_loss", rebuilt, pg_outages=((20.0, 22.0),)))
    assert any("writes stopped for 2.0" in p and "failsafe" in p for p in found)
