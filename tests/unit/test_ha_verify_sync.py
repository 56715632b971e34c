"""ha_verify's reading of a sync server's /health: serving and whole, serving but degraded, not serving."""

import json

from ansible_collections.rtmx.ha.plugins.modules.ha_verify import sync_health_problems

URL = "http://198.18.0.21:8765/health"


def body(status, **checks):
    return json.dumps({"status": status, "server": "sync1", "checks": checks or {"redis": "ok", "postgres": "ok"}})


def test_serving_and_whole_is_no_problem():
    assert sync_health_problems(URL, 200, body("ok").encode()) == []


def test_degraded_names_the_failing_dependency():
    problems = sync_health_problems(URL, 200, body("degraded", redis="ok", postgres="error: timeout").encode())
    assert len(problems) == 1
    assert "degraded" in problems[0] and "postgres" in problems[0] and "redis" not in problems[0]


def test_not_serving_gives_the_status_and_body_state():
    assert sync_health_problems(URL, 503, body("unavailable").encode()) == [
        "%s answered HTTP 503 (unavailable)" % URL]
    assert sync_health_problems(URL, 502, b"<html>bad gateway</html>") == ["%s answered HTTP 502 (no JSON body)" % URL]
