"""site.yml refuses a bad inventory before any host is changed.

Runs the real site.yml from the controller against this scenario's
containers with deliberately broken inventories.
"""

import json
import os
import re
import subprocess
import sys

import pytest

testinfra_hosts = ["local://"]

NODES = {"pg1": 11, "pg2": 12, "pg3": 13, "lb1": 31, "lb2": 32}


def _inventory(groups: dict[str, list[str]]) -> str:
    lines = ["all:", "  vars:", "    ansible_connection: community.docker.docker",
             "    ansible_python_interpreter: /usr/bin/python3", "    rtmx_vip: 198.18.1.100",
             "    rtmx_cluster_networks: [198.18.1.0/24]", "  children:"]
    for group, members in groups.items():
        lines.append(f"    {group}:")
        lines.append("      hosts:" if members else "      hosts: {}")
        for member in members:
            lines.append(f"        {member}:")
            lines.append(f"          rtmx_address: 198.18.1.{NODES[member]}")
    return "\n".join(lines) + "\n"


def _run_site(project_dir, tmp_path, inventory_text, extra_vars=None):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(inventory_text)
    env = dict(os.environ, ANSIBLE_CONFIG=str(project_dir / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=str(project_dir / ".collections"))
    ansible_playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    extra = ["-e", json.dumps(extra_vars)] if extra_vars else []
    result = subprocess.run([ansible_playbook, "-i", str(inventory), str(project_dir / "playbooks" / "site.yml"), *extra],
                            env=env, cwd=project_dir, capture_output=True, text=True, timeout=600)
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def _assert_nothing_changed(output: str):
    assert "PLAY RECAP" in output, output
    recap = output.split("PLAY RECAP", 1)[1]
    changed = re.findall(r"changed=(\d+)", recap)
    assert changed and all(c == "0" for c in changed), recap
    assert "Common | base system" not in output, "site.yml went past preflight"


VALID = {"etcd": ["pg1", "pg2", "pg3"], "postgres": ["pg1", "pg2", "pg3"], "redis": ["pg1", "pg2", "pg3"],
         "redis_sentinel": ["pg1", "pg2", "pg3"], "sync_server": ["lb1"], "lb": ["lb1", "lb2"]}


@pytest.mark.parametrize(
    "groups, messages",
    [
        pytest.param(dict(VALID, etcd=["pg1", "pg2"]),
                     ["group 'etcd' has 2 hosts (pg1, pg2)", "It needs an odd number (3 or 5)"], id="even-etcd"),
        pytest.param({k: v for k, v in VALID.items() if k != "postgres"},
                     ["group(s) postgres missing or empty"], id="no-postgres-group"),
        pytest.param({k: v for k, v in VALID.items() if k != "lb"},
                     ["group(s) lb missing or empty"], id="no-lb-group"),
        pytest.param(dict(VALID, redis_sentinel=["pg1", "pg2", "pg3", "lb1"]),
                     ["group 'redis_sentinel' has 4 hosts"], id="even-sentinels"),
    ],
)
def test_bad_inventory_stops_site_before_any_change(project_dir, tmp_path, groups, messages):
    rc, output = _run_site(project_dir, tmp_path, _inventory(groups))
    assert rc != 0, output
    for message in messages:
        assert message in output, output
    _assert_nothing_changed(output)


def test_duplicate_addresses_are_refused(project_dir, tmp_path):
    rc, output = _run_site(project_dir, tmp_path, _inventory(VALID).replace("198.18.1.31", "198.18.1.11"))
    assert rc != 0, output
    assert "several hosts share one rtmx_address" in output, output
    _assert_nothing_changed(output)


@pytest.mark.parametrize(
    "extra_vars, message",
    [
        pytest.param({"patroni_ttl": 20, "patroni_loop_wait": 10, "patroni_retry_timeout": 10},
                     "loop_wait (10) + 2 * retry_timeout (10) = 30 must be <= ttl (20)", id="patroni-timing"),
        pytest.param({"patroni_primary_start_timeout": 300},
                     "must stay under the 60 s failover target", id="patroni-primary-start-timeout"),
        pytest.param({"rtmx_vip": "10.99.0.100"},
                     "the VIP 10.99.0.100 must be a free address inside this lb's network 198.18.1.0/24", id="vip-outside"),
        pytest.param({"redis_sentinel_quorum": 4},
                     "redis_sentinel_quorum (4) must be between 1 and the number of Sentinels (3)", id="quorum-too-large"),
    ],
)
def test_unsafe_settings_stop_site_before_any_change(project_dir, tmp_path, extra_vars, message):
    rc, output = _run_site(project_dir, tmp_path, _inventory(VALID), extra_vars)
    assert rc != 0, output
    assert message in output, output
    _assert_nothing_changed(output)
