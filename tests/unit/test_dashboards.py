"""Grafana dashboards shipped in roles/prometheus/files/dashboards: importable
(a Prometheus data source input, unique uids, every panel placed and with a
query), and every query valid PromQL (promtool parses it as a recording rule)
reading only series an exporter of the stack defines or a recording rule
records."""

import json
import shutil
import subprocess

import pytest
import yaml
from promql_names import EXPORTED_NAMES, ROOT, recorded_names, series_names

DASHBOARDS = sorted((ROOT / "roles" / "prometheus" / "files" / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")


def queries(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield "annotation " + annotation["name"], annotation["expr"]


def test_the_stack_has_its_dashboards():
    assert {path.stem for path in DASHBOARDS} == {
        "rtmx-overview",
        "rtmx-postgres",
        "rtmx-redis",
        "rtmx-sync",
        "rtmx-lb",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_imports_with_a_prometheus_data_source(path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem and dashboard["title"]
    assert [item["name"] for item in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_queries_read_only_known_series(path):
    known = EXPORTED_NAMES | recorded_names()
    unknown = {title: sorted(series_names(expr) - known) for title, expr in queries(json.loads(path.read_text()))}
    assert {title: names for title, names in unknown.items() if names} == {}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found: `make packages` installs Debian's prometheus")
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_queries_are_valid_promql(path, tmp_path):
    rules = [
        {"record": "dashboard:query_%d" % number, "expr": expr}
        for number, (_, expr) in enumerate(queries(json.loads(path.read_text())))
    ]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    run = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "queries.yml")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_key_metric_of_the_requirement_is_on_a_dashboard():
    shown = set()
    for path in DASHBOARDS:
        for _, expr in queries(json.loads(path.read_text())):
            shown |= series_names(expr)
    key_metrics = {
        "request latency": {"rtmx:sync_update_apply_seconds:quantile5m", "rtmx:probe_duration_seconds:quantile10m"},
        "error rate by endpoint": {"rtmx:haproxy_frontend_http_errors:ratio_rate5m", "rtmx:sync_errors:rate5m"},
        "replication lag": {"rtmx:pg_replication_lag_seconds", "rtmx:pg_replication_lag_bytes"},
        "pool utilisation": {"rtmx:pgbouncer_pool_utilisation:ratio"},
        "websocket connections": {"rtmx:sync_websocket_connections:sum"},
        "crdt sync latency": {"rtmx:sync_crdt_latency_seconds:quantile5m"},
        "error budget": {"rtmx:slo_error_budget_remaining:ratio30d"},
    }
    assert {name: sorted(series - shown) for name, series in key_metrics.items() if series - shown} == {}
