"""site.yml refuses a bad inventory before any host is changed.

Runs the real site.yml from the controller against this scenario's
containers with deliberately broken inventories.
"""

import concurrent.futures
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


# Every refusal: (inventory, extra vars, messages the output must hold).
CASES = {
    "even-etcd": (_inventory(dict(VALID, etcd=["pg1", "pg2"])), None,
                  ["group 'etcd' has 2 hosts (pg1, pg2)", "It needs an odd number (3 or 5)"]),
    "no-postgres-group": (_inventory({k: v for k, v in VALID.items() if k != "postgres"}), None,
                          ["group(s) postgres missing or empty"]),
    "no-lb-group": (_inventory({k: v for k, v in VALID.items() if k != "lb"}), None, ["group(s) lb missing or empty"]),
    "even-sentinels": (_inventory(dict(VALID, redis_sentinel=["pg1", "pg2", "pg3", "lb1"])), None,
                       ["group 'redis_sentinel' has 4 hosts"]),
    "duplicate-addresses": (_inventory(VALID).replace("198.18.1.31", "198.18.1.11"), None,
                            ["several hosts share one rtmx_address"]),
    "patroni-timing": (_inventory(VALID), {"patroni_ttl": 20, "patroni_loop_wait": 10, "patroni_retry_timeout": 10},
                       ["loop_wait (10) + 2 * retry_timeout (10) = 30 must be <= ttl (20)"]),
    "patroni-primary-start-timeout": (_inventory(VALID), {"patroni_primary_start_timeout": 300},
                                      ["must stay under the 60 s failover target"]),
    "vip-outside": (_inventory(VALID), {"rtmx_vip": "10.99.0.100"},
                    ["the VIP 10.99.0.100 must be a free address inside this lb's network 198.18.1.0/24"]),
    "quorum-too-large": (_inventory(VALID), {"redis_sentinel_quorum": 4},
                         ["redis_sentinel_quorum (4) must be between 1 and the number of Sentinels (3)"]),
    "sync-key-too-short": (_inventory(VALID), {"sync_server_auth_key": "too-short-to-sign-tokens"},
                           ["sync_server_auth_key: give at least one key, each of at least 32 characters"]),
    "backup-on-a-database-host": (_inventory(dict(VALID, backup=["pg1"])), None,
                                  ["pg1 is in both 'backup' and 'postgres'", "Give the repository a host of its own"]),
    "backup-schedule": (_inventory(dict(VALID, backup=["lb2"])), {"pgbackrest_full_schedule": "every sunday"},
                        ["pgbackrest_full_schedule 'every sunday' is not a systemd OnCalendar expression"]),
}


@pytest.fixture(scope="module")
def refusals(project_dir, tmp_path_factory) -> dict:
    """Run every case's site.yml at once (each stops in preflight, on the controller): id -> (rc, output)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(_run_site, project_dir, tmp_path_factory.mktemp(case), text, extra)
                   for case, (text, extra, _) in CASES.items()}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_site_before_any_change(refusals, case):
    rc, output = refusals[case]
    assert rc != 0, output
    for message in CASES[case][2]:
        assert message in output, output
    _assert_nothing_changed(output)
