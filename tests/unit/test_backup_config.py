"""Backups as the roles write them: Patroni's archiving and replica settings (only with a backup host),
pgBackRest's configuration on the members and on the repository host (TLS both ways, the stanza, encryption,
retention), the timers, the etcd snapshot script; and Debian's pgBackRest 2.45 reads the files without
complaint when it is installed (`make packages`).
"""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from role_render import PG, ROOT, inventory, render, run_play, with_member_facts

PGBACKREST = shutil.which("pgbackrest")
needs_pgbackrest = pytest.mark.skipif(PGBACKREST is None, reason="pgbackrest not found: `make packages` installs it")
CIPHER = "c" * 64
GUARDED_RESTORE_COMMAND = '/usr/local/lib/rtmx-ha/restore-wal --config=/etc/patroni/config.yml --stanza=rtmx %f "%p"'


def patroni_config(tmp_path, inv, **extra):
    return yaml.safe_load(render(tmp_path, "patroni", "config.yml.j2", "pg1", inv, extra))


def options(text):
    """pgbackrest.conf as [(section, key, value)], repeated keys kept."""
    section, rows = None, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, value = line.split("=", 1)
        rows.append((section, key, value))
    return rows


def single(rows, section, key):
    values = [v for s, k, v in rows if s == section and k == key]
    assert len(values) == 1, (section, key, values)
    return values[0]


# Patroni


def test_patroni_archives_to_the_repository_only_with_a_backup_host(tmp_path):
    config = patroni_config(tmp_path, inventory())
    pg = config["postgresql"]
    assert pg["parameters"]["archive_mode"] == "on"
    assert pg["parameters"]["archive_command"] == "pgbackrest --stanza=rtmx archive-push %p"
    assert pg["parameters"]["archive_timeout"] == 60
    # By default replicas are made from the repository and read the archive through the guard.
    assert pg["recovery_conf"] == {"restore_command": GUARDED_RESTORE_COMMAND}
    assert pg["create_replica_methods"] == ["pgbackrest", "basebackup"]
    # initdb as before: the restore method is restore.yml's alone.
    assert "method" not in config["bootstrap"]


def test_patroni_makes_replicas_from_the_repository_by_default(tmp_path):
    pg = patroni_config(tmp_path, inventory())["postgresql"]
    # Only WAL of the current leader's history (roles/patroni/files/rtmx_restore_wal.py), never plain archive-get.
    assert pg["recovery_conf"] == {"restore_command": GUARDED_RESTORE_COMMAND}
    assert pg["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert pg["pgbackrest"] == {
        "command": "/usr/bin/pgbackrest --stanza=rtmx --delta restore",
        "keep_data": True,
        "no_params": True,
    }


def test_patroni_without_a_backup_host_is_as_before(tmp_path):
    config = patroni_config(tmp_path, inventory(backup=()))
    pg = config["postgresql"]
    assert pg["parameters"] == {"unix_socket_directories": "/var/run/postgresql"}
    assert pg["create_replica_methods"] == ["basebackup"]
    assert "recovery_conf" not in pg and "pgbackrest" not in pg
    assert "method" not in config["bootstrap"]
    # The DCS settings do not carry archiving either.
    assert "archive_mode" not in json.dumps(config["bootstrap"]["dcs"])


def test_patroni_archives_under_the_stanza_and_timeout_the_inventory_sets(tmp_path):
    pg = patroni_config(tmp_path, inventory(), pgbackrest_stanza="main", patroni_archive_timeout=30,
                        patroni_replica_from_backup=True)["postgresql"]
    assert pg["parameters"]["archive_command"] == "pgbackrest --stanza=main archive-push %p"
    assert pg["parameters"]["archive_timeout"] == 30
    assert "--stanza=main" in pg["pgbackrest"]["command"] and "--stanza=main" in pg["recovery_conf"]["restore_command"]


def test_patroni_restore_command_reads_the_rest_api_from_the_configuration_file_the_role_writes(tmp_path):
    pg = patroni_config(tmp_path, inventory(), patroni_config_file="/etc/patroni/rtmx.yml")["postgresql"]
    command = pg["recovery_conf"]["restore_command"]
    assert command.startswith("/usr/local/lib/rtmx-ha/restore-wal --config=/etc/patroni/rtmx.yml ")


