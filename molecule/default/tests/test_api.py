"""The RTMX dashboard and API (rtmx.ha.api_server) through the VIP: every instance active and UP in
HAProxy, the dashboard, the JSON API and the WebSocket served through the VIP, /health on each instance,
a killed instance restarted by systemd without a failed request, and a new RTM database (from a git
repository at a tag) rolled out one instance at a time, never two out of HAProxy, without a failed request."""

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import testinfra
import websockets
import yaml

from conftest import (
    ADDRESSES,
    PROJECT_DIR,
    VIP,
    changed_per_host,
    playbook,
    role_default,
    run_site,
    secret,
    wait_for,
)

testinfra_hosts = ["lb1"]

API = {"sync1": "198.18.1.21", "sync2": "198.18.1.22", "sync3": "198.18.1.23"}
PORT = role_default("api_server", "api_server_port")
API_URL = f"http://{VIP}:{role_default('haproxy', 'haproxy_api_port')}"
SAMPLE = PROJECT_DIR / "roles" / "api_server" / "files" / "sample"
SAMPLE_REQUIREMENTS = 5  # rows of files/sample/docs/rtm_database.csv
SERVED_BY = "x-rtmx-api-server"  # HAProxy names the instance that answered
API_TAGS = "api_server_preflight,api_server_install,api_server_database,api_server_configure"


def get(url: str, timeout: float = 10) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, as HAProxy sends them, body) of a GET from the controller."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def health(name: str) -> dict:
    """An instance's /health; status "unreachable" while nothing listens (e.g. restarting)."""
    try:
        status, _, body = get(f"http://{API[name]}:{PORT}/health", timeout=5)
    except OSError as error:
        return {"status": "unreachable", "error": repr(error)}
    return dict(json.loads(body), http=status)


STATS_PORT = role_default("haproxy", "haproxy_stats_port")


def haproxy_api_status(lbs) -> dict:
    """{lb: {instance: status}} of the api_servers backend on every lb (the stats CSV, read from the
    controller: fast enough to sample several times a second)."""
    password = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    out = {}
    for name in lbs:
        url = f"http://{ADDRESSES[name]}:{STATS_PORT}/;csv"
        password.add_password(None, url, "admin", secret("haproxy_stats_password"))
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(password))
        with opener.open(url, timeout=5) as answer:
            csv = answer.read().decode()
        out[name] = {row.split(",")[1]: row.split(",")[17] for row in csv.splitlines()
                     if row.startswith("api_servers,") and row.split(",")[1] in API}
    return out


class Prober:
    """GET /api/status through the VIP in a loop (in a thread) while something happens."""

    def __init__(self, path: str = "/api/status"):
        self.url, self.results, self.stop = API_URL + path, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            start = time.time()
            try:
                status, headers, body = get(self.url, timeout=8)
                ok = status == 200 and "total" in json.loads(body)
                self.results.append((start, ok, status, headers.get(SERVED_BY),
                                     json.loads(body).get("total") if ok else body[:200]))
            except (OSError, ValueError) as error:
                self.results.append((start, False, None, None, repr(error)))
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)

    @property
    def failed(self) -> list:
        return [r for r in self.results if not r[1]]


def test_every_instance_serves_and_is_up_in_haproxy(lbs):
    for name in API:
        answer = health(name)
        assert answer["http"] == 200 and answer["status"] == "ok", (name, answer)
        assert answer["instance"] == name and answer["requirements"] == SAMPLE_REQUIREMENTS, answer
    releases = {health(name)["release"] for name in API}
    assert len(releases) == 1, f"the instances serve different releases: {releases}"
    # HAProxy checks a DOWN instance every 2 s and needs 2 passed checks.
    every_up = {lb: {name: "UP" for name in API} for lb in lbs}
    wait_for(lambda: haproxy_api_status(lbs) == every_up, timeout=30, what="every API instance UP in every HAProxy")


