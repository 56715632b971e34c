"""The custom modules against the real stack, and playbooks/switchover.yml.

Runs after test_site_rerun_after_failover (file name order): it moves the
Patroni leader and the Redis master, and later tests do not depend on which
node leads.
"""

import re
import threading
import time

import psycopg

from conftest import (
    VIP,
    changed_per_host,
    leader_name,
    patroni_cluster,
    playbook,
    run_module,
    run_modules,
    secret,
    wait_for,
)

testinfra_hosts = ["pg1"]

PATRONI = {"patroni_urls": "{{ rtmx_ha.patroni_urls }}", "patroni_password": "{{ rtmx_ha.patroni_password }}"}
SENTINEL = {"sentinels": "{{ rtmx_ha.sentinels }}", "sentinel_password": "{{ rtmx_ha.sentinel_password }}",
            "redis_password": "{{ rtmx_ha.redis_password }}"}


def verify_args(**extra):
    args = {key: "{{ rtmx_ha.%s }}" % key for key in (
        "patroni_urls", "patroni_password", "pg_host", "pg_password", "sentinels", "sentinel_password",
        "redis_password", "redis_host", "haproxy_stats_urls", "haproxy_stats_password", "sync_health_urls",
        "etcd_urls", "vip_holders")}
    args.update(extra)
    return args


def switchover(project_dir, inventory, *extra):
    out = playbook(project_dir, inventory, "playbooks/switchover.yml", *extra)
    return out, changed_per_host(out)["localhost"]


WRITE_WAIT_MAX_S = 20  # the longest a client may wait on a paused PgBouncer (pause + switch + resume)


