"""restore.yml's checks before it changes anything (module_utils/restore.py, filters rtmx.ha.restore_plan,
restore_backup_check, restore_bootstrap_command): bad input is refused with what to do, good input becomes the
pgbackrest restore options; the repository must have a backup for the target."""

import copy
import shlex

import pytest

from ansible_collections.rtmx.ha.plugins.module_utils.restore import (
    bootstrap_command,
    parse_time,
    restore_backup_check,
    restore_plan,
)

MEMBERS = ["pg1", "pg2", "pg3"]
HOSTS = MEMBERS + ["sync1", "lb1", "mon1"]
RESTORE_HOSTS = ["mon1"]
NOW = 1795836000  # 2026-11-28 03:20:00 UTC
FULL_STOP, DIFF_STOP = 1795309383, 1795482300  # tests/unit/fixtures/pgbackrest_info.json


def plan(**request):
    return restore_plan(request, MEMBERS, HOSTS, RESTORE_HOSTS, 5432, NOW)


def test_the_cluster_restore_refuses_without_confirmation():
    found = plan(type="latest")
    assert found["problems"] == [
        "a cluster restore replaces the data of every member: run it again with -e restore_confirm=yes (or restore "
        "onto another host with -e restore_target_host=HOST)"]
    assert plan(type="latest", confirm="no")["problems"] == found["problems"]
    assert plan(type="latest", confirm="yes")["problems"] == []
    assert plan(type="latest", confirm=True)["problems"] == []


def test_latest_restores_to_the_end_of_the_archive_on_the_first_member():
    found = plan(confirm="yes")
    assert (found["mode"], found["member"], found["type"]) == ("cluster", "pg1", "latest")
    assert found["options"] == ["--type=default"]
    assert found["summary"] == (
        "point-in-time recovery of the whole cluster, first on pg1, to the end of the WAL archive")


@pytest.mark.parametrize("given, utc", [
    ("2026-11-28 02:15:00+00", "2026-11-28 02:15:00+00"),
    ("2026-11-28T03:15:00+01:00", "2026-11-28 02:15:00+00"),
    ("2026-11-28 02:15:00.25Z", "2026-11-28 02:15:00.25+00"),
    ("2026-11-27 21:15:00-0500", "2026-11-28 02:15:00+00"),
])
def test_a_time_target_is_normalized_to_utc_for_pgbackrest_and_postgresql(given, utc):
    found = plan(confirm="yes", type="time", target=given, member="pg2")
    assert found["problems"] == []
    assert found["target"] == utc and found["member"] == "pg2"
    assert found["options"] == ["--type=time", "--target=%s" % utc, "--target-action=promote"]


@pytest.mark.parametrize("target, why", [
    ("2026-11-28 02:15:00", "not a time like"),  # no zone: refused
    ("yesterday", "not a time like"),
    ("2026-02-30 02:15:00+00", "no such date or time"),
    ("2026-11-28 25:15:00+00", "no such date or time"),
    ("2026-11-28 02:15:00+15", "no such time zone offset"),
    ("2026-11-28 04:15:00+00", "is in the future"),
    ("2026-11-28 02:15:00+00; DROP TABLE x", "not a time like"),
])
def test_a_malformed_or_future_time_is_refused(target, why):
    (problem,) = plan(confirm="yes", type="time", target=target)["problems"]
    assert why in problem


def test_lsn_name_and_immediate_targets():
    assert plan(confirm="yes", type="lsn", target="0/3000a60")["options"] == [
        "--type=lsn", "--target=0/3000A60", "--target-action=promote"]
    assert "is not an LSN" in plan(confirm="yes", type="lsn", target="3000A60")["problems"][0]
    assert plan(confirm="yes", type="name", target="before-migration-42")["options"] == [
        "--type=name", "--target=before-migration-42", "--target-action=promote"]
    assert "is not a restore point name" in plan(confirm="yes", type="name", target="it's")["problems"][0]
    assert "is not a restore point name" in plan(confirm="yes", type="name", target="x" * 64)["problems"][0]
    assert plan(confirm="yes", type="immediate", set="20261122-010203F")["options"] == [
        "--type=immediate", "--target-action=promote", "--set=20261122-010203F"]


@pytest.mark.parametrize("request_, why", [
    ({"type": "pitr"}, "restore_type 'pitr' is not one of latest, time, lsn, name, immediate"),
    ({"type": "time"}, "restore_type time needs restore_target"),
    ({"type": "latest", "target": "0/1"}, "restore_type latest takes no restore_target"),
    ({"set": "latest"}, "restore_set 'latest' is not a backup label"),
    ({"target_timeline": "newest"}, "restore_target_timeline 'newest' is not latest, current or a timeline number"),
    ({"member": "pg9"}, "restore_member 'pg9' is not a member of the cluster (pg1, pg2, pg3)"),
])
def test_other_bad_input_is_refused_with_what_to_give(request_, why):
    problems = plan(confirm="yes", **request_)["problems"]
    assert len(problems) == 1 and problems[0].startswith(why), problems


