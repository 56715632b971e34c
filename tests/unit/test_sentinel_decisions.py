"""Sentinel agreement and failover preconditions on recorded Sentinel answers."""

import copy

import pytest

from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import (
    describe_sentinels,
    health_problems,
    healthy_replicas,
    node_problems,
)


@pytest.fixture
def answers(recorded):
    return recorded("sentinel_answers_healthy.json")


def test_healthy_sentinels_agree(answers):
    state = describe_sentinels(answers)
    assert state["master"] == answers[0]["master"]
    assert state["agreement"] and state["ckquorum_ok"]
    assert health_problems(state) == []
    assert len(healthy_replicas(state)) == 2


def test_minority_down_keeps_the_majority_master_but_is_reported(answers):
    down = copy.deepcopy(answers)
    down[2] = {"sentinel": down[2]["sentinel"], "reachable": False, "master": None,
               "error": "cannot connect to %s: [Errno 111] Connection refused" % down[2]["sentinel"]}
    state = describe_sentinels(down)
    assert state["master"] == answers[0]["master"]
    assert not state["agreement"]
    assert any("Connection refused" in p for p in health_problems(state))


def test_disagreement_without_majority_names_no_master(answers):
    split = copy.deepcopy(answers)
    split[1]["master"] = "198.18.0.12:6379"
    split[2]["master"] = "198.18.0.13:6379"
    state = describe_sentinels(split)
    assert state["master"] is None
    assert "no master is named by a majority" in health_problems(state)[0]


def test_disagreement_with_majority_is_reported(answers):
    split = copy.deepcopy(answers)
    split[2]["master"] = "198.18.0.13:6379"
    state = describe_sentinels(split)
    assert state["master"] == answers[0]["master"]
    assert any("disagree" in p for p in health_problems(state))


def test_failed_ckquorum_is_reported(answers):
    bad = copy.deepcopy(answers)
    bad[0]["ckquorum_ok"] = False
    bad[0]["ckquorum"] = "NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the majority"
    assert any("CKQUORUM fails on %s" % bad[0]["sentinel"] in p for p in health_problems(describe_sentinels(bad)))


def test_replica_with_broken_link_cannot_be_promoted(answers):
    bad = copy.deepcopy(answers)
    for answer in bad:
        for replica in answer["replicas"]:
            replica["master_link_status"] = "err"
    assert healthy_replicas(describe_sentinels(bad)) == []


def test_second_node_claiming_master_is_split_brain(answers):
    state = describe_sentinels(answers)
    replica = state["replicas"][0]["address"]
    state["nodes"] = [
        {"address": state["master"], "reachable": True, "role": "master", "error": None},
        {"address": replica, "reachable": True, "role": "master", "error": None},
    ]
    expected = "Redis %s claims to be a master but the Sentinels name %s" % (replica, state["master"])
    assert node_problems(state) == [expected]


def test_haproxy_stats_routing_on_a_recorded_page():
    import pathlib

    from ansible_collections.rtmx.ha.plugins.module_utils.haproxy_stats import (
        down_servers,
        parse_stats_csv,
        routes_only_to,
        up_servers,
    )

    stats = parse_stats_csv((pathlib.Path(__file__).parent / "fixtures" / "haproxy_stats.csv").read_text())
    assert up_servers(stats, "postgres_rw") == ["198.18.0.11:5432"]
    assert routes_only_to(stats, "postgres_rw", "198.18.0.11:5432") is None
    assert routes_only_to(stats, "postgres_rw", "198.18.0.12:5432") == (
        "backend postgres_rw routes to 198.18.0.11:5432, expected only 198.18.0.12:5432")
    assert up_servers(stats, "postgres_ro") == ["198.18.0.12:5432", "198.18.0.13:5432"]
    assert down_servers(stats, "sync_servers") == {}
    assert "backend nope is missing" in routes_only_to(stats, "nope", "x:1")