class Writer(threading.Thread):
    """Writes through VIP:6432 continuously; records failures and the longest wait."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []
        self.longest = 0.0

    def run(self):
        conn = None
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(host=VIP, port=6432, dbname="rtmx", user="rtmx",
                                           password=secret("postgres_rtmx_password"), connect_timeout=5,
                                           autocommit=True, prepare_threshold=None)
                    conn.execute("CREATE TABLE IF NOT EXISTS switchover_probe (id bigserial PRIMARY KEY, at timestamptz)")
                conn.execute("INSERT INTO switchover_probe (at) VALUES (now())")
                self.ok += 1
            except psycopg.Error as error:
                self.failures.append(str(error).strip()[:200])
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            self.longest = max(self.longest, time.monotonic() - start)
            time.sleep(0.02)
        if conn is not None:
            conn.close()


def test_patroni_info_reports_one_leader_and_streaming_replicas(project_dir, inventory, nodes):
    result = run_module(project_dir, inventory, "rtmx.ha.patroni_info", PATRONI)
    assert not result.get("failed"), result.get("msg")
    cluster = result["cluster"]
    assert cluster["leader"] == leader_name(nodes["pg1"])
    assert cluster["synchronous_mode"] and len(cluster["sync_standbys"]) == 1
    replicas = [m for m in cluster["members"] if m["name"] != cluster["leader"]]
    assert len(replicas) == 2 and all(m["streaming"] and m["timeline"] == cluster["timeline"] for m in replicas)


def test_sentinel_info_names_the_master_every_sentinel_agrees_on(project_dir, inventory):
    result = run_module(project_dir, inventory, "rtmx.ha.sentinel_info", SENTINEL)
    redis = result["redis"]
    assert redis["agreement"] and redis["ckquorum_ok"] and redis["problems"] == [], redis["problems"]
    assert [n["address"] for n in redis["nodes"] if n["role"] == "master"] == [redis["master"]]


def test_ha_verify_passes_on_the_healthy_stack(project_dir, inventory):
    result = run_module(project_dir, inventory, "rtmx.ha.ha_verify", verify_args())
    assert result["ok"], result.get("msg")
    assert {c["name"] for c in result["checks"]} == {
        "patroni_leader", "patroni_replicas", "postgres_write", "redis_sentinels", "redis_write", "haproxy_routing",
        "sync_servers", "etcd", "vip"}


def test_ha_verify_lists_every_failed_check(project_dir, inventory):
    result = run_module(project_dir, inventory, "rtmx.ha.ha_verify",
                        verify_args(vip_holders=["lb1", "lb2"], pg_password="wrong-password"))
    assert result["failed"] and set(result["failed_checks"]) == {"vip", "postgres_write"}
    assert "2 lbs hold the VIP: lb1, lb2" in result["msg"] and "postgres_write" in result["msg"]


UNSAFE = [
    ({"candidate": "pg9"}, "candidate 'pg9' is not a member of the cluster; members are: pg1, pg2, pg3"),
    ({"candidate": "{{ __replica }}", "max_lag": -1}, "more than max_lag -1"),
    ({"candidate": "{{ __replica }}", "patroni_password": "wrong"}, "refused the credentials"),
    ({"candidate": "{{ __replica }}", "patroni_urls": ["http://127.0.0.1:1"], "timeout": 1}, "unreachable"),
    ({"candidate": "{{ __replica }}", "pgbouncer_pause": True, "pgbouncer_hosts": "{{ rtmx_ha.pgbouncer_hosts }}",
      "pgbouncer_password": "wrong"}, "PgBouncer admin console at"),
]


def test_unsafe_switchover_is_refused_and_nothing_changes(project_dir, inventory, nodes):
    before = leader_name(nodes["pg1"])
    replica = next(m["name"] for m in patroni_cluster(nodes["pg1"])["members"] if m["name"] != before)
    calls = [("rtmx.ha.patroni_switchover", dict(PATRONI, **{k: (replica if v == "{{ __replica }}" else v)
                                                            for k, v in args.items()}), False) for args, _ in UNSAFE]
    for result, (_, message) in zip(run_modules(project_dir, inventory, calls), UNSAFE):
        assert result["failed"] and message in result["msg"], result["msg"]
        assert not result.get("changed")
    assert leader_name(nodes["pg1"]) == before


def test_switchover_in_check_mode_only_reports(project_dir, inventory, nodes):
    before = leader_name(nodes["pg1"])
    result = run_module(project_dir, inventory, "rtmx.ha.patroni_switchover", PATRONI, check_mode=True)
    assert result["changed"] and result["candidate"] != before and "would switch over" in result["msg"]
    assert leader_name(nodes["pg1"]) == before


def test_switchover_playbook_moves_the_leader_and_back_without_failed_writes(project_dir, inventory, nodes):
    original = leader_name(nodes["pg1"])
    # Not the sync standby: the module first makes it one (synchronous_node_count), then switches.
    target = next(m["name"] for m in patroni_cluster(nodes["pg1"])["members"] if m["role"] == "replica")
    writer = Writer()
    writer.start()
    try:
        wait_for(lambda: writer.ok >= 10, timeout=30, what="the writer to commit through the VIP")
        out, changed = switchover(project_dir, inventory, "-e", f"candidate={target}")
        assert changed >= 1 and leader_name(nodes["pg1"]) == target
        found = re.search(r"Timings \(s\): (\{.*?\})", out, re.S)
        timings = " ".join(found.group(1).split()) if found else "n/a"
        again, changed_again = switchover(project_dir, inventory, "-e", f"candidate={target}")
        assert changed_again == 0, again[-2000:]
        back, changed_back = switchover(project_dir, inventory, "-e", f"candidate={original}")
        assert changed_back >= 1 and leader_name(nodes["pg1"]) == original
        after_back = writer.ok
        wait_for(lambda: writer.ok >= after_back + 10, timeout=30, what="writes after the switch back")
    finally:
        writer.stop.set()
        writer.join(30)
    assert not writer.is_alive(), "the writer hung (a write never returned)"
    print(f"switchover timings {timings}; writes ok={writer.ok} failed={len(writer.failures)} "
          f"longest wait {writer.longest:.2f}s")
    assert writer.failures == [], writer.failures[:5]
    # PgBouncer holds writes during the pause: a client waits, bounded by pgbouncer_pause_timeout + the switch.
    assert writer.longest < WRITE_WAIT_MAX_S, f"a write waited {writer.longest:.1f} s"
    # synchronous_node_count is back to what site.yml set: one sync standby.
    assert len([m for m in patroni_cluster(nodes["pg1"])["members"] if m["role"] == "sync_standby"]) == 1


def test_sentinel_failover_moves_the_master_and_is_idempotent(project_dir, inventory):
    before = run_module(project_dir, inventory, "rtmx.ha.sentinel_info", SENTINEL)["redis"]["master"]
    args = dict(SENTINEL, from_master=before, haproxy_stats_urls="{{ rtmx_ha.haproxy_stats_urls }}",
                haproxy_stats_password="{{ rtmx_ha.haproxy_stats_password }}")
    result = run_module(project_dir, inventory, "rtmx.ha.sentinel_failover", args)
    assert result["changed"] and not result.get("failed"), result.get("msg")
    assert result["master"] != before and result["redis"]["agreement"]
    again = run_module(project_dir, inventory, "rtmx.ha.sentinel_failover", args)
    assert not again["changed"] and not again.get("failed")
    verify = run_module(project_dir, inventory, "rtmx.ha.ha_verify", verify_args(wait_timeout=60))
    assert verify["ok"], verify.get("msg")
