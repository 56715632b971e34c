"""playbooks/restore.yml refuses before it changes anything: it is run here for real with an inventory whose hosts
cannot be reached (SSH to a closed port), so the only play that can do anything is its first, on the controller,
which checks the request. A refused request stops there with what to do; an accepted one goes on to the
repository check (and fails there, unreachable)."""

import json
import os
import subprocess
import sys

import pytest
from role_render import ADDRESSES, ROOT, inventory


def unreachable_inventory():
    inv = inventory()
    for name in ADDRESSES:
        inv["all"]["hosts"][name] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
                                     "ansible_ssh_common_args": "-o ConnectTimeout=2", "rtmx_address": ADDRESSES[name]}
    return inv


def restore(tmp_path, **extra):
    (tmp_path / "hosts.json").write_text(json.dumps(unreachable_inventory()))
    cli = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    run = subprocess.run([cli, "-i", str(tmp_path / "hosts.json"), str(ROOT / "playbooks" / "restore.yml"),
                          "-e", json.dumps({"rtmx_secrets_dir": str(tmp_path / "secrets"), **extra})],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    return run.returncode, " ".join((run.stdout + run.stderr).split())


REACHED_HOSTS = "Restore | read the repository"


@pytest.mark.parametrize("extra, why", [
    ({}, "a cluster restore replaces the data of every member: run it again with -e restore_confirm=yes"),
    ({"restore_confirm": "yes", "restore_type": "time", "restore_target": "2026-11-28 10:15:00"},
     "restore_target '2026-11-28 10:15:00': not a time like 2026-11-28 10:15:00+00"),
    ({"restore_confirm": "yes", "restore_type": "lsn", "restore_target": "12345"}, "is not an LSN like '0/3000060'"),
    ({"restore_confirm": "yes", "restore_type": "time"}, "restore_type time needs restore_target"),
    ({"restore_confirm": "yes", "restore_member": "mon1"}, "restore_member 'mon1' is not a member of the cluster"),
    ({"restore_target_host": "pg2"}, "restore_target_host pg2 is a cluster member"),
    ({"restore_target_host": "sync1"}, "restore_target_host sync1 may not read the repository"),
])
def test_restore_refuses_a_bad_request_before_contacting_any_host(tmp_path, extra, why):
    code, out = restore(tmp_path, **extra)
    assert code != 0
    assert "restore.yml refuses to start, nothing was changed:" in out and why in out, out[-2000:]
    assert REACHED_HOSTS not in out
    assert "UNREACHABLE" not in out


def test_an_accepted_request_goes_on_to_the_repository(tmp_path):
    code, out = restore(tmp_path, restore_confirm="yes", restore_type="time",
                        restore_target="2026-01-01 00:00:00+00", restore_member="pg2")
    assert "point-in-time recovery of the whole cluster, first on pg2, to 2026-01-01 00:00:00+00 (stanza rtmx, " \
           "pgbackrest restore --type=time --target=2026-01-01 00:00:00+00 --target-action=promote)" in out, out[-2000:]
    assert REACHED_HOSTS in out and "UNREACHABLE" in out and code != 0


def test_an_inspection_request_names_its_port_and_directory(tmp_path):
    code, out = restore(tmp_path, restore_target_host="mon1", restore_inspect_port=5440)
    assert "restore onto mon1 (port 5440, /var/lib/postgresql/rtmx-restore) for inspection to the end of the WAL " \
           "archive" in out, out[-2000:]
    assert code != 0 and "UNREACHABLE" in out
