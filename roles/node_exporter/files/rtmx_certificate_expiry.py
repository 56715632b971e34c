#!/usr/bin/python3
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""When the certificates this host uses expire, for the node exporter's textfile collector.

Roles that deploy a certificate name its file in a list (`*.list` in LISTS_DIR,
one path per line, `#` comments). For every certificate in those files (a file
may hold a chain) this writes, whole then renamed, to OUTPUT:
rtmx_tls_certificate_not_after_timestamp_seconds{path, subject, issuer, index}
and, per file, rtmx_tls_certificate_read_success{path} (0: missing, unreadable
or no certificate in it). The alerts subtract time() themselves, so a stopped
timer cannot hide an expiry. openssl(1) reads the certificates: no Python
package beyond the standard library.
"""

import argparse
import calendar
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def listed_paths(lists_dir):
    """The certificate paths named in LISTS_DIR/*.list, each once, in order."""
    paths = []
    for listing in sorted(pathlib.Path(lists_dir).glob("*.list")):
        for line in listing.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and line not in paths:
                paths.append(line)
    return paths


def describe(pem):
    """(not_after as Unix time, subject, issuer) of one PEM certificate, read by openssl."""
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-subject", "-issuer", "-nameopt", "RFC2253"],
        input=pem, capture_output=True, check=True, timeout=10)
    fields = dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)
    not_after = calendar.timegm(time.strptime(fields["notAfter"].strip(), "%b %d %H:%M:%S %Y %Z"))
    return not_after, fields.get("subject", "").strip(), fields.get("issuer", "").strip()


def render(paths):
    """The textfile for the certificates in `paths`."""
    lines = [
        "# HELP rtmx_tls_certificate_read_success 1 when the listed file holds at least one readable certificate.",
        "# TYPE rtmx_tls_certificate_read_success gauge",
    ]
    expiries = [
        "# HELP rtmx_tls_certificate_not_after_timestamp_seconds When the certificate expires (Unix time).",
        "# TYPE rtmx_tls_certificate_not_after_timestamp_seconds gauge",
    ]
    for path in paths:
        found = []
        try:
            for block in PEM_BLOCK.findall(pathlib.Path(path).read_bytes()):
                found.append(describe(block))
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
            print("%s: %s" % (path, error), file=sys.stderr)
            found = []
        lines.append('rtmx_tls_certificate_read_success{path="%s"} %d' % (_escape(path), 1 if found else 0))
        for index, (not_after, subject, issuer) in enumerate(found):
            labels = 'index="%d",issuer="%s",path="%s",subject="%s"' % (
                index, _escape(issuer), _escape(path), _escape(subject))
            expiries.append("rtmx_tls_certificate_not_after_timestamp_seconds{%s} %d" % (labels, not_after))
    return "\n".join(lines + expiries) + "\n"


def write(output, text):
    directory = os.path.dirname(output) or "."
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".rtmx_certificates.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, output)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists-dir", required=True, help="directory of *.list files naming certificate paths")
    parser.add_argument("--output", required=True, help="the .prom file in the textfile directory")
    args = parser.parse_args(argv)
    write(args.output, render(listed_paths(args.lists_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
