"""scripts/bench_sync.py: its pure parts, and one short run against an in-process y-websocket relay."""

import asyncio
import importlib.util
import json
import pathlib
import subprocess
import sys
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("bench_sync", ROOT / "scripts" / "bench_sync.py")
bench = importlib.util.module_from_spec(SPEC)
sys.modules["bench_sync"] = bench  # dataclasses look their module up
SPEC.loader.exec_module(bench)


# connection.env ---------------------------------------------------------------------------------------------------


def test_env_file_is_read_without_a_shell():
    text = """# rtmx.ha lab: endpoints
RTMX_LAB_NODES="pg1=198.18.2.11 sync1=198.18.2.21 sync2=198.18.2.22"
RTMX_LAB_PREFIX="rtmx-lab"
export RTMX_SYNC_URL='ws://198.18.2.100:8080'
RTMX_PG_RW_URL="postgresql://rtmx:p=a$HOME`x`@198.18.2.100:6432/rtmx"
RTMX_EMPTY=""
not a line
2BAD="x"
  RTMX_SPACED = "y"
"""
    env = bench.parse_env_text(text)
    assert env["RTMX_LAB_NODES"] == "pg1=198.18.2.11 sync1=198.18.2.21 sync2=198.18.2.22"
    assert env["RTMX_SYNC_URL"] == "ws://198.18.2.100:8080"
    # No expansion, and "=" inside a value stays.
    assert env["RTMX_PG_RW_URL"] == "postgresql://rtmx:p=a$HOME`x`@198.18.2.100:6432/rtmx"
    assert env["RTMX_EMPTY"] == "" and env["RTMX_SPACED"] == "y"
    assert "2BAD" not in env and len(env) == 6


def test_missing_env_file_is_empty(tmp_path):
    assert bench.load_env(tmp_path / "absent.env") == {}


def test_template_keys_are_the_ones_read():
    template = (ROOT / "playbooks" / "templates" / "connection.env.j2").read_text()
    for key in ("RTMX_SYNC_URL", "RTMX_LAB_NODES", "RTMX_LAB_PREFIX", "RTMX_REDIS_URL", "RTMX_PG_RW_URL"):
        assert f"{key}=" in template


LAB_ENV = {
    "RTMX_LAB_NODES": "pg1=198.18.2.11 sync1=198.18.2.21 sync2=198.18.2.22 sync3=198.18.2.23 lb1=198.18.2.31",
    "RTMX_LAB_PREFIX": "rtmx-lab",
    "RTMX_SYNC_URL": "ws://198.18.2.100:8080/",
}


def test_target_from_the_lab_nodes():
    target = bench.resolve_target(LAB_ENV)
    assert target.url == "ws://198.18.2.100:8080"
    assert target.servers == [
        {"name": f"sync{n}", "url": f"ws://198.18.2.2{n}:8765", "container": f"rtmx-lab-sync{n}"} for n in (1, 2, 3)
    ]


def test_target_options_override_the_env():
    target = bench.resolve_target(LAB_ENV, url="ws://127.0.0.1:9000", servers="198.18.2.22:9765, 127.0.0.1,")
    assert target.url == "ws://127.0.0.1:9000"
    assert target.servers == [
        {"name": "sync2", "url": "ws://198.18.2.22:9765", "container": "rtmx-lab-sync2"},
        {"name": "127.0.0.1:8765", "url": "ws://127.0.0.1:8765", "container": None},
    ]
    assert bench.resolve_target({}, url="wss://vip:8443", servers="a:1").servers[0]["url"] == "wss://a:1"


def test_container_names_follow_lab_up():
    assert bench.container_name("rtmx-lab", "sync1") == "rtmx-lab-sync1"
    assert bench.container_name("lab-", "sync1") == "lab-sync1"
    assert bench.container_name("", "sync1") == "sync1"


def test_key_is_the_first_key_line(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"# signing key\n\n  first-key-0123456789abcdef0123456789  \nsecond\n")
    assert bench.read_key(path) == b"first-key-0123456789abcdef0123456789"
    path.write_bytes(b"# nothing\n")
    with pytest.raises(ValueError):
        bench.read_key(path)


