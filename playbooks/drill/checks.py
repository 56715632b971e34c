#!/usr/bin/env python3
"""What a drill must show, checked on report.py's figures.

A check fails when the stack misbehaved, and also when the probe could not
have seen it misbehave (it wrote nothing, its watcher reached no node, a
read-back failed): a broken probe never passes as a quiet stack.

Usage: checks.py REPORT.json  -> prints one line per problem, exit 1 if any.
"""

from __future__ import annotations

import json
import sys

FAILOVER_MAX_S = 60  # REQ-DEPLOY-005: failover under 60 seconds
REDIS_MIN_REPLICAS_MAX_LAG_S = 10  # roles/redis default: the loss window min-replicas promises
MIN_ACKED_WRITES = 50  # the probe writes about 15 per second: fewer means it was not really writing
MIN_ACKED_WRITES_AFTER_FAULT = 10
MIN_PRIMARY_SAMPLES = 20  # the watcher asks 4 times a second
MAX_BLIND_SHARE = 0.05  # samples in which the watcher reached no PostgreSQL node
SYNC_BACK_MAX_S = 2.0  # clients of a lost sync server are back on another one (issue 17)
SYNC_VIP_MOVE_BACK_MAX_S = 10.0  # clients through a lost lb: the VIP moves (goal 5 s), then they reconnect
NEW_ROOM_MAX_S = 2.0  # after every drill every sync server serves a new room within this
# RTMX API through the VIP (issue 14). REQ-DEPLOY-005's API check: every 10 s, DOWN after 3: requests may
# fail at most that long after an instance dies (HAProxy's retries should make it none at all).
API_DETECTION_WINDOW_S = 10 * 3
API_VIP_MOVE_MAX_S = SYNC_VIP_MOVE_BACK_MAX_S  # through a lost lb: the VIP moves, as for the sync clients
MIN_API_REQUESTS = 50  # the probe asks about 8 times a second
MIN_API_OK_AFTER_FAULT = 10
# Alerts (issue 11): the drill's expected alerts sent within this many seconds of the fault (the goal is
# 30 s for a failover; a leader loss is only seen once the leader key expires), each one resolved after the heal.
ALERT_DELIVERY_MAX_S = 120
# Drawn by no chaos series (failover-drill.yml's drill_chaos_catalog): seeds replay the series they drew
# before these drills existed.
CHAOS_EXCLUDED = ("api_server_loss", "replica_loss", "cluster_loss", "bad_change", "etcd_majority_loss")
# Disaster recovery (issue 12). REQ-DEPLOY-005: RTO < 15 min, RPO < 5 min; the goals, asserted for the lab's
# data: a lost cluster restored within 5 minutes, losing only what was not archived yet: commits acknowledged
# at most archive_timeout before the loss (the drill records the cluster's), plus the asynchronous push's slack.
DR_RTO_MAX_S = 15 * 60
DR_RPO_MAX_S = 5 * 60
CLUSTER_LOSS_RTO_GOAL_S = 5 * 60
ARCHIVE_PUSH_SLACK_S = 15

