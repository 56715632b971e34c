"""Cluster-wide settings change through Patroni's REST API, never by restart.

A reloadable parameter takes effect at once; one that needs a restart is
reported as pending and PostgreSQL keeps running.
"""

import json
import os
import subprocess
import sys

from conftest import ADDRESSES, leader_name, psql, wait_for

testinfra_hosts = ["pg1"]


def _converge_patroni(project_dir, inventory, parameters: dict) -> str:
    env = dict(os.environ, ANSIBLE_CONFIG=str(project_dir / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=str(project_dir / ".collections"))
    ansible_playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    extra = json.dumps({"patroni_postgresql_extra_parameters": parameters})
    result = subprocess.run(
        [ansible_playbook, "-i", os.path.dirname(inventory), str(project_dir / "playbooks/site.yml"),
         "--limit", "postgres", "--tags", "patroni_configure", "-e", extra],
        env=env, cwd=project_dir, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return " ".join(output.split())


def _started_at(node) -> str:
    return psql(node, "SELECT pg_postmaster_start_time()")


def test_parameter_change_is_applied_by_reload_and_restart_is_only_reported(nodes, project_dir, inventory):
    leader = nodes[leader_name(nodes["pg1"])]
    started = {name: _started_at(node) for name, node in nodes.items()}

    output = _converge_patroni(project_dir, inventory, {"work_mem": "8MB", "max_connections": 250})
    assert "DCS | bring cluster-wide settings in line with the inventory" in output
    assert "take effect only after a PostgreSQL restart" in output
    wait_for(lambda: psql(leader, "SHOW work_mem") == "8MB", timeout=30, what="work_mem reloaded")
    assert psql(leader, "SHOW max_connections") == "200"
    pending = json.loads(nodes["pg1"].check_output(f"curl -sf http://{ADDRESSES['pg1']}:8008/patroni"))
    assert pending.get("pending_restart") is True

    _converge_patroni(project_dir, inventory, {"work_mem": "4MB", "max_connections": 200})
    wait_for(lambda: psql(leader, "SHOW work_mem") == "4MB", timeout=30, what="work_mem back")
    wait_for(lambda: not json.loads(nodes["pg1"].check_output(
        f"curl -sf http://{ADDRESSES['pg1']}:8008/patroni")).get("pending_restart"), timeout=30, what="no pending restart")
    assert {name: _started_at(node) for name, node in nodes.items()} == started, "a member was restarted"
