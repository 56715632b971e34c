"""psycopg and redis-py are required the way community.postgresql requires psycopg: the modules import
without them and fail with missing_required_lib's message when a task needs them; TLS options are checked."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.testing import patch_module_args

from ansible_collections.rtmx.ha.plugins.module_utils import pgwire
from ansible_collections.rtmx.ha.plugins.modules import (
    ha_verify,
    patroni_switchover,
    sentinel_failover,
    sentinel_info,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRACEBACK = "Traceback (most recent call last):\nImportError: stand-in\n"


class Finished(Exception):
    def __init__(self, failed, result):
        super().__init__(result.get("msg"))
        self.failed, self.result = failed, result


class RecordingModule(AnsibleModule):
    """The real AnsibleModule (argument parsing, required_if) whose exits hand back what they were given."""

    def exit_json(self, **result):
        raise Finished(False, result)

    def fail_json(self, msg, **result):
        raise Finished(True, dict(result, msg=msg))


def run_module(module, monkeypatch, **args):
    """main() with these arguments -> (failed, result with `exception` as main() passed it)."""
    monkeypatch.setattr(module, "AnsibleModule", RecordingModule)
    with patch_module_args(args), pytest.raises(Finished) as finished:
        module.main()
    return finished.value.failed, finished.value.result


def test_modules_and_clients_import_without_psycopg_and_redis():
    """As ansible-test's import sanity test and a controller without the libraries do."""
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, sys.argv[1])
        sys.modules['psycopg'] = None  # `import psycopg` raises ImportError
        sys.modules['redis'] = None
        from ansible_collections.rtmx.ha.plugins.modules import (
            ha_verify, patroni_info, patroni_switchover, sentinel_failover, sentinel_info)
        from ansible_collections.rtmx.ha.plugins.module_utils import pgwire, redis_client
        out = dict(has_psycopg=pgwire.HAS_PSYCOPG, has_redis=redis_client.HAS_REDIS,
                   psycopg_error=pgwire.PSYCOPG_IMPORT_ERROR, redis_error=redis_client.REDIS_IMPORT_ERROR,
                   verify_flags=[ha_verify.HAS_PSYCOPG, ha_verify.HAS_REDIS])
        for name, call in (('pg', lambda: pgwire.PgConnection('127.0.0.1', 1, 'u', 'p')),
                           ('redis', lambda: redis_client.RedisConnection('127.0.0.1', 1, 'p'))):
            try:
                call()
            except (pgwire.PgError, redis_client.RedisError) as exc:
                out[name] = str(exc)
        out['sentinel'] = redis_client.query_sentinel('127.0.0.1:1', 'p', 'rtmx', 1)['error']
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / ".collections")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["has_psycopg"] is False and out["has_redis"] is False and out["verify_flags"] == [False, False]
    assert out["psycopg_error"].startswith("Traceback") and "import psycopg\n" in out["psycopg_error"]
    assert out["redis_error"].startswith("Traceback") and "import redis\n" in out["redis_error"]
    assert out["pg"] == "cannot connect to 127.0.0.1:1: the psycopg Python library (3.1 or later) is not installed"
    assert out["redis"] == ("cannot connect to 127.0.0.1:1: the redis Python library (redis-py 5 or later) "
                            "is not installed")
    assert out["sentinel"] == out["redis"]


@pytest.mark.parametrize("module, args", [
    (ha_verify, dict(pg_host="127.0.0.1", pg_password="secret")),
    (patroni_switchover, dict(patroni_urls=["http://127.0.0.1:1"], pgbouncer_pause=True,
                              pgbouncer_hosts=["127.0.0.1"], pgbouncer_password="secret")),
])
def test_without_psycopg_the_module_fails_with_missing_required_lib(module, args, monkeypatch):
    monkeypatch.setattr(module, "HAS_PSYCOPG", False)
    monkeypatch.setattr(module, "PSYCOPG_IMPORT_ERROR", TRACEBACK)
    failed, result = run_module(module, monkeypatch, **args)
    assert failed
    assert result["msg"] == missing_required_lib("psycopg")
    assert result["exception"] == TRACEBACK


