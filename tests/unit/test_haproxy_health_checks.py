"""The rendered haproxy.cfg checks every component as REQ-DEPLOY-005's table says, or tighter.

The real template (roles/haproxy/templates/haproxy.cfg.j2) is rendered by
ansible-playbook on localhost with the role's defaults and vars and a fake
inventory of the lab's shape; the effective interval, timeout and DOWN
threshold of each section are read from it (defaults section first, then the
section's own settings), and compared with the requirement and with the
table of roles/haproxy/README.md.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# REQ-DEPLOY-005 "Health Checks": component -> (interval s, timeout s, unhealthy threshold).
REQUIREMENT = {"API Server": (10, 5, 3), "Sync Server": (15, 10, 2), "Database": (5, 3, 2), "Redis": (5, 2, 3)}
# The HAProxy sections that check each component.
SECTIONS = {"API Server": ["api_servers"], "Sync Server": ["sync_servers"], "Database": ["postgres_rw", "postgres_ro"],
            "Redis": ["redis"]}

INVENTORY = {
    "all": {
        "hosts": {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                         "rtmx_address": address}
                  for name, address in [("pg1", "10.0.0.11"), ("pg2", "10.0.0.12"), ("pg3", "10.0.0.13"),
                                        ("sync1", "10.0.0.21"), ("sync2", "10.0.0.22"), ("sync3", "10.0.0.23"),
                                        ("lb1", "10.0.0.31"), ("lb2", "10.0.0.32")]},
        "vars": {"rtmx_vip": "10.0.0.100"},
        "children": {
            "postgres": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}},
            "redis": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}},
            "redis_sentinel": {"hosts": {"pg1": {}, "pg2": {}, "pg3": {}}},
            "sync_server": {"hosts": {"sync1": {}, "sync2": {}, "sync3": {}}},
            "api": {"hosts": {"sync1": {}, "sync2": {}, "sync3": {}}},
            "lb": {"hosts": {"lb1": {}, "lb2": {}}},
        },
    }
}


def render(tmp_path, extra_vars: dict | None = None) -> str:
    """haproxy.cfg as the role writes it on lb1, with its defaults (passwords given: nothing is generated)."""
    out = tmp_path / "haproxy.cfg"
    role = ROOT / "roles" / "haproxy"
    play = [{"name": "render", "hosts": "lb1", "gather_facts": False,
             "vars_files": [str(role / "defaults" / "main.yml"), str(role / "vars" / "main.yml")],
             "tasks": [{"name": "render haproxy.cfg", "ansible.builtin.template": {
                 "src": str(role / "templates" / "haproxy.cfg.j2"), "dest": str(out), "mode": "0600"}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    (tmp_path / "hosts.json").write_text(json.dumps(INVENTORY))
    secrets = {"haproxy_stats_password": "s" * 32, "haproxy_redis_password": "r" * 32,
               "haproxy_redis_sentinel_password": "t" * 32, **(extra_vars or {})}
    cli = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    run = subprocess.run([cli, "-i", str(tmp_path / "hosts.json"), str(tmp_path / "play.yml"),
                          "-e", json.dumps(secrets)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out.read_text()


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value)
    assert match, value
    number, unit = float(match.group(1)), match.group(2) or "ms"  # HAProxy's default unit is ms
    return number * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def sections(config: str) -> dict:
    """{'defaults': [lines], 'api_servers': [lines], ...} (section keyword dropped, comments skipped)."""
    found, current = {}, None
    for raw in config.splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("http-check") else raw.rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            words = line.split()
            current = words[1] if len(words) > 1 else words[0]
            found[current] = []
        elif current is not None:
            found[current].append(line.strip())
    return found


def server_settings(lines: list) -> dict:
    """Keywords of the `default-server` lines (later ones override), e.g. {'inter': '2000ms', 'fall': '2'}."""
    settings = {}
    for line in lines:
        if line.startswith("default-server "):
            words = line.split()[1:]
            for i, word in enumerate(words):
                if word in ("inter", "fastinter", "downinter", "fall", "rise") and i + 1 < len(words):
                    settings[word] = words[i + 1]
    return settings


def timeout_check(lines: list) -> str | None:
    values = [line.split()[2] for line in lines if line.startswith("timeout check ")]
    return values[-1] if values else None


def effective(config: str, section: str) -> tuple[float, float, int]:
    """(interval s, timeout s, fall) of a section: its own settings over the defaults section's."""
    parsed = sections(config)
    assert section in parsed, f"haproxy.cfg has no section {section}: {sorted(parsed)}"
    settings = {**server_settings(parsed["defaults"]), **server_settings(parsed[section])}
    timeout = timeout_check(parsed[section]) or timeout_check(parsed["defaults"])
    for line in parsed[section]:
        if line.startswith("server "):
            assert " check" in line, f"{section}: a server is not checked: {line}"
    inter = seconds(settings.get("inter", "2000ms"))
    # Without `timeout check`, HAProxy waits up to `inter` for a check's answer.
    return inter, seconds(timeout) if timeout else inter, int(settings.get("fall", "3"))


