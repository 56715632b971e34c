#!/usr/bin/env python3
"""What an operator was sent during a drill: the lab alert receiver's notifications (roles/alert_receiver).

Endpoints and credentials come from the environment (never the command line):
RTMX_ALERTMANAGER_URL, RTMX_ALERTMANAGER_USERNAME, RTMX_ALERTMANAGER_PASSWORD,
RTMX_RECEIVER_URL, RTMX_RECEIVER_USERNAME, RTMX_RECEIVER_PASSWORD.

  alerts.py quiet TIMEOUT [IGNORED]
      wait until Alertmanager holds no active alert but those of IGNORED (comma-separated names:
      the SLO alerts, whose windows span earlier drills), so a drill's alerts are its own;
      prints {"waited_s", "active": [names still active at the timeout]}
  alerts.py collect SINCE EXPECTED DELIVER_BY RESOLVE_TIMEOUT [IGNORED]
      wait until every alert of EXPECTED (comma-separated names) was sent firing after SINCE
      (unix time) or DELIVER_BY (unix time) passed; then until every alert sent firing after
      SINCE, but those of IGNORED, was sent resolved, at most RESOLVE_TIMEOUT seconds;
      prints {"notifications": [...]}

summary() turns the notifications into a drill's figures (report.py).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.request
from datetime import datetime

POLL_S = 2


def parse_time(value: str | None) -> float | None:
    """Unix time of an RFC 3339 timestamp as Alertmanager writes it (nanoseconds, Z)."""
    if not value:
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    digits = "".join(c for c in frac if c.isdigit())
    return stamp + (float("0." + digits) if digits else 0.0)


def new_alerts(notifications: list, since: float, status: str) -> list[tuple[str, float, float]]:
    """(name, startsAt, received_at) of every alert sent with `status` that started after `since`
    (an alert already active before the fault belongs to an earlier drill)."""
    found = []
    for record in notifications:
        for alert in record.get("summary", {}).get("alerts", []):
            started = parse_time(alert.get("startsAt"))
            if alert.get("status") == status and started is not None and started >= since - 1:
                found.append((alert.get("alertname"), started, record["received_at"]))
    return found


def summary(notifications: list, since: float, healed_at: float, expected: list, allowed: list,
            ignored: list = ()) -> dict:
    """A drill's alerting: seconds from the fault to each alert's first firing notification, from the
    heal to its resolved one; expected alerts never sent, sent alerts never resolved (but the ignored
    ones: SLO alerts outlast a drill), and alerts sent that the fault does not explain."""
    firing, resolved = {}, {}
    for name, started, received in new_alerts(notifications, since, "firing"):
        firing.setdefault((name, started), received)
    for name, started, received in new_alerts(notifications, since, "resolved"):
        resolved.setdefault((name, started), received)
    delivered, cleared = {}, {}
    for (name, started), received in sorted(firing.items(), key=lambda item: item[1]):
        delivered.setdefault(name, round(received - since, 1))
        if (name, started) in resolved:
            cleared[name] = round(max(0.0, resolved[(name, started)] - healed_at), 1)
    return {
        "delivered_s": delivered,
        "resolved_after_heal_s": cleared,
        "missing": [name for name in expected if name not in delivered],
        "unresolved": sorted({name for (name, started) in firing if (name, started) not in resolved
                              and name not in ignored}),
        "unrelated": sorted(name for name in delivered if name not in expected and name not in allowed),
    }


def get(url: str, username: str, password: str):
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read().decode())


def active_alerts(env, ignored=()) -> list[str]:
    alerts = get(env["RTMX_ALERTMANAGER_URL"] + "/api/v2/alerts?active=true",
                 env["RTMX_ALERTMANAGER_USERNAME"], env["RTMX_ALERTMANAGER_PASSWORD"])
    return sorted(name for name in (a["labels"].get("alertname", "") for a in alerts) if name not in ignored)


def notifications(env, since: float) -> list:
    return get(f"{env['RTMX_RECEIVER_URL']}/notifications?since={since}",
               env["RTMX_RECEIVER_USERNAME"], env["RTMX_RECEIVER_PASSWORD"])


def quiet(env, timeout: float, ignored=(), clock=time.time, sleep=time.sleep) -> dict:
    started = clock()
    while True:
        active = active_alerts(env, ignored)
        if not active or clock() - started >= timeout:
            return {"waited_s": round(clock() - started, 1), "active": active}
        sleep(POLL_S)


def collect(env, since: float, expected: list, deliver_by: float, resolve_timeout: float, ignored=(),
            clock=time.time, sleep=time.sleep) -> dict:
    while True:
        found = notifications(env, since)
        sent = {name for name, _, _ in new_alerts(found, since, "firing")}
        if all(name in sent for name in expected) or clock() >= deliver_by:
            break
        sleep(POLL_S)
    resolve_by = clock() + resolve_timeout
    while True:
        firing = {(name, started) for name, started, _ in new_alerts(found, since, "firing") if name not in ignored}
        cleared = {(name, started) for name, started, _ in new_alerts(found, since, "resolved")}
        if firing <= cleared or clock() >= resolve_by:
            return {"notifications": found}
        sleep(POLL_S)
        found = notifications(env, since)


def main(argv=sys.argv, env=os.environ) -> int:
    if len(argv) in (3, 4) and argv[1] == "quiet":
        ignored = [name for name in (argv[3] if len(argv) == 4 else "").split(",") if name]
        print(json.dumps(quiet(env, float(argv[2]), ignored)))
        return 0
    if len(argv) in (6, 7) and argv[1] == "collect":
        expected = [name for name in argv[3].split(",") if name]
        ignored = [name for name in (argv[6] if len(argv) == 7 else "").split(",") if name]
        print(json.dumps(collect(env, float(argv[2]), expected, float(argv[4]), float(argv[5]), ignored)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
