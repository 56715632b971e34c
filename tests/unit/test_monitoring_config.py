"""The monitoring roles' configuration as they write it: prometheus.yml (every
job, target and port derived from the inventory and the roles' defaults, valid
for promtool), alertmanager.yml (routes by severity to every kind of receiver,
valid for amtool check-config) and the blackbox exporter's modules.

The real templates are rendered by ansible-playbook on localhost with each
role's defaults and vars and a fake inventory of the lab's shape, like
test_haproxy_health_checks.py does for haproxy.cfg.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from promql_names import ROOT

ADDRESSES = [
    ("pg1", "10.0.0.11"),
    ("pg2", "10.0.0.12"),
    ("pg3", "10.0.0.13"),
    ("sync1", "10.0.0.21"),
    ("sync2", "10.0.0.22"),
    ("sync3", "10.0.0.23"),
    ("lb1", "10.0.0.31"),
    ("lb2", "10.0.0.32"),
    ("mon1", "10.0.0.41"),
]
INVENTORY = {
    "all": {
        "hosts": {
            name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "rtmx_address": address}
            for name, address in ADDRESSES
        },
        "vars": {"rtmx_vip": "10.0.0.100"},
        "children": {
            "etcd": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}},
            "postgres": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}},
            "redis": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}},
            "redis_sentinel": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}},
            "sync_server": {"hosts": {"sync1": {}, "sync2": {}, "sync3": {}}},
            "api": {"hosts": {"sync1": {}, "sync2": {}, "sync3": {}}},
            "lb": {"hosts": {"lb1": {}, "lb2": {}}},
            "monitoring": {"hosts": {"mon1": {}}},
        },
    }
}
SECRETS = {
    name: name[:1] * 24
    for name in (
        "prometheus_admin_password",
        "prometheus_scrape_password",
        "alertmanager_admin_password",
        "alertmanager_alert_receiver_password",
        "blackbox_exporter_redis_password",
    )
}
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")


def render(tmp_path, role, template, extra_vars=None, host="mon1", inventory=INVENTORY):
    """One template of a role as the role writes it on `host` (passwords given: nothing is generated)."""
    out = tmp_path / template.removesuffix(".j2")
    path = ROOT / "roles" / role
    play = [
        {
            "name": "render",
            "hosts": host,
            "gather_facts": False,
            "vars_files": [str(path / "defaults" / "main.yml"), str(path / "vars" / "main.yml")],
            "tasks": [
                {
                    "name": "render",
                    "ansible.builtin.template": {
                        "src": str(path / "templates" / template),
                        "dest": str(out),
                        "mode": "0600",
                    },
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    given = {**SECRETS, "role_path": str(path), **(extra_vars or {})}
    cli = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    run = subprocess.run(
        [cli, "-i", str(tmp_path / "hosts.json"), str(tmp_path / "play.yml"), "-e", json.dumps(given)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def jobs(config):
    return {job["job_name"]: job for job in config["scrape_configs"]}


def targets(job):
    return {(group["labels"].get("instance"), target) for group in job["static_configs"] for target in group["targets"]}


def test_prometheus_scrapes_every_exporter_of_every_host_on_its_roles_port(tmp_path):
    config = yaml.safe_load(render(tmp_path, "prometheus", "prometheus.yml.j2").read_text())
    by_name = jobs(config)
    pg = [("pg1", "10.0.0.11"), ("pg2", "10.0.0.12"), ("pg3", "10.0.0.13")]
    assert targets(by_name["node"]) == {(name, "%s:9100" % address) for name, address in ADDRESSES}
    assert targets(by_name["postgres"]) == {(name, "%s:9187" % address) for name, address in pg}
    assert targets(by_name["patroni"]) == {(name, "%s:8008" % address) for name, address in pg}
    assert targets(by_name["etcd"]) == {(name, "%s:2379" % address) for name, address in pg}
    assert targets(by_name["redis"]) == {(name, "%s:9121" % address) for name, address in pg}
    assert targets(by_name["sentinel"]) == {(name, "%s:9122" % address) for name, address in pg}
    assert targets(by_name["pgbouncer"]) == {("lb1", "10.0.0.31:9127"), ("lb2", "10.0.0.32:9127")}
    assert targets(by_name["haproxy"]) == {("lb1", "10.0.0.31:8404"), ("lb2", "10.0.0.32:8404")}
    assert targets(by_name["sync"]) == {
        ("sync1", "10.0.0.21:8765"),
        ("sync2", "10.0.0.22:8765"),
        ("sync3", "10.0.0.23:8765"),
    }
    assert targets(by_name["alertmanager"]) == {("mon1", "10.0.0.41:9093")}
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.0.0.41:9093"]
    # Exporters that ask for a password get the scrape user; Patroni's open GETs get no secret.
    assert by_name["node"]["basic_auth"]["username"] == "prometheus"
    assert "basic_auth" not in by_name["patroni"]


def test_prometheus_probes_what_users_use_through_the_vip(tmp_path):
    by_name = jobs(yaml.safe_load(render(tmp_path, "prometheus", "prometheus.yml.j2").read_text()))
    probes = {
        (job, group["labels"]["service"], group["labels"]["path"], target)
        for job in ("probe_tcp", "probe_redis", "probe_http")
        for group in by_name[job]["static_configs"]
        for target in group["targets"]
    }
    assert {p for p in probes if p[2] == "vip"} == {
        ("probe_tcp", "postgres_rw", "vip", "10.0.0.100:6432"),
        ("probe_tcp", "postgres_ro", "vip", "10.0.0.100:5001"),
        ("probe_redis", "redis", "vip", "10.0.0.100:6379"),
        ("probe_http", "sync", "vip", "http://10.0.0.100:8080/health"),
        ("probe_http", "api", "vip", "http://10.0.0.100:80/health"),
    }
    assert ("probe_http", "sync", "direct", "http://10.0.0.22:8765/health") in probes
    assert ("probe_http", "api", "direct", "http://10.0.0.23:8000/health") in probes
    assert by_name["probe_http"]["params"] == {"module": ["http_health"]}


def test_prometheus_follows_a_hosts_own_port(tmp_path):
    inventory = json.loads(json.dumps(INVENTORY))
    inventory["all"]["hosts"]["lb2"]["haproxy_metrics_port"] = 9404
    by_name = jobs(yaml.safe_load(render(tmp_path, "prometheus", "prometheus.yml.j2", inventory=inventory).read_text()))
    assert ("lb2", "10.0.0.32:9404") in targets(by_name["haproxy"])


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found: `make packages` installs Debian's prometheus")
def test_prometheus_configuration_is_valid_for_promtool(tmp_path):
    path = render(tmp_path, "prometheus", "prometheus.yml.j2")
    run = subprocess.run([PROMTOOL, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def alertmanager(tmp_path, **extra):
    return render(tmp_path, "alertmanager", "alertmanager.yml.j2", extra_vars=extra)


EVERY_KIND = {
    "alertmanager_smtp_smarthost": "smtp.example.com:587",
    "alertmanager_smtp_auth_username": "alerts",
    "alertmanager_smtp_auth_password": "mail-password",
    "alertmanager_critical_receiver": {
        "email_to": ["oncall@example.com"],
        "webhook_urls": ["https://chat.example.com/hook"],
        "pagerduty_routing_key": "0123456789abcdef0123456789abcdef",
        "opsgenie_api_key": "opsgenie-key",
    },
    "alertmanager_warning_receiver": {"email_to": ["ops@example.com"]},
    "alert_receiver_enabled": True,
}


@pytest.mark.skipif(
    AMTOOL is None, reason="amtool not found: `make packages` installs Debian's prometheus-alertmanager"
)
@pytest.mark.parametrize("extra", [EVERY_KIND, {"alert_receiver_enabled": True}, {}], ids=["every-kind", "lab", "none"])
def test_alertmanager_configuration_is_valid_for_amtool(tmp_path, extra):
    path = alertmanager(tmp_path, **extra)
    run = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_alertmanager_routes_each_severity_to_its_receiver(tmp_path):
    config = yaml.safe_load(alertmanager(tmp_path, **EVERY_KIND).read_text())
    routes = {tuple(route["matchers"]): route["receiver"] for route in config["route"]["routes"]}
    assert routes == {('severity="critical"',): "critical", ('severity="warning"',): "warning"}
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    critical = receivers["critical"]
    assert critical["email_configs"][0]["to"] == "oncall@example.com"
    assert critical["pagerduty_configs"][0]["routing_key"] == "0123456789abcdef0123456789abcdef"
    assert critical["opsgenie_configs"][0]["priority"] == "P1"
    urls = [hook["url"] for hook in critical["webhook_configs"]]
    assert urls == ["https://chat.example.com/hook", "http://10.0.0.41:9095/alerts"]
    assert all(hook["send_resolved"] for hook in critical["webhook_configs"])
    assert [hook["url"] for hook in receivers["warning"]["webhook_configs"]] == ["http://10.0.0.41:9095/alerts"]
    assert config["global"]["smtp_smarthost"] == "smtp.example.com:587"


def test_alertmanager_inhibits_only_alerts_that_exist(tmp_path):
    from promql_names import load_rules

    names = {rule["alert"] for _, rule in load_rules() if "alert" in rule}
    config = yaml.safe_load(alertmanager(tmp_path, alert_receiver_enabled=True).read_text())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            if matcher.startswith("alertname"):
                pattern = matcher.split("=", 1)[1].lstrip("~").strip('"')
                assert set(pattern.split("|")) <= names, matcher


def test_blackbox_redis_probe_logs_in_as_the_exporters_acl_user(tmp_path):
    config = yaml.safe_load(render(tmp_path, "blackbox_exporter", "blackbox.yml.j2").read_text())
    steps = config["modules"]["redis_master"]["tcp"]["query_response"]
    assert steps[0] == {"send": "AUTH redis_exporter " + SECRETS["blackbox_exporter_redis_password"]}
    assert {"expect": "^role:master"} in steps
    assert set(config["modules"]) == {"tcp_connect", "redis_master", "http_health"}


ROLES = [
    "node_exporter",
    "postgres_exporter",
    "redis_exporter",
    "pgbouncer_exporter",
    "blackbox_exporter",
    "prometheus",
    "alertmanager",
    "alert_receiver",
]


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_pass_its_argument_spec(tmp_path, role):
    """Each documented option has the type of its default (Ansible validates them before the role runs),
    and every default is documented."""
    path = ROOT / "roles" / role
    spec = yaml.safe_load((path / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((path / "defaults" / "main.yml").read_text())
    assert set(defaults) <= set(spec), sorted(set(defaults) - set(spec))
    names = [name for name in spec if not name.startswith("rtmx_")]
    play = [
        {
            "name": "validate",
            "hosts": "mon1",
            "gather_facts": False,
            "vars_files": [str(path / "defaults" / "main.yml"), str(path / "vars" / "main.yml")],
            "tasks": [
                {
                    "name": "validate",
                    "ansible.builtin.validate_argument_spec": {
                        "argument_spec": spec,
                        "provided_arguments": "{{ dict(%s | zip(query('ansible.builtin.vars', *%s))) }}"
                        % (names, names),
                    },
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    (tmp_path / "hosts.json").write_text(json.dumps(INVENTORY))
    cli = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    given = {"rtmx_secrets_dir": str(tmp_path / "secrets"), "role_path": str(path)}
    run = subprocess.run(
        [cli, "-i", str(tmp_path / "hosts.json"), str(tmp_path / "play.yml"), "-e", json.dumps(given)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.parametrize(
    "host, units",
    [
        ("pg1", "etcd|patroni|redis-server|redis-sentinel"),
        ("lb1", "haproxy|pgbouncer|keepalived"),
        ("sync1", "rtmx-sync|rtmx-api"),
        ("mon1", "prometheus|prometheus-alertmanager|prometheus-blackbox-exporter|rtmx-alert-receiver"),
    ],
)
def test_each_host_exports_the_state_of_its_own_services_only(tmp_path, host, units):
    """A package installed but unused on a host (the lab image has them all) must not read as a service down."""
    args = render(
        tmp_path,
        "node_exporter",
        "prometheus-node-exporter.default.j2",
        host=host,
        extra_vars={"alert_receiver_enabled": True, "node_exporter_scrape_password": "x" * 20},
    ).read_text()
    assert f"--collector.systemd.unit-include=({units}).service" in args.split()
    assert "--web.listen-address=%s:9100" % dict(ADDRESSES)[host] in args


TEMPLATE_HOSTS = {
    "node_exporter": "lb1",
    "postgres_exporter": "pg1",
    "redis_exporter": "pg1",
    "pgbouncer_exporter": "lb1",
    "blackbox_exporter": "mon1",
    "prometheus": "mon1",
    "alertmanager": "mon1",
    "alert_receiver": "mon1",
}

# The options of the roles' other entry points, for their templates.
ENTRY_POINT_VARS = {
    "node_exporter_certificate_list_name": "pgbackrest",
    "node_exporter_certificate_list_paths": ["/etc/pgbackrest/tls/ca.crt"],
}


@pytest.mark.parametrize(
    "role, template",
    [(role, path.name) for role in ROLES for path in sorted((ROOT / "roles" / role / "templates").glob("*.j2"))],
)
def test_every_template_renders_on_its_hosts(tmp_path, role, template):
    secrets = {
        name: "s" * 24
        for name in (
            "node_exporter_scrape_password",
            "postgres_exporter_db_password",
            "postgres_exporter_scrape_password",
            "redis_exporter_acl_password",
            "redis_exporter_redis_password",
            "redis_exporter_sentinel_password",
            "pgbouncer_exporter_stats_password",
            "pgbouncer_exporter_scrape_password",
            "alert_receiver_password",
        )
    }
    out = render(
        tmp_path, role, template, host=TEMPLATE_HOSTS[role], extra_vars={"alert_receiver_enabled": True, **secrets,
                                                                           **ENTRY_POINT_VARS}
    )
    assert out.read_text().strip()


ALERTMANAGER = shutil.which("prometheus-alertmanager")


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager not found: `make packages` installs it")
def test_alertmanager_delivers_a_critical_alert_to_the_lab_receiver_within_30_s(tmp_path):
    """Debian's Alertmanager on loopback with the rendered configuration and the lab receiver's script:
    a critical alert posted to it is recorded by the receiver, as the critical receiver, within 30 s."""
    import importlib.util
    import threading
    import time
    import urllib.request
    from http.server import ThreadingHTTPServer

    spec = importlib.util.spec_from_file_location(
        "receiver", ROOT / "roles" / "alert_receiver" / "files" / "rtmx_alert_receiver.py"
    )
    receiver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(receiver)
    store = receiver.Store(str(tmp_path / "notifications.jsonl"))
    # The receiver refuses a request without the basic auth the configuration gives Alertmanager.
    password = SECRETS["alertmanager_alert_receiver_password"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.make_handler(store, "receiver", password))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    inventory = json.loads(json.dumps(INVENTORY))
    inventory["all"]["hosts"]["mon1"]["rtmx_address"] = "127.0.0.1"
    config = render(
        tmp_path,
        "alertmanager",
        "alertmanager.yml.j2",
        inventory=inventory,
        extra_vars={"alert_receiver_enabled": True, "alert_receiver_port": server.server_address[1]},
    )
    port = free_port()
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            "--config.file=%s" % config,
            "--web.listen-address=127.0.0.1:%d" % port,
            "--cluster.listen-address=",
            "--storage.path=%s" % (tmp_path / "data"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/-/ready", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "Alertmanager did not start"
                time.sleep(0.2)
        alert = [
            {
                "labels": {"alertname": "RtmxPatroniFailover", "severity": "critical", "scope": "rtmx"},
                "annotations": {"summary": "unit test"},
            }
        ]
        request = urllib.request.Request(
            url + "/api/v2/alerts",
            data=json.dumps(alert).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        started = time.time()
        assert urllib.request.urlopen(request, timeout=5).status == 200
        while not store.read() and time.time() - started < 30:
            time.sleep(0.5)
        records = store.read()
        assert records, "nothing delivered within 30 s"
        assert records[0]["summary"]["receiver"] == "critical" and records[0]["summary"]["status"] == "firing"
        assert records[0]["summary"]["alerts"][0]["alertname"] == "RtmxPatroniFailover"
        assert records[0]["received_at"] - started < 30
    finally:
        process.terminate()
        process.wait(timeout=10)
        server.shutdown()
        server.server_close()
