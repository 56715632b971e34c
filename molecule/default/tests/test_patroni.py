"""PostgreSQL 15 under Patroni: one leader, streaming replicas, a sync standby."""

import json
import os
import uuid

import pytest

from conftest import ADDRESSES, leader_name, patroni_cluster, psql, role_default, wait_for

testinfra_hosts = ["pg1"]


@pytest.fixture()
def leader(nodes):
    return leader_name(nodes["pg1"])


def test_exactly_one_leader(nodes):
    for node in nodes.values():
        members = patroni_cluster(node)["members"]
        assert sorted(m["name"] for m in members) == ["pg1", "pg2", "pg3"]
        assert [m["role"] for m in members].count("leader") == 1


def test_replicas_streaming_on_the_leaders_timeline(nodes, leader):
    members = {m["name"]: m for m in patroni_cluster(nodes["pg1"])["members"]}
    rows = psql(nodes[leader], "SELECT application_name || ':' || state FROM pg_stat_replication ORDER BY 1")
    replicas = sorted(name for name in members if name != leader)
    assert rows.splitlines() == [f"{name}:streaming" for name in replicas]
    for name in replicas:
        assert members[name]["state"] == "running"
        assert members[name]["timeline"] == members[leader]["timeline"]


def test_one_replica_is_the_sync_standby(nodes, leader):
    sync = psql(nodes[leader], "SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'")
    assert len(sync.splitlines()) == 1
    members = patroni_cluster(nodes["pg1"])["members"]
    assert [m["name"] for m in members if m["role"] == "sync_standby"] == [sync]


def test_row_written_on_leader_is_read_on_both_replicas(nodes, leader):
    marker = str(uuid.uuid4())
    psql(nodes[leader], "CREATE TABLE IF NOT EXISTS replication_marker (marker text PRIMARY KEY)", db="rtmx")
    psql(nodes[leader], f"INSERT INTO replication_marker VALUES ('{marker}')", db="rtmx")
    for name, node in nodes.items():
        if name == leader:
            continue
        wait_for(lambda node=node: psql(node, f"SELECT marker FROM replication_marker WHERE marker = '{marker}'",
                                        db="rtmx") == marker, timeout=30, what=f"row on {name}")
        assert psql(node, "SELECT pg_is_in_recovery()") == "t"


def test_cluster_settings_in_the_dcs(nodes):
    config = json.loads(nodes["pg1"].check_output(f"curl -sf http://{ADDRESSES['pg1']}:8008/config"))
    for key in ("ttl", "loop_wait", "retry_timeout"):
        assert config[key] == role_default("patroni", f"patroni_{key}"), key
    assert config["loop_wait"] + 2 * config["retry_timeout"] <= config["ttl"]
    assert config["synchronous_mode"] is True
    assert config["failsafe_mode"] is True
    assert config["postgresql"]["use_pg_rewind"] is True
    assert config["postgresql"]["parameters"]["password_encryption"] == "scram-sha-256"


def test_rest_api_refuses_changes_without_credentials(nodes):
    code = nodes["pg1"].check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' -X PATCH -d '{{\"ttl\": 30}}' http://{ADDRESSES['pg1']}:8008/config")
    assert code == "401"


def test_application_role_owns_its_database(nodes, leader):
    owner = psql(nodes[leader], "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'rtmx'")
    assert owner == "rtmx"
    flags = psql(nodes[leader], "SELECT rolsuper::text || rolcreaterole::text FROM pg_roles WHERE rolname = 'rtmx'")
    assert flags == "falsefalse"


def test_application_login_needs_its_scram_password(nodes, leader):
    secrets = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "secrets")
    with open(os.path.join(secrets, "postgres_rtmx_password"), encoding="utf-8") as handle:
        password = handle.read().split()[0]
    node = nodes["pg1"]
    good = node.run(f"PGPASSWORD={password} psql -X -Atq -h {ADDRESSES[leader]} -U rtmx -d rtmx -c 'SELECT 1'")
    assert good.rc == 0 and good.stdout.strip() == "1", good.stderr
    bad = node.run(f"PGPASSWORD=wrong-password psql -X -Atq -h {ADDRESSES[leader]} -U rtmx -d rtmx -c 'SELECT 1'")
    assert bad.rc != 0 and "password authentication failed" in bad.stderr
    stored = psql(nodes[leader], "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'rtmx'")
    assert stored == "SCRAM-SHA-256$"


def test_pgbouncer_auth_function_hides_superusers(nodes, leader):
    as_auth = "SET ROLE pgbouncer_auth; SELECT count(*) FROM pgbouncer.get_auth('{}')"
    assert psql(nodes[leader], as_auth.format("rtmx"), db="rtmx") == "1"
    assert psql(nodes[leader], as_auth.format("postgres"), db="rtmx") == "0"
    denied = nodes[leader].run("runuser -u postgres -- psql -X -Atq -d rtmx -c %s",
                               "SET ROLE rtmx; SELECT * FROM pgbouncer.get_auth('rtmx')")
    assert denied.rc != 0 and "permission denied" in denied.stderr


def test_debian_default_cluster_is_gone(nodes):
    for node in nodes.values():
        assert not node.file("/etc/postgresql/15/main").exists
        assert node.service("patroni").is_enabled
        assert not node.service("postgresql").is_running
