"""Redis with Sentinel: one master, two replicas, Sentinels in agreement."""

from conftest import ADDRESSES, redis_cli, redis_master, role_default

testinfra_hosts = ["pg1"]


def test_one_master_and_two_online_replicas(nodes):
    master = redis_master(nodes)
    info = redis_cli(nodes[master], "INFO", "replication")
    assert "connected_slaves:2" in info
    assert info.count("state=online") == 2
    for name, node in nodes.items():
        if name != master:
            replica = redis_cli(node, "INFO", "replication")
            assert "role:slave" in replica
            assert f"master_host:{ADDRESSES[master]}" in replica
            assert "master_link_status:up" in replica


def test_every_sentinel_names_the_same_master(nodes):
    master = redis_master(nodes)
    for node in nodes.values():
        answer = redis_cli(node, "SENTINEL", "get-master-addr-by-name", "rtmx", sentinel=True).split()
        assert answer == [ADDRESSES[master], "6379"]


def test_sentinel_ckquorum_is_ok(nodes):
    for node in nodes.values():
        assert redis_cli(node, "SENTINEL", "CKQUORUM", "rtmx", sentinel=True).startswith("OK 3 usable Sentinels")


def test_every_sentinel_runs_the_configured_timings(nodes):
    for node in nodes.values():
        fields = redis_cli(node, "SENTINEL", "MASTER", "rtmx", sentinel=True).splitlines()
        settings = dict(zip(fields[::2], fields[1::2]))
        assert int(settings["down-after-milliseconds"]) == role_default("redis_sentinel", "redis_sentinel_down_after_ms")
        assert int(settings["failover-timeout"]) == role_default("redis_sentinel", "redis_sentinel_failover_timeout_ms")
        assert settings["quorum"] == str(len(nodes) // 2 + 1)


def test_bounded_loss_and_persistence_settings(nodes):
    for node in nodes.values():
        assert int(redis_cli(node, "CONFIG", "GET", "min-replicas-to-write").splitlines()[1]) == role_default(
            "redis", "redis_min_replicas_to_write")
        assert int(redis_cli(node, "CONFIG", "GET", "min-replicas-max-lag").splitlines()[1]) == role_default(
            "redis", "redis_min_replicas_max_lag")
        assert redis_cli(node, "CONFIG", "GET", "appendonly").splitlines()[1] == "yes"
        # Bounded memory that never evicts acknowledged state.
        runtime = role_default("redis", "redis_runtime_settings")
        for setting in ("maxmemory", "maxmemory-policy"):
            assert redis_cli(node, "CONFIG", "GET", setting).splitlines()[1] == runtime[setting], setting
        assert runtime["maxmemory"] != "0" and runtime["maxmemory-policy"] == "noeviction"


def test_clients_without_the_password_are_refused(nodes):
    for name, node in nodes.items():
        out = node.run(f"redis-cli -h {ADDRESSES[name]} PING")
        assert "NOAUTH" in out.stdout + out.stderr
        out = node.run(f"redis-cli -h {ADDRESSES[name]} -p 26379 PING")
        assert "NOAUTH" in out.stdout + out.stderr