def test_patroni_bootstraps_from_the_backup_when_restore_sets_the_command(tmp_path):
    command = "/usr/bin/pgbackrest --stanza=rtmx --type=time '--target=2026-11-28 10:00:00+00' restore"
    config = patroni_config(tmp_path, inventory(), patroni_bootstrap_command=command)
    assert config["bootstrap"]["method"] == "rtmx_restore"
    assert config["bootstrap"]["rtmx_restore"] == {
        "command": command,
        "keep_existing_recovery_conf": True,
        "no_params": True,
    }


# pgBackRest


def repository_conf(tmp_path, inv=None, **extra):
    inv = with_member_facts(inv or inventory())
    return render(tmp_path, "pgbackrest", "pgbackrest.conf.j2", "mon1", inv,
                  {"pgbackrest_repo_cipher_pass": CIPHER, **extra})


def member_conf(tmp_path, inv=None, path="/var/lib/postgresql/15/rtmx", **extra):
    inv = with_member_facts(inv or inventory(), path=path)
    return render(tmp_path, "pgbackrest", "pgbackrest.conf.j2", "pg2", inv, extra)


def test_repository_host_keeps_an_encrypted_repository_and_reaches_every_member_over_tls(tmp_path):
    rows = options(repository_conf(tmp_path))
    assert single(rows, "global", "repo1-path") == "/var/lib/pgbackrest"
    assert single(rows, "global", "repo1-cipher-type") == "aes-256-cbc"
    assert single(rows, "global", "repo1-cipher-pass") == CIPHER
    assert single(rows, "global", "repo1-retention-full") == "2"
    assert single(rows, "global", "repo1-retention-diff") == "6"
    assert single(rows, "global", "compress-type") == "zst"
    assert single(rows, "global", "start-fast") == "y"
    assert not [k for s, k, v in rows if k.startswith("repo1-host")]
    for index, name in enumerate(PG, start=1):
        assert single(rows, "rtmx", f"pg{index}-host") == name
        assert single(rows, "rtmx", f"pg{index}-host-type") == "tls"
        assert single(rows, "rtmx", f"pg{index}-host-port") == "8432"
        assert single(rows, "rtmx", f"pg{index}-host-cert-file") == "/etc/pgbackrest/tls/host.crt"
        assert single(rows, "rtmx", f"pg{index}-path") == "/var/lib/postgresql/15/rtmx"
        assert single(rows, "rtmx", f"pg{index}-port") == "5432"
        assert single(rows, "rtmx", f"pg{index}-socket-path") == "/var/run/postgresql"


def test_repository_serves_only_the_members_and_itself_on_its_own_address(tmp_path):
    rows = options(repository_conf(tmp_path))
    assert single(rows, "global", "tls-server-address") == "10.0.0.41"
    assert single(rows, "global", "tls-server-port") == "8432"
    assert single(rows, "global", "tls-server-ca-file") == "/etc/pgbackrest/tls/ca.crt"
    auth = [v for s, k, v in rows if k == "tls-server-auth"]
    assert auth == ["pg1=rtmx", "pg2=rtmx", "pg3=rtmx", "mon1=rtmx"]


def test_repository_serves_the_restore_hosts_the_inventory_names(tmp_path):
    rows = options(repository_conf(tmp_path, pgbackrest_restore_hosts=["sync1"]))
    assert [v for s, k, v in rows if k == "tls-server-auth"][-1] == "sync1=rtmx"


