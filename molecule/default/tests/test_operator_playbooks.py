"""The playbooks the runbook tells an operator to run, run as the runbook says:
verify.yml, redis-failover.yml, switchover.yml (scheduled, and after an
interrupted run left PgBouncer paused), and the modules' check mode.

Each test reads the state it starts from (leader, master) instead of
assuming what an earlier test left.
"""

import datetime
import json
import os
import pathlib
import re
import signal
import time

from conftest import (
    ADDRESSES,
    LB_HOSTS,
    leader_name,
    patroni_cluster,
    playbook,
    playbook_process,
    psql,
    redis_master,
    run_modules,
    secret,
    wait_for,
)

testinfra_hosts = ["pg1"]

SENTINEL = {"sentinels": "{{ rtmx_ha.sentinels }}", "sentinel_password": "{{ rtmx_ha.sentinel_password }}",
            "redis_password": "{{ rtmx_ha.redis_password }}"}


def pgbouncer_admin(lb, sql: str) -> str:
    out = lb.run(f"PGPASSWORD={secret('pgbouncer_admin_password')} psql -X -A -F, -h 127.0.0.1 -p 6432 "
                 f"-U pgbouncer_admin pgbouncer -c '{sql}'")
    assert out.rc == 0, out.stderr
    return out.stdout