# Per drill: who the fault must hit, what must change or stay, and bounds on the write
# unavailability (s) seen through the VIP. The bounds are the goals with a margin for a
# loaded 2-core CI machine, far below the requirement's 60 s where the goal allows.
# "sync_disconnects": 0 means no sync client at all, through the VIP or direct, was
# disconnected; an lb loss necessarily cuts the connections through that lb
# ("sync_direct_disconnects": 0 only).
EXPECTATIONS = {
    "planned_switchover": {"target": "leader", "new_leader": True, "pg_failed_writes": 0,
                           "pg_max_s": 20, "redis_max_s": 10, "sync_disconnects": 0},
    "leader_node_loss": {"target": "leader", "new_leader": True, "pg_max_s": 45, "redis_max_s": 40,
                         "sync_disconnects": 0},
    "postgres_crash": {"target": "leader", "pg_max_s": 20, "redis_max_s": 10, "sync_disconnects": 0},
    "leader_partition": {"target": "leader", "new_leader": True, "pg_max_s": 45, "redis_max_s": 40,
                         "sync_disconnects": 0},
    "etcd_member_loss": {"same_leader": True, "pg_max_s": 10, "redis_max_s": 10, "sync_disconnects": 0},
    "redis_master_loss": {"target": "master", "new_master": True, "pg_max_s": 10, "redis_max_s": 20,
                          "sync_disconnects": 0},
    "sentinel_minority_loss": {"same_master": True, "pg_max_s": 10, "redis_max_s": 10, "sync_disconnects": 0},
    "sync_server_loss": {"sync_only_target": True, "pg_max_s": 10, "redis_max_s": 10},
    "lb_vip_loss": {"pg_max_s": 15, "redis_max_s": 15, "sync_direct_disconnects": 0, "sync_vip_back": True,
                    "api_vip_move": True},
    "api_server_loss": {"pg_max_s": 10, "redis_max_s": 10, "sync_disconnects": 0, "api_instance_lost": True},
    # The synchronous standby crashes: commits wait until Patroni names the other standby synchronous.
    "replica_loss": {"same_leader": True, "pg_max_s": 15, "redis_max_s": 10, "sync_disconnects": 0},
    # Every member's data destroyed: restore.yml brings the cluster back (the sync servers restart one by one to
    # load the restored rooms: their clients reconnect). Writes stop until then; so do API answers.
    "cluster_loss": {"disaster": True, "restored": True, "pg_max_s": CLUSTER_LOSS_RTO_GOAL_S, "redis_max_s": 10,
                     "pg_lost_within_archive_window": True},
    # A table dropped: restored elsewhere and copied back, the cluster never notices.
    "bad_change": {"restored": True, "rows_back": True, "same_leader": True, "pg_max_s": 10, "redis_max_s": 10,
                   "sync_disconnects": 0},
    # A majority of etcd members lost: failsafe mode keeps the primary writable while etcd is lost. Rebuilt
    # empty (the runbook's way B), the leader key is gone: the primary demotes and Patroni elects again.
    "etcd_majority_loss": {"restored": True, "writable_until_heal": True, "pg_max_s": 45, "redis_max_s": 10,
                           "sync_disconnects": 0},
}


def probe_worked(d: dict, expect: dict) -> list[str]:
    """The probe saw what it claims: it wrote, read back, watched and synced."""
    out = [f"probe error: {e}" for e in d.get("probe_errors") or []]
    for db in ("pg", "redis"):
        acked, after = d.get(f"{db}_acked_writes") or 0, d.get(f"{db}_acked_writes_after_fault") or 0
        if acked < MIN_ACKED_WRITES or after < MIN_ACKED_WRITES_AFTER_FAULT:
            out.append(f"{db} probe acknowledged {acked} writes ({after} after the fault): it was not writing")
        if d.get(f"{db}_acked_writes_lost") is None:
            out.append(f"{db} read-back failed: acknowledged writes lost unknown")
    samples, blind = d.get("primary_samples") or 0, d.get("primary_samples_blind") or 0
    # A lost cluster has no node to reach until it is restored.
    if samples < MIN_PRIMARY_SAMPLES or (blind > MAX_BLIND_SHARE * samples and not expect.get("disaster")):
        out.append(f"primary watcher reached no PostgreSQL node in {blind} of {samples} samples")
    if (d.get("max_writable_primaries") or 0) < 1:
        out.append("primary watcher never saw a writable primary")
    if d.get("writable_primaries_at_end") != 1:
        out.append(f"{d.get('writable_primaries_at_end')} writable primaries at the end (1 expected)")
    if not d.get("sync_updates"):
        out.append("sync probe sent no update")
    if d.get("sync_updates_lost") is None:
        out.append("sync read-back failed: updates lost unknown")
    if d.get("api_requests") is not None:  # None: no API tier, no API probe
        requests, ok_after = d.get("api_requests") or 0, d.get("api_ok_requests_after_fault") or 0
        if requests < MIN_API_REQUESTS or ok_after < MIN_API_OK_AFTER_FAULT:
            out.append(f"API probe sent {requests} requests ({ok_after} answered after the fault): it was not asking")
    if d.get("sync_servers_unreachable_after"):
        out.append(f"sync servers unreachable after the drill: {', '.join(d['sync_servers_unreachable_after'])}")
    return out


