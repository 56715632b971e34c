"""Backups as an operator finds them after converge: an encrypted repository on the backup host with a full
backup, the TLS servers on each host's own address, archiving from whichever member leads (also after a
switchover), the timers, an etcd snapshot, the figures for Prometheus; and a restore onto the backup host for
inspection that finds a row written just before, without touching the cluster."""

import json
import time

import pytest
import testinfra
from test_monitoring import query

from conftest import ADDRESSES, PG_HOSTS, leader_name, patroni_cluster, playbook, psql, wait_for

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
    # switchover.yml refuses a stack that is not whole: wait for it rather than inherit an earlier test's state.
    playbook(project_dir, inventory, "playbooks/verify.yml", "-e", "rtmx_ha_verify_wait=90")
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


CERTIFICATES_PROM = "/var/lib/prometheus/node-exporter/rtmx_certificates.prom"
EXPIRY = "rtmx_tls_certificate_not_after_timestamp_seconds"


def certificate_figures(host) -> dict:
    """{(series name, path, index or None): value} of the host's certificate textfile."""
    figures = {}
    for line in host.check_output(f"cat {CERTIFICATES_PROM}").splitlines():
        if line.startswith("#"):
            continue
        name, rest = line.split("{", 1)
        labels = dict(pair.split("=", 1) for pair in rest.rsplit("} ", 1)[0].split('",'))
        labels = {key: value.strip('"') for key, value in labels.items()}
        figures[(name, labels["path"], labels.get("index"))] = float(line.rsplit(" ", 1)[1])
    return figures


def not_after(host, path) -> float:
    end = host.check_output(f"openssl x509 -enddate -noout -in {path}").split("=", 1)[1]
    return float(host.check_output(f"date -d '{end}' +%s"))


def test_certificate_expiry_of_every_pgbackrest_host_reaches_prometheus(backup, nodes):
    for name, host in {**nodes, "mon1": backup}.items():
        host.check_output("systemctl start rtmx-certificate-expiry.service")
        figures = certificate_figures(host)
        for path in ("/etc/pgbackrest/tls/ca.crt", "/etc/pgbackrest/tls/host.crt"):
            assert figures[("rtmx_tls_certificate_read_success", path, None)] == 1, (name, figures)
            assert figures[(EXPIRY, path, "0")] == not_after(host, path), (name, path)
        assert host.service("rtmx-certificate-expiry.timer").is_enabled
    hosts = wait_for(lambda: {series["metric"]["instance"] for series in query(
        f'{EXPIRY}{{path="/etc/pgbackrest/tls/host.crt"}} - time() > 3000 * 86400')} >= {*nodes, "mon1"} or None,
        timeout=90, what="every pgBackRest host certificate in Prometheus, ten years ahead")
    assert hosts


def test_a_certificate_near_expiry_makes_the_alert_pending(backup):
    """A listed certificate with a day left, and a listed file that is missing: the textfile says so and
    Prometheus evaluates both alerts on them (pending: for 10 minutes), and on nothing else."""
    directory = "/run/rtmx-molecule-certificates"
    short, missing = f"{directory}/short.crt", f"{directory}/missing.crt"
    listing = "/etc/rtmx-ha/certificates.d/molecule.list"
    try:
        backup.check_output(f"mkdir -p {directory} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                            f"-nodes -keyout {directory}/short.key -out {short} -days 1 -subj /CN=molecule-short")
        backup.check_output(f"printf '%s\\n' {short} {missing} > {listing}")
        backup.check_output("systemctl start rtmx-certificate-expiry.service")
        figures = certificate_figures(backup)
        assert figures[(EXPIRY, short, "0")] == not_after(backup, short)
        assert figures[("rtmx_tls_certificate_read_success", missing, None)] == 0
        assert "missing.crt" in backup.check_output("journalctl -u rtmx-certificate-expiry.service -n 20 --no-pager")

        def pending():
            found = {(alert["metric"]["alertname"], alert["metric"]["severity"], alert["metric"]["path"])
                     for alert in query('ALERTS{alertname=~"RtmxCertificate.*"}')}
            return found if len(found) >= 3 else None

        assert wait_for(pending, timeout=120, what="the certificate alerts pending") == {
            ("RtmxCertificateExpiring", "warning", short),
            ("RtmxCertificateExpiring", "critical", short),
            ("RtmxCertificateUnreadable", "warning", missing),
        }
    finally:
        backup.run(f"rm -rf {directory} {listing}")
        backup.run("systemctl start rtmx-certificate-expiry.service")
    wait_for(lambda: not query('ALERTS{alertname=~"RtmxCertificate.*"}'), timeout=120,
             what="the certificate alerts gone with their series")


def test_a_replica_made_again_comes_from_the_repository(nodes):
    """`patronictl reinit` (runbook 7.4) restores the replica from the repository (pgbackrest, the first
    create_replica_method), not from the leader; it then follows the leader, on its timeline, through the guarded
    restore_command and streaming."""
    leader = leader_name(nodes["pg1"])
    replica = next(name for name in reversed(PG_HOSTS) if name != leader)
    host = nodes[replica]
    since = host.check_output("date +%s")
    host.check_output(f"patronictl -c /etc/patroni/config.yml reinit rtmx {replica} --force --wait")

    def following():
        members = {m["name"]: m for m in patroni_cluster(nodes[leader])["members"]}
        state = members.get(replica, {})
        ok = state.get("state") in ("running", "streaming") and state.get("timeline") == members[leader]["timeline"]
        return ok and psql(host, "SELECT status FROM pg_stat_wal_receiver") == "streaming"

    wait_for(following, timeout=120, what=f"{replica} streaming from {leader} again")
    log = host.check_output(f"journalctl -u patroni --since @{since} --no-pager -o cat")
    assert "replica has been created using pgbackrest" in log, log[-3000:]
    # It catches up through the guarded restore_command, not plain archive-get.
    assert psql(host, "SHOW restore_command").startswith("/usr/local/lib/rtmx-ha/restore-wal ")
    assert "forked off" not in host.check_output(f"journalctl --since @{since} --no-pager -o cat")
