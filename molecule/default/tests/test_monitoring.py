"""Monitoring on mon1 as converge leaves it: Prometheus scrapes every target and each one is up,
the recording rules produce the requirement's key metrics, every probe through the VIP succeeds,
every dashboard panel has data, the exporters refuse anonymous scrapes, Alertmanager delivers to
the lab receiver, and nothing fires in a quiet window after converge.

These tests run first (conftest orders them), from the controller, which reaches the containers'
addresses; the credentials are this scenario's generated secrets.
"""

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from conftest import PROJECT_DIR, secret, wait_for

MON = "198.18.1.41"
PROMETHEUS = f"http://{MON}:9090"
ALERTMANAGER = f"http://{MON}:9093"
RECEIVER = f"http://{MON}:9095"
NODES = ["pg1", "pg2", "pg3", "sync1", "sync2", "sync3", "lb1", "lb2", "mon1"]
JOBS = {"node": 9, "postgres": 3, "patroni": 3, "etcd": 3, "redis": 3, "sentinel": 3, "pgbouncer": 2, "haproxy": 2,
        "sync": 3, "prometheus": 1, "alertmanager": 1, "probe_tcp": 2, "probe_redis": 1, "probe_http": 8}
DASHBOARDS = sorted((PROJECT_DIR / "roles" / "prometheus" / "files" / "dashboards").glob("*.json"))
TEST_ALERT = "RtmxMoleculeDeliveryTest"