def paused_databases(lb) -> list:
    header, *rows = [line.split(",") for line in pgbouncer_admin(lb, "SHOW DATABASES").splitlines() if "," in line]
    return [row[0] for row in rows if row[header.index("paused")] == "1"]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (found through /proc, whatever their session)."""
    children: dict[int, list[int]] = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def patroni_whole(node) -> bool:
    """One leader; every replica running on its timeline; one sync standby."""
    members = patroni_cluster(node)["members"]
    leaders = [m for m in members if m["role"] == "leader"]
    return (len(leaders) == 1 and len([m for m in members if m["role"] == "sync_standby"]) == 1
            and all(m["state"] in ("running", "streaming") and m.get("timeline") == leaders[0].get("timeline")
                    for m in members))


def wait_for_steady(check, seconds: float, timeout: float, what: str) -> None:
    """Poll until check() has been true for `seconds` in a row."""
    since = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            since = since or time.monotonic()
            if time.monotonic() - since >= seconds:
                return
        else:
            since = None
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_verify_playbook_lists_every_check_and_passes(project_dir, inventory):
    out = playbook(project_dir, inventory, "playbooks/verify.yml")
    checks = ("patroni_leader", "patroni_replicas", "postgres_write", "redis_sentinels", "redis_write",
              "haproxy_routing", "sync_servers", "api_servers", "etcd", "vip", "backup", "monitoring")
    for check in checks:
        assert f"{check}  ok " in out, f"{check} missing or failed:\n{out[-3000:]}"
    assert f"All {len(checks)} checks passed" in out


def test_ha_verify_in_check_mode_writes_nothing(project_dir, inventory, nodes):
    leader = nodes[leader_name(nodes["pg1"])]
    args = {key: "{{ rtmx_ha.%s }}" % key for key in (
        "patroni_urls", "patroni_password", "pg_host", "pg_password", "sentinels", "sentinel_password",
        "redis_password", "redis_host", "haproxy_stats_urls", "haproxy_stats_password", "sync_health_urls",
        "etcd_urls", "vip_holders")}
    (written,) = run_modules(project_dir, inventory, [("rtmx.ha.ha_verify", args, False)])
    assert written["ok"], written.get("msg")
    table = "rtmx_ha_verify"
    before = psql(leader, f"SELECT checked_at FROM {table} WHERE id = 1", db="rtmx")
    (checked,) = run_modules(project_dir, inventory, [("rtmx.ha.ha_verify", args, True)])
    assert checked["ok"] and not checked["changed"], checked.get("msg")
    assert psql(leader, f"SELECT checked_at FROM {table} WHERE id = 1", db="rtmx") == before


def test_redis_failover_playbook_moves_the_master_then_changes_nothing(project_dir, inventory, nodes):
    before = redis_master(nodes)
    from_master = f"{ADDRESSES[before]}:6379"
    (checked,) = run_modules(project_dir, inventory, [
        ("rtmx.ha.sentinel_failover", dict(SENTINEL, from_master=from_master), True)])
    assert checked["changed"] and redis_master(nodes) == before, "check mode failed over"
    out = playbook(project_dir, inventory, "playbooks/redis-failover.yml", "-e", f"from_master={from_master}")
    after = redis_master(nodes)
    assert after != before and f"Master {from_master} -> {ADDRESSES[after]}:6379" in out
    again = playbook(project_dir, inventory, "playbooks/redis-failover.yml", "-e", f"from_master={from_master}")
    assert "(nothing to do)" in again and redis_master(nodes) == after
    refused = playbook(project_dir, inventory, "playbooks/redis-failover.yml", "-e",
                       f"from_master={ADDRESSES[after]}", check=False)
    assert "is not host:port" in refused and redis_master(nodes) == after


def test_switchover_killed_while_pgbouncer_is_paused_is_cleared_by_the_next_run(project_dir, inventory, nodes, lbs):
    node = nodes["pg1"]
    candidate = next(m["name"] for m in patroni_cluster(node)["members"] if m["role"] == "sync_standby")
    run = playbook_process(project_dir, inventory, "playbooks/switchover.yml", "-e", f"candidate={candidate}")
    try:
        # Kill the run (ansible-playbook and the module's process) while PgBouncer holds the clients.
        wait_for(lambda: run.poll() is None and any(paused_databases(lb) for lb in lbs.values()), timeout=120,
                 interval=0.1, what="switchover.yml to PAUSE PgBouncer")
        # Ansible's workers start sessions of their own: kill the whole process tree, module included.
        kill_tree(run.pid)
        run.wait(30)
        left = {name: paused_databases(lb) for name, lb in lbs.items()}
        assert any(left.values()), "nothing was left paused: the kill came too late to test anything"
        # The switchover request may have reached Patroni before the kill: it goes on without the
        # module. Wait until the cluster is whole and stays so (no switchover still under way).
        wait_for_steady(lambda: patroni_whole(node), seconds=6, timeout=120,
                        what="Patroni whole and steady after the interrupted switchover")
        # The current leader as candidate: the next run has nothing to move, only the pause to clear.
        out = playbook(project_dir, inventory, "playbooks/switchover.yml", "-e", f"candidate={leader_name(node)}")
        assert {name: paused_databases(lb) for name, lb in lbs.items()} == {name: [] for name in LB_HOSTS}
        resumed = re.search(r"left paused by an interrupted run:\s+(\S.*)", out)
        assert resumed and resumed.group(1).startswith("["), out[-3000:]  # a list of lb/database, not 'none'
        assert all(ADDRESSES[name] in out for name in LB_HOSTS if left[name]), out[-3000:]
        assert "Nothing to do" in out, out[-3000:]
    finally:
        if run.poll() is None:
            kill_tree(run.pid)
        for lb in lbs.values():
            if paused_databases(lb):
                pgbouncer_admin(lb, "RESUME rtmx")


def test_scheduled_switchover_happens_at_its_time_not_before(project_dir, inventory, nodes):
    node = nodes["pg1"]
    before = leader_name(node)
    candidate = next(m["name"] for m in patroni_cluster(node)["members"] if m["role"] == "sync_standby")
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=25)
    try:
        out = playbook(project_dir, inventory, "playbooks/switchover.yml", "-e", f"candidate={candidate}",
                       "-e", f"switchover_scheduled_at={at.isoformat(timespec='seconds')}")
        assert "Scheduled:" in out, out[-3000:]
        scheduled = json.loads(node.check_output(
            f"curl -sf http://{ADDRESSES['pg1']}:8008/cluster")).get("scheduled_switchover")
        assert scheduled and scheduled.get("to") == candidate, scheduled
        assert datetime.datetime.now(datetime.UTC) < at and leader_name(node) == before
        wait_for(lambda: leader_name(node) == candidate, timeout=90, what=f"the scheduled switchover to {candidate}")
        assert datetime.datetime.now(datetime.UTC) >= at, "the switchover happened before its time"
    finally:
        # A schedule left pending (the test failed before its time) would move the leader under a later test.
        node.run("patronictl -c /etc/patroni/config.yml flush rtmx switchover --force")
    playbook(project_dir, inventory, "playbooks/verify.yml", "-e", "rtmx_ha_verify_wait=90")
