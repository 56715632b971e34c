"""sentinel_failover's main() against a fake Redis/Sentinel: from_master validation and check mode."""

import copy

import pytest

from ansible_collections.rtmx.ha.plugins.module_utils import redis_client
from ansible_collections.rtmx.ha.plugins.modules import sentinel_failover

NODES = ("198.18.0.11", "198.18.0.12", "198.18.0.13")
SENTINELS = ["%s:26379" % host for host in NODES]


class Exited(SystemExit):
    """What AnsibleModule.exit_json/fail_json end with (sys.exit), carrying the result."""

    def __init__(self, failed, result):
        super().__init__(1 if failed else 0)
        self.failed = failed
        self.result = result


class FakeRedis:
    """Three Redis nodes and their Sentinels as one world: SENTINEL FAILOVER moves the master to
    the next node, which the old master then replicates from. `sent` holds every command."""

    def __init__(self):
        self.master = "198.18.0.11:6379"
        self.sent = []
        self.priorities = {"%s:6379" % host: 100 for host in NODES}
        self.refuse_failover = None

    def connection(self, host, port, password=None, timeout=3, username=None):
        return FakeConnection(self, "%s:%s" % (host, port))

    def replicas(self):
        return ["%s:6379" % host for host in NODES if "%s:6379" % host != self.master]

    def answer(self, address, args):
        self.sent.append((address, args))
        if args[:2] == ("SENTINEL", "GET-MASTER-ADDR-BY-NAME"):
            return self.master.split(":")
        if args[:2] == ("SENTINEL", "MASTER"):
            return ["name", "rtmx", "flags", "master", "quorum", "2", "num-other-sentinels", "2", "config-epoch", "1"]
        if args[:2] == ("SENTINEL", "REPLICAS"):
            return [["ip", r.split(":")[0], "port", "6379", "flags", "slave", "master-link-status", "ok",
                     "slave-repl-offset", "4242", "slave-priority", str(self.priorities[r])] for r in self.replicas()]
        if args[:2] == ("SENTINEL", "CKQUORUM"):
            return "OK 3 usable Sentinels. Quorum and failover authorization can be reached"
        if args[:2] == ("SENTINEL", "FAILOVER"):
            if self.refuse_failover:
                raise redis_client.RedisReplyError(self.refuse_failover)
            # Sentinel's choice: the lowest replica-priority above 0, then the first.
            self.master = min((r for r in self.replicas() if self.priorities[r] > 0), key=self.priorities.get)
            return "OK"
        if args == ("CONFIG", "GET", "replica-priority"):
            return ["replica-priority", str(self.priorities[address])]
        if args[:3] == ("CONFIG", "SET", "replica-priority"):
            self.priorities[address] = int(args[3])
            return "OK"
        if args == ("INFO", "replication"):
            if address == self.master:
                return "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmaster_repl_offset:4242\r\n"
            host, port = self.master.split(":")
            return "# Replication\r\nrole:slave\r\nmaster_host:%s\r\nmaster_port:%s\r\nmaster_link_status:up\r\n" % (
                host, port)
        raise AssertionError("unexpected command %r to %s" % (args, address))


class FakeConnection:
    def __init__(self, world, address):
        self.world, self.address = world, address

    def command(self, *args):
        return self.world.answer(self.address, tuple(str(a) for a in args))

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def redis(monkeypatch):
    world = FakeRedis()
    monkeypatch.setattr(redis_client, "RedisConnection", world.connection)
    monkeypatch.setattr(sentinel_failover, "RedisConnection", world.connection)
    return world


def run(monkeypatch, check_mode=False, **params):
    """main() with a fake AnsibleModule that takes the module's own argument_spec defaults."""

    class FakeAnsibleModule:
        def __init__(self, argument_spec, supports_check_mode=False):
            assert supports_check_mode
            self.params = {name: copy.deepcopy(spec.get("default")) for name, spec in argument_spec.items()}
            self.params.update(sentinels=list(SENTINELS), sentinel_password="secret", redis_password="secret",
                               failover_timeout=2)
            self.params.update(params)
            self.check_mode = check_mode

        def exit_json(self, **result):
            raise Exited(False, result)

        def fail_json(self, **result):
            raise Exited(True, result)

    monkeypatch.setattr(sentinel_failover, "AnsibleModule", FakeAnsibleModule)
    with pytest.raises(Exited) as exited:
        sentinel_failover.main()
    return exited.value.failed, exited.value.result


