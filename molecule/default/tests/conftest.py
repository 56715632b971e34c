"""Shared helpers for the whole-stack testinfra tests.

Cluster-level checks reach every node through testinfra's ansible backend,
with molecule's inventory; credentials are read from the nodes' own files
(root inside the container), never printed.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import pytest
import testinfra
import yaml

PROJECT_DIR = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", pathlib.Path(__file__).parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
PG_HOSTS = ["pg1", "pg2", "pg3"]
LB_HOSTS = ["lb1", "lb2"]
SYNC_HOSTS = ["sync1", "sync2", "sync3"]
ADDRESSES = {"pg1": "198.18.1.11", "pg2": "198.18.1.12", "pg3": "198.18.1.13", "lb1": "198.18.1.31", "lb2": "198.18.1.32"}
VIP = "198.18.1.100"


@pytest.fixture(scope="session")
def project_dir() -> pathlib.Path:
    return PROJECT_DIR


@pytest.fixture(scope="session")
def inventory() -> str:
    assert INVENTORY, "MOLECULE_INVENTORY_FILE is not set: run through `molecule verify`"
    return INVENTORY


@pytest.fixture(scope="session")
def nodes(inventory):
    """testinfra hosts of the data tier, by inventory name."""
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in PG_HOSTS}


@pytest.fixture(scope="session")
def lbs(inventory):
    """testinfra hosts of the lb tier, by inventory name."""
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in LB_HOSTS}


def role_default(role: str, name: str):
    """A role's default from roles/<role>/defaults/main.yml (the one place it is set; plain values only)."""
    defaults = yaml.safe_load((PROJECT_DIR / "roles" / role / "defaults" / "main.yml").read_text())
    return defaults[name]


def secret(name: str) -> str:
    """A generated password from this scenario's secrets directory."""
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "secrets", name)
    with open(path, encoding="utf-8") as handle:
        return handle.read().split()[0]


def vip_holders(lbs) -> list:
    return [name for name, node in lbs.items() if f"inet {VIP}/" in node.check_output("ip -o -4 addr show")]


def sync_token(room: str, user: str = "molecule", ttl_s: float = 3600, read_only: bool = False,
               now: float | None = None) -> str:
    """A token for a sync room (or a prefix ending in *), signed with the scenario's generated key."""
    from rtmx_sync.auth import issue

    return issue(secret("sync_server_auth_key").encode(), room, user, ttl_s, read_only=read_only, now=now)


