"""Cluster-wide settings change through Patroni's REST API, never by restart.

A reloadable parameter takes effect at once; one that needs a restart is
reported as pending and PostgreSQL keeps running.
"""

import json

from conftest import ADDRESSES, leader_name, psql, run_site, wait_for

testinfra_hosts = ["pg1"]


def _converge_patroni(project_dir, inventory, parameters: dict) -> str:
    extra = json.dumps({"patroni_postgresql_extra_parameters": parameters})
    output = run_site(project_dir, inventory, "--limit", "postgres", "--tags", "patroni_configure", "-e", extra)
    return " ".join(output.split())


def _started_at(node) -> str:
    return psql(node, "SELECT pg_postmaster_start_time()")


def test_parameter_change_is_applied_by_reload_and_restart_is_only_reported(nodes, project_dir, inventory):
    leader = nodes[leader_name(nodes["pg1"])]
    started = {name: _started_at(node) for name, node in nodes.items()}

    try:
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
    finally:
        # Back to the inventory's own values (also after a failure), so later tests start from a clean slate.
        _converge_patroni(project_dir, inventory, {})
