"""The backup figures the repository host writes for the node exporter (roles/pgbackrest/files/
rtmx_pgbackrest_metrics.py): from `pgbackrest info --output=json` (pgBackRest 2.45's layout) to the textfile the
RtmxBackupStale alert reads, and what it writes when pgbackrest info fails."""

import importlib.util
import json
import os
import stat

from role_render import ROOT

SCRIPT = ROOT / "roles" / "pgbackrest" / "files" / "rtmx_pgbackrest_metrics.py"
spec = importlib.util.spec_from_file_location("rtmx_pgbackrest_metrics", SCRIPT)
metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)
NOW = 1795500000


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition text; every sample has HELP and TYPE."""
    out, described = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            described.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        name, rest = line.split("{", 1)
        labels, value = rest.rsplit("} ", 1)
        assert name in described, name
        pairs = frozenset(tuple(pair.split("=", 1)) for pair in labels.split(","))
        out[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


def test_each_backup_type_newest_completion_duration_and_sizes(recorded):
    found = samples(metrics.render(recorded("pgbackrest_info.json"), "rtmx", NOW, 26 * 3600))
    assert value(found, "rtmx_pgbackrest_info_success", stanza="rtmx") == 1
    assert value(found, "rtmx_pgbackrest_info_timestamp_seconds", stanza="rtmx") == NOW
    assert value(found, "rtmx_pgbackrest_backup_max_age_seconds", stanza="rtmx") == 93600
    assert value(found, "rtmx_pgbackrest_stanza_status", stanza="rtmx") == 0
    assert value(found, "rtmx_pgbackrest_backup_in_progress", stanza="rtmx") == 0
    assert value(found, "rtmx_pgbackrest_backups", stanza="rtmx", type="full") == 1
    assert value(found, "rtmx_pgbackrest_backups", stanza="rtmx", type="diff") == 2
    # The newest differential, not the first one listed.
    assert value(found, "rtmx_pgbackrest_backup_last_completion_timestamp_seconds", stanza="rtmx", type="diff") == (
        1795482300
    )
    assert value(found, "rtmx_pgbackrest_backup_last_duration_seconds", stanza="rtmx", type="diff") == 27
    assert value(found, "rtmx_pgbackrest_backup_last_database_size_bytes", stanza="rtmx", type="diff") == 31800000
    assert value(found, "rtmx_pgbackrest_backup_last_repository_size_bytes", stanza="rtmx", type="full") == 4100000
    # No incremental backup: 0, so an age computed from it is huge, never missing.
    assert value(found, "rtmx_pgbackrest_backup_last_completion_timestamp_seconds", stanza="rtmx", type="incr") == 0


def test_a_stanza_without_backups_reads_as_never_backed_up(recorded):
    info = recorded("pgbackrest_info.json")
    info[0]["backup"] = []
    info[0]["status"] = {"code": 2, "lock": {"backup": {"held": True}}, "message": "no valid backups"}
    found = samples(metrics.render(info, "rtmx", NOW, 3600))
    assert value(found, "rtmx_pgbackrest_stanza_status", stanza="rtmx") == 2
    assert value(found, "rtmx_pgbackrest_backup_in_progress", stanza="rtmx") == 1
    assert value(found, "rtmx_pgbackrest_backup_last_completion_timestamp_seconds", stanza="rtmx", type="full") == 0


def test_an_unreadable_repository_or_another_stanza_is_info_success_0(recorded):
    for info in ([], recorded("pgbackrest_info.json")):
        found = samples(metrics.render(info, "main", NOW, 3600))
        assert value(found, "rtmx_pgbackrest_info_success", stanza="main") == 0
        assert not [key for key in found if key[0].startswith("rtmx_pgbackrest_backup_last")]


def fake_pgbackrest(tmp_path, body):
    path = tmp_path / "pgbackrest"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_main_writes_the_file_whole_and_readable(tmp_path, recorded):
    info = tmp_path / "info.json"
    info.write_text(json.dumps(recorded("pgbackrest_info.json")))
    command = fake_pgbackrest(tmp_path, f'[ "$1 $2 $3" = "--stanza=rtmx --output=json info" ] && cat {info}\n')
    output = tmp_path / "rtmx_pgbackrest.prom"
    args = ["--stanza=rtmx", f"--output={output}", "--max-age-hours=26", f"--pgbackrest={command}", "--user="]
    assert metrics.main(args) == 0
    assert stat.S_IMODE(os.stat(output).st_mode) == 0o644
    assert "rtmx_pgbackrest_info_success{stanza=\"rtmx\"} 1" in output.read_text().splitlines()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rtmx_pgbackrest")] == []


def test_main_reports_a_failing_pgbackrest(tmp_path):
    command = fake_pgbackrest(tmp_path, "echo 'ERROR: [056]: unable to connect' >&2; exit 56\n")
    output = tmp_path / "rtmx_pgbackrest.prom"
    args = ["--stanza=rtmx", f"--output={output}", "--max-age-hours=26", f"--pgbackrest={command}", "--user="]
    assert metrics.main(args) == 1
    assert "rtmx_pgbackrest_info_success{stanza=\"rtmx\"} 0" in output.read_text().splitlines()
