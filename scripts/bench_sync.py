#!/usr/bin/env python3
"""Sync-tier benchmark: many y-websocket clients editing shared documents through the RTMX sync servers.

For each client count N (--clients 100,300,1000) the clients join rooms of --clients-per-room, through the
HAProxy VIP (--spread vip), straight to the sync servers round-robin (direct) or half and half (mixed, so
that the clients of one room sit on different servers). After --warmup seconds every client appends, at
--rate Hz for --duration seconds, an element "client|sequence|send time|measured" to the room's shared
Y.Array; every other client of the room records receive time - send time (one machine, one clock). Then the
clients stop editing and every room must converge (all documents equal, every edit present) within
--settle seconds. A large-document case (--large-doc, on by default) grows one room's document to about
--large-doc-bytes and edits it next to a small room at the same rate.

Clients run in --workers processes (one event loop each, whole rooms per worker); each worker reports its
CPU use and event loop lag, so a saturated load generator is named in the report. Server side: docker stats
of the sync containers, each server's /metrics, Redis INFO and PostgreSQL pg_stat_database before, during
and after the run. After each case every sync server must still open a new room (sync handshake within
2 s): the goal is p95 below 50 ms at 300 clients editing at 1 Hz with every server still serving new rooms.

Exit status: 0 whatever the figures, 1 when a server stopped serving new rooms or the benchmark itself
failed (no client connected, a worker crashed), 2 for a usage error. The report is printed and written to
reports/bench-sync/<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import websockets
from pycrdt import (
    Array,
    Doc,
    Text,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENV = ROOT / ".lab" / "connection.env"
DEFAULT_REPORT_DIR = ROOT / "reports" / "bench-sync"
SYNC_PORT = 8765
GOAL_CLIENTS = 300
GOAL_RATE_HZ = 1.0
GOAL_P95_MS = 50.0
NEW_ROOM_TIMEOUT_S = 2.0
# Large document: grown in chunks well below the servers' 1 MiB message limit, paced below their
# per-connection message rate limit.
CHUNK_BYTES = 64 * 1024
CHUNK_PAUSE_S = 0.02
LARGE_READY_TIMEOUT_S = 90.0
# A load generator process above this share of one core, or whose event loop runs this late (p99), measures
# itself rather than the servers.
SATURATED_CPU = 0.85
SATURATED_LOOP_LAG_MS = 20.0
LOOP_TICK_S = 0.05
RECONNECT_DELAY_S = 1.0
TOKEN_TTL_S = 3600.0


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers: configuration, planning, statistics, merging, report (unit tested without servers)


def parse_env_text(text: str) -> dict[str, str]:
    """KEY="value" lines of a connection.env (no shell: no expansion); comments and blank lines skipped."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def load_env(path: str | Path) -> dict[str, str]:
    try:
        return parse_env_text(Path(path).read_text())
    except FileNotFoundError:
        return {}


def parse_lab_nodes(value: str) -> list[tuple[str, str]]:
    """RTMX_LAB_NODES="pg1=198.18.2.11 sync1=198.18.2.21 ..." -> [(name, address), ...]."""
    nodes = []
    for item in value.split():
        name, sep, address = item.partition("=")
        if sep and name and address:
            nodes.append((name, address))
    return nodes


def container_name(prefix: str, host: str) -> str:
    """The lab's container of a host: <prefix>-<host> (lab-up.yml), <prefix><host> if the prefix ends in - or _,
    the host's own name for an empty prefix (molecule's containers)."""
    return f"{prefix}{host}" if not prefix or prefix.endswith(("-", "_")) else f"{prefix}-{host}"


@dataclass
class Target:
    url: str  # the VIP (HAProxy) or "" when unknown
    servers: list[dict] = field(default_factory=list)  # {"name", "url", "container"}


def _server_url(entry: str, scheme: str) -> str:
    entry = entry.strip().rstrip("/")
    if "://" in entry:
        return entry
    if ":" not in entry.rsplit("]", 1)[-1]:
        entry = f"{entry}:{SYNC_PORT}"
    return f"{scheme}://{entry}"


def resolve_target(env: dict[str, str], url: str | None = None, servers: str | None = None) -> Target:
    """The VIP URL and the sync servers: options first, then connection.env (servers: RTMX_LAB_NODES sync*)."""
    vip = (url or env.get("RTMX_SYNC_URL", "")).rstrip("/")
    scheme = "wss" if vip.startswith("wss://") else "ws"
    nodes = parse_lab_nodes(env.get("RTMX_LAB_NODES", ""))
    prefix = env.get("RTMX_LAB_PREFIX")  # None: no containers to sample
    by_address = {address: name for name, address in nodes}
    found = []
    if servers:
        for entry in servers.split(","):
            if entry.strip():
                server_url = _server_url(entry, scheme)
                parts = urlsplit(server_url)
                host = parts.hostname or ""
                name = by_address.get(host, parts.netloc)
                container = container_name(prefix, name) if prefix is not None and host in by_address else None
                found.append({"name": name, "url": server_url, "container": container})
    else:
        for name, address in nodes:
            if name.startswith("sync"):
                container = container_name(prefix, name) if prefix is not None else None
                found.append({"name": name, "url": _server_url(address, scheme), "container": container})
    return Target(url=vip, servers=found)


def parse_clients(text: str) -> list[int]:
    counts = [int(item) for item in text.split(",") if item.strip()]
    if any(count < 1 for count in counts):
        raise ValueError("client counts must be positive")
    return counts


