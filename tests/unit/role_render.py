"""Render a role's template, or run a few tasks, with ansible-playbook on localhost and a fake inventory.

The roles' real defaults and vars are loaded (vars_files), as when the role runs; the inventory's hosts all
connect locally. Shared by the backup tests (test_backup_*.py).
"""

import copy
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

ADDRESSES = {
    "pg1": "10.0.0.11",
    "pg2": "10.0.0.12",
    "pg3": "10.0.0.13",
    "sync1": "10.0.0.21",
    "lb1": "10.0.0.31",
    "lb2": "10.0.0.32",
    "mon1": "10.0.0.41",
}
PG = ["pg1", "pg2", "pg3"]


def inventory(backup=("mon1",), **host_vars):
    """The lab's shape on 10.0.0.0/24; `backup` is the backup group (empty: none); host_vars per host name."""
    groups = {
        "etcd": PG,
        "postgres": PG,
        "redis": PG,
        "redis_sentinel": PG,
        "sync_server": ["sync1"],
        "lb": ["lb1", "lb2"],
        "monitoring": ["mon1"],
    }
    if backup:
        groups["backup"] = list(backup)
    hosts = {
        name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "rtmx_address": address}
        for name, address in ADDRESSES.items()
    }
    for name, extra in host_vars.items():
        hosts[name].update(extra)
    return {
        "all": {
            "hosts": hosts,
            "vars": {"rtmx_vip": "10.0.0.100", "rtmx_cluster_networks": ["10.0.0.0/24"]},
            "children": {group: {"hosts": {name: {} for name in names}} for group, names in groups.items()},
        }
    }


def with_member_facts(inv, path="/var/lib/postgresql/15/rtmx", port=5432):
    """What rtmx.ha.pgbackrest's members.yml reports on each member (set_fact), as inventory variables."""
    inv = copy.deepcopy(inv)
    for name in PG:
        inv["all"]["hosts"][name]["__pgbackrest_member"] = {"path": path, "port": port, "stanza": "rtmx"}
    return inv


def run_play(tmp_path, role, tasks, host, inv, extra_vars=None, expect_ok=True, handlers=()):
    """Run `tasks` on `host` with the role's defaults and vars loaded; returns the CompletedProcess."""
    path = ROOT / "roles" / role
    vars_files = [str(path / "defaults" / "main.yml"), str(path / "vars" / "main.yml")]
    play = [{"name": "test", "hosts": host, "gather_facts": False, "vars_files": vars_files, "tasks": tasks,
             "handlers": list(handlers)}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    (tmp_path / "hosts.json").write_text(json.dumps(inv))
    given = {"role_path": str(path), "rtmx_secrets_dir": str(tmp_path / "secrets"), **(extra_vars or {})}
    cli = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    run = subprocess.run(
        [cli, "-i", str(tmp_path / "hosts.json"), str(tmp_path / "play.yml"), "-e", json.dumps(given)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if expect_ok:
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    return run


def render(tmp_path, role, template, host, inv, extra_vars=None, name=None):
    """One template of a role as the role writes it on `host`: the rendered text."""
    out = tmp_path / (name or template.removesuffix(".j2"))
    task = {
        "name": "render",
        "ansible.builtin.template": {
            "src": str(ROOT / "roles" / role / "templates" / template),
            "dest": str(out),
            "mode": "0600",
        },
    }
    run_play(tmp_path, role, [task], host, inv, extra_vars)
    return out.read_text()
