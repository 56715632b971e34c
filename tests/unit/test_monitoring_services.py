"""The small services the monitoring roles ship: the lab alert receiver
(rtmx.ha.alert_receiver) and the PgBouncer exporter (rtmx.ha.pgbouncer_exporter),
run in-process on loopback."""

import base64
import importlib.util
import json
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest
from promql_names import EXPORTED, ROOT


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


receiver = load(ROOT / "roles" / "alert_receiver" / "files" / "rtmx_alert_receiver.py")
pgbouncer = load(ROOT / "roles" / "pgbouncer_exporter" / "files" / "rtmx_pgbouncer_exporter.py")

AUTH = "Basic " + base64.b64encode(b"receiver:s3cret-password-16ch").decode()
NOTIFICATION = {
    "status": "firing",
    "receiver": "critical",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "RtmxPatroniFailover", "severity": "critical"},
            "startsAt": "2026-11-27T23:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }
    ],
}


@pytest.fixture
def serve():
    servers = []

    def start(handler):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return "http://127.0.0.1:%d" % server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def call(url, method="GET", body=None, auth=AUTH):
    request = urllib.request.Request(url, data=body, method=method)
    if auth:
        request.add_header("Authorization", auth)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_receiver_records_each_notification_with_its_arrival_time(serve, tmp_path):
    clock = iter([1000.0, 1010.0])
    store = receiver.Store(str(tmp_path / "n.jsonl"))
    url = serve(receiver.make_handler(store, "receiver", "s3cret-password-16ch", clock=lambda: next(clock)))
    assert call(url + "/alerts", "POST", json.dumps(NOTIFICATION).encode())[0] == 200
    resolved = dict(NOTIFICATION, status="resolved")
    assert call(url + "/alerts", "POST", json.dumps(resolved).encode())[0] == 200

    status, body = call(url + "/notifications")
    records = json.loads(body)
    assert status == 200
    assert [(r["received_at"], r["summary"]["status"]) for r in records] == [(1000.0, "firing"), (1010.0, "resolved")]
    assert records[0]["summary"]["alerts"][0]["alertname"] == "RtmxPatroniFailover"
    assert records[0]["payload"] == NOTIFICATION
    assert [r["received_at"] for r in json.loads(call(url + "/notifications?since=1005")[1])] == [1010.0]

    assert call(url + "/notifications", "DELETE")[0] == 200
    assert json.loads(call(url + "/notifications")[1]) == []


def test_receiver_asks_for_the_password_but_not_for_health(serve, tmp_path):
    url = serve(receiver.make_handler(receiver.Store(str(tmp_path / "n.jsonl")), "receiver", "s3cret-password-16ch"))
    assert call(url + "/alerts", "POST", json.dumps(NOTIFICATION).encode(), auth=None)[0] == 401
    wrong = "Basic " + base64.b64encode(b"receiver:wrong").decode()
    assert call(url + "/notifications", auth=wrong)[0] == 401
    assert call(url + "/health", auth=None)[0] == 200
    assert not (tmp_path / "n.jsonl").exists()


def test_receiver_refuses_what_is_not_a_notification(serve, tmp_path):
    url = serve(receiver.make_handler(receiver.Store(str(tmp_path / "n.jsonl")), "receiver", "s3cret-password-16ch"))
    assert call(url + "/alerts", "POST", b"not json")[0] == 400
    assert call(url + "/elsewhere", "POST", b"{}")[0] == 404
    assert call(url + "/notifications?since=yesterday")[0] == 400


def test_receiver_skips_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"received_at": 1, "summary": {}}\n{"received_at": 2, "summ')
    assert [r["received_at"] for r in receiver.Store(str(path)).read()] == [1]


# PgBouncer 1.18's admin console, as psycopg returns it (strings for numbers in SHOW CONFIG).
POOLS = [
    {
        "database": "rtmx",
        "user": "rtmx",
        "cl_active": 12,
        "cl_waiting": 3,
        "sv_active": 20,
        "sv_idle": 0,
        "sv_used": 0,
        "sv_tested": 0,
        "sv_login": 0,
        "maxwait": 2,
        "pool_mode": "transaction",
    },
    {
        "database": "pgbouncer",
        "user": "pgbouncer",
        "cl_active": 1,
        "cl_waiting": 0,
        "sv_active": 0,
        "sv_idle": 0,
        "sv_used": 0,
        "sv_tested": 0,
        "sv_login": 0,
        "maxwait": 0,
        "pool_mode": "statement",
    },
]
DATABASES = [
    {
        "name": "rtmx_ro",
        "host": "127.0.0.1",
        "port": 5001,
        "database": "rtmx",
        "pool_size": 20,
        "reserve_pool": 5,
        "max_connections": 0,
        "current_connections": 2,
    },
    {
        "name": "pgbouncer",
        "host": None,
        "port": 6432,
        "database": "pgbouncer",
        "pool_size": 2,
        "reserve_pool": 0,
        "max_connections": 0,
        "current_connections": 0,
    },
]
STATS = [
    {
        "database": "rtmx",
        "total_xact_count": 100,
        "total_query_count": 150,
        "total_received": 1,
        "total_sent": 2,
        "total_xact_time": 2500000,
        "total_query_time": 2000000,
        "total_wait_time": 500000,
    }
]
CONFIG = [
    {"key": "max_client_conn", "value": "2000", "default": "100", "changeable": "yes"},
    {"key": "default_pool_size", "value": "20", "default": "20", "changeable": "yes"},
]


def samples(text):
    """{series name with labels: value} of a Prometheus text exposition."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_pgbouncer_exporter_renders_pools_databases_stats_and_config():
    values = samples(pgbouncer.render(POOLS, DATABASES, STATS, CONFIG))
    assert values['pgbouncer_pools_server_active_connections{database="rtmx",user="rtmx"}'] == 20
    assert values['pgbouncer_pools_client_waiting_connections{database="rtmx",user="rtmx"}'] == 3
    assert values['pgbouncer_databases_pool_size{database="rtmx_ro",backend_database="rtmx"}'] == 20
    assert values['pgbouncer_stats_queries_duration_seconds_total{database="rtmx"}'] == 2.0
    assert values["pgbouncer_config_max_client_connections"] == 2000
    assert values["pgbouncer_up"] == 1
    assert not [name for name in values if 'database="pgbouncer"' in name], "the admin console is no pool"


def test_pgbouncer_exporter_series_are_the_ones_rules_may_use():
    names = {name.split("{")[0] for name in samples(pgbouncer.render(POOLS, DATABASES, STATS, CONFIG))}
    assert names <= EXPORTED["pgbouncer_exporter"]


def test_pgbouncer_exporter_without_console_says_down():
    assert samples(pgbouncer.render([], [], [], [], up=False)) == {"pgbouncer_up": 0.0}


def test_pgbouncer_exporter_asks_for_the_password(serve):
    class Console:
        def scrape(self):
            return pgbouncer.render(POOLS, DATABASES, STATS, CONFIG)

    url = serve(pgbouncer.make_handler(Console(), "prometheus", "scrape-password-16"))
    assert call(url + "/metrics", auth=None)[0] == 401
    auth = "Basic " + base64.b64encode(b"prometheus:scrape-password-16").decode()
    status, body = call(url + "/metrics", auth=auth)
    assert status == 200 and b"pgbouncer_up 1.0" in body