def stack_behaved(d: dict, expect: dict) -> list[str]:
    """The requirement's bounds and this drill's expectations."""
    out = []
    if not d.get("verified"):
        out.append(f"the stack was not whole again: {d.get('verify_failed_checks')}")
    if d.get("pg_acked_writes_lost"):
        window, bound = d.get("pg_lost_window_s"), None
        if expect.get("pg_lost_within_archive_window"):
            archive_timeout = (d.get("dr") or {}).get("archive_timeout_s")
            bound = min(archive_timeout + ARCHIVE_PUSH_SLACK_S, DR_RPO_MAX_S) if archive_timeout else 0
        if bound is None:
            out.append(f"{d['pg_acked_writes_lost']} acknowledged commits lost")
        elif window is None or window > bound:
            out.append(f"{d['pg_acked_writes_lost']} acknowledged commits lost, the earliest acknowledged {window} s "
                       f"before the fault (at most the archive window, {bound} s)")
    if (d.get("max_writable_primaries") or 0) > 1:
        out.append(f"{d['max_writable_primaries']} writable primaries at once")
    if d.get("redis_acked_writes_lost"):
        window = d.get("redis_lost_window_s")
        if window is None or window > REDIS_MIN_REPLICAS_MAX_LAG_S:
            out.append(f"Redis lost {d['redis_acked_writes_lost']} writes acknowledged {window} s before the fault")
    if expect.get("writable_until_heal") and d.get("pg_write_unavailability_until_heal_s") != 0:
        out.append(f"writes stopped for {d.get('pg_write_unavailability_until_heal_s')} s while the fault lasted "
                   "(failsafe mode should have kept the primary writable)")
    cap = DR_RTO_MAX_S if expect.get("disaster") else FAILOVER_MAX_S
    for db in ("pg", "redis"):
        value, bound = d.get(f"{db}_write_unavailability_s"), min(expect.get(f"{db}_max_s", cap), cap)
        if value is None or value > bound:
            out.append(f"{db} write unavailability {value} s (at most {bound} s)")
    if "pg_failed_writes" in expect and d.get("pg_failed_writes") != expect["pg_failed_writes"]:
        out.append(f"{d.get('pg_failed_writes')} failed PostgreSQL writes ({expect['pg_failed_writes']} expected)")
    if expect.get("target") == "leader" and d.get("target") != d.get("leader_before"):
        out.append(f"target {d.get('target')} was not the leader ({d.get('leader_before')})")
    master_address = (d.get("master_before") or "").split(":")[0]
    if expect.get("target") == "master" and (d.get("target_address") or "?") != master_address:
        out.append(f"target {d.get('target')} was not the Redis master ({d.get('master_before')})")
    for what, key, before in (("leader", "time_to_new_leader_s", "leader_before"),
                              ("master", "time_to_new_master_s", "master_before")):
        value = d.get(key)
        if expect.get(f"new_{what}") and (value is None or value > FAILOVER_MAX_S):
            out.append(f"no new {what} within {FAILOVER_MAX_S} s ({key} = {value})")
        if expect.get(f"same_{what}") and value is not None:
            out.append(f"the {what} changed ({d.get(before)} -> another after {value} s) although it was not hit")
    out.extend(restore_problems(d, expect))
    out.extend(sync_problems(d, expect))
    out.extend(api_problems(d, expect))
    out.extend(alert_problems(d))
    if d.get("sync_updates_lost"):
        out.append(f"{d['sync_updates_lost']} sync updates lost")
    return out


def restore_problems(d: dict, expect: dict) -> list[str]:
    """A disaster-recovery drill's heal (the restore or rebuild the runbook prescribes) worked, and brought back
    every row a bad change took."""
    dr = d.get("dr") or {}
    out = []
    if expect.get("restored") and dr.get("restore_ok") is not True:
        out.append(f"the restore or rebuild failed (its log is beside the probe file): {dr}")
    if expect.get("rows_back"):
        written, recovered = dr.get("rows_written"), dr.get("rows_recovered")
        if not written or recovered != written or dr.get("rows_identical") is not True:
            out.append(f"{recovered} of {written} dropped rows copied back (identical: {dr.get('rows_identical')})")
    return out