def assign_endpoints(count: int, spread: str, vip: str, servers: list[str]) -> list[str]:
    """The base URL of each client: all through the VIP, round-robin over the servers, or alternately both.

    Clients of one room are consecutive, so round-robin puts a room's clients on different servers."""
    if spread == "vip":
        if not vip:
            raise ValueError("--spread vip needs the VIP URL (RTMX_SYNC_URL or --url)")
        return [vip] * count
    if not servers:
        raise ValueError(f"--spread {spread} needs the sync servers (RTMX_LAB_NODES or --servers)")
    if spread == "direct":
        return [servers[index % len(servers)] for index in range(count)]
    if spread == "mixed":
        if not vip:
            raise ValueError("--spread mixed needs the VIP URL (RTMX_SYNC_URL or --url)")
        return [vip if index % 2 == 0 else servers[(index // 2) % len(servers)] for index in range(count)]
    raise ValueError(f"unknown spread {spread!r}")


def plan_rooms(
    count: int,
    per_room: int,
    endpoints: list[str],
    prefix: str,
    label: str = "small",
    first_cid: int = 0,
    preload: int = 0,
) -> list[dict]:
    """Rooms of per_room consecutive clients (the last one may be smaller): {"name", "label", "preload", "clients"}."""
    rooms = []
    for number, start in enumerate(range(0, count, per_room)):
        members = range(start, min(count, start + per_room))
        rooms.append(
            {
                "name": f"{prefix}-r{number}",
                "label": label,
                "preload": preload,
                "clients": [(first_cid + index, endpoints[index]) for index in members],
            }
        )
    return rooms


def split_rooms(rooms: list[dict], workers: int) -> list[list[dict]]:
    """Whole rooms round-robin over the workers (a room's convergence is then checked in one process)."""
    shares: list[list[dict]] = [[] for _ in range(max(1, workers))]
    for index, room in enumerate(rooms):
        shares[index % len(shares)].append(room)
    return [share for share in shares if share]


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (q in 0..100); None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarise(values) -> dict:
    ordered = sorted(values)

    def rounded(value):
        return None if value is None else round(value, 2)

    return {
        "count": len(ordered),
        "p50": rounded(percentile(ordered, 50)),
        "p95": rounded(percentile(ordered, 95)),
        "p99": rounded(percentile(ordered, 99)),
        "max": rounded(ordered[-1] if ordered else None),
        "mean": rounded(sum(ordered) / len(ordered) if ordered else None),
    }


COUNTERS = (
    "clients",
    "connected",
    "connect_failures",
    "edits_made",
    "edits_sent",
    "sends_failed",
    "deliveries_expected",
    "edits_received",
    "disconnects",
    "reconnects",
)
REASONS = ("connect_errors", "disconnect_reasons", "reconnect_errors")


def merge_results(results: list[dict]) -> dict:
    """One case's totals from the workers' results: counters summed, samples concatenated, reasons merged."""
    merged: dict = {key: 0 for key in COUNTERS}
    reasons: dict[str, Counter] = {key: Counter() for key in REASONS}
    latencies: dict[str, list[float]] = {}
    connect_ms: dict[str, list[float]] = {}
    send_lag: list[float] = []
    rooms: list[dict] = []
    preload: list[dict] = []
    workers = []
    for result in results:
        for key in COUNTERS:
            merged[key] += result.get(key, 0)
        for key in REASONS:
            reasons[key].update(result.get(key, {}))
        for label, values in result.get("latencies_ms", {}).items():
            latencies.setdefault(label, []).extend(values)
        for label, values in result.get("connect_ms", {}).items():
            connect_ms.setdefault(label, []).extend(values)
        send_lag.extend(result.get("send_lag_ms", []))
        rooms.extend(result.get("rooms", []))
        preload.extend(result.get("preload", []))
        loop_lag = summarise(result.get("loop_lag_ms", []))
        workers.append(
            {
                "worker": result.get("worker"),
                "clients": result.get("clients", 0),
                "cpu_fraction": result.get("cpu_fraction"),
                "loop_lag_ms_p99": loop_lag["p99"],
                "loop_lag_ms_max": loop_lag["max"],
            }
        )
    merged.update({key: dict(value.most_common()) for key, value in reasons.items()})
    merged["latency_ms"] = summarise(value for values in latencies.values() for value in values)
    merged["latency_ms_by_room_kind"] = {label: summarise(values) for label, values in sorted(latencies.items())}
    merged["connect_ms"] = summarise(value for values in connect_ms.values() for value in values)
    merged["connect_ms_by_room_kind"] = {label: summarise(values) for label, values in sorted(connect_ms.items())}
    merged["send_lag_ms"] = summarise(send_lag)
    # A room none of whose clients connected has nothing to converge: counted apart (its clients are connect failures).
    used = [room for room in rooms if room.get("connected", 1)]
    converged = [room for room in used if room["converged"]]
    merged["convergence"] = {
        "rooms": len(used),
        "converged": len(converged),
        "all": bool(used) and len(converged) == len(used),
        "slowest_s": max((room["converge_s"] for room in converged), default=None),
        "not_converged": [room["name"] for room in used if not room["converged"]][:20],
        "rooms_without_clients": len(rooms) - len(used),
    }
    merged["rooms"] = rooms
    merged["preload"] = preload
    cpu = [worker["cpu_fraction"] for worker in workers if worker["cpu_fraction"] is not None]
    lags = [worker["loop_lag_ms_p99"] for worker in workers if worker["loop_lag_ms_p99"] is not None]
    merged["generator"] = {
        "workers": workers,
        "cpu_fraction_max": max(cpu, default=None),
        "loop_lag_ms_p99_max": max(lags, default=None),
        "saturated": any(value >= SATURATED_CPU for value in cpu)
        or any(value >= SATURATED_LOOP_LAG_MS for value in lags),
    }
    return merged


# Docker stats, Prometheus text, /proc/stat -----------------------------------------------------------------------

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(text: str) -> float | None:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not match:
        return None
    unit = match.group(2).lower() or "b"
    return float(match.group(1)) * _SIZE_UNITS[unit] if unit in _SIZE_UNITS else None


def parse_docker_stats(text: str) -> list[dict]:
    """`docker stats --no-stream --format '{{json .}}'` lines -> [{"name", "cpu_percent", "mem_bytes"}]."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            stats = json.loads(line)
            cpu = float(str(stats.get("CPUPerc", "")).rstrip("%"))
        except ValueError:
            continue
        memory = parse_size(str(stats.get("MemUsage", "")).split("/")[0])
        samples.append({"name": stats.get("Name", ""), "cpu_percent": cpu, "mem_bytes": memory})
    return samples


def summarise_docker(samples: list[dict], start: float, end: float) -> dict:
    """Per container: CPU % (100 = one core) mean and max, memory max, over the samples inside [start, end]
    (all samples when none fell inside)."""
    summary = {}
    for name in sorted({sample["name"] for sample in samples}):
        mine = [sample for sample in samples if sample["name"] == name]
        window = [sample for sample in mine if start <= sample["t"] <= end] or mine
        cpu = [sample["cpu_percent"] for sample in window]
        memory = [sample["mem_bytes"] for sample in window if sample["mem_bytes"] is not None]
        summary[name] = {
            "samples": len(window),
            "cpu_percent_mean": round(sum(cpu) / len(cpu), 1),
            "cpu_percent_max": round(max(cpu), 1),
            "mem_mib_max": round(max(memory) / 1024**2, 1) if memory else None,
        }
    return summary


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} (comments skipped)."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            continue
    return values


def metrics_delta(before: dict, after: dict) -> dict:
    """Counters (…_total, …_sum, …_count) as deltas, everything else as the value at the end. A counter that went
    down was reset (the server restarted): its delta is its value since."""
    delta = {}
    for name, value in after.items():
        base = name.split("{", 1)[0]
        if base.endswith(("_total", "_sum", "_count")) and name in before:
            delta[name] = round(value - before[name] if value >= before[name] else value, 6)
        else:
            delta[name] = value
    return delta


def parse_proc_stat(text: str) -> tuple[int, int] | None:
    """(busy, total) jiffies of the first "cpu" line of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            fields = [int(value) for value in line.split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            return sum(fields[:8]) - idle, sum(fields[:8])
    return None


def busy_fraction(before, after) -> float | None:
    if not before or not after or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


# Case report and goal ----------------------------------------------------------------------------------------------


def _window_rate(points: dict, section: str, key: str) -> float | None:
    start, end = points.get("window_start", {}), points.get("window_end", {})
    first, last = start.get(section) or {}, end.get(section) or {}
    if key not in first or key not in last or first.get("t") is None or last.get("t") is None:
        return None
    seconds = last["t"] - first["t"]
    return round((last[key] - first[key]) / seconds, 1) if seconds > 0 else None


def backend_summary(points: dict) -> dict:
    """Redis and PostgreSQL load from the samples taken before, at the window's start and end, and after."""
    redis_points = {name: point.get("redis") for name, point in points.items()}
    pg_points = {name: point.get("postgres") for name, point in points.items()}
    return {
        "redis": {
            "commands_per_s_in_window": _window_rate(points, "redis", "total_commands_processed"),
            "samples": redis_points,
        },
        "postgres": {
            "commits_per_s_in_window": _window_rate(points, "postgres", "xact_commit"),
            "samples": pg_points,
        },
    }


def server_metrics_summary(points: dict) -> dict:
    start = points.get("window_start", {}).get("metrics", {})
    end = points.get("window_end", {}).get("metrics", {})
    seconds = points.get("window_end", {}).get("t", 0) - points.get("window_start", {}).get("t", 0)
    summary = {}
    for server, after in end.items():
        before = start.get(server) or {}
        if "error" in after:
            summary[server] = {"error": after["error"]}
        elif "values" in before:
            summary[server] = metrics_delta(before["values"], after["values"])
            cpu = summary[server].get("process_cpu_seconds_total")
            if cpu is not None and seconds > 0:
                # The server's own CPU (its /metrics), where docker stats cannot see the containers' cgroups.
                summary[server]["cpu_fraction_in_window"] = round(cpu / seconds, 3)
        else:
            summary[server] = after.get("values", {})
    return summary


def build_case(
    name: str,
    kind: str,
    settings: dict,
    merged: dict,
    window: tuple[float, float],
    points: dict,
    docker_samples: list[dict],
    docker_errors: list[str],
    checks: list[dict],
    failure: str | None = None,
) -> dict:
    start, end = window
    duration = max(1e-9, end - start)
    host = busy_fraction(
        points.get("window_start", {}).get("host_cpu"),
        points.get("window_end", {}).get("host_cpu"),
    )
    generator = dict(merged.get("generator", {}))
    generator["host_cpu_busy"] = host
    case = {
        "name": name,
        "kind": kind,
        "failed": failure,
        **settings,
        "window": {"start": start, "end": end, "seconds": round(end - start, 3)},
        "clients": merged.get("clients", 0),
        "connected": merged.get("connected", 0),
        "connect_failures": merged.get("connect_failures", 0),
        "connect_errors": merged.get("connect_errors", {}),
        "connect_ms": merged.get("connect_ms"),
        "connect_ms_by_room_kind": merged.get("connect_ms_by_room_kind", {}),
        "edits_sent": merged.get("edits_sent", 0),
        "edits_made_total": merged.get("edits_made", 0),
        "sends_failed": merged.get("sends_failed", 0),
        "deliveries_expected": merged.get("deliveries_expected", 0),
        "edits_received": merged.get("edits_received", 0),
        "latency_ms": merged.get("latency_ms", summarise([])),
        "latency_ms_by_room_kind": merged.get("latency_ms_by_room_kind", {}),
        "updates_per_s": {
            "sent": round(merged.get("edits_sent", 0) / duration, 1),
            "delivered": round(merged.get("edits_received", 0) / duration, 1),
        },
        "disconnects": merged.get("disconnects", 0),
        "disconnect_reasons": merged.get("disconnect_reasons", {}),
        "reconnects": merged.get("reconnects", 0),
        "reconnect_errors": merged.get("reconnect_errors", {}),
        "convergence": merged.get("convergence", {"rooms": 0, "converged": 0, "all": False}),
        "send_lag_ms": merged.get("send_lag_ms"),
        "generator": generator,
        "servers": {
            "docker_stats": summarise_docker(docker_samples, start, end),
            "docker_stats_errors": docker_errors[:5],
            "metrics": server_metrics_summary(points),
        },
        **backend_summary(points),
        "new_room_checks": checks,
    }
    if merged.get("preload"):
        by_kind = case["latency_ms_by_room_kind"]
        large, small = by_kind.get("large", {}), by_kind.get("small", {})
        ratio = None
        if large.get("p95") and small.get("p95"):
            ratio = round(large["p95"] / small["p95"], 2)
        case["large_doc"] = {"rooms": merged["preload"], "p95_large_over_small": ratio}
    return case


def evaluate_goal(cases: list[dict]) -> dict:
    """PASS when the 300-client 1 Hz case has p95 < 50 ms, every client connected, every room converged, and
    every server opened new rooms after every case."""
    failed_checks = [
        f"{case['name']}: {check['server']} ({check.get('error')})"
        for case in cases
        for check in case.get("new_room_checks", [])
        if check.get("required", True) and not check["ok"]
    ]
    goal = {
        "text": f"p95 below {GOAL_P95_MS:g} ms at {GOAL_CLIENTS} clients editing at {GOAL_RATE_HZ:g} Hz, "
        "and every sync server still serving new rooms afterwards",
        "servers_serving_new_rooms": not failed_checks,
        "reasons": [],
        "notes": [],
    }
    target = next(
        (
            case
            for case in cases
            if case["kind"] == "clients"
            and case["clients"] == GOAL_CLIENTS
            and abs(case.get("rate_hz", 0) - GOAL_RATE_HZ) < 1e-9
            and not case.get("failed")
        ),
        None,
    )
    if failed_checks:
        goal["reasons"].append("servers stopped serving new rooms: " + "; ".join(failed_checks))
    if target is None:
        goal["verdict"] = "NOT EVALUATED"
        goal["reasons"].append(f"no completed case with {GOAL_CLIENTS} clients at {GOAL_RATE_HZ:g} Hz")
        return goal
    p95 = target["latency_ms"]["p95"]
    goal["p95_ms"] = p95
    if p95 is None:
        goal["reasons"].append("no latency measured")
    elif p95 >= GOAL_P95_MS:
        goal["reasons"].append(f"p95 {p95:.1f} ms is not below {GOAL_P95_MS:g} ms")
    if target["connected"] < target["clients"]:
        goal["reasons"].append(f"only {target['connected']} of {target['clients']} clients connected")
    if not target["convergence"]["all"]:
        conv = target["convergence"]
        goal["reasons"].append(f"{conv['rooms'] - conv['converged']} of {conv['rooms']} rooms did not converge")
    if target["generator"].get("saturated"):
        goal["notes"].append("the load generator was saturated in that case: the figures are the generator's")
    goal["verdict"] = "MISS" if goal["reasons"] else "PASS"
    return goal


def exit_status(cases: list[dict]) -> int:
    if any(case.get("failed") for case in cases):
        return 1
    checks = [check for case in cases for check in case.get("new_room_checks", [])]
    if any(check.get("required", True) and not check["ok"] for check in checks):
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Clients (run inside the worker processes)


class ConnectError(Exception):
    """A connection that did not complete the sync handshake; str() is a short reason."""


def close_text(code, reason) -> str:
    return f"closed {code} {reason or ''}".strip()[:100] if code is not None else "closed without a close frame"


def describe_error(error: BaseException) -> str:
    if isinstance(error, ConnectError):
        return str(error)
    if isinstance(error, websockets.InvalidStatus):
        return f"http {error.response.status_code}"
    if isinstance(error, websockets.ConnectionClosed):
        return close_text(error.rcvd.code, error.rcvd.reason) if error.rcvd else close_text(None, None)
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, OSError):
        return type(error).__name__
    return f"{type(error).__name__}: {error}"[:100]


def read_key(path: str | Path) -> bytes:
    """The signing key: the key file's first line (blank lines and # comments skipped), stripped."""
    for line in Path(path).read_bytes().splitlines():
        key = line.strip()
        if key and not key.startswith(b"#"):
            return key
    raise ValueError(f"{path} holds no key")


def load_issuer():
    """rtmx_sync.auth.issue, imported only when tokens are needed."""
    try:
        from rtmx_sync.auth import issue
    except ImportError as error:
        raise RuntimeError(f"signed tokens need rtmx_sync.auth.issue: {error}") from None
    return issue


def check_room_name(run_id: str, label: str, index: int) -> str:
    """A room nobody used, for the new-room check after case `label` (room names: A-Z a-z 0-9 _ . ~ - /)."""
    return f"bench-{run_id}-check-{re.sub(r'[^A-Za-z0-9_.~-]', '', label)}-{index}"


def room_url(base: str, room: str, token: str | None) -> str:
    return f"{base.rstrip('/')}/{room}" + (f"?token={token}" if token else "")


def ws_connect(url: str, timeout: float):
    # proxy=None: the lab is reached directly even when an HTTP proxy is set in the environment.
    return websockets.connect(
        url,
        open_timeout=timeout,
        max_size=None,
        compression=None,
        proxy=None,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
    )


class Collector:
    """A worker's samples: latency per room kind, measured only between the window's start and end."""

    def __init__(self):
        self.latencies: dict[str, array] = {}

    def add(self, label: str, value: float) -> None:
        samples = self.latencies.get(label)
        if samples is None:
            samples = self.latencies[label] = array("d")
        samples.append(value)


class BenchClient:
    def __init__(self, cid: int, label: str, url: str, collector: Collector, timeout: float):
        self.cid, self.tag, self.label, self.url = cid, str(cid), label, url
        self.collector, self.timeout = collector, timeout
        self.doc = Doc()
        self.edits = self.doc.get("edits", type=Array)
        self.big = self.doc.get("big", type=Text)
        self.edits.observe(self._observed)
        self.ws = None
        self.reader: asyncio.Task | None = None
        self.synced = asyncio.Event()
        self.connected_once = False
        self.stopping = False
        self.connect_ms: float | None = None
        self.made = self.made_measured = self.sent = self.sends_failed = self.received = 0
        self.disconnects: Counter = Counter()
        self.reconnects = 0
        self.reconnect_errors: Counter = Counter()
        self._reconnecting: asyncio.Task | None = None
        self._recv_time = 0.0

    def _observed(self, event) -> None:
        for item in event.delta:
            for value in item.get("insert") or ():
                if not isinstance(value, str):
                    continue
                parts = value.split("|")
                if len(parts) != 4 or parts[0] == self.tag or parts[3] != "1":
                    continue
                self.received += 1
                self.collector.add(self.label, (self._recv_time - float(parts[2])) * 1000.0)

    @property
    def online(self) -> bool:
        return self.ws is not None and self.synced.is_set() and self.reader is not None and not self.reader.done()

    async def connect(self) -> None:
        started = time.monotonic()
        self.synced = asyncio.Event()
        ws = await ws_connect(self.url, self.timeout)
        self.ws = ws
        self.reader = asyncio.create_task(self._read(ws))
        await ws.send(create_sync_message(self.doc))
        synced = asyncio.create_task(self.synced.wait())
        remaining = max(0.1, self.timeout - (time.monotonic() - started))
        await asyncio.wait({synced, self.reader}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if self.synced.is_set():
            if self.connect_ms is None:
                self.connect_ms = (time.monotonic() - started) * 1000.0
            self.connected_once = True
            return
        synced.cancel()
        if self.reader.done():
            raise ConnectError(close_text(ws.close_code, ws.close_reason))
        await ws.close()
        raise ConnectError("no sync handshake within the connect timeout")

    async def _read(self, ws) -> None:
        reason = None
        try:
            async for message in ws:
                now = time.time()
                if isinstance(message, str) or len(message) < 2 or message[0] != YMessageType.SYNC:
                    continue  # awareness and anything else: not measured
                self._recv_time = now
                reply = handle_sync_message(message[1:], self.doc)
                if reply is not None:
                    await ws.send(reply)
                if message[1] == YSyncMessageType.SYNC_STEP2:
                    self.synced.set()
        except websockets.ConnectionClosed:
            pass
        except Exception as error:  # a message pycrdt cannot read: count it as this client's disconnect
            reason = f"client error: {describe_error(error)}"
            with contextlib.suppress(Exception):
                await ws.close()
        finally:
            if ws is self.ws and self.synced.is_set() and not self.stopping:
                self.disconnects[reason or close_text(ws.close_code, ws.close_reason)] += 1
                self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """What a Yjs provider does: reconnect; the sync handshake exchanges what either side missed."""
        while not self.stopping:
            await asyncio.sleep(RECONNECT_DELAY_S)
            if self.stopping:
                return
            try:
                await self.connect()
                self.reconnects += 1
                return
            except Exception as error:
                self.reconnect_errors[describe_error(error)] += 1

    async def edit(self, measured: bool) -> None:
        """Append one element locally and send the update (offline: it goes at the next sync handshake)."""
        value = f"{self.tag}|{self.made}|{time.time():.6f}|{1 if measured else 0}"
        state = self.doc.get_state()
        self.edits.append(value)
        update = self.doc.get_update(state)
        self.made += 1
        self.made_measured += measured
        if not self.online:
            self.sends_failed += 1
            return
        try:
            await self.ws.send(create_update_message(update))
            self.sent += 1
        except websockets.ConnectionClosed:
            self.sends_failed += 1

    async def grow(self, size: int) -> None:
        """Grow the shared text "big" to `size` characters, in chunks below the message size limit."""
        sent = 0
        while sent < size:
            chunk = min(CHUNK_BYTES, size - sent)
            state = self.doc.get_state()
            self.big.insert(len(self.big), (f"{sent:012d}" * (chunk // 12 + 1))[:chunk])
            await self.ws.send(create_update_message(self.doc.get_update(state)))
            sent += chunk
            await asyncio.sleep(CHUNK_PAUSE_S)

    async def close(self) -> None:
        self.stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await self.reader


@dataclass
class RoomRun:
    name: str
    label: str
    preload: int
    clients: list[BenchClient]
    converged_at: float | None = None
    content_equal: bool | None = None

    @property
    def members(self) -> list[BenchClient]:
        return [client for client in self.clients if client.connected_once]

    def expected(self) -> int:
        return sum(client.made for client in self.members)

    def lengths_match(self) -> bool:
        members = self.members
        if not members:
            return False
        expected = self.expected()
        return all(len(client.edits) == expected for client in members) and len({len(c.big) for c in members}) == 1

    def contents_equal(self) -> bool:
        members = self.members
        first = members[0].edits.to_py()
        return all(client.edits.to_py() == first for client in members[1:])


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _edit_loop(client: BenchClient, t0: float, start: float, end: float, rate: float, lags: array) -> None:
    period = 1.0 / rate
    # A fixed offset per client spreads the edits over the period; absolute schedule, no drift.
    offset = (zlib.crc32(client.tag.encode()) % 1000) / 1000.0 * period
    index = 0
    while True:
        scheduled = t0 + offset + index * period
        if scheduled >= end:
            return
        await _sleep_until(scheduled)
        measured = scheduled >= start
        if measured:
            lags.append((time.time() - scheduled) * 1000.0)
        await client.edit(measured)
        index += 1


async def _loop_lag(start: float, end: float, samples: array) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LOOP_TICK_S)
        late = (loop.time() - before - LOOP_TICK_S) * 1000.0
        now = time.time()
        if now >= end:
            return
        if now >= start:
            samples.append(late)


async def _cpu_share(start: float, end: float) -> float:
    await _sleep_until(start)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await _sleep_until(end)
    return (time.process_time() - cpu0) / max(1e-9, time.monotonic() - wall0)


async def _worker(conn, spec: dict) -> dict:
    key = spec.get("auth_key")
    issue = load_issuer() if key else None
    collector = Collector()
    timeout = spec["connect_timeout"]
    rooms: list[RoomRun] = []
    for plan in spec["rooms"]:
        room = RoomRun(plan["name"], plan["label"], plan["preload"], [])
        for cid, base in plan["clients"]:
            token = issue(key, room.name, f"bench-{cid}", TOKEN_TTL_S) if issue else None
            room.clients.append(BenchClient(cid, room.label, room_url(base, room.name, token), collector, timeout))
        rooms.append(room)
    clients = [client for room in rooms for client in room.clients]
    gate = asyncio.Semaphore(spec["connect_concurrency"])
    connect_errors: Counter = Counter()

    async def connect(client: BenchClient) -> bool:
        async with gate:
            for attempt in range(2):
                try:
                    await client.connect()
                    return True
                except Exception as error:
                    connect_errors[describe_error(error)] += 1
                    if attempt == 0:
                        await asyncio.sleep(0.5)
            return False

    preload = []
    for room in rooms:
        if not room.preload:
            continue
        info = {"room": room.name, "target_bytes": room.preload}
        grower, *joiners = room.clients
        began = time.monotonic()
        if await connect(grower):
            await grower.grow(room.preload)
            info["grow_s"] = round(time.monotonic() - began, 2)
            info["doc_bytes"] = len(grower.doc.get_update())
            began = time.monotonic()
            await asyncio.gather(*(connect(client) for client in joiners))
            deadline = time.monotonic() + LARGE_READY_TIMEOUT_S
            while time.monotonic() < deadline and any(len(c.big) < room.preload for c in room.members):
                await asyncio.sleep(0.1)
            info["ready"] = all(len(c.big) >= room.preload for c in room.members)
            info["ready_s"] = round(time.monotonic() - began, 2)
        else:
            info["error"] = "the growing client could not connect"
        preload.append(info)
    await asyncio.gather(*(connect(client) for room in rooms if not room.preload for client in room.clients))
    connected = sum(client.connected_once for client in clients)
    conn.send(("connected", {"connected": connected, "clients": len(clients), "preload": preload}))

    command = await asyncio.to_thread(conn.recv)
    send_lag, loop_lag = array("d"), array("d")
    cpu = None
    if command[0] == "start":
        t0, start, end = command[1], command[2], command[3]
        monitor = asyncio.create_task(_loop_lag(start, end, loop_lag))
        share = asyncio.create_task(_cpu_share(start, end))
        await asyncio.gather(
            *(_edit_loop(c, t0, start, end, spec["rate"], send_lag) for c in clients if c.connected_once)
        )
        cpu = await share
        await monitor
        # Settle: every room's documents must hold every edit made in it.
        settled = time.monotonic()
        deadline = settled + spec["settle"]
        while True:
            now = time.monotonic()
            for room in rooms:
                if room.converged_at is None and room.lengths_match():
                    room.converged_at = now - settled
            if all(room.converged_at is not None for room in rooms if room.members) or now >= deadline:
                break
            await asyncio.sleep(0.1)
        for room in rooms:
            if room.converged_at is not None:
                room.content_equal = room.contents_equal()

    for client in clients:
        client.stopping = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients), return_exceptions=True), 15)

    connect_ms: dict[str, list[float]] = {}
    for client in clients:
        if client.connect_ms is not None:
            connect_ms.setdefault(client.label, []).append(client.connect_ms)
    disconnects, reconnect_errors = Counter(), Counter()
    for client in clients:
        disconnects.update(client.disconnects)
        reconnect_errors.update(client.reconnect_errors)
    room_reports = []
    deliveries = 0
    for room in rooms:
        members = room.members
        deliveries += sum(c.made_measured for c in members) * max(0, len(members) - 1)
        room_reports.append(
            {
                "name": room.name,
                "label": room.label,
                "clients": len(room.clients),
                "connected": len(members),
                "elements_expected": room.expected(),
                "converged": room.converged_at is not None and bool(room.content_equal),
                "converge_s": None if room.converged_at is None else round(room.converged_at, 3),
            }
        )
    return {
        "worker": spec["worker"],
        "clients": len(clients),
        "connected": connected,
        "connect_failures": len(clients) - connected,
        "connect_errors": dict(connect_errors),
        "connect_ms": connect_ms,
        "edits_made": sum(c.made for c in clients),
        "edits_sent": sum(c.made_measured for c in clients),
        "sends_failed": sum(c.sends_failed for c in clients),
        "deliveries_expected": deliveries,
        "edits_received": sum(c.received for c in clients),
        "latencies_ms": dict(collector.latencies),
        "send_lag_ms": send_lag,
        "loop_lag_ms": loop_lag,
        "cpu_fraction": None if cpu is None else round(cpu, 3),
        "disconnects": sum(disconnects.values()),
        "disconnect_reasons": dict(disconnects),
        "reconnects": sum(c.reconnects for c in clients),
        "reconnect_errors": dict(reconnect_errors),
        "rooms": room_reports,
        "preload": preload,
        "aborted": command[0] != "start",
    }


def worker_entry(conn, spec: dict) -> None:
    """A worker process: its share of the rooms on its own event loop; talks to the parent over `conn`."""
    try:
        conn.send(("result", asyncio.run(_worker(conn, spec))))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------
# Parent: samplers, new-room checks, cases, report


async def check_new_room(base: str, room: str, token: str | None, timeout: float = NEW_ROOM_TIMEOUT_S) -> dict:
    """Open a room nobody used, complete the sync handshake within `timeout` seconds."""
    started = time.monotonic()
    ws = None
    result = {"ok": False, "room": room}
    try:
        async with asyncio.timeout(timeout):
            ws = await ws_connect(room_url(base, room, token), timeout)
            doc = Doc()
            await ws.send(create_sync_message(doc))
            while True:
                message = await ws.recv()
                if isinstance(message, bytes) and len(message) >= 2 and message[0] == YMessageType.SYNC:
                    reply = handle_sync_message(message[1:], doc)
                    if reply is not None:
                        await ws.send(reply)
                    if message[1] == YSyncMessageType.SYNC_STEP2:
                        break
        result["ok"] = True
    except TimeoutError:
        result["error"] = f"no sync handshake within {timeout:g} s"
    except Exception as error:
        result["error"] = describe_error(error)
    result["seconds"] = round(time.monotonic() - started, 3)
    if ws is not None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(ws.close(), 2)
    return result


def sample_redis(url: str) -> dict:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        stats, memory = client.info("stats"), client.info("memory")
    finally:
        client.close()
    return {
        "t": time.time(),
        "instantaneous_ops_per_sec": stats.get("instantaneous_ops_per_sec"),
        "total_commands_processed": stats.get("total_commands_processed"),
        "used_memory": memory.get("used_memory"),
        "used_memory_human": memory.get("used_memory_human"),
    }


def sample_postgres(dsn: str) -> dict:
    import psycopg

    # prepare_threshold=None: PgBouncer in transaction pooling has no prepared statements.
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None, connect_timeout=5) as conn:
        commits, rollbacks, inserted = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        sample = {"t": time.time(), "xact_commit": commits, "xact_rollback": rollbacks, "tup_inserted": inserted}
        try:
            rows, size = conn.execute(
                "SELECT count(*), coalesce(sum(length(update)), 0) FROM rtmx_sync_updates"
            ).fetchone()
            sample.update({"rtmx_sync_updates_rows": rows, "rtmx_sync_updates_bytes": int(size)})
        except psycopg.Error as error:
            sample["rtmx_sync_updates_error"] = str(error).strip()[:200]
    return sample


def metrics_url(server_url: str) -> str:
    parts = urlsplit(server_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/metrics"


def sample_metrics(server_url: str) -> dict:
    with urllib.request.urlopen(metrics_url(server_url), timeout=3) as answer:
        values = parse_metrics(answer.read().decode())
    return {"values": {k: v for k, v in values.items() if k.startswith(("rtmx_sync_", "process_"))}}


def read_proc_stat():
    try:
        return parse_proc_stat(Path("/proc/stat").read_text())
    except OSError:
        return None


def _guarded(function, *args) -> dict:
    try:
        return function(*args)
    except Exception as error:
        return {"t": time.time(), "error": f"{type(error).__name__}: {error}".strip()[:200]}


class Sampler:
    """Redis, PostgreSQL, each server's /metrics and the host's CPU, sampled at a point in time (in parallel)."""

    def __init__(self, env: dict[str, str], servers: list[dict]):
        self.redis_url = env.get("RTMX_REDIS_URL", "")
        self.pg_url = env.get("RTMX_PG_RW_URL", "")
        self.servers = servers
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4 + len(servers))

    def sample(self) -> dict:
        jobs = {}
        if self.redis_url:
            jobs["redis"] = self.pool.submit(_guarded, sample_redis, self.redis_url)
        if self.pg_url:
            jobs["postgres"] = self.pool.submit(_guarded, sample_postgres, self.pg_url)
        metrics = {server["name"]: self.pool.submit(_guarded, sample_metrics, server["url"]) for server in self.servers}
        point = {"t": time.time(), "host_cpu": read_proc_stat()}
        point.update({name: job.result() for name, job in jobs.items()})
        point["metrics"] = {name: job.result() for name, job in metrics.items()}
        return point

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class DockerStats(threading.Thread):
    """`docker stats --no-stream` of the sync containers every `interval` seconds, in the background."""

    def __init__(self, containers: list[str], interval: float):
        super().__init__(daemon=True)
        self.containers, self.interval = containers, interval
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        command = ["docker", "stats", "--no-stream", "--format", "{{json .}}", *self.containers]
        while not self.halt.is_set():
            try:
                answer = subprocess.run(command, capture_output=True, text=True, timeout=30)
                now = time.time()
                if answer.returncode != 0:
                    self.errors.append(answer.stderr.strip()[:200] or f"docker stats exited {answer.returncode}")
                for sample in parse_docker_stats(answer.stdout):
                    self.samples.append({"t": now, **sample})
            except (OSError, subprocess.TimeoutExpired) as error:
                self.errors.append(f"{type(error).__name__}: {error}"[:200])
            if len(self.errors) >= 3 and not self.samples:
                return  # no docker here: stop trying
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(35)


def _receive(conn, deadline: float):
    if not conn.poll(max(0.0, deadline - time.time())):
        return ("error", "no answer from the worker before the deadline")
    try:
        return conn.recv()
    except (EOFError, OSError):
        return ("error", "the worker process died")


class Bench:
    def __init__(self, args, env: dict[str, str], target: Target, key: bytes | None, run_id: str):
        self.args, self.env, self.target, self.key, self.run_id = args, env, target, key, run_id
        self.server_urls = [server["url"] for server in target.servers]
        self.sampler = Sampler(env, target.servers)
        self.containers = [server["container"] for server in target.servers if server["container"]]
        self.context = multiprocessing.get_context("spawn")

    def token(self, room: str, user: str) -> str | None:
        return load_issuer()(self.key, room, user, 300.0) if self.key else None

    def check_servers(self, label: str) -> list[dict]:
        """Every sync server opens a room nobody used (and the VIP, recorded but not required)."""
        targets = [(server["name"], server["url"]) for server in self.target.servers]
        if self.target.url:
            targets.append(("vip", self.target.url))

        async def run_all():
            checks = []
            for index, (_name, url) in enumerate(targets):
                room = check_room_name(self.run_id, label, index)
                checks.append(check_new_room(url, room, self.token(room, "bench-check")))
            return await asyncio.gather(*checks)

        results = asyncio.run(run_all())
        # The VIP only counts when no server is known: otherwise every server itself is checked.
        return [
            {"server": name, "url": url, "required": name != "vip" or not self.target.servers, **result}
            for (name, url), result in zip(targets, results)
        ]

    def run_case(self, name: str, kind: str, rooms: list[dict]) -> dict:
        args = self.args
        shares = split_rooms(rooms, args.workers)
        clients = sum(len(room["clients"]) for room in rooms)
        print(
            f"== {name}: {clients} clients in {len(rooms)} rooms, spread {args.spread}, {len(shares)} worker(s); "
            f"warm-up {args.warmup:g} s, {args.duration:g} s at {args.rate:g} Hz",
            flush=True,
        )
        settings = {
            "spread": args.spread,
            "rate_hz": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rooms_count": len(rooms),
            "clients_per_room": max(len(room["clients"]) for room in rooms),
            "workers": len(shares),
        }
        docker = None
        if self.containers and not args.no_docker_stats:
            docker = DockerStats(self.containers, args.stats_interval)
            docker.start()
        points = {"before": self.sampler.sample()}
        processes, pipes = [], []
        failure = None
        results = []
        window = (time.time(), time.time())
        try:
            per_worker = max(1, args.connect_concurrency // len(shares))
            for index, share in enumerate(shares):
                spec = {
                    "worker": index,
                    "rooms": share,
                    "rate": args.rate,
                    "settle": args.settle,
                    "connect_timeout": args.connect_timeout,
                    "connect_concurrency": per_worker,
                    "auth_key": self.key,
                }
                parent, child = self.context.Pipe()
                process = self.context.Process(target=worker_entry, args=(child, spec), daemon=True)
                process.start()
                child.close()
                processes.append(process)
                pipes.append(parent)
            most = max(sum(len(room["clients"]) for room in share) for share in shares)
            connect_budget = 60 + 2 * args.connect_timeout * math.ceil(most / per_worker)
            if any(room["preload"] for room in rooms):
                connect_budget += LARGE_READY_TIMEOUT_S + 120
            deadline = time.time() + connect_budget
            ready = [_receive(pipe, deadline) for pipe in pipes]
            running = [pipe for pipe, answer in zip(pipes, ready) if answer[0] == "connected"]
            errors = [answer[1] for answer in ready if answer[0] != "connected"]
            connected = sum(answer[1]["connected"] for answer in ready if answer[0] == "connected")
            print(f"   connected {connected}/{clients}", flush=True)
            for answer in ready:
                for info in answer[1]["preload"] if answer[0] == "connected" else []:
                    print(f"   large document: {json.dumps(info)}", flush=True)
            if errors:
                failure = "worker failed while connecting: " + str(errors[0])[-2000:]
                for pipe in running:
                    with contextlib.suppress(OSError):
                        pipe.send(("abort",))
                deadline = time.time() + 60
            else:
                t0 = time.time() + 1.0
                start = t0 + args.warmup
                end = start + args.duration
                window = (start, end)
                for pipe in running:
                    with contextlib.suppress(OSError):  # a dead worker is reported when its result is missing
                        pipe.send(("start", t0, start, end))
                time.sleep(max(0.0, start - time.time()))
                points["window_start"] = self.sampler.sample()
                time.sleep(max(0.0, end - time.time()))
                points["window_end"] = self.sampler.sample()
                deadline = end + args.settle + 60
            answers = [_receive(pipe, deadline) for pipe in running]
            for answer in answers:
                if answer[0] == "result":
                    results.append(answer[1])
                elif failure is None:
                    failure = "worker failed: " + str(answer[1])[-2000:]
            if failure is None and results and sum(result["connected"] for result in results) == 0:
                failure = "no client connected"
        finally:
            for process in processes:
                process.join(10)
                if process.is_alive():
                    process.terminate()
                    process.join(5)
            points["after"] = self.sampler.sample()
            if docker is not None:
                docker.stop()
        merged = merge_results(results)
        checks = self.check_servers(name)
        case = build_case(
            name,
            kind,
            settings,
            merged,
            window,
            points,
            docker.samples if docker else [],
            docker.errors if docker else ([] if args.no_docker_stats else ["no sync containers known"]),
            checks,
            failure,
        )
        return case

    def close(self) -> None:
        self.sampler.close()


# Output ------------------------------------------------------------------------------------------------------------


def _fmt(value, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{suffix}"
    return f"{value}{suffix}"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def _latency_cell(summary: dict | None) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return f"{_fmt(summary['p50'])}/{_fmt(summary['p95'])}/{_fmt(summary['p99'])}"


def format_table(cases: list[dict]) -> str:
    def generator(case):
        gen = case["generator"]
        cpu = gen.get("cpu_fraction_max")
        text = "-" if cpu is None else f"{cpu * 100:.0f}%"
        return text + (" SATURATED" if gen.get("saturated") else "")

    def checks(case):
        required = [check for check in case["new_room_checks"] if check.get("required", True)]
        return f"{sum(check['ok'] for check in required)}/{len(required)}"

    rows = [
        ("clients connected", lambda c: f"{c['connected']}/{c['clients']}"),
        ("connect failures", lambda c: c["connect_failures"]),
        ("rooms x clients", lambda c: f"{c['rooms_count']}x{c['clients_per_room']}"),
        ("connect p50/max ms", lambda c: f"{_fmt(c['connect_ms']['p50'])}/{_fmt(c['connect_ms']['max'])}"),
        ("edits sent", lambda c: c["edits_sent"]),
        ("sends failed", lambda c: c["sends_failed"]),
        ("edits received/expected", lambda c: f"{c['edits_received']}/{c['deliveries_expected']}"),
        ("latency p50 ms", lambda c: _fmt(c["latency_ms"]["p50"])),
        ("latency p95 ms", lambda c: _fmt(c["latency_ms"]["p95"])),
        ("latency p99 ms", lambda c: _fmt(c["latency_ms"]["p99"])),
        ("latency max ms", lambda c: _fmt(c["latency_ms"]["max"])),
        ("updates/s sent", lambda c: _fmt(c["updates_per_s"]["sent"])),
        ("updates/s delivered", lambda c: _fmt(c["updates_per_s"]["delivered"])),
        ("disconnects", lambda c: c["disconnects"]),
        ("reconnects", lambda c: c["reconnects"]),
        (
            "rooms converged",
            lambda c: (
                f"{c['convergence']['converged']}/{c['convergence']['rooms']}"
                + ("" if c["convergence"]["all"] else " NO")
            ),
        ),
        ("generator cpu (max worker)", generator),
        ("generator loop lag p99 ms", lambda c: _fmt(c["generator"].get("loop_lag_ms_p99_max"))),
        ("host cpu busy", lambda c: _percent(c["generator"]["host_cpu_busy"])),
        ("redis commands/s", lambda c: _fmt(c["redis"]["commands_per_s_in_window"])),
        ("postgres commits/s", lambda c: _fmt(c["postgres"]["commits_per_s_in_window"])),
        ("new rooms served after", checks),
    ]
    if any("large" in case.get("latency_ms_by_room_kind", {}) for case in cases):
        rows += [
            ("small doc p50/p95/p99", lambda c: _latency_cell(c["latency_ms_by_room_kind"].get("small"))),
            ("large doc p50/p95/p99", lambda c: _latency_cell(c["latency_ms_by_room_kind"].get("large"))),
            ("large doc join p50 ms", lambda c: _fmt((c["connect_ms_by_room_kind"].get("large") or {}).get("p50"))),
        ]
    headers = ["", *(case["name"] for case in cases)]
    table = [headers]
    for title, cell in rows:
        line = [title]
        for case in cases:
            try:
                line.append(str(cell(case)))
            except (KeyError, TypeError):
                line.append("-")
        table.append(line)
    widths = [max(len(line[column]) for line in table) for column in range(len(headers))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in table)


def summary_line(case: dict) -> str:
    latency = case["latency_ms"]
    conv = case["convergence"]
    return (
        f"   {case['name']}: {case['connected']}/{case['clients']} connected, latency p50/p95/p99 "
        f"{_fmt(latency['p50'])}/{_fmt(latency['p95'])}/{_fmt(latency['p99'])} ms, "
        f"{conv['converged']}/{conv['rooms']} rooms converged"
        + (f", FAILED: {case['failed'].strip().splitlines()[-1]}" if case.get("failed") else "")
    )


BRIEF_METRICS = (
    "connections",
    "rooms",
    "updates_in_total",
    "updates_out_total",
    "remote_updates_total",
    "protocol_errors_total",
    "store_errors_total",
    "pending_writes",
)


def metrics_brief(values: dict) -> str:
    """The main server figures of a /metrics delta (the report holds them all)."""
    parts = [f"{key} {values['rtmx_sync_' + key]:g}" for key in BRIEF_METRICS if "rtmx_sync_" + key in values]
    refused = sum(value for key, value in values.items() if key.startswith("rtmx_sync_refused_total"))
    if refused:
        parts.append(f"refused {refused:g}")
    if values.get("cpu_fraction_in_window") is not None:
        parts.append(f"cpu {values['cpu_fraction_in_window'] * 100:.0f}% of a core")
    if values.get("process_resident_memory_bytes") is not None:
        parts.append(f"rss {values['process_resident_memory_bytes'] / 1024**2:.0f} MiB")
    total = values.get("rtmx_sync_cross_server_latency_seconds_sum")
    count = values.get("rtmx_sync_cross_server_latency_seconds_count")
    if total is not None and count:
        parts.append(f"cross-server latency mean {total / count * 1000:.1f} ms")
    return ", ".join(parts) or "-"


def format_details(case: dict) -> str:
    lines = [f"-- {case['name']}"]
    if case.get("failed"):
        lines.append(f"   FAILED: {case['failed'].strip().splitlines()[-1]}")
    for key in ("connect_errors", "disconnect_reasons", "reconnect_errors"):
        if case.get(key):
            lines.append(f"   {key.replace('_', ' ')}: {json.dumps(case[key])}")
    for name, stats in case["servers"]["docker_stats"].items():
        if not stats["cpu_percent_max"] and not stats["mem_mib_max"]:
            continue  # docker cannot read this container's cgroup (nested engine): the server's /metrics tell
        lines.append(
            f"   {name}: cpu mean {stats['cpu_percent_mean']}% max {stats['cpu_percent_max']}% (100% = one core), "
            f"memory max {_fmt(stats['mem_mib_max'])} MiB ({stats['samples']} samples)"
        )
    for error in case["servers"]["docker_stats_errors"][:1]:
        lines.append(f"   docker stats: {error}")
    for name, values in case["servers"]["metrics"].items():
        if "error" in values:
            lines.append(f"   {name} /metrics: {values['error']}")
            continue
        lines.append(f"   {name} /metrics in the window: {metrics_brief(values)}")
    redis = case["redis"]["samples"].get("window_end") or {}
    if "error" in redis:
        lines.append(f"   redis: {redis['error']}")
    elif redis:
        before = case["redis"]["samples"].get("before") or {}
        lines.append(
            f"   redis: {_fmt(case['redis']['commands_per_s_in_window'])} commands/s in the window, "
            f"instantaneous {redis.get('instantaneous_ops_per_sec')} ops/s at its end, "
            f"used memory {before.get('used_memory_human', '-')} -> {redis.get('used_memory_human')}"
        )
    pg = case["postgres"]["samples"]
    end = pg.get("window_end") or {}
    if "error" in end:
        lines.append(f"   postgres: {end['error']}")
    elif end:
        rows = [(pg.get(name) or {}).get("rtmx_sync_updates_rows") for name in ("before", "window_end", "after")]
        lines.append(
            f"   postgres: {_fmt(case['postgres']['commits_per_s_in_window'])} commits/s in the window; "
            f"rtmx_sync_updates rows before/window end/after: {'/'.join(_fmt(r) for r in rows)}"
        )
    if case.get("large_doc"):
        for info in case["large_doc"]["rooms"]:
            lines.append(f"   large document: {json.dumps(info)}")
        lines.append(f"   p95 large/small: {_fmt(case['large_doc']['p95_large_over_small'])}")
    for check in case["new_room_checks"]:
        state = "ok" if check["ok"] else f"FAILED ({check.get('error')})"
        note = "" if check.get("required", True) else " (not required)"
        lines.append(f"   new room on {check['server']}{note}: {state} in {check['seconds']} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_sync.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--env", default=str(DEFAULT_ENV), help='connection file (KEY="value" lines)')
    parser.add_argument("--url", help="VIP URL; when not given: RTMX_SYNC_URL")
    parser.add_argument(
        "--servers", help="sync servers addr:port,...; when not given: the sync* RTMX_LAB_NODES at :8765"
    )
    parser.add_argument("--spread", choices=("vip", "direct", "mixed"), default="vip", help="where clients connect")
    parser.add_argument("--clients", default="100,300,1000", help="client counts, one case each ('' for none)")
    parser.add_argument("--clients-per-room", type=int, default=5, help="clients editing one room")
    parser.add_argument("--rate", type=float, default=1.0, help="edits per second per client")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of editing before measuring")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds allowed for convergence after the run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="load generator processes")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds per connection and handshake")
    parser.add_argument("--connect-concurrency", type=int, default=50, help="connections opened at once (total)")
    parser.add_argument(
        "--large-doc", action=argparse.BooleanOptionalAction, default=True, help="run the large-document case"
    )
    parser.add_argument("--large-doc-bytes", type=int, default=1_000_000, help="size the large document grows to")
    parser.add_argument("--large-doc-clients", type=int, default=5, help="clients of the large and the small room")
    parser.add_argument("--auth-key-file", help="signing key file for tokens; when not given: RTMX_SYNC_AUTH_KEY_FILE")
    parser.add_argument("--no-docker-stats", action="store_true", help="do not sample docker stats")
    parser.add_argument("--stats-interval", type=float, default=5.0, help="seconds between docker stats samples")
    parser.add_argument("--report-dir", default=str(DEFAULT_REPORT_DIR), help="where the JSON report goes")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        counts = parse_clients(args.clients)
    except ValueError as error:
        parser.error(f"--clients: {error}")
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.settle < 0:
        parser.error("--rate and --duration must be positive, --warmup and --settle not negative")
    if args.clients_per_room < 1 or args.workers < 1 or args.large_doc_clients < 1 or args.connect_concurrency < 1:
        parser.error("--clients-per-room, --workers, --large-doc-clients and --connect-concurrency must be >= 1")
    if not counts and not args.large_doc:
        parser.error("nothing to run: no --clients and --no-large-doc")
    env = load_env(args.env)
    if not env and not (args.url or args.servers):
        parser.error(f"{args.env} not found (make lab writes it) and neither --url nor --servers given")
    target = resolve_target(env, args.url, args.servers)
    key_file = args.auth_key_file or os.environ.get("RTMX_SYNC_AUTH_KEY_FILE") or env.get("RTMX_SYNC_AUTH_KEY_FILE")
    key = None
    if key_file:
        try:
            key = read_key(key_file)
            load_issuer()(key, "bench-probe", "bench", 60.0)
        except (OSError, ValueError, RuntimeError) as error:
            parser.error(f"auth key {key_file}: {error}")
    try:
        assign_endpoints(1, args.spread, target.url, [server["url"] for server in target.servers])
    except ValueError as error:
        parser.error(str(error))

    started = datetime.now(UTC)
    run_id = started.strftime("%Y%m%dT%H%M%SZ")
    bench = Bench(args, env, target, key, run_id)
    report = {
        "benchmark": "bench-sync",
        "started": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "target": {
            "url": target.url,
            "servers": target.servers,
            "spread": args.spread,
            "auth": bool(key),
            "redis": bool(env.get("RTMX_REDIS_URL")),
            "postgres": bool(env.get("RTMX_PG_RW_URL")),
        },
        "settings": {
            key_: value for key_, value in vars(args).items() if key_ not in ("env", "auth_key_file", "report_dir")
        },
        "generator_host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "cases": [],
    }
    print(f"bench-sync {run_id}: VIP {target.url or '-'}, servers {', '.join(bench.server_urls) or '-'}", flush=True)
    preflight = bench.check_servers("preflight")
    report["preflight"] = preflight
    try:
        if not any(check["ok"] for check in preflight):
            print(
                "no sync server opened a room: is the lab up (make lab)? tokens needed (--auth-key-file)?",
                file=sys.stderr,
            )
            for check in preflight:
                print(f"   {check['server']} {check['url']}: {check.get('error')}", file=sys.stderr)
            report["aborted"] = "no sync server opened a room before the run"
            report["exit_code"] = 1
            return 1
        servers = bench.server_urls
        for count in counts:
            endpoints = assign_endpoints(count, args.spread, target.url, servers)
            rooms = plan_rooms(count, args.clients_per_room, endpoints, f"bench-{run_id}-n{count}")
            case = bench.run_case(f"n={count}", "clients", rooms)
            report["cases"].append(case)
            print(summary_line(case), flush=True)
        if args.large_doc:
            k = args.large_doc_clients
            endpoints = assign_endpoints(2 * k, args.spread, target.url, servers)
            prefix = f"bench-{run_id}-doc"
            rooms = plan_rooms(k, k, endpoints[:k], f"{prefix}-large", "large", 0, args.large_doc_bytes)
            rooms += plan_rooms(k, k, endpoints[k:], f"{prefix}-small", "small", k)
            case = bench.run_case("large-doc", "large-doc", rooms)
            report["cases"].append(case)
            print(summary_line(case), flush=True)
    except KeyboardInterrupt:
        report["aborted"] = "interrupted"
    finally:
        bench.close()
        report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        report["goal"] = evaluate_goal(report["cases"])
        report.setdefault("exit_code", 1 if report.get("aborted") else exit_status(report["cases"]))
        path = write_report(report, Path(args.report_dir), run_id)
        print_report(report)
        print(f"report: {path}", flush=True)
    return report["exit_code"]


def write_report(report: dict, directory: Path, run_id: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run_id}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def print_report(report: dict) -> None:
    cases = report["cases"]
    if cases:
        print()
        print(format_table(cases))
        print()
        for case in cases:
            print(format_details(case))
    goal = report["goal"]
    print()
    print(f"goal: {goal['text']}")
    line = f"goal: {goal['verdict']}"
    if goal.get("p95_ms") is not None:
        line += f" (p95 {goal['p95_ms']:.1f} ms at {GOAL_CLIENTS} clients)"
    print(line + ("" if not goal["reasons"] else ": " + "; ".join(goal["reasons"])))
    for note in goal["notes"]:
        print(f"goal: note: {note}")
    if any(case["generator"].get("saturated") for case in cases):
        names = ", ".join(case["name"] for case in cases if case["generator"].get("saturated"))
        print(f"load generator saturated in {names}: those figures measure the generator, not the servers")
    if report.get("aborted"):
        print(f"aborted: {report['aborted']}")


if __name__ == "__main__":
    sys.exit(main())