def readme_rows() -> list[dict]:
    text = (ROOT / "roles" / "haproxy" / "README.md").read_text()
    table = text.split("## Health checks", 1)[1].split("\n\n")[2]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.splitlines()]
    header = rows[0]
    assert header[:9] == ["component", "requirement: check", "interval", "timeout", "unhealthy after",
                          "HAProxy section", "interval", "timeout", "DOWN after"], header
    return [dict(component=r[0], requirement=(r[2], r[3], r[4]), section=r[5].strip("`"), haproxy=(r[6], r[7], r[8]))
            for r in rows[2:]]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return render(tmp_path_factory.mktemp("haproxy"))


@pytest.mark.parametrize("component", sorted(REQUIREMENT))
def test_every_row_is_as_tight_as_the_requirement(config, component):
    interval, timeout, fall = REQUIREMENT[component]
    for section in SECTIONS[component]:
        got = effective(config, section)
        assert got[0] <= interval, f"{component} ({section}): checked every {got[0]} s, requirement {interval} s"
        assert got[1] <= timeout, f"{component} ({section}): check timeout {got[1]} s, requirement {timeout} s"
        assert got[2] <= fall, f"{component} ({section}): DOWN after {got[2]} failures, requirement {fall}"


def test_api_row_is_the_requirement_itself(config):
    assert effective(config, "api_servers") == (10, 5, 3)
    lines = sections(config)["api_servers"]
    assert "option httpchk" in lines
    assert "http-check send meth GET uri /health ver HTTP/1.1 hdr Host rtmx-api" in lines
    assert "http-check expect status 200" in lines


def test_readme_table_says_what_the_configuration_does(config):
    rows = readme_rows()
    assert sorted({r["component"] for r in rows}) == sorted(REQUIREMENT)
    assert sorted(r["section"] for r in rows) == sorted(s for v in SECTIONS.values() for s in v)
    for row in rows:
        assert tuple(seconds(v.replace(" ", "")) if "s" in v else int(v) for v in row["requirement"]) == \
            REQUIREMENT[row["component"]], row
        interval, timeout, fall = effective(config, row["section"])
        assert (seconds(row["haproxy"][0].replace(" ", "")), seconds(row["haproxy"][1].replace(" ", "")),
                int(row["haproxy"][2])) == (interval, timeout, fall), row


def test_api_frontend_on_the_vip_with_forwarded_headers_and_websockets(config):
    parsed = sections(config)
    front, back = parsed["api"], parsed["api_servers"]
    assert "bind 10.0.0.100:80" in front and "mode http" in front
    assert "option forwardfor" in front and "http-request set-header X-Forwarded-Proto http" in front
    assert "http-request set-header X-Forwarded-Host %[req.hdr(host)]" in front
    assert "http-request set-header X-Forwarded-Port %[dst_port]" in front
    assert "maxconn 2000" in front
    assert any(line.startswith("timeout tunnel ") for line in back), "WebSocket (/ws) tunnels need timeout tunnel"
    assert "option redispatch 1" in back
    retry_on = next(line for line in back if line.startswith("retry-on ")).split()[1:]
    assert "conn-failure" in retry_on and "empty-response" in retry_on
    servers = [line.split()[1:3] for line in back if line.startswith("server ")]
    assert servers == [["sync1", "10.0.0.21:8000"], ["sync2", "10.0.0.22:8000"], ["sync3", "10.0.0.23:8000"]]


def test_global_maxconn_is_every_listener_plus_100(config):
    parsed = sections(config)
    listeners = [next(int(line.split()[1]) for line in parsed[name] if line.startswith("maxconn "))
                 for name in ("postgres_rw", "postgres_ro", "redis", "sync", "api")]
    assert f"maxconn {sum(listeners) + 100}" in parsed["global"]


def test_no_api_group_no_api_listener(tmp_path):
    config = render(tmp_path, {"haproxy_api_group": "no_such_group"})
    assert "frontend api" not in config and "backend api_servers" not in config