def failovers(world):
    return [sent for sent in world.sent if sent[1][:2] == ("SENTINEL", "FAILOVER")]


@pytest.mark.parametrize("from_master", ["198.18.0.11", "198.18.0.11:", "198.18.0.11:redis", "[::1]", "198.18.0.11:0"])
def test_from_master_without_a_port_is_refused_before_anything(monkeypatch, redis, from_master):
    failed, result = run(monkeypatch, from_master=from_master)
    assert failed
    assert "from_master %r is not host:port" % from_master in result["msg"]
    assert "10.0.0.11:6379" in result["msg"] and "nothing was changed" in result["msg"]
    assert redis.sent == []


def test_from_master_that_is_not_the_master_is_nothing_to_do(monkeypatch, redis):
    failed, result = run(monkeypatch, from_master="198.18.0.12:6379")
    assert not failed, result["msg"]
    assert not result["changed"] and result["master"] == "198.18.0.11:6379"
    assert "nothing to do" in result["msg"]
    assert failovers(redis) == []


def test_check_mode_sends_no_failover(monkeypatch, redis):
    failed, result = run(monkeypatch, check_mode=True, from_master="198.18.0.11:6379")
    assert not failed, result["msg"]
    assert result["changed"] and result["msg"] == "would fail over away from 198.18.0.11:6379"
    assert result["master"] == result["previous_master"] == "198.18.0.11:6379"
    assert failovers(redis) == []
    assert redis.master == "198.18.0.11:6379"
    assert any(args[:2] == ("SENTINEL", "GET-MASTER-ADDR-BY-NAME") for dummy, args in redis.sent)


def test_failover_is_sent_once_and_followed(monkeypatch, redis):
    """The same fake outside check mode: proves the check-mode test would see a FAILOVER."""
    failed, result = run(monkeypatch, from_master="[198.18.0.11]:6379")
    assert not failed, result["msg"]
    assert result["changed"] and (result["previous_master"], result["master"]) == ("198.18.0.11:6379",
                                                                                  "198.18.0.12:6379")
    assert len(failovers(redis)) == 1


def config_sets(world):
    return [sent for sent in world.sent if sent[1][:2] == ("CONFIG", "SET")]


def test_to_replica_promotes_that_replica_and_restores_priorities(monkeypatch, redis):
    # Without a preference the fake (like Sentinel on equal priorities) would promote .12.
    failed, result = run(monkeypatch, to_replica="198.18.0.13:6379")
    assert not failed, result["msg"]
    assert result["changed"] and result["master"] == "198.18.0.13:6379"
    assert len(failovers(redis)) == 1
    assert redis.priorities == {"%s:6379" % host: 100 for host in NODES}
    assert ("198.18.0.13:6379", ("CONFIG", "SET", "replica-priority", "1")) in config_sets(redis)


def test_to_replica_keeps_other_preferred_replicas_above_it(monkeypatch, redis):
    redis.priorities["198.18.0.12:6379"] = 1
    failed, result = run(monkeypatch, to_replica="198.18.0.13:6379")
    assert not failed, result["msg"]
    assert result["master"] == "198.18.0.13:6379"
    assert redis.priorities["198.18.0.12:6379"] == 1 and redis.priorities["198.18.0.13:6379"] == 100


def test_to_replica_that_is_the_master_is_nothing_to_do(monkeypatch, redis):
    failed, result = run(monkeypatch, to_replica="198.18.0.11:6379")
    assert not failed and not result["changed"], result["msg"]
    assert "master already" in result["msg"]
    assert failovers(redis) == [] and config_sets(redis) == []


@pytest.mark.parametrize("to_replica", ["198.18.0.99:6379", "198.18.0.13"])
def test_to_replica_that_is_not_a_healthy_replica_is_refused_before_anything(monkeypatch, redis, to_replica):
    failed, result = run(monkeypatch, to_replica=to_replica)
    assert failed and "to_replica" in result["msg"]
    assert failovers(redis) == [] and config_sets(redis) == []


def test_priorities_are_restored_when_the_failover_is_refused(monkeypatch, redis):
    redis.refuse_failover = "INPROG Failover already in progress"
    failed, result = run(monkeypatch, to_replica="198.18.0.13:6379")
    assert failed and "refused the failover" in result["msg"]
    assert redis.master == "198.18.0.11:6379"
    assert redis.priorities == {"%s:6379" % host: 100 for host in NODES}