def test_inspection_restores_onto_another_host_without_touching_the_cluster():
    found = plan(target_host="mon1", inspect_port="5439", inspect_dir="/var/lib/postgresql/rtmx-restore/",
                 type="time", target="2026-11-28 02:15:00+00")
    assert found["problems"] == []
    assert (found["mode"], found["target_host"], found["member"]) == ("inspect", "mon1", "")
    assert (found["inspect_port"], found["inspect_dir"]) == (5439, "/var/lib/postgresql/rtmx-restore")
    assert found["summary"] == ("restore onto mon1 (port 5439, /var/lib/postgresql/rtmx-restore) for inspection to "
                                "2026-11-28 02:15:00+00")


@pytest.mark.parametrize("request_, why", [
    ({"target_host": "pg2"}, "restore_target_host pg2 is a cluster member"),
    ({"target_host": "nope"}, "restore_target_host nope is not in the inventory"),
    ({"target_host": "sync1"}, "restore_target_host sync1 may not read the repository: add it to pgbackrest_"),
    ({"target_host": "mon1", "inspect_port": "5432"}, "restore_inspect_port '5432' must be a port"),
    ({"target_host": "mon1", "inspect_port": "80"}, "restore_inspect_port '80' must be a port"),
    ({"target_host": "mon1", "inspect_dir": "/srv"}, "restore_inspect_dir '/srv' must be an absolute path"),
    ({"target_host": "mon1", "inspect_dir": "/srv/../etc"}, "restore_inspect_dir '/srv/../etc' must be an absolute"),
])
def test_a_bad_inspection_target_is_refused(request_, why):
    request_ = {"inspect_port": "5439", "inspect_dir": "/var/lib/postgresql/rtmx-restore", **request_}
    problems = plan(**request_)["problems"]
    assert len(problems) == 1 and problems[0].startswith(why), problems


def test_parse_time_gives_the_epoch():
    assert parse_time("2026-11-28 03:20:00+00")[0] == NOW
    assert parse_time("2026-11-28 04:20:00+01")[0] == NOW


def test_the_bootstrap_command_survives_patronis_split():
    options = plan(confirm="yes", type="time", target="2026-11-28 02:15:00+00")["options"]
    command = bootstrap_command("rtmx", options)
    assert shlex.split(command) == ["/usr/bin/pgbackrest", "--stanza=rtmx", "--type=time",
                                    "--target=2026-11-28 02:15:00+00", "--target-action=promote", "restore"]


# What the repository says


def test_a_target_after_the_newest_backup_lets_replicas_come_from_the_repository(recorded):
    info = recorded("pgbackrest_info.json")
    found = restore_backup_check(plan(confirm="yes"), info, "rtmx")
    assert found == {"problems": [], "replicas_from_repository": True, "backups": [
        "20261122-010203F", "20261122-010203F_20261123-010512D", "20261122-010203F_20261124-010433D"]}
    after = plan(confirm="yes", type="time", target="2026-11-28 02:15:00+00")
    assert restore_backup_check(after, info, "rtmx")["replicas_from_repository"] is True


def test_a_target_before_the_newest_backup_makes_replicas_from_the_new_leader(recorded):
    info = recorded("pgbackrest_info.json")
    between = plan(confirm="yes", type="time", target="2026-11-23 12:00:00+00")
    found = restore_backup_check(between, info, "rtmx")
    assert found["problems"] == [] and found["replicas_from_repository"] is False
    older_set = plan(confirm="yes", type="immediate", set="20261122-010203F")
    assert restore_backup_check(older_set, info, "rtmx")["replicas_from_repository"] is False
    assert restore_backup_check(plan(confirm="yes", type="name", target="x"), info, "rtmx")[
        "replicas_from_repository"] is False
    # An LSN is compared with the newest backup's stop LSN.
    assert restore_backup_check(plan(confirm="yes", type="lsn", target="0/F000200"), info, "rtmx")[
        "replicas_from_repository"] is True
    assert restore_backup_check(plan(confirm="yes", type="lsn", target="0/E000000"), info, "rtmx")[
        "replicas_from_repository"] is False


def test_no_backup_an_unknown_set_or_a_time_before_the_oldest_backup_is_refused(recorded):
    info = recorded("pgbackrest_info.json")
    too_early = plan(confirm="yes", type="time", target="2026-11-20 00:00:00+00")
    assert restore_backup_check(too_early, info, "rtmx")["problems"] == [
        "restore_target 2026-11-20 00:00:00+00 is before the end of the oldest backup kept (20261122-010203F, "
        "2026-11-22 01:03:03 UTC): nothing can be recovered that early"]
    unknown = plan(confirm="yes", set="20261101-010203F")
    assert restore_backup_check(unknown, info, "rtmx")["problems"][0].startswith(
        "restore_set 20261101-010203F is not in the repository")
    empty = copy.deepcopy(info)
    empty[0]["backup"] = []
    assert restore_backup_check(plan(confirm="yes"), empty, "rtmx")["problems"] == [
        "the repository has no backup of stanza rtmx to restore"]
    assert restore_backup_check(plan(confirm="yes"), info, "main")["problems"] == ["the repository has no stanza main"]
