"""Prometheus rules of rtmx.ha: valid (promtool check rules), every alert tested
firing and not firing (promtool test rules tests/promtool/*.test.yml), every
series they read exported by something the collection deploys or recorded by a
rule, and every runbook link pointing at a section of docs/runbook.md."""

import re
import shutil
import subprocess

import pytest
import yaml
from promql_names import EXPORTED_NAMES, ROOT, RULES_DIR, load_rules, recorded_names, series_names

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: `make packages` (scripts/ensure-packages.sh @tests) installs Debian's prometheus",
)
TESTS_DIR = ROOT / "tests" / "promtool"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/rtmx/rtmx.ha/blob/main/docs/runbook.md#"


def alerts():
    return [rule for _, rule in load_rules() if "alert" in rule]


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors():
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            anchors.add(github_anchor(match.group(1)))
        anchors.update(re.findall(r'<a (?:name|id)="([^"]+)"', line))
    return anchors


@needs_promtool
def test_rule_files_are_valid():
    files = sorted(str(path) for path in RULES_DIR.glob("*.yml"))
    result = subprocess.run([PROMTOOL, "check", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass():
    files = sorted(str(path) for path in TESTS_DIR.glob("*.test.yml"))
    assert files, "no promtool tests in tests/promtool"
    result = subprocess.run([PROMTOOL, "test", "rules", *files], capture_output=True, text=True, cwd=TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def promtool_cases():
    """{alertname: set of 'firing'/'quiet'} over every alert_rule_test of tests/promtool."""
    cases = {}
    for path in TESTS_DIR.glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add("firing" if case.get("exp_alerts") else "quiet")
    return cases


def test_every_alert_is_tested_firing_and_not_firing():
    cases = promtool_cases()
    missing = {rule["alert"]: {"firing", "quiet"} - cases.get(rule["alert"], set()) for rule in alerts()}
    assert {name: sorted(what) for name, what in missing.items() if what} == {}
    assert set(cases) <= {rule["alert"] for rule in alerts()}, "tests name alerts that do not exist"


def test_alerts_have_severity_summary_and_runbook():
    for rule in alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["annotations"]["runbook_url"].startswith(RUNBOOK_URL), rule["alert"]


def test_every_runbook_url_points_at_a_runbook_section():
    anchors = runbook_anchors()
    broken = [
        rule["annotations"]["runbook_url"]
        for rule in alerts()
        if rule["annotations"]["runbook_url"][len(RUNBOOK_URL) :] not in anchors
    ]
    assert broken == []


def test_the_requirements_alerts_exist_with_their_severity():
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
    expected = {
        "RtmxHighErrorRate": "critical",
        "RtmxReplicationLag": "warning",
        "RtmxConnectionPoolExhausted": "warning",
        "RtmxPatroniFailover": "critical",
        "RtmxRedisMasterChanged": "critical",
        "RtmxVipMoved": "critical",
    }
    assert {name: severity.get(name) for name in expected} == expected


def test_rules_read_only_exported_or_recorded_series():
    known = EXPORTED_NAMES | recorded_names()
    unknown = {}
    for _, rule in load_rules():
        names = series_names(rule["expr"]) - known
        if names:
            unknown[rule.get("record") or rule["alert"]] = sorted(names)
    assert unknown == {}


def test_series_names_of_an_expression():
    expr = (
        'sum by (proxy) (rate(haproxy_frontend_http_responses_total{code="5xx"}[5m])) '
        '/ on (instance) group_left() (up{job="x"} > 0) or vector(0) and rtmx:a:b offset 5m'
    )
    assert series_names(expr) == {"haproxy_frontend_http_responses_total", "up", "rtmx:a:b"}