def get(url, user="admin", password_file="monitoring_admin_password", timeout=10):
    """(status, parsed JSON or text) of a GET with basic auth (user None: without)."""
    request = urllib.request.Request(url)
    if user:
        token = base64.b64encode(f"{user}:{secret(password_file)}".encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read().decode()
            status = answer.status
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def post(url, payload, user="admin", password_file="monitoring_admin_password"):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    token = base64.b64encode(f"{user}:{secret(password_file)}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status


def query(expr):
    status, answer = get(f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert status == 200 and answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def targets():
    status, answer = get(f"{PROMETHEUS}/api/v1/targets?state=active")
    assert status == 200, answer
    return answer["data"]["activeTargets"]


def describe(target):
    return "%s/%s %s %s" % (target["labels"]["job"], target["labels"]["instance"], target["health"],
                            target.get("lastError", ""))


def firing():
    status, answer = get(f"{PROMETHEUS}/api/v1/alerts")
    assert status == 200, answer
    return [a["labels"]["alertname"] + "(%s)" % a["labels"].get("instance", "")
            for a in answer["data"]["alerts"] if a["state"] == "firing"]


def notifications(since=0.0):
    status, answer = get(f"{RECEIVER}/notifications?since={since}", "receiver", "alert_receiver_password")
    assert status == 200, answer
    return answer


def test_every_scrape_target_is_up():
    def all_up():
        found = targets()
        down = [describe(t) for t in found if t["health"] != "up"]
        assert found and not down, down
        return found

    found = wait_for(all_up, timeout=180, interval=5, what="every Prometheus target up")
    per_job = {}
    for target in found:
        per_job[target["labels"]["job"]] = per_job.get(target["labels"]["job"], 0) + 1
    assert per_job == JOBS
    assert {t["labels"]["instance"] for t in found if t["labels"]["job"] == "node"} == set(NODES)


def test_every_probe_through_the_vip_succeeds():
    def probes():
        results = {r["metric"]["service"]: r["value"][1] for r in query('probe_success{path="vip"}')}
        assert results == {"postgres_rw": "1", "postgres_ro": "1", "redis": "1", "sync": "1", "api": "1"}, results
        return results

    wait_for(probes, timeout=120, interval=5, what="every probe through the VIP succeeding")


@pytest.mark.parametrize("series", [
    "rtmx:pg_replication_lag_seconds", "rtmx:pg_replication_lag_bytes", "rtmx:pg_streaming_standbys:count",
    "rtmx:patroni_timeline:max", "rtmx:patroni_sync_standbys:count", "rtmx:pgbouncer_pool_utilisation:ratio",
    "rtmx:pgbouncer_client_utilisation:ratio", "rtmx:sync_websocket_connections:sum",
    "rtmx:sync_crdt_latency_seconds:quantile5m", "rtmx:sync_update_apply_seconds:quantile5m",
    "rtmx:sync_errors:rate5m", "rtmx:haproxy_frontend_http_errors:ratio_rate5m",
    "rtmx:probe_duration_seconds:quantile10m", "rtmx:slo_errors:ratio_rate5m", "rtmx:slo_error_budget_remaining:ratio30d",
])
def test_recording_rules_produce_the_key_metrics(series):
    wait_for(lambda: query(series), timeout=150, interval=5, what=f"series {series}")


def test_replication_is_measured_for_both_standbys_and_one_is_synchronous():
    def standbys():
        # Patroni's own replication connection (timeline reads) may show up briefly: members only.
        found = [r for r in query("rtmx:pg_replication_lag_bytes") if r["metric"]["application_name"] in NODES]
        assert len(found) == 2, found
        return found

    lag = wait_for(standbys, timeout=60, interval=5, what="replication lag of both standbys")
    assert [r["metric"]["sync_state"] for r in lag].count("sync") == 1, lag
    assert query("rtmx:patroni_sync_standbys:count")[0]["value"][1] == "1"


def test_exactly_one_lb_reports_the_vip():
    held = wait_for(lambda: query("rtmx_vip_held"), timeout=60, interval=5, what="rtmx_vip_held on both lbs")
    assert sorted(r["metric"]["instance"] for r in held) == ["lb1", "lb2"]
    assert sum(float(r["value"][1]) for r in held) == 1


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_every_dashboard_panel_has_data(path):
    panels = json.loads(path.read_text())["panels"]

    def every_panel_has_data():
        # A ratio of rates has data once two scrapes saw a request on that frontend: wait for it.
        empty = [panel["title"] for panel in panels if not any(query(target["expr"]) for target in panel["targets"])]
        assert empty == [], empty
        return True

    wait_for(every_panel_has_data, timeout=150, interval=10, what=f"data in every panel of {path.stem}")


@pytest.mark.parametrize("port", [9090, 9093])
def test_prometheus_and_alertmanager_need_a_password(port):
    assert get(f"http://{MON}:{port}/-/ready", user=None)[0] == 401
    assert get(f"http://{MON}:{port}/-/ready")[0] == 200


@pytest.mark.parametrize("address, port", [("198.18.1.11", 9187), ("198.18.1.21", 9100), ("198.18.1.31", 9127)])
def test_exporters_refuse_anonymous_scrapes(address, port):
    assert get(f"http://{address}:{port}/metrics", user=None)[0] == 401
    status, body = get(f"http://{address}:{port}/metrics", "prometheus", "monitoring_scrape_password")
    assert status == 200 and "# TYPE" in body


def test_blackbox_exporter_listens_on_loopback_only():
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{MON}:9115/metrics", timeout=5)


def test_receiver_is_reachable_and_asks_for_its_password():
    assert get(f"{RECEIVER}/health", user=None)[0] == 200
    assert get(f"{RECEIVER}/notifications", user=None)[0] == 401
    assert isinstance(notifications(), list)


def test_alertmanager_delivers_a_critical_alert_to_the_receiver_and_its_resolution():
    started = time.time()
    now = datetime.now(UTC)
    alert = {"labels": {"alertname": TEST_ALERT, "severity": "critical", "instance": "molecule"},
             "annotations": {"summary": "delivery test"},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(seconds=20)).isoformat()}
    assert post(f"{ALERTMANAGER}/api/v2/alerts", [alert]) == 200

    def delivered(status):
        found = [n for n in notifications(started) if n["summary"]["status"] == status
                 and any(a["alertname"] == TEST_ALERT for a in n["summary"]["alerts"])]
        return found

    firing_record = wait_for(lambda: delivered("firing"), timeout=60, interval=2, what="the firing notification")
    assert firing_record[0]["summary"]["receiver"] == "critical"
    # group_wait 5 s: an operator hears of a critical alert well within 30 s.
    assert firing_record[0]["received_at"] - started < 30
    wait_for(lambda: delivered("resolved"), timeout=150, interval=5, what="the resolved notification")


def test_nothing_fires_in_a_quiet_window_after_converge():
    started = time.time()
    deadline = started + 120
    seen = set()
    while time.time() < deadline:
        seen.update(firing())
        time.sleep(10)
    delivered = [a["alertname"] for n in notifications(started) if n["summary"]["status"] == "firing"
                 for a in n["summary"]["alerts"] if a["alertname"] != TEST_ALERT]
    assert not seen and not delivered, f"firing: {sorted(seen)}; delivered: {delivered}"
