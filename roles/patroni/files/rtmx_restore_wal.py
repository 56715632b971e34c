#!/usr/bin/python3
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""restore_command of the Patroni members: `pgbackrest archive-get`, but a WAL segment only when it is part of the
current leader's history.

Why: after a leader is lost, a replica with nothing to stream from keeps asking the archive and would replay what
the dead leader archived beyond the point where the new leader's timeline forks; it then cannot follow the new
leader ("new timeline N forked off current database system timeline N-1 before current recovery point").

Usage (as restore_command): rtmx_restore_wal.py --config PATRONI_CONFIG --stanza STANZA %f "%p"

A segment (24 hex digits: timeline, then log and segment number) restored by PostgreSQL's recovery is fetched
only when the leader named in the DCS (local Patroni REST API, GET /cluster) answers GET /patroni as a running
primary holding the leader key, and the segment is on the leader's timeline, or on an ancestor timeline whose
switch point (GET /history) is at or beyond the segment's end. Otherwise the script exits 1, saying why on stderr
(PostgreSQL logs it): PostgreSQL then looks for newer timeline history files and streams from the leader.
History files, .partial and .backup files, and segments restored for anything but recovery (pg_rewind
--restore-target-wal reads the old timeline it rewinds) go straight to pgbackrest archive-get.

The REST API credentials come from Patroni's configuration file and are only sent when an endpoint asks for them
(401); they never appear on a command line or in a message.
"""

import argparse
import base64
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
# PostgreSQL's recovery restores segments to this name (pg_wal/RECOVERYXLOG); pg_rewind to pg_wal/<segment>.
RECOVERY_TARGET_NAME = "RECOVERYXLOG"
DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024
TIMEOUT = 2
PRIMARY_ROLES = ("master", "primary")
PREFIX = "rtmx restore_command"


class Refused(Exception):
    """The segment is not served; the message says why."""


def segment_range(name, segment_size):
    """(timeline, start LSN, end LSN) of a segment file name: it covers [start, end)."""
    timeline, log, seg = int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    start = (log << 32) + seg * segment_size
    return timeline, start, start + segment_size


def format_lsn(lsn):
    return "%X/%X" % (lsn >> 32, lsn & 0xFFFFFFFF)


def is_guarded(wal_name, destination):
    """Only plain segments restored by PostgreSQL's recovery are checked against the leader."""
    return bool(SEGMENT_NAME.match(wal_name)) and os.path.basename(destination) == RECOVERY_TARGET_NAME


