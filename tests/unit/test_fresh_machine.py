"""What `make` relies on besides the code: the lab lock, and collections resolved from the pinned venv only."""

import configparser
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCK = ROOT / "scripts" / "lab-lock.sh"


@pytest.fixture
def lock_env(tmp_path):
    """Environment for scripts/lab-lock.sh on a private lock file, outside any locked `make test`."""
    env = dict(os.environ, RTMX_HA_LOCK_FILE=str(tmp_path / "lab.lock"))
    env.pop("RTMX_HA_LOCK_HELD", None)
    return env


@pytest.fixture
def holder(lock_env, tmp_path):
    """A run holding the lock (`lab-lock.sh sleep 60`), stopped at the end of the test."""
    proc = subprocess.Popen([str(LOCK), "sleep", "60"], env=lock_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecar = tmp_path / "lab.lock.holder"
    deadline = time.monotonic() + 10
    while not (sidecar.exists() and sidecar.read_text()):
        assert proc.poll() is None, "the first run did not take the lock"
        assert time.monotonic() < deadline, "the first run wrote no holder file within 10 s"
        time.sleep(0.05)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


def run(args, env, timeout=10):
    return subprocess.run([str(LOCK), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_second_run_refuses_at_once_naming_the_holder(holder, lock_env, tmp_path):
    start = time.monotonic()
    second = run(["touch", str(tmp_path / "should-not-run")], lock_env)
    assert time.monotonic() - start < 5, "the second run waited instead of refusing"
    assert second.returncode == 75
    assert f"pid {holder.pid}" in second.stderr
    assert "sleep 60" in second.stderr
    assert "refusing" in second.stderr
    assert not (tmp_path / "should-not-run").exists()


def test_a_marker_from_an_unrelated_process_does_not_pass(holder, lock_env):
    # The holder's own marker, exported by hand outside its process tree.
    env = dict(lock_env, RTMX_HA_LOCK_HELD=f"{holder.pid}:{lock_env['RTMX_HA_LOCK_FILE']}")
    assert run(["true"], env).returncode == 75


def test_nested_run_inside_the_holder_passes(lock_env):
    # make test -> lab-lock.sh make test-locked -> make molecule -> lab-lock.sh make molecule-locked
    nested = run(["bash", "-c", f"{LOCK} echo inner-ran"], lock_env)
    assert nested.returncode == 0, nested.stderr
    assert nested.stdout.strip() == "inner-ran"


def test_lock_is_released_with_the_run_and_not_kept_by_its_daemons(lock_env):
    # A command may leave a daemon behind (make docker starts dockerd): it must not keep the lock.
    first = run(["bash", "-c", "sleep 60 >/dev/null 2>&1 </dev/null & echo $!"], lock_env)
    daemon = int(first.stdout)
    try:
        assert first.returncode == 0, first.stderr
        assert run(["true"], lock_env).returncode == 0
    finally:
        os.kill(daemon, signal.SIGTERM)


def test_command_exit_status_is_kept(lock_env):
    assert run(["bash", "-c", "exit 3"], lock_env).returncode == 3


def collections_path():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    return cfg["defaults"]["collections_path"].split(":")


def test_collections_path_holds_no_home_or_system_directory():
    for entry in collections_path():
        assert not entry.startswith("~") and "$HOME" not in entry and "/home/" not in entry, entry
        assert not os.path.isabs(entry), f"{entry}: only paths inside the checkout, the venv supplies the rest"


def test_collections_come_from_the_venv_not_from_home(tmp_path):
    # A stray community.docker under ~/.ansible/collections must not be seen.
    stray = tmp_path / ".ansible" / "collections" / "ansible_collections" / "community" / "docker"
    stray.mkdir(parents=True)
    (stray / "MANIFEST.json").write_text(json.dumps(
        {"collection_info": {"namespace": "community", "name": "docker", "version": "0.0.1"}}))
    galaxy = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")
    env = dict(os.environ, HOME=str(tmp_path), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    out = subprocess.run([galaxy, "collection", "list", "--format", "json"], check=True,
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120).stdout
    found = {path: names for path, names in json.loads(out).items() if "community.docker" in names}
    assert found, "community.docker is not found at all"
    assert all(path.startswith(sys.prefix) for path in found), found