def test_member_archives_to_the_repository_host_over_tls_and_serves_only_it(tmp_path):
    text = member_conf(tmp_path)
    rows = options(text)
    assert single(rows, "global", "repo1-host") == "mon1"
    assert single(rows, "global", "repo1-host-type") == "tls"
    assert single(rows, "global", "repo1-host-port") == "8432"
    assert single(rows, "global", "repo1-host-ca-file") == "/etc/pgbackrest/tls/ca.crt"
    assert single(rows, "global", "repo1-host-key-file") == "/etc/pgbackrest/tls/host.key"
    assert single(rows, "global", "archive-async") == "y"
    assert single(rows, "global", "spool-path") == "/var/spool/pgbackrest"
    assert single(rows, "global", "tls-server-address") == "10.0.0.12"
    assert [v for s, k, v in rows if k == "tls-server-auth"] == ["mon1=rtmx"]
    assert single(rows, "rtmx", "pg1-path") == "/var/lib/postgresql/15/rtmx"
    assert not [k for s, k, v in rows if k.startswith("pg2")]
    # The passphrase stays on the repository host: members get it from the repository over TLS.
    assert "cipher" not in text and "repo1-path" not in text


def test_member_queue_limit_only_when_set(tmp_path):
    assert "archive-push-queue-max" not in member_conf(tmp_path)
    rows = options(member_conf(tmp_path, pgbackrest_archive_push_queue_max="8GiB"))
    assert single(rows, "global", "archive-push-queue-max") == "8GiB"


def test_backup_timers_follow_the_schedules(tmp_path):
    inv = inventory()
    full = render(tmp_path, "pgbackrest", "rtmx-pgbackrest-backup.timer.j2", "mon1", inv,
                  {"item": {"key": "full", "value": "Sun *-*-* 01:00:00"}}, name="full.timer")
    assert "OnCalendar=Sun *-*-* 01:00:00" in full.splitlines()
    assert "Persistent=true" in full.splitlines()
    assert "RandomizedDelaySec=300" in full.splitlines()
    assert "Unit=rtmx-pgbackrest-backup@full.service" in full.splitlines()
    service = render(tmp_path, "pgbackrest", "rtmx-pgbackrest-backup@.service.j2", "mon1", inv)
    assert "ExecStart=/usr/bin/pgbackrest --stanza=rtmx --type=%i backup" in service.splitlines()
    assert "User=postgres" in service.splitlines()
    defaults = yaml.safe_load((ROOT / "roles/pgbackrest/defaults/main.yml").read_text())
    assert defaults["pgbackrest_full_schedule"] == "Sun *-*-* 01:00:00"
    assert defaults["pgbackrest_diff_schedule"] == "Mon..Sat *-*-* 01:00:00"


def test_tls_server_drop_in_keeps_the_locks_shared(tmp_path):
    text = render(tmp_path, "pgbackrest", "pgbackrest.override.conf.j2", "pg1", inventory())
    assert "NoNewPrivileges=true" in text.splitlines()
    assert "PrivateTmp=true" not in text


