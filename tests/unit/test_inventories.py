"""The shipped inventories have the shape site.yml's preflight demands."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUIRED = ["etcd", "postgres", "redis", "redis_sentinel", "sync_server", "lb"]
ODD = ["etcd", "redis_sentinel"]


def load(inventory: str) -> dict:
    cli = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    out = subprocess.run([cli, "-i", str(ROOT / "inventories" / inventory), "--list"],
                         check=True, capture_output=True, text=True, cwd=ROOT, env=env).stdout
    return json.loads(out)


@pytest.mark.parametrize("inventory", ["lab", "example"])
def test_every_required_group_has_hosts(inventory):
    data = load(inventory)
    for group in REQUIRED:
        assert data.get(group, {}).get("hosts"), f"{inventory}: group {group} is empty"


@pytest.mark.parametrize("inventory", ["lab", "example"])
def test_quorum_groups_are_odd(inventory):
    data = load(inventory)
    for group in ODD:
        assert len(data[group]["hosts"]) % 2 == 1, f"{inventory}: {group} needs an odd host count"


def test_lab_addresses_are_unique_and_inside_the_lab_subnet():
    import ipaddress

    cli = os.path.join(os.path.dirname(sys.executable), "ansible")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    out = subprocess.run([cli, "-i", str(ROOT / "inventories" / "lab"), "all", "-c", "local", "-m",
                          "ansible.builtin.debug", "-a", "msg={{ rtmx_address }},{{ rtmx_vip }},{{ rtmx_lab_subnet }}",
                          "-o"], check=True, capture_output=True, text=True, cwd=ROOT, env=env).stdout
    rows = [line.split('"msg": "')[1].split('"')[0].split(",") for line in out.splitlines() if '"msg"' in line]
    assert len(rows) == 9  # 8 nodes of the stack and mon1
    addresses = [row[0] for row in rows]
    vip, subnet = rows[0][1], ipaddress.ip_network(rows[0][2])
    assert len(set(addresses)) == len(addresses)
    assert vip not in addresses
    for address in addresses + [vip]:
        assert ipaddress.ip_address(address) in subnet