def test_instances_listen_on_their_own_address_only(inventory):
    for name, address in API.items():
        node = testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")
        # ss: State Recv-Q Send-Q Local Peer
        local = [line.split()[3] for line in node.check_output(f"ss -Htln 'sport = :{PORT}'").splitlines()]
        assert local == [f"{address}:{PORT}"], (name, local)


def test_dashboard_and_api_through_the_vip():
    status, headers, body = get(API_URL + "/")
    assert status == 200 and "text/html" in headers.get("content-type", ""), (status, headers)
    assert b"RTMX" in body and headers.get(SERVED_BY) in API, headers
    status, _, body = get(API_URL + "/api/status")
    assert status == 200, body[:300]
    summary = json.loads(body)
    assert summary["total"] == SAMPLE_REQUIREMENTS and {p["phase"] for p in summary["phases"]} == {1, 2, 3}, summary
    status, _, body = get(API_URL + "/api/requirements")
    assert status == 200 and json.loads(body)["total"] == SAMPLE_REQUIREMENTS
    status, _, body = get(API_URL + "/api/backlog")
    assert status == 200 and "critical_path" in json.loads(body)


def test_requests_are_spread_over_every_instance():
    served = {get(API_URL + "/api/status")[1].get(SERVED_BY) for _ in range(12)}
    assert served == set(API), served


def test_health_through_the_vip():
    status, _, body = get(API_URL + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok", body


def test_websocket_through_the_vip():
    async def scenario():
        async with websockets.connect(f"ws://{VIP}:{role_default('haproxy', 'haproxy_api_port')}/ws",
                                      open_timeout=10) as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 10) == "pong"
            # Idle longer than HTTP's keep-alive: the tunnel stays open (timeout tunnel).
            await asyncio.sleep(6)
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 10) == "pong"

    asyncio.run(scenario())


def test_forwarded_headers_reach_the_instances(inventory):
    # uvicorn believes X-Forwarded-For from the lbs only (api_server_trusted_proxies): the access log names
    # the controller, not the lb, and the scheme is the one HAProxy set.
    marker = f"/api/requirements?limit=1&marker={int(time.time() * 1000)}"
    status, headers, _ = get(API_URL + marker)
    assert status == 200
    served = headers[SERVED_BY]
    node = testinfra.get_host(f"ansible://{served}?ansible_inventory={inventory}")
    log = wait_for(lambda: [line for line in node.check_output("journalctl -u rtmx-api --since '2 min ago' --no-pager")
                            .splitlines() if marker.split("marker=")[1] in line],
                   timeout=10, what="the request in the access log")
    assert not any(ADDRESSES[lb] + ":" in log[-1] for lb in ("lb1", "lb2")), f"the lb, not the client: {log[-1]}"


def test_killed_instance_is_restarted_by_systemd_and_costs_no_request(lbs, inventory):
    node = testinfra.get_host(f"ansible://sync2?ansible_inventory={inventory}")
    before = node.check_output("systemctl show -p MainPID --value rtmx-api")
    with Prober() as probe:
        wait_for(lambda: len(probe.results) >= 5, timeout=30, what="the prober running")
        node.check_output("systemctl kill -s KILL rtmx-api")
        wait_for(lambda: node.check_output("systemctl show -p MainPID --value rtmx-api") not in ("0", before),
                 timeout=30, what="systemd to start rtmx-api again")
        wait_for(lambda: health("sync2")["status"] == "ok", timeout=60, what="sync2 to serve again")
        served_before = len(probe.results)
        wait_for(lambda: len(probe.results) >= served_before + 10, timeout=30, what="requests after the restart")
    assert len(probe.results) > 20, probe.results
    assert probe.failed == [], f"{len(probe.failed)} of {len(probe.results)} requests failed: {probe.failed[:5]}"
    wait_for(lambda: haproxy_api_status(lbs) == {lb: {name: "UP" for name in API} for lb in lbs}, timeout=60,
             what="every instance UP again in HAProxy")


