#!/usr/bin/env python3
"""Turn drill observations into figures: report.json, report.md, timeline.svg.

Usage: report.py DRILLS.json OUTDIR
DRILLS.json is written by failover-drill.yml: one entry per drill with its
name, target, the times (epoch seconds) of the fault, the heal and the
verification, and the probe's output file.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from html import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alerts  # noqa: E402 - beside this script, not a package
import checks  # noqa: E402

# REQ-DEPLOY-005: 99.9 % a month: 43.8 minutes of unavailability (30.42 days x 1440 x 0.001).
ERROR_BUDGET_MINUTES = 43.8

SLOW = 1.0  # a write slower than this counts as unavailable from its start


def unavailability(writes: list, since: float) -> dict:
    """Outages seen by the writer after `since`: each runs from the start of a failed (or slow) write to the
    end of the next fast successful one. window_s is the longest, total_s their sum."""
    bursts, start, seen = [], None, 0
    for w in sorted(writes, key=lambda w: w[0]):
        if w[1] < since:
            continue
        seen += 1
        bad = not w[2] or w[1] - w[0] > SLOW
        if bad and start is None:
            start = w[0]
        elif not bad and start is not None:
            bursts.append(w[1] - start)
            start = None
    if start is not None or not seen:  # never recovered before the probe stopped, or never wrote
        return {"window_s": None, "total_s": None, "failed": len([w for w in writes if w[0] >= since and not w[2]])}
    return {"window_s": round(max(bursts, default=0.0), 2), "total_s": round(sum(bursts), 2),
            "failed": len([w for w in writes if w[0] >= since and not w[2]])}


def api_figures(requests: list | None, since: float) -> dict:
    """The RTMX API probe through the VIP (GET /api/status in a loop) after `since`: requests, failed ones, the
    longest failure window (start of a failed request to the end of the next successful one; None when it never
    recovered), the longest gap between two successful answers (from the last one before `since`), and which
    instances answered. All None without an API probe (no api group)."""
    keys = ("api_requests", "api_ok_requests_after_fault", "api_failed_requests", "api_failure_window_s",
            "api_longest_gap_s", "api_served_by")
    if requests is None:
        return dict.fromkeys(keys)
    after = sorted((r for r in requests if r[1] >= since), key=lambda r: r[0])
    window, start = 0.0, None
    for r in after:
        if not r[2] and start is None:
            start = r[0]
        elif r[2] and start is not None:
            window, start = max(window, r[1] - start), None
    ends = sorted(r[1] for r in requests if r[2])
    before = [t for t in ends if t < since]
    marks = before[-1:] + [t for t in ends if t >= since]
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    ok_after = [r for r in after if r[2]]
    return dict(zip(keys, (
        len(requests), len(ok_after), len(after) - len(ok_after),
        None if start is not None else round(window, 2),
        round(max(gaps), 2) if gaps and ok_after else None,
        sorted({r[4] for r in ok_after}))))


def first_change(series: list, since: float, before_value) -> float | None:
    """Seconds from `since` until the series shows a value other than before_value (and not None)."""
    for t, value in series:
        if t >= since and value is not None and value != before_value:
            return round(t - since, 2)
    return None


def value_before(series: list, since: float):
    values = [v for t, v in series if t < since and v is not None]
    return values[-1] if values else None


def drill_figures(drill: dict, probe: dict) -> dict:
    fault = drill["fault_at"]
    leaders = [(t, v) for t, v in probe["leaders"]]
    masters = [(t, v) for t, v in probe["redis_masters"]]
    leader_before = value_before(leaders, fault)
    master_before = value_before(masters, fault)
    pg = unavailability(probe["pg_writes"], fault)
    redis = unavailability(probe["redis_writes"], fault)
    max_primaries = max((len(p[1]) for p in probe["primaries"]), default=0)
    # A watcher that reaches no node sees no primary at all: that is blindness, not safety.
    pg_nodes = probe.get("pg_nodes") or []
    blind = [p for p in probe["primaries"] if not pg_nodes or len(p[2]) >= len(pg_nodes)]
    last = probe["primaries"][-1] if probe["primaries"] else None
    pg_after = [w for w in probe["pg_writes"] if w[0] >= fault]
    redis_after = [w for w in probe["redis_writes"] if w[0] >= fault]
    final = probe["final"]
    sync = final.get("sync") or {}
    clients = probe.get("sync_clients") or []
    # Each disconnect: [time, the server the client was on, close code/reason].
    disconnected_from = sorted({d[1] for c in clients for d in c["disconnects"]})
    back, never_back = [], 0
    for c in clients:
        for i, d in enumerate(c["disconnects"]):
            if i < len(c["reconnects"]):
                back.append(c["reconnects"][i] - d[0])
            else:
                never_back += 1
    return {
        "drill": drill["name"],
        "target": drill.get("target"),
        "target_address": drill.get("target_address"),
        "api_instance_lost": str(drill.get("api_instance_lost")).lower() == "true",
        "fault": drill.get("fault"),
        "pg_write_unavailability_s": pg["window_s"],
        # While the fault lasted, before anything was healed (failsafe mode through an etcd majority loss).
        "pg_write_unavailability_until_heal_s": unavailability(
            [w for w in probe["pg_writes"] if w[0] < drill.get("healed_at", float("inf"))], fault)["window_s"],
        "pg_failed_writes": pg["failed"],
        "pg_acked_writes": len([w for w in probe["pg_writes"] if w[2]]),
        "pg_acked_writes_lost": final["pg"].get("lost_count"),
        "time_to_new_leader_s": first_change(leaders, fault, leader_before),
        "leader_before": leader_before,
        "leader_after": value_before(leaders, probe["stopped"] + 1),
        "max_writable_primaries": max_primaries,
        "primary_samples": len(probe["primaries"]),
        "primary_samples_blind": len(blind),
        "writable_primaries_at_end": len(last[1]) if last else None,
        "pg_acked_writes_after_fault": len([w for w in pg_after if w[2]]),
        "redis_acked_writes_after_fault": len([w for w in redis_after if w[2]]),
        "redis_write_unavailability_s": redis["window_s"],
        "redis_failed_writes": redis["failed"],
        "redis_acked_writes": len([w for w in probe["redis_writes"] if w[2]]),
        "redis_acked_writes_lost": final["redis"].get("lost_count"),
        "time_to_new_master_s": first_change(masters, fault, master_before),
        "redis_lost_window_s": lost_window(probe["redis_writes"], final["redis"].get("lost") or [], fault),
        # A restore to the end of the WAL archive loses what was not archived yet: the RPO of a total loss.
        "pg_lost_window_s": lost_window(probe["pg_writes"], final["pg"].get("lost") or [], fault),
        "dr": dr_figures(drill.get("dr")),
        "master_before": master_before,
        "rto_s": round(drill["verified_at"] - fault, 2) if drill.get("verified_at") else None,
        "verified": drill.get("verify_ok", False),
        "verify_failed_checks": drill.get("verify_failed_checks", []),
        "sync_updates": sync.get("updates"),
        "sync_updates_lost": sync.get("updates_lost"),
        "sync_clients": {via: len([c for c in clients if c["via"] == via]) for via in ("vip", "direct")},
        "sync_vip_disconnects": sum(len(c["disconnects"]) for c in clients if c["via"] == "vip"),
        "sync_direct_disconnects": sum(len(c["disconnects"]) for c in clients if c["via"] == "direct"),
        "sync_disconnected_from": disconnected_from,
        "sync_back_in_sync_s": round(max(back), 2) if back else 0.0,
        "sync_never_back": never_back,
        "sync_new_room_s": sync.get("new_room_s") or {},
        "sync_converged_after_stop_s": sync.get("converged_after_stop_s"),
        "sync_servers_unreachable_after": sorted(url for url, v in (sync.get("missing_per_server") or {}).items()
                                                 if not isinstance(v, int)),
        **api_figures(probe.get("api_requests"), fault),
        **alert_figures(drill),
        "error_budget_minutes": error_budget_minutes(pg["window_s"], redis["window_s"]),
        "probe_errors": probe.get("errors", []),
        "notes": probe.get("notes", []),
    }


def error_budget_minutes(*windows) -> float | None:
    """What the drill cost of the month's error budget: the longest window in which users could not write
    (PostgreSQL or Redis through the VIP), in minutes. None when a window is unknown."""
    if any(w is None for w in windows):
        return None
    return round(max(windows, default=0.0) / 60, 2)


def alert_figures(drill: dict) -> dict:
    """What the operator was sent (playbooks/drill/alerts.py): None without monitoring."""
    keys = ("alerts_expected", "alerts_delivered_s", "alerts_resolved_after_heal_s", "alerts_missing",
            "alerts_unresolved", "alerts_unrelated", "alerts_active_before")
    sent = drill.get("alerts")
    if isinstance(sent, str):
        sent = json.loads(sent) if sent.strip() not in ("", "None", "null") else None
    if not sent:
        return dict.fromkeys(keys)
    found = alerts.summary(sent["notifications"], drill["fault_at"], drill["healed_at"], sent["expect"], sent["allow"],
                           sent.get("ignore", []))
    return dict(zip(keys, (sent["expect"], found["delivered_s"], found["resolved_after_heal_s"], found["missing"],
                           found["unresolved"], found["unrelated"], sent["quiet"]["active"])))


def dr_figures(recorded) -> dict:
    """A disaster-recovery drill's heal (faults.yml's drill_dr: restore or rebuild), typed: numbers, booleans,
    text. Empty for the other drills."""
    out = {}
    for key, value in (recorded or {}).items():
        text = str(value).strip()
        if text.lower() in ("true", "false"):
            out[key] = text.lower() == "true"
            continue
        try:
            out[key] = int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            out[key] = None if text.lower() in ("", "none", "null") else text
    return out


def lost_window(writes: list, lost: list, fault: float) -> float | None:
    """How long before the fault the earliest lost write was acknowledged (Redis: the min-replicas bound;
    PostgreSQL after a restore: the archive window)."""
    acked_at = {w[3]: w[1] for w in writes if w[2]}
    times = [acked_at[s] for s in lost if s in acked_at]
    return round(fault - min(times), 2) if times else None


def per_second(probe: dict, key: str, t0: float) -> tuple[dict, dict]:
    ok, failed = {}, {}
    for w in probe[key]:
        second = int(w[1] - t0)
        (ok if w[2] else failed)[second] = (ok if w[2] else failed).get(second, 0) + 1
    return ok, failed


def svg_timeline(drills: list, probes: dict, path: str) -> None:
    """Successful and failed PostgreSQL and Redis writes per second, one band per drill, faults marked."""
    width, band, left = 1200, 150, 150
    height = band * len(drills) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             '<text x="10" y="16" font-size="13">Writes per second through the VIP: PostgreSQL ok (green) / failed '
             '(red), Redis ok (blue) / failed (orange); fault (black), healed (grey), verified (green line)</text>']
    for i, drill in enumerate(drills):
        probe = probes[drill["name"]]
        t0, t1 = probe["started"], probe["stopped"]
        span = max(t1 - t0, 1.0)
        top = 30 + i * band
        scale_x = (width - left - 20) / span
        series = [("pg_writes", "#2a9d2a", "#d62828", 0), ("redis_writes", "#1d6fd6", "#f08c00", 1)]
        peak = 1
        counts = {}
        for key, *_ in series:
            counts[key] = per_second(probe, key, t0)
            peak = max([peak] + list(counts[key][0].values()) + list(counts[key][1].values()))
        half = (band - 30) / 2
        parts.append(f'<text x="10" y="{top + 20}" font-weight="bold">{escape(drill["name"])}</text>')
        parts.append(f'<text x="10" y="{top + 36}">{escape(str(drill.get("target") or ""))}</text>')
        for key, ok_color, bad_color, row in series:
            base = top + half * (row + 1)
            parts.append(f'<line x1="{left}" y1="{base}" x2="{width - 20}" y2="{base}" stroke="#ccc"/>')
            label = "PostgreSQL" if row == 0 else "Redis"
            parts.append(f'<text x="{left - 70}" y="{base - 4}" fill="#555">{label}</text>')
            ok, failed = counts[key]
            for second in range(int(span) + 1):
                x = left + second * scale_x
                w = max(scale_x - 1, 1)
                h_ok = ok.get(second, 0) / peak * (half - 4)
                h_bad = failed.get(second, 0) / peak * (half - 4)
                if h_ok:
                    parts.append(f'<rect x="{x:.1f}" y="{base - h_ok:.1f}" width="{w:.1f}" height="{h_ok:.1f}" '
                                 f'fill="{ok_color}"/>')
                if h_bad:
                    parts.append(f'<rect x="{x:.1f}" y="{base - h_ok - h_bad:.1f}" width="{w:.1f}" '
                                 f'height="{h_bad:.1f}" fill="{bad_color}"/>')
        for key, color in (("fault_at", "black"), ("healed_at", "#888"), ("verified_at", "#2a9d2a")):
            t = drill.get(key)
            if t:
                x = left + (t - t0) * scale_x
                parts.append(f'<line x1="{x:.1f}" y1="{top + 4}" x2="{x:.1f}" y2="{top + band - 24}" stroke="{color}" '
                             f'stroke-width="2"/>')
        parts.append(f'<text x="{left}" y="{top + band - 10}">0 s</text>'
                     f'<text x="{width - 60}" y="{top + band - 10}">{span:.0f} s</text>')
    parts.append("</svg>")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts))


COLUMNS = [
    ("drill", "drill"), ("pg_write_unavailability_s", "PG write unavailability (s)"),
    ("pg_failed_writes", "PG failed writes"),
    ("time_to_new_leader_s", "new leader (s)"), ("pg_acked_writes_lost", "PG acked writes lost"),
    ("max_writable_primaries", "max writable primaries"), ("redis_write_unavailability_s", "Redis unavailability (s)"),
    ("time_to_new_master_s", "new master (s)"), ("redis_acked_writes_lost", "Redis acked writes lost"),
    ("pg_lost_window_s", "PG lost window (s)"),
    ("rto_s", "RTO (s)"), ("sync_vip_disconnects", "sync disconnects (VIP)"),
    ("sync_direct_disconnects", "sync disconnects (direct)"), ("sync_back_in_sync_s", "sync back (s)"),
    ("sync_updates_lost", "sync updates lost"), ("api_failed_requests", "API failed requests (VIP)"),
    ("api_longest_gap_s", "API longest gap (s)"), ("alerts_delivered_s", "alerts sent (s after fault)"),
    ("alerts_resolved_after_heal_s", "resolved (s after heal)"), ("error_budget_minutes", "error budget (min of 43.8)"),
    ("verified", "verified"), ("dr", "restore / rebuild"),
]


def cell(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k.split('//')[-1].split(':')[0]}={v}" for k, v in value.items()) or "-"
    if value is None:
        return "-"
    return str(value)


def markdown(figures: list, meta: dict) -> str:
    lines = [f"# Failover drill report {meta['run']}", "",
             f"Inventory: `{meta.get('inventory', '')}`. Chaos seed: {meta.get('seed', '-')}. "
             "Times in seconds from the fault; RTO = fault until ha_verify passed with the failed part back.", "",
             "| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for f in figures:
        lines.append("| " + " | ".join(cell(f.get(key)) for key, _ in COLUMNS) + " |")
    lines += ["", "Goals: leader node loss <= 20 s of write unavailability, PostgreSQL crash <= 10 s, planned "
              "switchover 0 failed writes, Redis master loss <= 8 s, lb loss <= 5 s; sync clients: none disconnected "
              "(through the VIP or directly) by a database, Redis or etcd fault, only the killed server's by a sync "
              "server loss, back within 2 s, and every server serves a new room within 2 s after every drill; "
              "API requests through the VIP: none failed, but for an lb loss (longest gap <= 10 s) and an API "
              "instance loss (failures for at most the health-check detection window, 30 s); alerts: a failover pages "
              "within 30 s of the fault; disaster recovery: a lost cluster restored within 5 min losing at most the "
              "archive window (60 s), a dropped table's rows all copied back, etcd rebuilt while the database stays "
              "writable. "
              "Requirement: failover < 60 s, RTO < 15 min, RPO < 5 min.", ""]
    problems = meta.get("problems") or []
    lines += ["## Checks (playbooks/drill/checks.py)", ""]
    lines += [f"- FAILED {p}" for p in problems] if problems else ["Every drill check passed."]
    lines += ["", "![timeline](timeline.svg)", ""]
    return "\n".join(lines)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        run = json.load(handle)
    outdir = sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    probes, figures = {}, []
    for drill in run["drills"]:
        with open(drill["probe_file"], encoding="utf-8") as handle:
            probes[drill["name"]] = json.load(handle)
        figures.append(drill_figures(drill, probes[drill["name"]]))
    report = {"run": run["run"], "inventory": run.get("inventory"), "seed": run.get("seed"), "drills": figures}
    windows = [f["pg_write_unavailability_s"] for f in figures if f["pg_write_unavailability_s"] is not None]
    report["summary"] = {
        "drills": len(figures),
        "all_verified": all(f["verified"] for f in figures),
        "pg_acked_writes_lost": sum(f["pg_acked_writes_lost"] or 0 for f in figures),
        "max_writable_primaries": max((f["max_writable_primaries"] for f in figures), default=0),
        "max_pg_write_unavailability_s": max(windows, default=0.0),
        "median_pg_write_unavailability_s": statistics.median(windows) if windows else 0.0,
        "max_rto_s": max((f["rto_s"] or 0 for f in figures), default=0.0),
        "redis_acked_writes_lost": sum(f["redis_acked_writes_lost"] or 0 for f in figures),
        "sync_updates_lost": sum(f["sync_updates_lost"] or 0 for f in figures),
        "sync_vip_disconnects": {f["drill"]: f["sync_vip_disconnects"] for f in figures},
        "api_failed_requests": {f["drill"]: f["api_failed_requests"] for f in figures},
        "alerts_delivered_s": {f["drill"]: f["alerts_delivered_s"] for f in figures},
        "error_budget_minutes": round(sum(f["error_budget_minutes"] or 0 for f in figures), 2),
        "error_budget_month_minutes": ERROR_BUDGET_MINUTES,
    }
    report["problems"] = checks.problems(report)
    report["summary"]["problems"] = len(report["problems"])
    with open(os.path.join(outdir, "report.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    with open(os.path.join(outdir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(figures, report))
    svg_timeline(run["drills"], probes, os.path.join(outdir, "timeline.svg"))
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