def test_metrics_service_runs_the_script_for_the_stanza(tmp_path):
    text = render(tmp_path, "pgbackrest", "rtmx-pgbackrest-metrics.service.j2", "mon1", inventory())
    (start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert "--stanza=rtmx" in start and "--max-age-hours=26" in start
    assert "--output=/var/lib/prometheus/node-exporter/rtmx_pgbackrest.prom" in start


@needs_pgbackrest
def test_pgbackrest_reads_the_repository_configuration(tmp_path):
    """pgBackRest 2.45 parses the file: no unknown option, no invalid value (info runs on an empty repository)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    text = repository_conf(tmp_path, pgbackrest_repo_path=str(repo), pgbackrest_log_path=str(tmp_path))
    conf = tmp_path / "repository.conf"
    conf.write_text(text)
    run = subprocess.run([PGBACKREST, f"--config={conf}", "--stanza=rtmx", "--log-level-file=off",
                          "--lock-path=%s" % tmp_path, "--output=json", "info"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARN" not in run.stdout + run.stderr
    (stanza,) = json.loads(run.stdout)
    assert stanza["status"]["message"] == "missing stanza path"


@needs_pgbackrest
@pytest.mark.parametrize("command", ["archive-push", "archive-get"])
def test_pgbackrest_reads_the_member_configuration(tmp_path, command):
    """Parsed for archive-push and archive-get (which read the async, spool and queue options): what fails is
    reaching the repository host, not an option."""
    pgdata = tmp_path / "pgdata"
    (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
    (pgdata / "pg_wal" / "000000010000000000000001").write_bytes(b"")
    text = member_conf(tmp_path, path=str(pgdata), pgbackrest_archive_push_queue_max="8GiB",
                       pgbackrest_log_path=str(tmp_path), pgbackrest_spool_path=str(tmp_path))
    conf = tmp_path / "member.conf"
    # No repository host exists here: a name that never resolves fails at once.
    conf.write_text(text.replace("repo1-host=mon1", "repo1-host=rtmx-no-such-host.test"))
    args = ["000000010000000000000001", str(pgdata / "pg_wal" / "RECOVERYXLOG")] if command == "archive-get" else [
        str(pgdata / "pg_wal" / "000000010000000000000001")]
    run = subprocess.run([PGBACKREST, f"--config={conf}", "--stanza=rtmx", "--log-level-file=off",
                          "--archive-async=n", "--lock-path=%s" % tmp_path, command, *args],
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    # Option errors are 031 (invalid), 032 (invalid value), 037 (required); the configuration passed them when
    # pgBackRest goes on to read pg_control or to reach the repository host.
    assert not re.search(r"ERROR: \[03[127]\]|invalid option|not valid", output, re.I), output
    assert run.returncode != 0 and re.search(r"rtmx-no-such-host\.test|global/pg_control", output), output


# etcd snapshots


def test_etcd_snapshot_script_saves_from_each_member_and_keeps_the_newest(tmp_path):
    text = render(tmp_path, "etcd_snapshot", "etcd-snapshot.sh.j2", "mon1", inventory(),
                  {"pgbackrest_repo_path": "/srv/backup"})
    assert "dir=/srv/backup/etcd" in text.splitlines()
    assert "keep=48" in text.splitlines()
    assert "for endpoint in http://10.0.0.11:2379 http://10.0.0.12:2379 http://10.0.0.13:2379; do" in text
    assert "ETCDCTL_CACERT" not in text
    script = tmp_path / "etcd-snapshot"
    script.write_text(text)
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0


def test_etcd_snapshot_script_uses_tls_like_the_etcd_members(tmp_path):
    inv = inventory(pg1={"etcd_tls_enabled": True, "etcd_client_port": 2479})
    text = render(tmp_path, "etcd_snapshot", "etcd-snapshot.sh.j2", "mon1", inv,
                  {"etcd_snapshot_cacert": "/etc/ssl/etcd-ca.crt", "etcd_snapshot_cert": "/etc/ssl/c.crt",
                   "etcd_snapshot_key": "/etc/ssl/c.key"})
    assert "https://10.0.0.11:2479" in text
    assert "export ETCDCTL_CACERT=/etc/ssl/etcd-ca.crt" in text.splitlines()


def test_etcd_snapshot_timer_and_service(tmp_path):
    timer = render(tmp_path, "etcd_snapshot", "rtmx-etcd-snapshot.timer.j2", "mon1", inventory())
    assert "OnCalendar=*-*-* *:15:00" in timer.splitlines() and "Persistent=true" in timer.splitlines()
    service = render(tmp_path, "etcd_snapshot", "rtmx-etcd-snapshot.service.j2", "mon1", inventory())
    assert "ReadWritePaths=/var/lib/pgbackrest/etcd -/var/lib/prometheus/node-exporter" in service.splitlines()


# The node exporter watches pgBackRest's TLS server where it runs.


@pytest.mark.parametrize("backup, host, expected", [
    (("mon1",), "pg1", "etcd|patroni|redis-server|redis-sentinel|pgbackrest"),
    (("mon1",), "mon1", "prometheus|prometheus-alertmanager|prometheus-blackbox-exporter|pgbackrest"),
    ((), "pg1", "etcd|patroni|redis-server|redis-sentinel"),
])
def test_node_exporter_watches_the_tls_server_where_it_runs(tmp_path, backup, host, expected):
    text = render(tmp_path, "node_exporter", "prometheus-node-exporter.default.j2", host, inventory(backup=backup),
                  {"node_exporter_scrape_password": "x" * 20})
    assert f"--collector.systemd.unit-include=({expected}).service" in text.split()


# Argument specifications


@pytest.mark.parametrize("role", ["pgbackrest", "etcd_snapshot", "patroni"])
def test_role_defaults_pass_its_argument_spec(tmp_path, role):
    """Every default is documented, with the type of its value (Ansible validates them before the role runs)."""
    path = ROOT / "roles" / role
    spec = yaml.safe_load((path / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((path / "defaults" / "main.yml").read_text())
    assert set(defaults) <= set(spec), sorted(set(defaults) - set(spec))
    for name, value in defaults.items():
        if "default" in spec[name] and not (isinstance(value, str) and "{{" in value):
            assert spec[name]["default"] == value, name
    names = [name for name in spec if not name.startswith("rtmx_")]
    task = {
        "name": "validate",
        "ansible.builtin.validate_argument_spec": {
            "argument_spec": spec,
            "provided_arguments": "{{ dict(%s | zip(query('ansible.builtin.vars', *%s))) }}" % (names, names),
        },
    }
    run_play(tmp_path, role, [task], "pg1" if role == "patroni" else "mon1", inventory())


def test_patroni_rebuilds_replicas_from_the_leader_while_restore_says_so(tmp_path):
    pg = patroni_config(tmp_path, inventory(), patroni_replica_from_backup=False)["postgresql"]
    assert pg["create_replica_methods"] == ["basebackup"] and "pgbackrest" not in pg and "recovery_conf" not in pg
    assert pg["parameters"]["archive_mode"] == "on"


# Restore for inspection (restore.yml with restore_target_host)


def inspect_vars(tmp_path, **extra):
    return {"pgbackrest_inspect_dir": str(tmp_path / "restore"), "pgbackrest_inspect_port": 5439, **extra}


def test_inspection_restore_reads_the_repository_over_tls_into_its_own_directory(tmp_path):
    rows = options(render(tmp_path, "pgbackrest", "rtmx-inspect.conf.j2", "mon1", inventory(),
                          inspect_vars(tmp_path)))
    assert single(rows, "global", "repo1-host") == "mon1"
    assert single(rows, "global", "repo1-host-type") == "tls"
    assert single(rows, "rtmx", "pg1-path") == str(tmp_path / "restore")
    assert single(rows, "rtmx", "pg1-port") == "5439"
    assert not [k for s, k, v in rows if "cipher" in k or k.startswith("tls-server")]


def test_inspection_instance_listens_on_loopback_and_never_archives(tmp_path):
    text = render(tmp_path, "pgbackrest", "rtmx-inspect-postgresql.conf.j2", "mon1", inventory(),
                  inspect_vars(tmp_path))
    lines = text.splitlines()
    assert "port = 5439" in lines and "listen_addresses = '127.0.0.1'" in lines
    assert "archive_mode = off" in lines
    assert "hba_file = '%s.conf/pg_hba.conf'" % (tmp_path / "restore") in lines


@needs_pgbackrest
def test_pgbackrest_reads_the_inspection_configuration_with_restores_options(tmp_path):
    text = render(tmp_path, "pgbackrest", "rtmx-inspect.conf.j2", "mon1", inventory(),
                  inspect_vars(tmp_path, pgbackrest_log_path=str(tmp_path)))
    conf = tmp_path / "inspect.conf"
    conf.write_text(text.replace("repo1-host=mon1", "repo1-host=rtmx-no-such-host.test"))
    (tmp_path / "restore").mkdir()
    run = subprocess.run([PGBACKREST, f"--config={conf}", "--stanza=rtmx", "--log-level-file=off",
                          "--lock-path=%s" % tmp_path, "--delta", "--archive-mode=off", "--type=time",
                          "--target=2026-11-28 02:15:00+00", "--target-action=promote", "restore"],
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert not re.search(r"ERROR: \[03[127]\]|invalid option|not valid", output, re.I), output
    # Past the options it sets up TLS (no CA file here) to reach the repository host.
    assert run.returncode != 0 and re.search(r"rtmx-no-such-host\.test|CA certificate location", output), output


# Preflight (run here for real: asserts, and systemd-analyze for the schedules)


def preflight(tmp_path, inv, hosts="pg1,pg2,pg3,mon1", **extra):
    tasks = [{"name": "preflight", "ansible.builtin.include_tasks": str(ROOT / "roles/pgbackrest/tasks/preflight.yml")}]
    run = run_play(tmp_path, "pgbackrest", tasks, hosts, inv, extra, expect_ok=False)
    return run.returncode, " ".join((run.stdout + run.stderr).split())


def test_preflight_passes_the_lab_shape(tmp_path):
    code, out = preflight(tmp_path, inventory())
    assert code == 0, out[-3000:]


@pytest.mark.parametrize("backup, extra, message", [
    (["pg1"], {}, "pg1 is in both 'backup' and 'postgres'"),
    (["mon1", "sync1"], {}, "The group 'backup' has 2 hosts (mon1, sync1)"),
    (["mon1"], {"pgbackrest_full_schedule": "every sunday"},
     "pgbackrest_full_schedule 'every sunday' is not a systemd OnCalendar expression"),
    (["mon1"], {"pgbackrest_repo_cipher_pass": "short"}, "pgbackrest_repo_cipher_pass must be at least 32 characters"),
    (["mon1"], {"pgbackrest_stanza": "rtmx main"}, "pgbackrest_stanza 'rtmx main' must be letters"),
    (["mon1"], {"pgbackrest_retention_full": 0}, "pgbackrest_retention_full, _retention_diff"),
    (["mon1"], {"pgbackrest_restore_hosts": ["nowhere"]}, "pgbackrest_restore_hosts names nowhere"),
])
def test_preflight_refuses_with_what_to_change(tmp_path, backup, extra, message):
    code, out = preflight(tmp_path, inventory(backup=backup), **extra)
    assert code != 0 and message in out, out[-3000:]


UNASSIGNED = "198.51.100.254"  # TEST-NET-2: never this machine's, so `pgbackrest server` cannot bind it


def local_addresses():
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return set(re.findall(r"inet6? ([0-9a-f.:]+)/", out))


@needs_pgbackrest
@pytest.mark.parametrize("host", ["mon1", "pg2"])
def test_pgbackrest_server_reads_its_options_then_cannot_bind_here(tmp_path, host):
    """`pgbackrest server` parses the TLS server options (tls-server-auth above all), then fails to bind an address
    this machine does not have: nothing listens, and an option error would have come first."""
    if UNASSIGNED in local_addresses():
        pytest.skip(f"{UNASSIGNED} is assigned here")
    text = repository_conf(tmp_path) if host == "mon1" else member_conf(tmp_path)
    conf = tmp_path / "server.conf"
    conf.write_text(re.sub(r"(?m)^tls-server-address=.*$", "tls-server-address=" + UNASSIGNED, text)
                    .replace("log-path=/var/log/pgbackrest", "log-path=%s" % tmp_path))
    run = subprocess.run([PGBACKREST, f"--config={conf}", "--log-level-file=off", "server"], capture_output=True,
                         text=True, timeout=30)
    output = run.stdout + run.stderr
    assert "ERROR: [041]: unable to bind socket" in output, output
    assert "--tls-server-auth=mon1=rtmx" in subprocess.run(
        [PGBACKREST, f"--config={conf}", "--log-level-file=off", "--log-level-console=info", "server"],
        capture_output=True, text=True, timeout=30).stdout


def test_a_malformed_tls_server_auth_is_what_the_server_test_would_catch(tmp_path):
    """The check above is not blind: pgBackRest refuses a client CN without its stanza (error 031)."""
    if PGBACKREST is None:
        pytest.skip("pgbackrest not found")
    conf = tmp_path / "bad.conf"
    conf.write_text("[global]\ntls-server-address=%s\ntls-server-auth=pg2\nlog-path=%s\n" % (UNASSIGNED, tmp_path))
    run = subprocess.run([PGBACKREST, f"--config={conf}", "--log-level-file=off", "server"], capture_output=True,
                         text=True, timeout=30)
    assert "ERROR: [031]: key/value 'pg2' not valid for 'tls-server-auth' option" in run.stdout + run.stderr
