"""rtmx.ha.common on every node: /etc/hosts, base packages, kernel settings."""

testinfra_hosts = ["all"]

MEMBERS = ["pg1", "pg2", "pg3", "sync1", "sync2", "sync3", "lb1", "lb2"]


def test_systemd_has_booted(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state


def test_every_cluster_member_resolves_from_etc_hosts(host):
    # Written by Docker here (molecule.yml etc_hosts), and kept through the drills' container restarts.
    for member in MEMBERS:
        address = host.ansible.get_variables().get("rtmx_address") if member == host.backend.host else None
        result = host.run(f"getent -s files hosts {member}")
        assert result.rc == 0, f"{member} is not in /etc/hosts"
        if address:
            assert result.stdout.split()[0] == address


def test_base_packages_installed(host):
    for package in ("acl", "ca-certificates", "curl", "iproute2", "iptables", "jq", "python3-apt", "sudo"):
        assert host.package(package).is_installed, package


def test_kernel_settings_persisted(host):
    conf = host.file("/etc/sysctl.d/90-rtmx-ha.conf")
    assert conf.exists
    assert conf.mode == 0o644
    assert "net.ipv4.ip_nonlocal_bind = 1" in conf.content_string


def test_namespaced_kernel_settings_in_effect(host):
    # The lab and molecule pass these to docker; on real hosts the role applies them.
    assert host.sysctl("net.ipv4.ip_nonlocal_bind") == 1
    assert host.sysctl("net.ipv4.tcp_keepalive_time") == 60
