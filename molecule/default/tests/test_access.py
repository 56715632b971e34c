"""Access tier: VIP -> PgBouncer -> HAProxy -> current primary; Redis and
read-only routing; the VIP follows a healthy HAProxy without flapping."""

import json
import os
import time
import uuid

import psycopg
import pytest
import redis

from conftest import (
    ADDRESSES,
    VIP,
    changed_per_host,
    leader_name,
    patroni_cluster,
    redis_cli,
    redis_master,
    run_site,
    secret,
    vip_holders,
    wait_for,
)

testinfra_hosts = ["lb1"]

VIP_FAILOVER_MAX_S = 15  # writes through the VIP again after HAProxy stops on the holder


def pg_connect(dbname: str = "rtmx", timeout: int = 3):
    # PgBouncer 1.18 in transaction pooling: no server-side prepared statements.
    return psycopg.connect(host=VIP, port=6432, dbname=dbname, user="rtmx", password=secret("postgres_rtmx_password"),
                           connect_timeout=timeout, prepare_threshold=None, autocommit=True)


def write_marker() -> str:
    """Commit one row through the VIP; return the address of the server that took it."""
    with pg_connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS rtmx_ha_access (marker text PRIMARY KEY, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO rtmx_ha_access (marker) VALUES (%s)", (str(uuid.uuid4()),))
        return str(conn.execute("SELECT inet_server_addr()").fetchone()[0])


def test_write_and_read_back_through_the_vip():
    marker = str(uuid.uuid4())
    with pg_connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS rtmx_ha_access (marker text PRIMARY KEY, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO rtmx_ha_access (marker) VALUES (%s)", (marker,))
        assert conn.execute("SELECT count(*) FROM rtmx_ha_access WHERE marker = %s", (marker,)).fetchone()[0] == 1
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_read_only_database_answers_from_a_replica():
    with pg_connect("rtmx_ro") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_redis_through_the_vip_needs_the_password():
    client = redis.Redis(host=VIP, port=6379, password=secret("redis_password"), socket_timeout=3)
    key = f"rtmx-ha-test-{uuid.uuid4()}"
    assert client.set(key, "value", ex=60)
    assert client.get(key) == b"value"
    assert client.info("replication")["role"] == "master"
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=VIP, port=6379, password="wrong", socket_timeout=3).ping()


def test_exactly_one_lb_holds_the_vip(lbs):
    assert len(vip_holders(lbs)) == 1


def test_stats_page_needs_authentication(lbs):
    url = f"http://{ADDRESSES['lb1']}:7000/"
    assert lbs["lb1"].check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}") == "401"
    auth = f"admin:{secret('haproxy_stats_password')}"
    assert lbs["lb1"].check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -u {auth} {url}") == "200"


def test_prometheus_metrics_are_exported(lbs):
    metrics = lbs["lb1"].check_output(f"curl -sf http://{ADDRESSES['lb1']}:8404/metrics")
    assert "haproxy_backend_active_servers" in metrics


def _pgbouncer_admin(node, command: str) -> str:
    out = node.run(f"PGPASSWORD={secret('pgbouncer_admin_password')} psql -X -A -F, -t -h 127.0.0.1 -p 6432 "
                   f"-U pgbouncer_admin pgbouncer -c '{command}'")
    assert out.rc == 0, out.stderr
    return out.stdout


def _paused(node, database: str = "rtmx") -> bool:
    """SHOW DATABASES' `paused` column (1 while PAUSEd) for `database`."""
    header = node.check_output(f"PGPASSWORD={secret('pgbouncer_admin_password')} psql -X -A -F, -h 127.0.0.1 "
                               "-p 6432 -U pgbouncer_admin pgbouncer -c 'SHOW DATABASES'").splitlines()[0].split(",")
    rows = [row.split(",") for row in _pgbouncer_admin(node, "SHOW DATABASES").splitlines() if row]
    (row,) = [r for r in rows if r[0] == database]
    return row[header.index("paused")] == "1"


def test_pgbouncer_admin_can_pause_and_resume(lbs):
    for node in lbs.values():
        assert not _paused(node)
        try:
            _pgbouncer_admin(node, "PAUSE rtmx")
            assert _paused(node)
        finally:
            _pgbouncer_admin(node, "RESUME rtmx")
        assert not _paused(node)


def test_pgbouncer_is_restarted_when_it_dies(lbs):
    node = lbs["lb2"]
    before = node.check_output("systemctl show -p MainPID --value pgbouncer")
    node.check_output("systemctl kill --signal=SIGKILL pgbouncer")

    def restarted():
        pid = node.check_output("systemctl show -p MainPID --value pgbouncer")
        return pid not in ("0", before) and node.run("pg_isready -q -h 127.0.0.1 -p 6432").rc == 0

    wait_for(restarted, timeout=30, what="systemd to restart PgBouncer (Restart=always)")
    assert node.check_output("systemctl show -p Restart --value pgbouncer") == "always"


