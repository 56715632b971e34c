"""Re-running site.yml after a Patroni and a Redis failover is safe.

It must report zero changes, keep the new PostgreSQL leader and the new
Redis master, and leave every Sentinel's learned state alone. Runs last
(file name order) because it moves the leader and the master.
"""

from conftest import (
    ADDRESSES,
    changed_per_host,
    leader_name,
    patroni_cluster,
    redis_cli,
    redis_master,
    run_site,
    wait_for,
)

testinfra_hosts = ["pg1"]


def _patroni_auth(node) -> str:
    user = node.check_output("awk '/^restapi:/{f=1} f && /username:/{print $2; exit}' /etc/patroni/config.yml")
    password = node.check_output("awk '/^restapi:/{f=1} f && /password:/{print $2; exit}' /etc/patroni/config.yml")
    return f"{user.strip(chr(34))}:{password.strip(chr(34))}"


def _switch_over(nodes) -> str:
    node = nodes["pg1"]
    old = leader_name(node)
    candidate = next(m["name"] for m in patroni_cluster(node)["members"] if m["role"] == "sync_standby")
    body = f'{{"leader": "{old}", "candidate": "{candidate}"}}'
    code = node.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' -u {_patroni_auth(node)} -X POST -d '{body}' "
        f"http://{ADDRESSES['pg1']}:8008/switchover")
    assert code == "200", code
    wait_for(lambda: leader_name(node) == candidate and all(
        m["state"] == "running" for m in patroni_cluster(node)["members"]), timeout=60, what="new leader")
    return candidate


def _redis_failover(nodes) -> str:
    old = redis_master(nodes)
    assert redis_cli(nodes["pg1"], "SENTINEL", "FAILOVER", "rtmx", sentinel=True) == "OK"

    def settled():
        new = redis_master(nodes)
        agreed = all(redis_cli(n, "SENTINEL", "get-master-addr-by-name", "rtmx", sentinel=True).split()[0]
                     == ADDRESSES[new] for n in nodes.values())
        return new if new != old and agreed and "connected_slaves:2" in redis_cli(nodes[new], "INFO", "replication") \
            else None

    return wait_for(settled, timeout=60, what="Redis failover")


def test_site_after_failovers_changes_nothing_and_keeps_the_new_roles(nodes, project_dir, inventory):
    new_leader = _switch_over(nodes)
    new_master = _redis_failover(nodes)

    changed = changed_per_host(run_site(project_dir, inventory))
    assert changed and set(changed.values()) == {0}, changed

    assert leader_name(nodes["pg1"]) == new_leader
    assert redis_master(nodes) == new_master
    for node in nodes.values():
        assert "rtmx.ha: Sentinel owns this file" in node.file("/etc/redis/sentinel.conf").content_string
        assert "known-replica" in node.file("/etc/redis/sentinel.conf").content_string