@pytest.fixture
def changed_database(tmp_path):
    """The sample RTMX project with one more requirement."""
    project = tmp_path / "rtm"
    shutil.copytree(SAMPLE, project)
    config = yaml.safe_load((project / "rtmx.yaml").read_text())
    csv = project / config["rtmx"]["database"]
    csv.write_text(csv.read_text() + "REQ-API-002,API,WEB,A new database is rolled out without downtime,"
                   "no failed request,molecule/default/tests/test_api.py,test_new_database,Integration Test,"
                   "COMPLETE,HIGH,2,,0.5,REQ-API-001,\n")
    return project


def git_repository(directory, tag: str):
    """The directory made a git repository with one commit, tagged."""
    def git(*args):
        subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True)
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=molecule", "-c", "user.email=molecule@localhost", "commit", "-q", "-m", "RTM database")
    git("tag", tag)
    return directory


def test_new_database_is_rolled_out_one_instance_at_a_time_without_a_failed_request(
        project_dir, inventory, lbs, changed_database):
    samples, stop = [], threading.Event()

    def watch():  # which instances are not serving, or not UP in some HAProxy, five times a second
        while not stop.is_set():
            down = set()
            for name in API:
                try:
                    if health(name).get("http") != 200:
                        down.add(name)
                except ValueError:
                    down.add(name)
            try:
                for status in haproxy_api_status(lbs).values():
                    down |= {name for name in API if status.get(name) != "UP"}
            except OSError:
                pass  # the instances' own answers still count
            samples.append((time.time(), sorted(down)))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        with Prober() as probe:
            watcher.start()
            # From a git repository at a tag (test_a_database_rtmx_cannot_load... uses a directory).
            output = run_site(project_dir, inventory, "--limit", "api", "--tags", API_TAGS,
                              "-e", f"api_server_database_git_repo=file://{git_repository(changed_database, 'v2')}",
                              "-e", "api_server_database_git_version=v2")
            served_before = len(probe.results)
            wait_for(lambda: len(probe.results) >= served_before + 10, timeout=30, what="requests after the run")
        stop.set()
        watcher.join(10)
        assert all(changed_per_host(output)[name] >= 1 for name in API), changed_per_host(output)
        for name in API:
            assert health(name)["requirements"] == SAMPLE_REQUIREMENTS + 1, health(name)
        assert json.loads(get(API_URL + "/api/status")[2])["total"] == SAMPLE_REQUIREMENTS + 1
        restarted = {name for _, down in samples for name in down}
        assert restarted == set(API), f"not every instance was seen restarting: {restarted}"
        assert max(len(down) for _, down in samples) == 1, [s for s in samples if len(s[1]) > 1][:5]
        assert probe.failed == [], f"{len(probe.failed)} of {len(probe.results)} requests failed: {probe.failed[:5]}"
        served = {r[4] for r in probe.results if r[1]}
        assert served == {SAMPLE_REQUIREMENTS, SAMPLE_REQUIREMENTS + 1}, served
    finally:
        stop.set()
        # Back to the sample (also one at a time): site.yml's re-run after the drills must change nothing.
        run_site(project_dir, inventory, "--limit", "api", "--tags", API_TAGS)
    for name in API:
        assert health(name)["requirements"] == SAMPLE_REQUIREMENTS


def test_a_database_rtmx_cannot_load_changes_no_instance(project_dir, inventory, changed_database):
    csv = changed_database / "docs" / "rtm_database.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")  # the header alone: rtmx finds no requirement
    release = health("sync1")["release"]
    output = playbook(project_dir, inventory, "playbooks/site.yml", "--limit", "api", "--tags", API_TAGS,
                      "-e", f"api_server_database_dir={changed_database}", check=False)
    assert "rtmx cannot load the RTM database" in output, output[-3000:]
    for name in API:
        answer = health(name)
        assert answer["status"] == "ok" and answer["release"] == release, (name, answer)