def decide(wal_name, leader, status, history, segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Raise Refused unless segment wal_name is part of the leader's history.

    leader: the leader's member name in the DCS, or None; status: its GET /patroni (dict), None when it did not
    answer; history: its GET /history ([[timeline, switch LSN, reason, ...], ...]), None when unknown.
    """
    timeline, start, end = segment_range(wal_name, segment_size)
    if not leader:
        raise Refused("the DCS names no leader")
    if status is None:
        raise Refused("leader %s does not answer" % leader)
    if status.get("state") != "running" or status.get("role") not in PRIMARY_ROLES:
        raise Refused("leader %s is not a running primary (state %s, role %s)"
                      % (leader, status.get("state"), status.get("role")))
    if status.get("cluster_unlocked"):
        raise Refused("leader %s no longer holds the leader key" % leader)
    leader_timeline = status.get("timeline")
    if not isinstance(leader_timeline, int):
        raise Refused("leader %s reports no timeline" % leader)
    if timeline == leader_timeline:
        return "on leader %s's timeline %d" % (leader, leader_timeline)
    if timeline > leader_timeline:
        raise Refused("timeline %d is newer than leader %s's timeline %d" % (timeline, leader, leader_timeline))
    # An older timeline: its part before the switch point is the leader's history, the rest is not.
    switches = {}
    for line in history or []:
        if isinstance(line, list) and len(line) >= 2 and isinstance(line[0], int) and isinstance(line[1], int):
            switches[line[0]] = line[1]
    # The lines are the leader's ancestors (timeline numbers may skip: a recovery to an older timeline). The DCS
    # history lags a promotion by a Patroni loop: a timeline it does not list yet is refused.
    if timeline not in switches:
        raise Refused("timeline %d is not in leader %s's history (yet)" % (timeline, leader))
    # A timeline's WAL is the leader's history up to the earliest switch at or after it: a later recovery may have
    # ended on an older part of its parent, before the parent's own switch.
    switch = min(lsn for line_timeline, lsn in switches.items() if line_timeline >= timeline)
    if end > switch:
        raise Refused("timeline %d ended at %s, before this segment's end %s: the rest is not leader %s's history"
                      % (timeline, format_lsn(switch), format_lsn(end), leader))
    return "timeline %d ends at %s, after this segment" % (timeline, format_lsn(switch))


class RestApi:
    """GET on Patroni REST APIs, with Basic auth only when asked for it."""

    def __init__(self, config, timeout=TIMEOUT):
        restapi = config.get("restapi") or {}
        auth = restapi.get("authentication") or {}
        self._auth = None
        if auth.get("username") is not None and auth.get("password") is not None:
            pair = "%s:%s" % (auth["username"], auth["password"])
            self._auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        scheme = "https" if restapi.get("certfile") else "http"
        self.local_url = "%s://%s" % (scheme, restapi.get("connect_address") or restapi.get("listen") or "")
        context = ssl.create_default_context(cafile=restapi.get("cafile") or None) if scheme == "https" else None
        # Straight to the members: never through a proxy from the environment (it would see the credentials).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                   urllib.request.HTTPSHandler(context=context))
        self._timeout = timeout

    def get(self, base_url, path):
        url = base_url.rstrip("/") + path
        try:
            return self._get(url, None)
        except urllib.error.HTTPError as error:
            if error.code != 401 or not self._auth:
                raise
        return self._get(url, self._auth)

    def _get(self, url, auth):
        request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
        with self._opener.open(request, timeout=self._timeout) as response:
            return json.loads(response.read().decode("utf-8"))


def describe(error):
    """A short reason without anything of the request (no header ever)."""
    if isinstance(error, urllib.error.HTTPError):
        return "HTTP %d" % error.code
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, OSError):
        return " ".join(str(part) for part in (error.strerror or error.__class__.__name__, error.filename) if part)
    # Only the type otherwise: a YAML error would quote lines of the configuration, passwords included.
    return error.__class__.__name__


def api_base(api_url):
    parts = urllib.parse.urlsplit(api_url or "")
    return "%s://%s" % (parts.scheme, parts.netloc) if parts.scheme and parts.netloc else None


def ask_leader(api, wal_name, segment_size):
    """What decide() needs, from the local Patroni and the leader it names."""
    try:
        cluster = api.get(api.local_url, "/cluster")
    except Exception as error:  # any failure: nothing known, refuse
        raise Refused("the local Patroni REST API (%s/cluster) does not answer: %s"
                      % (api.local_url, describe(error))) from None
    leaders = [m for m in cluster.get("members", []) if m.get("role") == "leader"]
    if not leaders:
        return None, None, None
    leader = leaders[0]
    base = api_base(leader.get("api_url"))
    if base is None:
        raise Refused("leader %s publishes no REST API address" % leader.get("name"))
    try:
        status = api.get(base, "/patroni")
    except Exception:  # a leader that does not answer may be dead
        status = None
    history = None
    timeline = segment_range(wal_name, segment_size)[0]
    if isinstance(status, dict) and isinstance(status.get("timeline"), int) and status["timeline"] > timeline:
        try:
            history = api.get(base, "/history")
        except Exception as error:
            raise Refused("leader %s's history (%s/history) unavailable: %s"
                          % (leader.get("name"), base, describe(error))) from None
    return leader.get("name"), status, history


def load_config(path):
    import yaml  # python3-yaml: a dependency of Debian's patroni package

    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="Patroni's configuration file (REST API address, auth)")
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--pgbackrest", default="pgbackrest", help="pgbackrest executable (PATH is searched)")
    parser.add_argument("--wal-segment-size", type=int, default=DEFAULT_WAL_SEGMENT_SIZE)
    parser.add_argument("wal_name", help="%%f")
    parser.add_argument("destination", help="%%p")
    args = parser.parse_args(argv)

    if is_guarded(args.wal_name, args.destination):
        try:
            api = RestApi(load_config(args.config))
            leader, status, history = ask_leader(api, args.wal_name, args.wal_segment_size)
            decide(args.wal_name, leader, status, history, args.wal_segment_size)
        except Refused as refused:
            print("%s: %s not fetched from the archive: %s" % (PREFIX, args.wal_name, refused), file=sys.stderr)
            return 1
        except Exception as error:  # e.g. an unreadable configuration: refuse, say what failed
            print("%s: %s not fetched from the archive: %s" % (PREFIX, args.wal_name, describe(error)),
                  file=sys.stderr)
            return 1
    command = [args.pgbackrest, "--stanza=" + args.stanza, "archive-get", args.wal_name, args.destination]
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print("%s: cannot run %s: %s" % (PREFIX, args.pgbackrest, error.strerror), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
