"""ha_verify's API checks: an instance's /health, the VIP's, and HAProxy's api backend on each lb."""

import json

from ansible_collections.rtmx.ha.plugins.module_utils.haproxy_stats import parse_stats_csv
from ansible_collections.rtmx.ha.plugins.modules.ha_verify import api_backend_problems, api_health_problems

URL = "http://198.18.0.21:8000/health"
HEADER = "# pxname,svname,status,addr"


def body(status, reason="ok"):
    return json.dumps({"status": status, "reason": reason, "instance": "sync1", "requirements": 5}).encode()


def stats(*servers):
    rows = [HEADER, "api_servers,FRONTEND,OPEN,", "api_servers,BACKEND,UP,"]
    rows += ["api_servers,%s,%s,%s" % server for server in servers]
    return parse_stats_csv("\n".join(rows))


def test_serving_instance_is_no_problem():
    assert api_health_problems(URL, 200, body("ok")) == []


def test_instance_that_cannot_serve_gives_the_status_and_its_reason():
    problems = api_health_problems(URL, 503, body("unavailable", "RTMError: RTM database is empty"))
    assert problems == ["%s answered HTTP 503 (RTMError: RTM database is empty)" % URL]


def test_a_200_without_status_ok_is_a_problem():
    # Another service on the port (or rtmx itself, were /health ever routed to it) answers 200 with something else.
    assert api_health_problems(URL, 200, b"<html>RTMX Dashboard</html>") == [
        "%s answered HTTP 200 (no JSON body)" % URL]
    assert api_health_problems(URL, 200, b"[]") == ["%s answered HTTP 200 (no JSON body)" % URL]


def test_unreachable_instance_says_why():
    assert api_health_problems(URL, None, "[Errno 111] Connection refused") == [
        "%s unreachable: [Errno 111] Connection refused" % URL]


def test_every_instance_up_in_haproxy_is_no_problem():
    page = stats(("sync1", "UP", "198.18.0.21:8000"), ("sync2", "UP", "198.18.0.22:8000"),
                 ("sync3", "UP 1/2", "198.18.0.23:8000"))
    assert api_backend_problems(page, "api_servers", 3) == []


def test_an_instance_down_in_haproxy_is_named():
    page = stats(("sync1", "UP", "198.18.0.21:8000"), ("sync2", "DOWN", "198.18.0.22:8000"),
                 ("sync3", "MAINT", "198.18.0.23:8000"))
    assert api_backend_problems(page, "api_servers") == ["API instances not UP: sync2 (DOWN), sync3 (MAINT)"]


def test_missing_backend_or_instance_count_is_a_problem():
    page = stats(("sync1", "UP", "198.18.0.21:8000"))
    assert api_backend_problems(page, "api_servers", 3) == [
        "backend api_servers has 1 servers, 3 API instances expected"]
    assert api_backend_problems(page, "api", 3)[0].startswith("backend api is missing (known: api_servers)")