@pytest.mark.parametrize("module, args", [
    (ha_verify, dict(sentinels=["127.0.0.1:1"])),
    (sentinel_info, dict(sentinels=["127.0.0.1:1"])),
    (sentinel_failover, dict(sentinels=["127.0.0.1:1"], redis_password="secret")),
])
def test_without_redis_the_module_fails_with_missing_required_lib(module, args, monkeypatch):
    monkeypatch.setattr(module, "HAS_REDIS", False)
    monkeypatch.setattr(module, "REDIS_IMPORT_ERROR", TRACEBACK)
    failed, result = run_module(module, monkeypatch, **args)
    assert failed
    assert result["msg"] == missing_required_lib("redis")
    assert result["exception"] == TRACEBACK


def test_ha_verify_needs_neither_library_for_checks_that_do_not_use_them(monkeypatch):
    for flag in ("HAS_PSYCOPG", "HAS_REDIS"):
        monkeypatch.setattr(ha_verify, flag, False)
    failed, result = run_module(ha_verify, monkeypatch, vip_holders=["lb1"])
    assert not failed, result
    assert result["failed_checks"] == [] and [c["name"] for c in result["checks"]] == ["vip"]


def test_a_libpq_that_cannot_require_scram_fails_the_module(monkeypatch):
    monkeypatch.setattr(pgwire.pq, "version", lambda: 150013)
    failed, result = run_module(ha_verify, monkeypatch, pg_host="127.0.0.1", pg_password="secret")
    assert failed
    assert result["msg"].startswith("pg_host needs psycopg: psycopg uses libpq 15.13, which cannot require "
                                    "SCRAM-SHA-256 authentication")


@pytest.mark.parametrize("module, args, option", [
    (ha_verify, dict(pg_host="127.0.0.1"), "pg_sslmode"),
    (patroni_switchover, dict(patroni_urls=["http://127.0.0.1:1"]), "pgbouncer_sslmode"),
])
@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_certificate_verification_without_a_ca_file_is_refused(module, args, option, sslmode, monkeypatch):
    failed, result = run_module(module, monkeypatch, **dict(args, **{option: sslmode}))
    assert failed
    cafile = option.replace("sslmode", "sslrootcert")
    assert result["msg"] == "%s is %s but all of the following are missing: %s" % (option, sslmode, cafile)


def test_switchover_takes_pg_sslmode_as_an_alias():
    spec = patroni_switchover.argument_spec()
    assert spec["pgbouncer_sslmode"]["aliases"] == ["pg_sslmode"]
    assert spec["pgbouncer_sslrootcert"]["aliases"] == ["pg_sslrootcert"]
    assert spec["pgbouncer_sslmode"]["choices"] == ha_verify.argument_spec()["pg_sslmode"]["choices"] == [
        "disable", "prefer", "require", "verify-ca", "verify-full"]


def test_switchover_passes_the_tls_options_to_each_pgbouncer(monkeypatch):
    made = []
    monkeypatch.setattr(patroni_switchover, "PatroniClient", lambda *args, **kwargs: None)
    monkeypatch.setattr(patroni_switchover, "PgBouncerAdmin", lambda *args, **kwargs: made.append((args, kwargs)))

    class Module:
        check_mode = False
        params = {name: spec.get("default") for name, spec in patroni_switchover.argument_spec().items()}

    Module.params.update(pgbouncer_pause=True, pgbouncer_hosts=["10.0.0.31", "10.0.0.32:6433"],
                         pgbouncer_password="secret", pgbouncer_sslmode="verify-full",
                         pgbouncer_sslrootcert=os.devnull)
    patroni_switchover.Switchover(Module())
    assert [(args[0], kwargs) for args, kwargs in made] == [
        (host, {"sslmode": "verify-full", "sslrootcert": os.devnull}) for host in ("10.0.0.31", "10.0.0.32:6433")]
