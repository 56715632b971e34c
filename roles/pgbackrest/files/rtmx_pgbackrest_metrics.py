#!/usr/bin/python3
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup figures of a pgBackRest stanza for the node exporter's textfile collector.

Runs `pgbackrest --stanza=STANZA --output=json info` (as the repository's
user when started as root) and writes, whole then renamed, STANZA's figures to OUTPUT:
when each backup type last completed, how long it took and how big it is,
how many backups the repository keeps, whether a backup runs now, and the
bound the RtmxBackupStale alert compares the newest backup's age with. When
`pgbackrest info` fails, only rtmx_pgbackrest_info_success 0 is written: the
alert reads that as "no backup known".
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TYPES = ("full", "diff", "incr")


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Lines:
    def __init__(self):
        self.lines = []
        self.described = set()

    def add(self, name, kind, helptext, labels, value):
        if name not in self.described:
            self.lines.append("# HELP %s %s" % (name, helptext))
            self.lines.append("# TYPE %s %s" % (name, kind))
            self.described.add(name)
        rendered = ",".join('%s="%s"' % (key, _escape(val)) for key, val in sorted(labels.items()))
        self.lines.append("%s{%s} %s" % (name, rendered, _number(value)))

    def text(self):
        return "\n".join(self.lines) + "\n"


def _number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _common(out, stanza, now, max_age_seconds, success):
    labels = {"stanza": stanza}
    out.add("rtmx_pgbackrest_info_success", "gauge", "1 when pgbackrest info answered for the stanza.", labels, success)
    out.add("rtmx_pgbackrest_info_timestamp_seconds", "gauge", "When these figures were read (Unix time).", labels, now)
    out.add("rtmx_pgbackrest_backup_max_age_seconds", "gauge",
            "Age beyond which the newest full or differential backup is stale (RtmxBackupStale).", labels,
            max_age_seconds)


def render(info, stanza, now, max_age_seconds):
    """The textfile for `info` (pgbackrest info --output=json, parsed) of `stanza`."""
    found = [entry for entry in info if entry.get("name") == stanza] if isinstance(info, list) else []
    out = Lines()
    if not found:
        _common(out, stanza, now, max_age_seconds, False)
        return out.text()
    entry = found[0]
    labels = {"stanza": stanza}
    _common(out, stanza, now, max_age_seconds, True)
    status = entry.get("status") or {}
    out.add("rtmx_pgbackrest_stanza_status", "gauge",
            "pgbackrest info status code of the stanza (0 ok, 2 no valid backup, others: read pgbackrest info).",
            labels, int(status.get("code", 99)))
    held = ((status.get("lock") or {}).get("backup") or {}).get("held", False)
    out.add("rtmx_pgbackrest_backup_in_progress", "gauge", "1 while a backup or expire of the stanza runs.", labels,
            bool(held))
    backups = entry.get("backup") or []
    for kind in TYPES:
        of_kind = sorted((b for b in backups if b.get("type") == kind and not b.get("error")),
                         key=lambda b: (b.get("timestamp") or {}).get("stop") or 0)
        typed = dict(labels, type=kind)
        out.add("rtmx_pgbackrest_backups", "gauge", "Backups of this type the repository keeps.", typed,
                len(of_kind))
        last = of_kind[-1] if of_kind else None
        stamps = (last or {}).get("timestamp") or {}
        size = ((last or {}).get("info") or {})
        out.add("rtmx_pgbackrest_backup_last_completion_timestamp_seconds", "gauge",
                "When the newest backup of this type completed (Unix time; 0: none kept).", typed,
                stamps.get("stop") or 0)
        out.add("rtmx_pgbackrest_backup_last_duration_seconds", "gauge",
                "How long the newest backup of this type took.", typed,
                max(0, (stamps.get("stop") or 0) - (stamps.get("start") or 0)))
        out.add("rtmx_pgbackrest_backup_last_database_size_bytes", "gauge",
                "Size of the database the newest backup of this type copied.", typed, size.get("size") or 0)
        out.add("rtmx_pgbackrest_backup_last_repository_size_bytes", "gauge",
                "What the newest backup of this type stores in the repository (compressed, its own files).", typed,
                (size.get("repository") or {}).get("delta") or 0)
    return out.text()


def read_info(command, stanza, user=None):
    """Parsed `pgbackrest info` output, or None when it fails; run as `user` (and its group) when given."""
    drop = {"user": user, "group": user, "extra_groups": []} if user else {}
    try:
        done = subprocess.run(command + ["--stanza=" + stanza, "--output=json", "info"], capture_output=True,
                              text=True, timeout=300, **drop)
    except (OSError, subprocess.TimeoutExpired) as error:
        print("pgbackrest info failed: %s" % error, file=sys.stderr)
        return None
    if done.returncode != 0:
        print("pgbackrest info failed (%d): %s" % (done.returncode, done.stderr.strip()), file=sys.stderr)
        return None
    try:
        return json.loads(done.stdout)
    except ValueError as error:
        print("pgbackrest info answered no JSON: %s" % error, file=sys.stderr)
        return None


def write_atomically(path, text):
    directory = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".rtmx_pgbackrest.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--output", required=True, help="the .prom file in the textfile directory")
    parser.add_argument("--max-age-hours", type=float, required=True)
    parser.add_argument("--user", default="postgres", help="run pgbackrest as this user when started as root")
    parser.add_argument("--pgbackrest", default="/usr/bin/pgbackrest")
    args = parser.parse_args(argv)
    user = args.user if args.user and os.geteuid() == 0 else None
    info = read_info([args.pgbackrest], args.stanza, user)
    text = render(info if info is not None else [], args.stanza, int(time.time()), int(args.max_age_hours * 3600))
    write_atomically(args.output, text)
    return 0 if info is not None else 1


if __name__ == "__main__":
    sys.exit(main())
