"""etcd: the DCS Patroni relies on."""

import json

testinfra_hosts = ["etcd"]

ENDPOINTS = "http://198.18.1.11:2379,http://198.18.1.12:2379,http://198.18.1.13:2379"


def test_etcd_reports_three_healthy_members(host):
    out = host.check_output(f"ETCDCTL_API=3 etcdctl --endpoints={ENDPOINTS} endpoint health --cluster -w json")
    health = json.loads(out)
    assert len(health) == 3
    assert all(member["health"] for member in health), health


def test_members_are_the_inventory_hosts(host):
    out = host.check_output("ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member list -w json")
    assert sorted(m["name"] for m in json.loads(out)["members"]) == ["pg1", "pg2", "pg3"]


def test_etcd_listens_only_on_cluster_address_and_loopback(host):
    address = host.ansible.get_variables()["rtmx_address"]
    listening = {str(s) for s in host.socket.get_listening_sockets() if s.endswith((":2379", ":2380"))}
    assert listening == {f"tcp://{address}:2379", "tcp://127.0.0.1:2379", f"tcp://{address}:2380"}, listening