# statistics --------------------------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [bench.percentile(values, q) for q in (0, 50, 95, 99, 100)] == [1, 50, 95, 99, 100]
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([], 50) is None
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_summary_of_no_samples():
    assert bench.summarise([]) == {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    assert bench.summarise([3.0, 1.0, 2.0]) == {"count": 3, "p50": 2.0, "p95": 3.0, "p99": 3.0, "max": 3.0, "mean": 2.0}


# spread and plan ---------------------------------------------------------------------------------------------------

SERVERS = ["ws://s1:8765", "ws://s2:8765", "ws://s3:8765"]


def test_spread_vip_direct_mixed():
    assert bench.assign_endpoints(3, "vip", "ws://vip:8080", SERVERS) == ["ws://vip:8080"] * 3
    assert bench.assign_endpoints(4, "direct", "", SERVERS) == [*SERVERS, SERVERS[0]]
    mixed = bench.assign_endpoints(8, "mixed", "ws://vip:8080", SERVERS)
    assert mixed[0::2] == ["ws://vip:8080"] * 4
    assert mixed[1::2] == [*SERVERS, SERVERS[0]]
    with pytest.raises(ValueError):
        bench.assign_endpoints(1, "vip", "", SERVERS)
    with pytest.raises(ValueError):
        bench.assign_endpoints(1, "direct", "ws://vip", [])
    with pytest.raises(ValueError):
        bench.assign_endpoints(1, "sideways", "ws://vip", SERVERS)


@pytest.mark.parametrize("spread", ["direct", "mixed"])
def test_every_room_spans_servers(spread):
    endpoints = bench.assign_endpoints(100, spread, "ws://vip:8080", SERVERS)
    for room in bench.plan_rooms(100, 5, endpoints, "bench"):
        assert len({url for _, url in room["clients"]}) >= 2, room


def test_rooms_and_worker_shares():
    rooms = bench.plan_rooms(12, 5, [f"u{i}" for i in range(12)], "bench-x-n12", first_cid=100)
    assert [len(room["clients"]) for room in rooms] == [5, 5, 2]
    assert [room["name"] for room in rooms] == ["bench-x-n12-r0", "bench-x-n12-r1", "bench-x-n12-r2"]
    assert rooms[2]["clients"] == [(110, "u10"), (111, "u11")]
    assert all(room["label"] == "small" and room["preload"] == 0 for room in rooms)
    names = [room["name"] for room in rooms] + [bench.check_room_name("20260101T000000Z", "n=300", 2)]
    for name in names:
        assert bench.re.fullmatch(r"[A-Za-z0-9_.~-][A-Za-z0-9_.~/-]{0,199}", name), name
    shares = bench.split_rooms(rooms, 2)
    assert [[room["name"] for room in share] for share in shares] == [
        ["bench-x-n12-r0", "bench-x-n12-r2"],
        ["bench-x-n12-r1"],
    ]
    # More workers than rooms: no empty worker.
    assert len(bench.split_rooms(rooms, 8)) == 3
    assert bench.parse_clients("100, 300,1000") == [100, 300, 1000] and bench.parse_clients("") == []
    with pytest.raises(ValueError):
        bench.parse_clients("0")


# merging the workers -----------------------------------------------------------------------------------------------


def worker_result(worker, latencies, cpu=0.3, converged=True, **extra):
    result = {
        "worker": worker,
        "clients": 10,
        "connected": 10,
        "connect_failures": 0,
        "connect_errors": {},
        "connect_ms": {"small": [5.0, 7.0]},
        "edits_made": 120,
        "edits_sent": 100,
        "sends_failed": 0,
        "deliveries_expected": 400,
        "edits_received": len(latencies),
        "latencies_ms": {"small": bench.array("d", latencies)},
        "send_lag_ms": bench.array("d", [0.1, 0.2]),
        "loop_lag_ms": bench.array("d", [1.0, 2.0]),
        "cpu_fraction": cpu,
        "disconnects": 0,
        "disconnect_reasons": {},
        "reconnects": 0,
        "reconnect_errors": {},
        "rooms": [{"name": f"r{worker}", "label": "small", "converged": converged, "converge_s": 0.2}],
        "preload": [],
    }
    result.update(extra)
    return result


def test_merge_sums_counters_and_pools_samples():
    first = worker_result(0, [float(v) for v in range(1, 51)], connect_errors={"http 503": 2})
    second = worker_result(
        1,
        [float(v) for v in range(51, 101)],
        cpu=0.95,
        disconnects=3,
        disconnect_reasons={"closed 1012 server shutting down": 3},
        connect_errors={"http 503": 1, "timeout": 1},
        converged=False,
    )
    merged = bench.merge_results([first, second])
    assert merged["clients"] == 20 and merged["edits_sent"] == 200 and merged["edits_received"] == 100
    assert merged["disconnects"] == 3
    assert merged["connect_errors"] == {"http 503": 3, "timeout": 1}
    # Percentiles over the pooled samples, not averaged per worker.
    assert merged["latency_ms"]["p50"] == 50.0 and merged["latency_ms"]["p95"] == 95.0
    assert merged["latency_ms"]["max"] == 100.0 and merged["latency_ms_by_room_kind"]["small"]["count"] == 100
    assert merged["connect_ms"]["count"] == 4
    assert merged["convergence"] == {
        "rooms": 2,
        "converged": 1,
        "all": False,
        "slowest_s": 0.2,
        "not_converged": ["r1"],
        "rooms_without_clients": 0,
    }
    empty = worker_result(2, [], rooms=[{"name": "r2", "label": "small", "connected": 0, "converged": False}])
    convergence = bench.merge_results([first, empty])["convergence"]
    assert (convergence["rooms"], convergence["all"], convergence["rooms_without_clients"]) == (1, True, 1)
    assert merged["generator"]["saturated"] and merged["generator"]["cpu_fraction_max"] == 0.95
    assert [worker["worker"] for worker in merged["generator"]["workers"]] == [0, 1]


def test_merge_of_nothing():
    merged = bench.merge_results([])
    assert merged["clients"] == 0 and merged["latency_ms"]["count"] == 0
    assert merged["convergence"]["all"] is False and merged["generator"]["saturated"] is False


# server-side samples -----------------------------------------------------------------------------------------------

DOCKER_STATS = """{"BlockIO":"0B / 0B","CPUPerc":"12.50%","Container":"rtmx-lab-sync1","ID":"a","MemPerc":"1.0%",\
"MemUsage":"120.5MiB / 7.6GiB","Name":"rtmx-lab-sync1","NetIO":"1.2MB / 800kB","PIDs":"20"}
{"BlockIO":"0B / 0B","CPUPerc":"0.00%","Container":"rtmx-lab-sync2","ID":"b","MemPerc":"1.0%",\
"MemUsage":"1.5GiB / 7.6GiB","Name":"rtmx-lab-sync2","NetIO":"0B / 0B","PIDs":"20"}
garbage
"""


def test_docker_stats_parsing_and_summary():
    samples = bench.parse_docker_stats(DOCKER_STATS)
    assert samples == [
        {"name": "rtmx-lab-sync1", "cpu_percent": 12.5, "mem_bytes": 120.5 * 1024**2},
        {"name": "rtmx-lab-sync2", "cpu_percent": 0.0, "mem_bytes": 1.5 * 1024**3},
    ]
    timed = [{"t": t, **sample} for t in (5.0, 15.0, 99.0) for sample in samples]
    timed[2]["cpu_percent"] = 37.5
    summary = bench.summarise_docker(timed, 0.0, 20.0)
    assert summary["rtmx-lab-sync1"] == {
        "samples": 2,
        "cpu_percent_mean": 25.0,
        "cpu_percent_max": 37.5,
        "mem_mib_max": 120.5,
    }
    assert bench.parse_size("800kB") == 800_000 and bench.parse_size("0B") == 0 and bench.parse_size("x") is None


def test_metrics_counters_become_deltas():
    before = bench.parse_metrics("# TYPE x counter\nrtmx_sync_updates_in_total 10\nrtmx_sync_connections 3\n")
    after = bench.parse_metrics(
        'rtmx_sync_updates_in_total 25\nrtmx_sync_connections 300\nrtmx_sync_latency_seconds_sum{server="a"} 1.5\n'
    )
    assert bench.metrics_delta(before, after) == {
        "rtmx_sync_updates_in_total": 15.0,
        "rtmx_sync_connections": 300.0,
        'rtmx_sync_latency_seconds_sum{server="a"}': 1.5,
    }
    # A restarted server's counters start again from zero.
    assert bench.metrics_delta({"rtmx_sync_updates_in_total": 900.0}, {"rtmx_sync_updates_in_total": 40.0}) == {
        "rtmx_sync_updates_in_total": 40.0
    }


def test_host_cpu_from_proc_stat():
    first = bench.parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 1 1 1\n")
    second = bench.parse_proc_stat("cpu  250 0 150 800 100 0 0 0 0 0\n")
    assert first == (200, 1000) and bench.busy_fraction(first, second) == 0.667
    assert bench.busy_fraction(None, second) is None


# report ------------------------------------------------------------------------------------------------------------


def make_case(name="n=300", clients=300, p95=30.0, checks_ok=True, kind="clients", saturated=False):
    merged = bench.merge_results([worker_result(0, [10.0] * 94 + [p95] * 6)])
    merged["clients"] = merged["connected"] = clients
    merged["generator"]["saturated"] = saturated
    points = {
        "before": {"t": 0.0, "host_cpu": (0, 0), "redis": {"t": 0.0, "total_commands_processed": 0}},
        "window_start": {
            "t": 10.0,
            "host_cpu": (100, 1000),
            "redis": {"t": 10.0, "total_commands_processed": 1000, "used_memory_human": "1M"},
            "postgres": {"t": 10.0, "xact_commit": 50, "rtmx_sync_updates_rows": 5},
            "metrics": {"sync1": {"values": {"rtmx_sync_updates_in_total": 1.0}}},
        },
        "window_end": {
            "t": 40.0,
            "host_cpu": (1600, 4000),
            "redis": {"t": 40.0, "total_commands_processed": 31000, "instantaneous_ops_per_sec": 900},
            "postgres": {"t": 40.0, "xact_commit": 9050, "rtmx_sync_updates_rows": 9000},
            "metrics": {
                "sync1": {"values": {"rtmx_sync_updates_in_total": 9001.0}},
                "sync2": {"error": "URLError: refused"},
            },
        },
    }
    checks = [
        {"server": "sync1", "url": "ws://s1:8765", "required": True, "ok": checks_ok, "seconds": 0.01},
        {"server": "vip", "url": "ws://vip:8080", "required": False, "ok": False, "seconds": 2.0, "error": "x"},
    ]
    settings = {"spread": "direct", "rate_hz": 1.0, "duration_s": 30.0, "warmup_s": 5.0}
    settings.update({"rooms_count": clients // 5, "clients_per_room": 5, "workers": 2})
    docker = [{"t": 20.0, "name": "rtmx-lab-sync1", "cpu_percent": 40.0, "mem_bytes": 2.0 * 1024**2}]
    return bench.build_case(name, kind, settings, merged, (10.0, 40.0), points, docker, [], checks)


def test_case_report_shape():
    case = make_case()
    json.dumps(case)  # JSON as it is written
    for key in (
        "connected",
        "connect_failures",
        "edits_sent",
        "edits_received",
        "latency_ms",
        "updates_per_s",
        "disconnects",
        "convergence",
        "generator",
        "servers",
        "redis",
        "postgres",
        "new_room_checks",
    ):
        assert key in case, key
    assert set(case["latency_ms"]) == {"count", "p50", "p95", "p99", "max", "mean"}
    assert case["updates_per_s"] == {"sent": round(100 / 30, 1), "delivered": round(100 / 30, 1)}
    assert case["redis"]["commands_per_s_in_window"] == 1000.0
    assert case["postgres"]["commits_per_s_in_window"] == 300.0
    assert case["servers"]["metrics"]["sync1"]["rtmx_sync_updates_in_total"] == 9000.0
    assert case["servers"]["metrics"]["sync2"] == {"error": "URLError: refused"}
    assert case["servers"]["docker_stats"]["rtmx-lab-sync1"]["cpu_percent_max"] == 40.0
    assert case["generator"]["host_cpu_busy"] == 0.5
    assert "large_doc" not in case


def test_goal_verdicts():
    assert bench.evaluate_goal([make_case()])["verdict"] == "PASS"
    missed = bench.evaluate_goal([make_case(p95=80.0)])
    assert missed["verdict"] == "MISS" and "80.0 ms" in missed["reasons"][0]
    broken = bench.evaluate_goal([make_case(name="n=100", clients=100), make_case(checks_ok=False)])
    assert broken["verdict"] == "MISS" and not broken["servers_serving_new_rooms"]
    assert bench.evaluate_goal([make_case(name="n=100", clients=100)])["verdict"] == "NOT EVALUATED"
    saturated = bench.evaluate_goal([make_case(saturated=True)])
    assert saturated["verdict"] == "PASS" and "generator" in saturated["notes"][0]


def test_exit_status_only_for_servers_or_a_failed_run():
    assert bench.exit_status([make_case(p95=500.0)]) == 0  # a missed goal is still a benchmark
    assert bench.exit_status([make_case(checks_ok=False)]) == 1
    failed = make_case()
    failed["failed"] = "worker failed: boom"
    assert bench.exit_status([failed]) == 1


def test_table_and_report_file(tmp_path, capsys):
    cases = [make_case(name="n=100", clients=100), make_case()]
    large = make_case(name="large-doc", kind="large-doc")
    large["latency_ms_by_room_kind"]["large"] = large["latency_ms_by_room_kind"]["small"]
    cases.append(large)
    table = bench.format_table(cases)
    assert table.splitlines()[0].split() == ["n=100", "n=300", "large-doc"]
    assert "latency p95 ms" in table and "large doc p50/p95/p99" in table
    report = {"cases": cases, "goal": bench.evaluate_goal(cases)}
    path = bench.write_report(report, tmp_path / "reports" / "bench-sync", "20260101T000000Z")
    assert path == tmp_path / "reports" / "bench-sync" / "20260101T000000Z.json"
    assert json.loads(path.read_text())["goal"]["verdict"] == "PASS"
    bench.print_report(report)
    assert "goal: PASS" in capsys.readouterr().out


# end to end, against a y-websocket relay in this process ------------------------------------------------------------


class Relay:
    """A minimal y-websocket server: one pycrdt document per room, updates relayed to the room's other clients."""

    def __init__(self):
        self.rooms = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def handler(self, ws):
        from pycrdt import Doc, create_sync_message, create_update_message, handle_sync_message, read_message

        name = ws.request.path.split("?")[0].lstrip("/")
        doc, members = self.rooms.setdefault(name, (Doc(), set()))
        members.add(ws)
        try:
            await ws.send(create_sync_message(doc))
            async for message in ws:
                if message[0] != 0:
                    continue
                if message[1] == 0:
                    await ws.send(handle_sync_message(message[1:], doc))
                else:
                    update = read_message(message[2:])
                    doc.apply_update(update)
                    for other in list(members - {ws}):
                        await other.send(create_update_message(update))
        except Exception:
            pass
        finally:
            members.discard(ws)

    def _run(self):
        import websockets

        async def main():
            async with websockets.serve(self.handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.stop = asyncio.Event()
                self.ready.set()
                await self.stop.wait()

        self.loop.run_until_complete(main())

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def test_short_run_against_a_relay(tmp_path):
    with Relay() as relay:
        url = f"ws://127.0.0.1:{relay.port}"
        argv = [
            sys.executable,
            str(ROOT / "scripts" / "bench_sync.py"),
            *("--env", str(tmp_path / "none.env"), "--url", url, "--servers", f"127.0.0.1:{relay.port}"),
            *("--spread", "mixed", "--clients", "6", "--clients-per-room", "3", "--rate", "4"),
            *("--duration", "1.5", "--warmup", "0.5", "--settle", "5", "--workers", "2"),
            *("--large-doc-bytes", "200000", "--large-doc-clients", "2", "--no-docker-stats"),
            *("--report-dir", str(tmp_path / "reports")),
        ]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    (path,) = (tmp_path / "reports").glob("*.json")
    report = json.loads(path.read_text())
    small, large = report["cases"]
    assert (small["name"], small["connected"], small["connect_failures"]) == ("n=6", 6, 0)
    assert small["convergence"]["all"] and small["edits_sent"] >= 30
    # Every measured edit reached the two other clients of its room.
    assert small["edits_received"] == small["deliveries_expected"] == 2 * small["edits_sent"]
    assert small["latency_ms"]["count"] == small["edits_received"] and small["latency_ms"]["p95"] < 1000
    assert small["generator"]["workers"][0]["cpu_fraction"] is not None
    assert all(check["ok"] for check in small["new_room_checks"])
    assert large["large_doc"]["rooms"][0]["ready"] and large["convergence"]["all"]
    assert set(large["latency_ms_by_room_kind"]) == {"large", "small"}
    assert report["goal"]["verdict"] == "NOT EVALUATED" and report["exit_code"] == 0
    assert "latency p95 ms" in run.stdout


def test_metrics_brief():
    values = {
        "rtmx_sync_connections": 45.0,
        "rtmx_sync_updates_in_total": 675.0,
        'rtmx_sync_refused_total{reason="invalid_room"}': 2.0,
        'rtmx_sync_refused_total{reason="limit"}': 1.0,
        "rtmx_sync_cross_server_latency_seconds_sum": 0.3,
        "rtmx_sync_cross_server_latency_seconds_count": 200.0,
    }
    brief = bench.metrics_brief(values)
    assert brief == "connections 45, updates_in_total 675, refused 3, cross-server latency mean 1.5 ms"
    assert bench.metrics_brief({}) == "-"