def test_writes_follow_a_patroni_switchover_without_haproxy_changes(nodes, lbs):
    config_before = {name: node.file("/etc/haproxy/haproxy.cfg").sha256sum for name, node in lbs.items()}
    node = nodes["pg1"]
    old = leader_name(node)
    candidate = next(m["name"] for m in patroni_cluster(node)["members"] if m["role"] == "sync_standby")
    auth = f"patroni:{secret('patroni_restapi_password')}"
    body = json.dumps({"leader": old, "candidate": candidate})
    assert node.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -u {auth} -X POST -d '{body}' "
                             f"http://{ADDRESSES['pg1']}:8008/switchover") == "200"
    started = time.monotonic()

    def lands_on_new_primary():
        try:
            return write_marker() == ADDRESSES[candidate]
        except psycopg.Error:
            return False

    wait_for(lands_on_new_primary, timeout=60, interval=0.5, what=f"writes through the VIP on {candidate}")
    print(f"writes through the VIP reached {candidate} {time.monotonic() - started:.1f} s after the switchover")
    assert {name: node.file("/etc/haproxy/haproxy.cfg").sha256sum for name, node in lbs.items()} == config_before


def _measure_vip_failover(lbs) -> dict:
    holder = vip_holders(lbs)[0]
    other = next(name for name in lbs if name != holder)
    write_marker()
    lbs[holder].check_output("systemctl stop haproxy")
    stopped = time.monotonic()

    def writes_again():
        try:
            return write_marker()
        except psycopg.Error:
            return None

    try:
        wait_for(writes_again, timeout=60, interval=0.2, what="writes through the moved VIP")
        seconds = time.monotonic() - stopped
        assert vip_holders(lbs) == [other]
    finally:
        lbs[holder].check_output("systemctl start haproxy")
    wait_for(lambda: lbs[holder].run("systemctl is-active -q haproxy").rc == 0, timeout=30, what="HAProxy back")
    # Observe several VRRP adverts (advert_int 1 s): a flapping VIP would move back now.
    watched_until = time.monotonic() + 8
    while time.monotonic() < watched_until:
        assert vip_holders(lbs) == [other], "the VIP moved back when HAProxy came back"
        time.sleep(0.5)
    return {"from": holder, "to": other, "write_unavailable_s": round(seconds, 2)}


def test_vip_moves_when_haproxy_stops_and_does_not_flap_back(lbs):
    runs = [_measure_vip_failover(lbs) for _ in range(3)]
    report_dir = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."), "reports")
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "vip-failover.json"), "w", encoding="utf-8") as handle:
        json.dump(runs, handle, indent=2)
    print("VIP failover (HAProxy stopped on the holder):", runs)
    # Goal 5 s (keepalived advert_int 1 s, HAProxy check); the margin is for a loaded CI machine.
    assert all(run["write_unavailable_s"] <= VIP_FAILOVER_MAX_S for run in runs), runs


def test_haproxy_setting_change_reloads_never_restarts(lbs, project_dir, inventory):
    pids = {name: node.check_output("systemctl show -p MainPID --value haproxy") for name, node in lbs.items()}
    try:
        output = run_site(project_dir, inventory, "--limit", "lb", "--tags", "haproxy_configure",
                          "-e", "haproxy_check_inter=1500")
        assert all(changed_per_host(output)[name] >= 1 for name in lbs)
        assert "RUNNING HANDLER [rtmx.ha.haproxy : Reload HAProxy]" in output
        for name, node in lbs.items():
            assert "inter 1500ms" in node.check_output("grep default-server /etc/haproxy/haproxy.cfg | head -1")
    finally:
        output = run_site(project_dir, inventory, "--limit", "lb", "--tags", "haproxy_configure")
    assert {name: node.check_output("systemctl show -p MainPID --value haproxy") for name, node in lbs.items()} == pids


def test_a_node_claiming_master_without_sentinel_agreement_gets_no_traffic(nodes, lbs):
    master = redis_master(nodes)
    rogue = next(name for name in nodes if name != master)
    auth = f"admin:{secret('haproxy_stats_password')}"

    def redis_status():
        csv = lbs["lb1"].check_output(f"curl -s -u {auth} 'http://{ADDRESSES['lb1']}:7000/;csv'")
        return {row.split(",")[1]: row.split(",")[17] for row in csv.splitlines() if row.startswith("redis,pg")}

    assert redis_cli(nodes[rogue], "REPLICAOF", "NO", "ONE") == "OK"
    try:
        for _ in range(6):
            time.sleep(1)
            assert redis_status()[rogue] != "UP", "HAProxy routes to a master the Sentinels do not name"
        assert redis_status()[master] == "UP"
    finally:
        # Sentinel turns the rogue node back into a replica by itself.
        wait_for(lambda: "role:slave" in redis_cli(nodes[rogue], "INFO", "replication"), timeout=60,
                 what=f"Sentinel to reconfigure {rogue} as a replica")
