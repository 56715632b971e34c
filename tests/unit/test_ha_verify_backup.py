"""ha_verify's backup check: what `pgbackrest info` (pgBackRest 2.45's JSON) and the primary's pg_stat_archiver say."""

import json

from ansible_collections.rtmx.ha.plugins.modules.ha_verify import backup_problems

NEWEST_DIFF = 1795482300  # tests/unit/fixtures/pgbackrest_info.json
ARCHIVER_OK = {"last_archived_wal": "00000003000000000000001A", "last_archived_age": "12.5", "failing": "false",
               "failed_count": "2", "last_failed_wal": "000000010000000000000004"}


def test_a_fresh_backup_and_working_archiving_pass_with_the_figures(recorded):
    problems, detail, report = backup_problems(recorded("pgbackrest_info.json"), "rtmx", NEWEST_DIFF + 3 * 3600,
                                               93600, ARCHIVER_OK)
    assert problems == []
    assert detail == ("stanza rtmx ok: newest backup diff 20261122-010203F_20261124-010433D, 3.0 h old (1 full, 2 diff "
                      "kept); last WAL 00000003000000000000001A archived 12 s ago")
    assert report["backups"] == {"full": 1, "diff": 2, "incr": 0} and report["last_archived_age"] == 12


def test_an_old_backup_is_named_with_its_age(recorded):
    problems, _, _ = backup_problems(recorded("pgbackrest_info.json"), "rtmx", NEWEST_DIFF + 30 * 3600, 26 * 3600)
    assert problems == ["the newest backup diff 20261122-010203F_20261124-010433D, 30.0 h old (older than 26.0 h)"]


def test_no_backup_a_missing_stanza_and_a_failing_info(recorded):
    info = recorded("pgbackrest_info.json")
    info[0]["backup"] = []
    info[0]["status"] = {"code": 2, "message": "no valid backups"}
    assert backup_problems(info, "rtmx", NEWEST_DIFF, 93600)[0] == [
        "stanza rtmx: no valid backups (code 2)", "no full or differential backup of stanza rtmx"]
    assert backup_problems(info, "main", NEWEST_DIFF, 93600)[0] == ["the repository has no stanza main"]
    failed = {"error": "ERROR: [056]: unable to connect"}
    assert backup_problems(failed, "rtmx", NEWEST_DIFF, 93600)[0] == [
        "pgbackrest info failed on the backup host: ERROR: [056]: unable to connect"]
    # The JSON text is read as well as the parsed list.
    assert backup_problems(json.dumps(recorded("pgbackrest_info.json")), "rtmx", NEWEST_DIFF, 93600)[0] == []


def test_a_failing_archiver_fails_the_check_an_idle_one_does_not(recorded):
    info = recorded("pgbackrest_info.json")
    failing = dict(ARCHIVER_OK, failing="true", last_failed_wal="00000003000000000000001B", failed_count="7")
    assert backup_problems(info, "rtmx", NEWEST_DIFF, 93600, failing)[0] == [
        "the primary's last archive attempt failed (WAL 00000003000000000000001B, 7 failures since the statistics "
        "reset)"]
    # Nothing archived since a crash reset the statistics (an idle primary): reported, not a failure.
    reset = {"last_archived_wal": None, "last_archived_age": None, "failing": "false", "failed_count": "0"}
    problems, detail, _ = backup_problems(info, "rtmx", NEWEST_DIFF, 93600, reset)
    assert problems == [] and detail.endswith("no WAL archived since the primary's statistics were reset")
    assert backup_problems(info, "rtmx", NEWEST_DIFF, 93600, {"error": "timeout"})[0] == [
        "pg_stat_archiver unreadable: timeout"]
