"""Every host's certificate expiry figures (roles/node_exporter/files/rtmx_certificate_expiry.py), run here for
real with openssl: the certificates named in the roles' *.list files, each certificate of a chain, and files that
are missing or hold no certificate; the textfile parses as the node exporter reads it."""

import datetime
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families
from role_render import ROOT

SCRIPT = ROOT / "roles" / "node_exporter" / "files" / "rtmx_certificate_expiry.py"


def certificate(common_name, not_after, issuer_name=None, issuer_key=None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=400))
        .not_valid_after(not_after)
        .sign(issuer_key or key, hashes.SHA256())
    )
    return built, key


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def samples(text):
    """{(name, frozenset(labels)): value}, parsed by prometheus_client as Prometheus would."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def run(tmp_path, lists):
    lists_dir = tmp_path / "certificates.d"
    lists_dir.mkdir()
    for name, text in lists.items():
        (lists_dir / name).write_text(text)
    output = tmp_path / "textfile" / "rtmx_certificates.prom"
    output.parent.mkdir()
    result = subprocess.run([sys.executable, str(SCRIPT), "--lists-dir", str(lists_dir), "--output", str(output)],
                            capture_output=True, text=True, check=True)
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in output.parent.iterdir()] == ["rtmx_certificates.prom"], "no temporary file left"
    return samples(output.read_text()), result.stderr


def test_expiry_of_every_listed_certificate_and_of_each_in_a_chain(tmp_path):
    ca_expiry = datetime.datetime(2036, 11, 25, 10, 0, 0, tzinfo=datetime.UTC)
    host_expiry = datetime.datetime(2027, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    ca, ca_key = certificate("rtmx.ha test CA", ca_expiry)
    host, _ = certificate("pg1", host_expiry, ca.subject, ca_key)
    (tmp_path / "ca.crt").write_bytes(pem(ca))
    (tmp_path / "chain.crt").write_bytes(pem(host) + pem(ca))
    (tmp_path / "garbage.crt").write_text("not a certificate\n")
    found, stderr = run(tmp_path, {
        "a.list": "# the CA\n%s\n%s  # leaf then CA\n" % (tmp_path / "ca.crt", tmp_path / "chain.crt"),
        # Named twice (two roles): exported once.
        "b.list": "%s\n%s\n%s\n" % (tmp_path / "ca.crt", tmp_path / "missing.crt", tmp_path / "garbage.crt"),
        "ignored.txt": "%s\n" % (tmp_path / "other.crt"),
    })
    expiry = "rtmx_tls_certificate_not_after_timestamp_seconds"

    def labels(path, index, subject, issuer="CN=rtmx.ha test CA"):
        return frozenset({"path": str(tmp_path / path), "index": str(index), "subject": subject,
                          "issuer": issuer}.items())

    assert {key: value for key, value in found.items() if key[0] == expiry} == {
        (expiry, labels("ca.crt", 0, "CN=rtmx.ha test CA")): ca_expiry.timestamp(),
        (expiry, labels("chain.crt", 0, "CN=pg1")): host_expiry.timestamp(),
        (expiry, labels("chain.crt", 1, "CN=rtmx.ha test CA")): ca_expiry.timestamp(),
    }
    read = {dict(key[1])["path"]: value for key, value in found.items()
            if key[0] == "rtmx_tls_certificate_read_success"}
    assert read == {str(tmp_path / "ca.crt"): 1, str(tmp_path / "chain.crt"): 1,
                    str(tmp_path / "missing.crt"): 0, str(tmp_path / "garbage.crt"): 0}
    assert "missing.crt" in stderr


def test_no_list_exports_no_certificate(tmp_path):
    found, _ = run(tmp_path, {})
    assert found == {}
