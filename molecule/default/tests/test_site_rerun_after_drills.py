"""Re-running site.yml after the drills is safe: it changes nothing.

Collected after the drills (conftest): by then the leader and the Redis
master have moved by planned switchovers and by unplanned failovers (node
loss, crash, partition), and nodes have been killed and restarted. A second
converge must report zero changes on every host, keep the current leader and
master and leave every Sentinel's learned state alone. This is also the
collection's idempotence test (molecule's own idempotence step would repeat
a converge for less).
"""

from conftest import changed_per_host, leader_name, redis_master, run_site

testinfra_hosts = ["pg1"]


def test_site_after_the_drills_changes_nothing_and_keeps_the_current_roles(nodes, project_dir, inventory):
    leader, master = leader_name(nodes["pg1"]), redis_master(nodes)

    changed = changed_per_host(run_site(project_dir, inventory))
    assert changed and set(changed.values()) == {0}, changed

    assert leader_name(nodes["pg1"]) == leader
    assert redis_master(nodes) == master
    for node in nodes.values():
        assert "rtmx.ha: Sentinel owns this file" in node.file("/etc/redis/sentinel.conf").content_string
        assert "known-replica" in node.file("/etc/redis/sentinel.conf").content_string
