"""Switchover decisions and cluster health on recorded Patroni 3.0 responses."""

import copy

import pytest

from ansible_collections.rtmx.ha.plugins.module_utils.patroni import (
    describe_cluster,
    health_problems,
    plan_switchover,
)


@pytest.fixture
def cluster(recorded):
    """(cluster, leader /patroni, config) as recorded on a healthy lab; tests mutate copies."""
    return (
        recorded("patroni_cluster_healthy.json"),
        recorded("patroni_leader_status.json"),
        recorded("patroni_config.json"),
    )


def info_of(cluster):
    return describe_cluster(*cluster)


def member(cluster, name):
    return next(m for m in cluster[0]["members"] if m["name"] == name)


def test_describe_reads_leader_timeline_and_streaming(cluster):
    info = info_of(cluster)
    assert info["leader"] == "pg1"
    assert info["timeline"] == 1
    assert info["sync_standbys"] == ["pg2"]
    assert info["synchronous_mode"] is True
    by_name = {m["name"]: m for m in info["members"]}
    assert by_name["pg2"]["streaming"] and by_name["pg3"]["streaming"]
    assert by_name["pg2"]["sync_state"] == "sync"
    assert health_problems(info, 1048576) == []


def test_best_candidate_in_synchronous_mode_is_the_sync_standby(cluster):
    plan = plan_switchover(info_of(cluster))
    assert plan["action"] == "switchover"
    assert (plan["leader"], plan["candidate"]) == ("pg1", "pg2")
    assert "pg3" in plan["rejected"]


def test_best_candidate_without_synchronous_mode_is_the_least_lagging(cluster):
    cluster[2]["synchronous_mode"] = False
    member(cluster, "pg2")["lag"] = 4096
    plan = plan_switchover(info_of(cluster))
    assert plan["candidate"] == "pg3"


def test_candidate_already_leader_is_a_no_op(cluster):
    assert plan_switchover(info_of(cluster), "pg1")["action"] == "none"


def test_unknown_candidate_is_refused_listing_the_members(cluster):
    plan = plan_switchover(info_of(cluster), "pg9")
    assert plan["action"] == "refuse"
    assert "pg9" in plan["reasons"][0] and "pg1, pg2, pg3" in plan["reasons"][0]


def test_lagging_candidate_is_refused_with_its_lag(cluster):
    member(cluster, "pg2")["lag"] = 50 * 1024 * 1024
    plan = plan_switchover(info_of(cluster), "pg2", max_lag=1048576)
    assert plan["action"] == "refuse"
    assert "lags 52428800 bytes" in plan["reasons"][0]


def test_healthy_candidate_not_sync_standby_must_be_made_one_first(cluster):
    plan = plan_switchover(info_of(cluster), "pg3")
    assert plan["action"] == "make_sync"
    assert "not the sync standby (sync standby: pg2)" in plan["rejected"]["pg3"][0]


def test_lagging_candidate_not_sync_standby_is_refused_outright(cluster):
    member(cluster, "pg3")["lag"] = 50 * 1024 * 1024
    plan = plan_switchover(info_of(cluster), "pg3")
    assert plan["action"] == "refuse"
    assert "lags" in plan["reasons"][0] and "not the sync standby" in plan["reasons"][0]


def test_candidate_not_streaming_is_refused(cluster):
    cluster[1]["replication"] = [r for r in cluster[1]["replication"] if r["application_name"] != "pg2"]
    plan = plan_switchover(info_of(cluster), "pg2")
    assert plan["action"] == "refuse"
    assert "not streaming from leader pg1" in plan["reasons"][0]


def test_candidate_on_another_timeline_is_refused(cluster):
    member(cluster, "pg2")["timeline"] = 2
    plan = plan_switchover(info_of(cluster), "pg2")
    assert "on timeline 2, the leader on 1" in plan["reasons"][0]


def test_no_sync_standby_in_synchronous_mode_means_wait(cluster):
    member(cluster, "pg2")["role"] = "replica"
    plan = plan_switchover(info_of(cluster))
    assert plan["action"] == "wait_sync"


def test_no_sync_standby_but_broken_replicas_is_refused_not_waited(cluster):
    member(cluster, "pg2")["role"] = "replica"
    cluster[1]["replication"] = []
    plan = plan_switchover(info_of(cluster))
    assert plan["action"] == "refuse"


def test_paused_cluster_is_refused_unless_allowed(cluster):
    cluster[0]["pause"] = True
    assert "maintenance mode" in plan_switchover(info_of(cluster), "pg2")["reasons"][0]
    assert plan_switchover(info_of(cluster), "pg2", allow_paused=True)["action"] == "switchover"


def test_no_leader_is_refused(cluster):
    member(cluster, "pg1")["role"] = "replica"
    plan = plan_switchover(info_of(cluster), "pg2")
    assert plan["action"] == "refuse"
    assert "0 leaders" in plan["reasons"][0]


def test_two_leaders_are_reported_as_unhealthy(cluster):
    member(cluster, "pg2")["role"] = "leader"
    info = info_of(cluster)
    assert info["leader"] is None
    assert "found 2 (pg1, pg2)" in health_problems(info, 1048576)[0]


def test_nofailover_member_is_never_chosen(cluster):
    cluster[2]["synchronous_mode"] = False
    member(cluster, "pg2")["tags"] = {"nofailover": True}
    assert plan_switchover(info_of(cluster))["candidate"] == "pg3"
    assert "tagged nofailover" in plan_switchover(info_of(cluster), "pg2")["reasons"][0]


def test_health_lists_every_broken_replica(cluster):
    broken = copy.deepcopy(cluster)
    member(broken, "pg3")["lag"] = "unknown"
    broken[1]["replication"] = broken[1]["replication"][:1]
    problems = health_problems(info_of(broken), 1048576)
    assert any("pg3" in p and "not streaming" in p for p in problems)
    assert any("pg3" in p and "lag is unknown" in p for p in problems)