def sync_problems(d: dict, expect: dict) -> list[str]:
    """Sync clients (through the VIP like users, and direct) stay connected unless their server or lb was hit."""
    out = []
    vip, direct = d.get("sync_vip_disconnects") or 0, d.get("sync_direct_disconnects") or 0
    if not (d.get("sync_clients") or {}).get("vip"):
        out.append("no sync probe client went through the VIP")
    if "sync_disconnects" in expect and vip + direct:
        out.append(f"{vip} sync clients through the VIP and {direct} direct were disconnected (from "
                   f"{', '.join(d.get('sync_disconnected_from') or [])}) although no sync server or lb was hit")
    if "sync_direct_disconnects" in expect and direct:
        out.append(f"{direct} direct sync clients were disconnected although no sync server was hit")
    if d.get("sync_never_back"):
        out.append(f"{d['sync_never_back']} sync client disconnects were never followed by a reconnect")
    back = d.get("sync_back_in_sync_s") or 0
    if expect.get("sync_only_target"):
        if (d.get("sync_disconnected_from") or []) != [d.get("target")]:
            out.append(f"sync clients disconnected from {d.get('sync_disconnected_from') or 'no server'}; only "
                       f"those of the killed {d.get('target')} should be")
        if back > SYNC_BACK_MAX_S:
            out.append(f"sync clients back after {back} s (at most {SYNC_BACK_MAX_S} s)")
    if expect.get("sync_vip_back") and back > SYNC_VIP_MOVE_BACK_MAX_S:
        out.append(f"sync clients back after {back} s (at most {SYNC_VIP_MOVE_BACK_MAX_S} s)")
    new_room = d.get("sync_new_room_s") or {}
    if not new_room:
        out.append("no sync server was asked to serve a new room after the drill")
    for server, seconds in sorted(new_room.items()):
        if not isinstance(seconds, (int, float)) or seconds > NEW_ROOM_MAX_S:
            out.append(f"sync server {server} did not serve a new room within {NEW_ROOM_MAX_S} s: {seconds}")
    return out


def api_problems(d: dict, expect: dict) -> list[str]:
    """Requests to the RTMX API through the VIP: none fails, but while the VIP moves (an lb loss) and for at most
    HAProxy's detection window when an API instance dies."""
    if d.get("api_requests") is None or expect.get("disaster"):
        return []
    failed, window, gap = d.get("api_failed_requests") or 0, d.get("api_failure_window_s"), d.get("api_longest_gap_s")
    if expect.get("api_instance_lost") or d.get("api_instance_lost"):
        if window is None or window > API_DETECTION_WINDOW_S:
            return [f"API requests through the VIP failed for {window} s ({failed} failed requests; at most the "
                    f"health-check detection window, {API_DETECTION_WINDOW_S} s)"]
        return []
    if expect.get("api_vip_move"):
        if gap is None or gap > API_VIP_MOVE_MAX_S:
            return [f"API answers through the VIP stopped for {gap} s while the VIP moved ({failed} failed requests; "
                    f"at most {API_VIP_MOVE_MAX_S} s)"]
        return []
    if failed:
        return [f"{failed} API requests through the VIP failed (for {window} s) although no API instance or lb was hit"]
    return []


def alert_problems(d: dict) -> list[str]:
    """The operator was paged for the fault, promptly, told when it healed, and not paged for anything else.
    Nothing to check without monitoring (alerts_expected None)."""
    if d.get("alerts_expected") is None:
        return []
    out = []
    if d.get("alerts_active_before"):
        out.append(f"alerts still active before the fault: {d['alerts_active_before']} "
                   "(this drill's cannot be told apart)")
    for name in d.get("alerts_missing") or []:
        out.append(f"alert {name} was not sent within {ALERT_DELIVERY_MAX_S} s of the fault")
    for name, seconds in sorted((d.get("alerts_delivered_s") or {}).items()):
        if name in d["alerts_expected"] and seconds > ALERT_DELIVERY_MAX_S:
            out.append(f"alert {name} sent {seconds} s after the fault (at most {ALERT_DELIVERY_MAX_S} s)")
    if d.get("alerts_unresolved"):
        out.append(f"alerts never resolved after the heal: {d['alerts_unresolved']}")
    if d.get("alerts_unrelated"):
        out.append(f"alerts the fault does not explain: {d['alerts_unrelated']}")
    return out


def problems(report: dict) -> list[str]:
    """Every problem of every drill, as 'drill: problem'; empty when the run passed."""
    out = []
    if not report.get("drills"):
        out.append("the report holds no drill")
    for d in report.get("drills", []):
        expect = EXPECTATIONS.get(d.get("drill"))
        if expect is None:
            out.append(f"{d.get('drill')}: no expectations for this drill")
            continue
        out += [f"{d['drill']}: {p}" for p in probe_worked(d, expect) + stack_behaved(d, expect)]
    return out


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        found = problems(json.load(handle))
    print("\n".join(found) if found else "every drill check passed")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
