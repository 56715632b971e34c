"""The certificates rtmx.ha.pgbackrest makes on the controller (tasks/tls.yml, run here for real with
community.crypto): a CA, one certificate per host whose CN and DNS name are its inventory name (what pgBackRest
checks: the DNS names against the host it connects to, the CN against tls-server-auth), usable for both ends of
mutual TLS; made once (a second run changes nothing); and a TLS handshake between two hosts' certificates works
both ways, while a certificate from another CA is refused.
"""

import re
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from role_render import ROOT, inventory, run_play

HANDLER = {"name": "Restart pgBackRest server", "ansible.builtin.debug": {"msg": "restart"}}


def make_certificates(tmp_path, hosts, **settings):
    tasks = [{"name": "tls", "ansible.builtin.include_tasks": str(ROOT / "roles/pgbackrest/tasks/tls.yml")}]
    given = {"__pgbackrest_tls_dir": "%s/node-{{ inventory_hostname }}" % tmp_path,
             "__pgbackrest_user": "root", "ansible_become": False,
             "node_exporter_certificate_lists_dir": "%s/node-{{ inventory_hostname }}/certificates.d" % tmp_path}
    given.update(settings)
    for host in hosts:
        (tmp_path / f"node-{host}").mkdir(exist_ok=True)
    return run_play(tmp_path, "pgbackrest", tasks, ",".join(hosts), inventory(), given, handlers=[HANDLER])


def changed(run):
    return {host: int(count) for host, count in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.M)}


def handshake(tmp_path, server, client, client_ca=None, server_name=None):
    """A TLS handshake over a socket pair: `server` serves with its certificate and requires a client certificate
    from the CA, `client` presents its own. Returns the CN the server saw."""
    pki = tmp_path / "secrets" / "pgbackrest"
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki / f"{server}.crt", pki / f"{server}.key")
    server_ctx.load_verify_locations(pki / "ca.crt")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(client_ca or pki / "ca.crt")
    client_ctx.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    left, right = socket.socketpair()
    seen, errors = {}, []

    def serve():
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                subject = dict(item[0] for item in tls.getpeercert()["subject"])
                seen["cn"] = subject["commonName"]
        except (ssl.SSLError, OSError) as error:
            errors.append(error)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname=server_name or server):
            pass
    finally:
        thread.join(10)
    if errors:
        raise errors[0]
    return seen["cn"]


def test_ca_and_host_certificates_for_mutual_tls_made_once(tmp_path):
    first = make_certificates(tmp_path, ["pg1", "mon1"])
    assert changed(first)["pg1"] > 0
    pki = tmp_path / "secrets" / "pgbackrest"
    for host in ("pg1", "mon1"):
        cert = x509.load_pem_x509_certificate((pki / f"{host}.crt").read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [host]
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert oct((pki / f"{host}.key").stat().st_mode & 0o777) == "0o600"
        # On the host: the CA, its certificate and its key (readable by pgBackRest's user only).
        node = tmp_path / f"node-{host}"
        assert (node / "host.crt").read_bytes() == (pki / f"{host}.crt").read_bytes()
        assert oct((node / "host.key").stat().st_mode & 0o777) == "0o600"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600"
    # A second run changes nothing (idempotent converge).
    again = make_certificates(tmp_path, ["pg1", "mon1"])
    assert changed(again) == {"pg1": 0, "mon1": 0}, again.stdout[-3000:]

    # The repository host serves a member, the member serves the repository host.
    assert handshake(tmp_path, "mon1", "pg1") == "pg1"
    assert handshake(tmp_path, "pg1", "mon1") == "mon1"
    check_renewal(tmp_path)


def test_a_certificate_of_another_ca_or_another_name_is_refused(tmp_path):
    make_certificates(tmp_path, ["pg1", "mon1"])
    other = tmp_path / "other"
    other.mkdir()
    make_certificates(other, ["pg1"])
    with pytest.raises(ssl.SSLError):
        handshake(tmp_path, "mon1", "pg1", client_ca=other / "secrets" / "pgbackrest" / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path, "mon1", "pg1", server_name="pg2")


def check_renewal(tmp_path):
    """Certificates near expiry are issued again, and their expiry is exported."""
    pki = tmp_path / "secrets" / "pgbackrest"

    def serials():
        return {name: x509.load_pem_x509_certificate((pki / f"{name}.crt").read_bytes()).serial_number
                for name in ("ca", "pg1", "mon1")}

    before = serials()
    # Every certificate now expires within the renewal margin: the CA and both hosts' certificates are issued again,
    # with the same keys, and the hosts get them.
    renewed = make_certificates(tmp_path, ["pg1", "mon1"], pgbackrest_tls_renew_days=4000)
    after = serials()
    assert all(after[name] != before[name] for name in before), renewed.stdout[-3000:]
    for host in ("pg1", "mon1"):
        assert (tmp_path / f"node-{host}" / "host.crt").read_bytes() == (pki / f"{host}.crt").read_bytes()
        assert (tmp_path / f"node-{host}" / "ca.crt").read_bytes() == (pki / "ca.crt").read_bytes()
    assert handshake(tmp_path, "mon1", "pg1") == "pg1"
    # Outside the margin again: nothing changes.
    again = make_certificates(tmp_path, ["pg1", "mon1"])
    assert changed(again) == {"pg1": 0, "mon1": 0}, again.stdout[-3000:]
    # The node exporter's expiry timer reads the CA and the host certificate.
    listing = (tmp_path / "node-pg1" / "certificates.d" / "pgbackrest.list").read_text().splitlines()
    assert [line for line in listing if not line.startswith("#")] == [
        str(tmp_path / "node-pg1" / "ca.crt"), str(tmp_path / "node-pg1" / "host.crt")]
