"""The roles' Redis master choice (filter rtmx.ha.redis_master on module_utils.redis_client.choose_master)."""

from ansible_collections.rtmx.ha.plugins.filter.redis_master import FilterModule
from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import choose_master, majority_master

redis_master = FilterModule().filters()["redis_master"]
MEMBERS = {"10.0.0.11": "pg1", "10.0.0.12": "pg2", "10.0.0.13": "pg3"}
MASTER_INFO = "# Replication\nrole:master\nconnected_slaves:2\n"
LONE_INFO = "# Replication\nrole:master\nconnected_slaves:0\n"
REPLICA_INFO = "# Replication\nrole:slave\nmaster_host:10.0.0.12\n"


def sentinel(address=None):
    """A registered result of `redis-cli SENTINEL get-master-addr-by-name` (None: no answer)."""
    if address is None:
        return {"rc": 124, "stdout": "", "stdout_lines": []}
    return {"rc": 0, "stdout": f"{address}\n6379", "stdout_lines": [address, "6379"]}


def node(info=None):
    return {"rc": 0, "stdout": info} if info is not None else {"rc": 124, "stdout": ""}


def test_a_majority_of_sentinels_decides():
    answer = redis_master([sentinel("10.0.0.12"), sentinel("10.0.0.12"), sentinel(None)],
                          [node(REPLICA_INFO), node(MASTER_INFO), node(REPLICA_INFO)], MEMBERS, "pg1", True)
    assert answer == {"master": "pg2", "reason": "2 of 3 Sentinels name it"}


def test_a_minority_does_not_decide_the_nodes_do():
    answer = redis_master([sentinel("10.0.0.11"), sentinel(None), sentinel(None)],
                          [node(REPLICA_INFO), node(MASTER_INFO), node(REPLICA_INFO)], MEMBERS, "pg1", True)
    assert answer["master"] == "pg2" and "no Sentinel majority" in answer["reason"]


def test_an_address_outside_the_inventory_is_not_a_master():
    answer = redis_master([sentinel("10.9.9.9")] * 3, [node(), node(), node()], MEMBERS, "pg1", True)
    assert answer["master"] == ""


def test_two_masters_with_replicas_is_no_decision():
    answer = redis_master([sentinel(None)] * 3, [node(MASTER_INFO), node(MASTER_INFO), node(REPLICA_INFO)],
                          MEMBERS, "pg1", True)
    assert answer["master"] == ""


def test_a_new_deployment_takes_the_initial_master_but_a_configured_one_never_does():
    lone = [node(LONE_INFO), node(LONE_INFO), node(LONE_INFO)]
    assert redis_master([sentinel(None)] * 3, lone, MEMBERS, "pg3", False)["master"] == "pg3"
    assert redis_master([sentinel(None)] * 3, lone, MEMBERS, "pg3", True)["master"] == ""


def test_the_majority_counts_every_sentinel_not_only_those_that_answer():
    assert majority_master(["a"], 3)[0] is None
    assert majority_master(["a", "a"], 3)[0] == "a"
    assert majority_master(["a", "a"], 4)[0] is None and majority_master(["a", "a", "a"], 4)[0] == "a"
    assert choose_master(["10.0.0.11"], 1, {}, MEMBERS, "pg2", True)["master"] == "pg1"
