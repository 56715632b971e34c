"""Stand-in for ansible-test's pip bootstrap script (get-pip.py from ci-files.testing.ansible.com).

That host is unreachable here; pip is bootstrapped from Python's bundled
ensurepip, then upgraded from PyPI to the version ansible-test asked for.
ansible-test runs pip without the user's pip configuration, so on sites that
reach PyPI through a TLS-inspecting proxy the venv's pip is made to trust the
system CA bundle (it replaces the bundle vendored in this throwaway venv's pip).
"""

import ensurepip
import os
import ssl
import subprocess
import sys

# get-pip.py options that are not pip options.
OWN_OPTIONS = {"--no-setuptools", "--no-wheel"}

cafile = next((f for f in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                           "/etc/ssl/certs/ca-certificates.crt", ssl.get_default_verify_paths().openssl_cafile)
               if f and os.path.isfile(f)), None)

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in OWN_OPTIONS]
if cafile:
    args = ["--cert", cafile, *args]
status = subprocess.call([sys.executable, "-m", "pip", "install", *args])
if status == 0 and cafile:
    vendored = subprocess.check_output(
        [sys.executable, "-c", "import pip._vendor.certifi as c; print(c.where())"], text=True).strip()
    with open(cafile, "rb") as src, open(vendored, "wb") as dst:
        dst.write(src.read())
sys.exit(status)
