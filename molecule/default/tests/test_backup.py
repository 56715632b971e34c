"""Backups as an operator finds them after converge: an encrypted repository on the backup host with a full
backup, the TLS servers on each host's own address, archiving from whichever member leads (also after a
switchover), the timers, an etcd snapshot, the figures for Prometheus; and a restore onto the backup host for
inspection that finds a row written just before, without touching the cluster."""

import json
import time

import pytest
import testinfra

from conftest import ADDRESSES, leader_name, patroni_cluster, playbook, psql, wait_for

testinfra_hosts = ["pg1"]
BACKUP_ADDRESS = "198.18.1.41"


@pytest.fixture(scope="module")
def backup(inventory):
    return testinfra.get_host(f"ansible://mon1?ansible_inventory={inventory}")


def info(host) -> dict:
    (stanza,) = json.loads(host.check_output("runuser -u postgres -- pgbackrest --stanza=rtmx --output=json info"))
    return stanza


def test_repository_is_encrypted_and_has_a_full_backup(backup):
    stanza = info(backup)
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert stanza["cipher"] == "aes-256-cbc"
    assert [b for b in stanza["backup"] if b["type"] == "full"], stanza["backup"]
    assert "repo1-cipher-pass" in backup.check_output("cat /etc/pgbackrest/pgbackrest.conf")
    assert backup.file("/etc/pgbackrest/pgbackrest.conf").mode == 0o640


def test_members_hold_no_passphrase_and_tls_servers_listen_on_own_address(backup, nodes):
    for name, node in nodes.items():
        assert "cipher" not in node.check_output("cat /etc/pgbackrest/pgbackrest.conf")
        assert node.socket(f"tcp://{ADDRESSES[name]}:8432").is_listening
        assert not node.socket("tcp://0.0.0.0:8432").is_listening
        assert node.service("pgbackrest").is_running
    assert backup.socket(f"tcp://{BACKUP_ADDRESS}:8432").is_listening
    assert not backup.socket("tcp://0.0.0.0:8432").is_listening


def test_backup_timers_and_etcd_snapshots(backup):
    for timer in ("rtmx-pgbackrest-full.timer", "rtmx-pgbackrest-diff.timer", "rtmx-etcd-snapshot.timer"):
        assert backup.service(timer).is_enabled and backup.service(timer).is_running, timer
    snapshots = backup.check_output("find /var/lib/pgbackrest/etcd -name 'etcd-*.db'").split()
    assert snapshots
    assert backup.run(f"ETCDCTL_API=3 etcdctl snapshot status {snapshots[-1]}").rc == 0


def test_backup_figures_for_prometheus(backup):
    backup.check_output("systemctl start rtmx-pgbackrest-metrics.service")
    text = backup.check_output("cat /var/lib/prometheus/node-exporter/rtmx_pgbackrest.prom")
    assert 'rtmx_pgbackrest_info_success{stanza="rtmx"} 1' in text.splitlines()
    completed = [line for line in text.splitlines()
                 if line.startswith('rtmx_pgbackrest_backup_last_completion_timestamp_seconds{stanza="rtmx",type="full"}')]
    assert completed and float(completed[0].split()[-1]) > time.time() - 7 * 86400


def check_from_leader(nodes) -> str:
    leader = leader_name(nodes["pg1"])
    cmd = nodes[leader].run("runuser -u postgres -- pgbackrest --stanza=rtmx check")
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
    return leader


def test_archiving_follows_the_leader_through_a_switchover(project_dir, inventory, nodes, backup):
    before = check_from_leader(nodes)
    candidate = next(name for name in nodes if name != before)
    playbook(project_dir, inventory, "playbooks/switchover.yml", "-e", f"candidate={candidate}")
    try:
        wait_for(lambda: leader_name(nodes["pg1"]) == candidate, timeout=60, what="new leader")
        (timeline,) = [m["timeline"] for m in patroni_cluster(nodes["pg1"])["members"] if m["role"] == "leader"]
        assert check_from_leader(nodes) == candidate
        newest = max(a["max"] for a in info(backup)["archive"])
        # The new leader's timeline reaches the repository.
        assert int(newest[:8], 16) >= int(timeline), (newest, timeline)
    finally:
        playbook(project_dir, inventory, "playbooks/switchover.yml", "-e", f"candidate={before}")


def test_restore_for_inspection_finds_a_row_written_just_before(project_dir, inventory, nodes, backup):
    leader = leader_name(nodes["pg1"])
    marker = "inspect-%d" % time.time()
    psql(nodes[leader], "CREATE TABLE IF NOT EXISTS restore_probe (note text)", db="rtmx")
    psql(nodes[leader], f"INSERT INTO restore_probe VALUES ('{marker}')", db="rtmx")
    check_from_leader(nodes)  # switches WAL and waits until it is archived
    started = leader_name(nodes["pg1"]), psql(nodes[leader], "SELECT pg_postmaster_start_time()")
    try:
        playbook(project_dir, inventory, "playbooks/restore.yml", "-e", "restore_target_host=mon1", timeout=1200)
        found = backup.check_output(
            "runuser -u postgres -- psql -X -Atq -p 5439 -h /var/run/postgresql -d rtmx -c "
            f"\"SELECT count(*) FROM restore_probe WHERE note = '{marker}'\"")
        assert found == "1"
        assert backup.check_output("runuser -u postgres -- psql -X -Atq -p 5439 -h /var/run/postgresql "
                                   "-d postgres -c 'SHOW archive_mode'") == "off"
    finally:
        backup.run("systemctl stop rtmx-restore-inspect.service")
    # The cluster was not touched.
    assert (leader_name(nodes["pg1"]), psql(nodes[leader], "SELECT pg_postmaster_start_time()")) == started
