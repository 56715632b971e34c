"""`make lab` / `make lab-down` plumbing on the real Docker engine: lab-up.yml
creates the 8 systemd containers on their internal network (and a second run
changes nothing); lab-down.yml removes every container, volume and network
of the lab and leaves no credential behind (connection file, secrets, probe
configurations of an aborted drill).

Runs on a copy of inventories/lab with its own prefix, subnet and state
directory, so a user's running lab is never touched. site.yml itself is
tested by molecule.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREFIX = "rtmx-labtest"
SUBNET = "198.18.2.0/24"  # neither the lab's (198.18.0.0/24) nor molecule's (198.18.1.0/24)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A copy of the lab inventory renamed to PREFIX; its state directory and reports under tmp."""
    if not os.environ.get("RTMX_NODE_IMAGE"):
        pytest.fail("RTMX_NODE_IMAGE is not set: run through `make test` (it builds the node image)")
    tmp = tmp_path_factory.mktemp("lab")
    inventory = tmp / "inventory"
    shutil.copytree(ROOT / "inventories" / "lab", inventory)
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("rtmx-lab-", f"{PREFIX}-"))
    overrides = inventory / "group_vars" / "all" / "zz-labtest.yml"
    overrides.write_text(json.dumps({"rtmx_lab_prefix": PREFIX, "rtmx_lab_subnet": SUBNET,
                                     "rtmx_lab_dir": str(tmp / "state"), "rtmx_lab_reports_dir": str(tmp / "reports")}))
    yield {"inventory": inventory, "state": tmp / "state", "reports": tmp / "reports"}
    # Whatever happened above, nothing of the test lab stays.
    for name in docker("ps", "-aq", "--filter", f"label=rtmx.lab={PREFIX}").split():
        subprocess.run(["docker", "rm", "-fv", name], capture_output=True)
    subprocess.run(["docker", "network", "rm", f"{PREFIX}-net"], capture_output=True)


def run(lab, playbook: str) -> str:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    ansible_playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    result = subprocess.run([ansible_playbook, "-i", str(lab["inventory"]), str(ROOT / "playbooks" / playbook)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def changed(output: str) -> int:
    return int(re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", output).group(1))


def test_lab_up_twice_then_down_leaves_nothing(lab):
    volumes_before = set(docker("volume", "ls", "-q").split())
    first = run(lab, "lab-up.yml")
    assert changed(first) >= 2  # the network and the containers
    names = sorted(docker("ps", "--filter", f"label=rtmx.lab={PREFIX}", "--format", "{{.Names}}").split())
    nodes = ("pg1", "pg2", "pg3", "sync1", "sync2", "sync3", "lb1", "lb2", "mon1")
    assert names == sorted(f"{PREFIX}-{n}" for n in nodes)
    network = json.loads(docker("network", "inspect", f"{PREFIX}-net"))[0]
    assert network["Internal"] and network["IPAM"]["Config"][0]["Subnet"] == SUBNET
    assert docker("exec", f"{PREFIX}-pg1", "ip", "-o", "-4", "addr").count("198.18.2.11/24") == 1
    assert changed(run(lab, "lab-up.yml")) == 0

    # What a deployed lab leaves on the controller: generated secrets, and the connection file
    # that lab-connection.yml (the last step of lab.yml) writes from them.
    template = (ROOT / "playbooks" / "templates" / "connection.env.j2").read_text()
    (lab["state"] / "secrets").mkdir(parents=True)
    for name in set(re.findall(r"secrets ~ '/(\w+)'", template)):
        (lab["state"] / "secrets" / name).write_text(f"generated-{name}\n")
    printed = run(lab, "lab-connection.yml")
    connection = lab["state"] / "connection.env"
    assert connection.stat().st_mode & 0o777 == 0o600 and lab["state"].stat().st_mode & 0o777 == 0o700
    assert 'RTMX_VIP="198.18.2.100"' in connection.read_text()
    api_port = yaml.safe_load((ROOT / "roles" / "haproxy" / "defaults" / "main.yml").read_text())["haproxy_api_port"]
    assert f'RTMX_API_URL="http://198.18.2.100:{api_port}"' in connection.read_text()
    assert "generated-redis_password" in connection.read_text() and "generated-" not in printed
    # ... and what an aborted drill leaves: a probe configuration with credentials.
    aborted = lab["reports"] / "drills" / "20261127T000000Z"
    aborted.mkdir(parents=True)
    (aborted / "01-leader_node_loss.probe-config.json").write_text('{"pg": {"password": "secret"}}')
    (aborted / "report.md").write_text("# kept\n")

    run(lab, "lab-down.yml")
    assert docker("ps", "-aq", "--filter", f"label=rtmx.lab={PREFIX}").split() == []
    assert f"{PREFIX}-net" not in docker("network", "ls", "--format", "{{.Name}}").split()
    assert not lab["state"].exists()
    assert not list(lab["reports"].rglob("*.probe-config.json")) and (aborted / "report.md").exists()
    assert set(docker("volume", "ls", "-q").split()) <= volumes_before, "the lab left volumes behind"
