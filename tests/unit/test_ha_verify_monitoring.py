"""ha_verify's monitoring check: Prometheus' /api/v1/targets and /api/v1/alerts as it answers them."""

from ansible_collections.rtmx.ha.plugins.modules.ha_verify import monitoring_problems

EVENTS = ["RtmxPatroniFailover", "RtmxRedisMasterChanged", "RtmxVipMoved"]


def targets(*rows):
    return {
        "status": "success",
        "data": {
            "activeTargets": [
                {
                    "labels": {"job": job, "instance": instance},
                    "health": health,
                    "lastError": error,
                    "scrapeUrl": "http://x/metrics",
                }
                for job, instance, health, error in rows
            ],
            "droppedTargets": [],
        },
    }


def alerts(*rows):
    return {
        "status": "success",
        "data": {
            "alerts": [
                {"labels": dict(labels, alertname=name, severity=severity), "state": state, "value": "1"}
                for name, severity, state, labels in rows
            ]
        },
    }


UP = targets(
    ("node", "pg1", "up", ""), ("patroni", "pg1", "up", ""), ("probe_http", "http://10.0.0.100:8080/health", "up", "")
)


def test_everything_up_and_quiet_is_no_problem():
    problems, detail, report = monitoring_problems(UP, alerts(), EVENTS)
    assert problems == []
    assert detail == "every target of 3 up, no critical alert firing"
    assert report == {"targets": 3, "down": [], "firing": []}


def test_a_target_down_is_named_with_its_error():
    down = targets(
        ("node", "pg1", "up", ""), ("redis", "pg3", "down", 'Get "http://10.0.0.13:9121/metrics": connection refused')
    )
    problems, _, report = monitoring_problems(down, alerts(), EVENTS)
    assert problems == [
        '1 of 2 targets not up: redis/pg3 down (Get "http://10.0.0.13:9121/metrics": connection refused)'
    ]
    assert report["down"] == ['redis/pg3 down (Get "http://10.0.0.13:9121/metrics": connection refused)']


def test_a_firing_critical_alert_fails_and_a_pending_one_does_not():
    firing = alerts(
        ("RtmxPatroniNoLeader", "critical", "firing", {"scope": "rtmx"}),
        ("RtmxVipNotHeld", "critical", "pending", {"vip": "10.0.0.100"}),
    )
    problems, _, _ = monitoring_problems(UP, firing, EVENTS)
    assert problems == ["critical alerts firing: RtmxPatroniNoLeader(rtmx)"]


def test_warnings_and_past_failovers_are_reported_without_failing():
    firing = alerts(
        ("RtmxPatroniFailover", "critical", "firing", {"scope": "rtmx"}),
        ("RtmxReplicationLag", "warning", "firing", {"application_name": "pg2"}),
    )
    problems, detail, report = monitoring_problems(UP, firing, EVENTS)
    assert problems == []
    assert (
        detail
        == "every target of 3 up, no critical alert firing (also firing: RtmxPatroniFailover(rtmx), RtmxReplicationLag)"
    )
    assert report["firing"] == ["RtmxPatroniFailover(rtmx)", "RtmxReplicationLag"]


def test_past_failovers_fail_when_not_ignored():
    firing = alerts(("RtmxVipMoved", "critical", "firing", {}))
    assert monitoring_problems(UP, firing, [])[0] == ["critical alerts firing: RtmxVipMoved"]


def test_no_target_at_all_is_a_problem():
    assert monitoring_problems(targets(), alerts(), EVENTS)[0] == ["Prometheus has no active scrape target"]


def test_default_ignored_alerts_exist_in_the_rules():
    from promql_names import load_rules

    names = {rule["alert"] for _, rule in load_rules() if "alert" in rule}
    assert set(EVENTS) <= names