def playbook_env(project_dir) -> dict:
    return dict(os.environ, ANSIBLE_CONFIG=str(project_dir / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                ANSIBLE_COLLECTIONS_PATH=str(project_dir / ".collections"))


def playbook_process(project_dir, inventory, path: str, *args: str) -> subprocess.Popen:
    """Start a playbook in a session of its own (its workers start their own: see kill_tree)."""
    ansible_playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return subprocess.Popen([ansible_playbook, "-i", os.path.dirname(inventory), str(project_dir / path), *args],
                            env=playbook_env(project_dir), cwd=project_dir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def playbook(project_dir, inventory, path: str, *args: str, timeout: int = 900, check: bool = True,
             log: pathlib.Path | None = None) -> str:
    """Run a playbook on this scenario's inventory; return its output (asserts success unless check=False).

    The output goes to `log` as it is produced (kept even when the run times out or fails)."""
    env = playbook_env(project_dir)
    ansible_playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    with tempfile.TemporaryDirectory() as tmp:
        out_path = log or pathlib.Path(tmp) / "playbook.log"
        with open(out_path, "w", encoding="utf-8") as out:
            try:
                rc = subprocess.run([ansible_playbook, "-i", os.path.dirname(inventory), str(project_dir / path),
                                     *args], env=env, cwd=project_dir, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = None
        output = out_path.read_text(encoding="utf-8", errors="replace")
    if check:
        where = f" (full log: {log})" if log else ""
        assert rc == 0, (f"{path} {'timed out after %d s' % timeout if rc is None else 'failed'}{where}:\n"
                         + failed_tasks(output) + "\n...\n" + output[-1500:])
    return output


def failed_tasks(output: str, lines_each: int = 30) -> str:
    """The failed tasks of a playbook's output, each with its message (the recap alone says nothing)."""
    lines = output.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith(("fatal:", "failed:")) or "FAILED!" in line:
            task = next((lines[j] for j in range(i, -1, -1) if lines[j].startswith("TASK [")), "")
            found.append("\n".join([task, *lines[i:i + lines_each]]))
    return "\n".join(found[-3:]) or "(no failed task in the output)"


def run_site(project_dir, inventory, *args: str, timeout: int = 900) -> str:
    """Run playbooks/site.yml on this scenario's inventory; return its output (asserts success)."""
    return playbook(project_dir, inventory, "playbooks/site.yml", *args, timeout=timeout)


def run_modules(project_dir, inventory, calls: list) -> list:
    """Run several rtmx.ha modules in one playbook on the controller; return their results in order.

    `calls` holds (module, args, check_mode) tuples. `args` values may use the `rtmx_ha` endpoints
    (tasks/ha_endpoints.yml), e.g. "{{ rtmx_ha.patroni_urls }}". One playbook for many calls saves
    Ansible's start-up for each.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [{"name": "endpoints", "ansible.builtin.import_tasks": str(project_dir / "playbooks/tasks/ha_endpoints.yml")}]
        outs = []
        for i, (module, args, check_mode) in enumerate(calls):
            outs.append(os.path.join(tmp, f"result{i}.json"))
            tasks += [
                {"name": f"module under test {i}", module: args, "register": f"result{i}", "ignore_errors": True,
                 "check_mode": check_mode},
                {"name": f"save {i}", "ansible.builtin.copy": {"content": "{{ result%d | to_json }}" % i, "dest": outs[-1],
                                                               "mode": "0600"}, "no_log": True},
            ]
        path = os.path.join(tmp, "play.yml")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump([{"name": "Run modules", "hosts": "localhost", "gather_facts": False, "tasks": tasks}], handle)
        playbook(project_dir, inventory, path)
        results = []
        for out in outs:
            with open(out, encoding="utf-8") as handle:
                results.append(json.load(handle))
        return results


def run_module(project_dir, inventory, module: str, args: dict, check_mode: bool = False) -> dict:
    """Run one rtmx.ha module on the controller with the stack's endpoints; return its result."""
    return run_modules(project_dir, inventory, [(module, args, check_mode)])[0]


def changed_per_host(output: str) -> dict:
    recap = output.split("PLAY RECAP", 1)[1]
    return {host: int(n) for host, n in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", recap, flags=re.M)}


def wait_for(check, timeout=60.0, interval=1.0, what="condition"):
    """Poll check() until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except AssertionError as error:  # keep polling, report the last one
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def patroni_cluster(node) -> dict:
    out = node.check_output(f"curl -sf http://{ADDRESSES[node.backend.host]}:8008/cluster")
    return json.loads(out)


def leader_name(node) -> str:
    leaders = [m["name"] for m in patroni_cluster(node)["members"] if m["role"] == "leader"]
    assert len(leaders) == 1, leaders
    return leaders[0]


def psql(node, sql: str, db: str = "postgres") -> str:
    cmd = node.run("runuser -u postgres -- psql -X -Atq -d %s -c %s", db, sql)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def redis_cli(node, *args: str, sentinel: bool = False) -> str:
    conf, port = ("/etc/redis/sentinel.conf", 26379) if sentinel else ("/etc/redis/redis.conf", 6379)
    password = f"$(awk '/^requirepass/ {{gsub(/\"/, \"\", $2); print $2}}' {conf})"
    quoted = " ".join(f"'{a}'" for a in args)
    cmd = node.run(f"REDISCLI_AUTH={password} redis-cli --no-auth-warning -p {port} {quoted}")
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def redis_master(nodes) -> str:
    """Inventory name of the node that says role:master."""
    masters = [n for n, h in nodes.items() if "role:master" in redis_cli(h, "INFO", "replication")]
    assert len(masters) == 1, masters
    return masters[0]


def pytest_collection_modifyitems(items):
    """Drills kill nodes: they run after every other test, then what checks the stack after them
    (`after_drills` in the file name); the monitoring tests run first, while the stack is as converge
    left it (their quiet window must follow converge, not a test's switchover); stable order otherwise."""
    items.sort(key=lambda item: (2 if "after_drills" in item.nodeid else 1 if "drill" in item.nodeid
                                 else -1 if "test_monitoring.py" in item.nodeid else 0))
