# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL and PgBouncer's admin console through psycopg 3, SCRAM-SHA-256 only.

Enough for PgBouncer's admin console (PAUSE, RESUME, RECONNECT, SHOW) and for
the write check of ha_verify. Every connection:

- requires SCRAM-SHA-256 (libpq's require_auth=scram-sha-256, libpq >= 16):
  libpq refuses a server that asks for a cleartext or MD5 password, or that
  lets the client in without authentication, and checks the SCRAM server
  signature before it accepts AuthenticationOk;
- uses TLS as sslmode says, verifying the server certificate against
  sslrootcert with verify-ca and verify-full (verify-full also checks the
  host name);
- runs in autocommit, never prepares a statement (prepare_threshold=None, for
  PgBouncer's transaction pooling) and sends each query string with the simple
  query protocol (a client-side cursor, no parameters), the only protocol the
  admin console speaks.

psycopg is imported the way community.postgresql does: when it is missing,
HAS_PSYCOPG is False and the module fails with missing_required_lib('psycopg').
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import socket
import threading
import traceback

PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg
    from psycopg import pq
except ImportError:
    psycopg = None
    pq = None
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_PSYCOPG = True

# What libpq's sslmode takes, without `allow` (plain text first, TLS only when refused).
SSLMODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full']
VERIFYING_SSLMODES = ('verify-ca', 'verify-full')
# require_auth (refuse any authentication but SCRAM) appeared in libpq 16.
MIN_LIBPQ = 160000


class PgError(Exception):
    """Connection, protocol or server error; `sqlstate` is set for server errors."""

    def __init__(self, msg, sqlstate=None):
        super(PgError, self).__init__(msg)
        self.sqlstate = sqlstate


def _version_text(number):
    return '%d.%d' % (number // 10000, number % 10000)


def libpq_problem():
    """Why this psycopg cannot be used (too old, or a libpq that cannot require SCRAM), or None."""
    if not HAS_PSYCOPG:
        return 'the psycopg Python library (3.1 or later) is not installed'
    if not hasattr(psycopg, 'ClientCursor'):
        return ('psycopg %s is too old: 3.1 or later is needed (on the host running the module: '
                'pip install -r requirements.txt of rtmx.ha)' % getattr(psycopg, '__version__', '?'))
    version = pq.version()
    if version < MIN_LIBPQ:
        return ('psycopg uses libpq %s, which cannot require SCRAM-SHA-256 authentication (require_auth needs '
                'libpq 16 or later): install psycopg[binary] (it bundles a recent libpq) or a newer libpq'
                % _version_text(version))
    return None


def _oneline(text):
    return ' '.join(str(text).split())


def _describe(exc):
    """A psycopg error as one line: `SEVERITY: message` for server errors, libpq's text otherwise."""
    diag = getattr(exc, 'diag', None)
    primary = getattr(diag, 'message_primary', None) if diag is not None else None
    if primary:
        return '%s: %s' % (getattr(diag, 'severity', None) or 'ERROR', primary)
    text = _oneline(exc)
    if 'authentication method requirement' in text:
        text += (' (rtmx.ha authenticates with SCRAM-SHA-256 only: use scram-sha-256 in pg_hba.conf or '
                 "PgBouncer's auth_type, and store the password with password_encryption = scram-sha-256)")
    return text


class _Watchdog(object):
    """Cuts the connection's socket when a query has no answer after `seconds`.

    psycopg waits for the server without a time limit; shutting the socket down makes libpq see
    the connection closed, so the waiting query fails at once and the connection is dropped
    (as the socket timeout of a plain client would). Works for PostgreSQL and for PgBouncer's
    admin console alike (a PAUSE waiting for transactions), without a cancel request.
    """

    def __init__(self, conn, seconds):
        self.conn = conn
        self.fired = False
        self.lock = threading.Lock()
        self.done = False
        self.timer = None
        if seconds:
            self.timer = threading.Timer(seconds, self.fire)
            self.timer.daemon = True
            self.timer.start()

    def fire(self):
        with self.lock:
            if self.done:
                return
            self.fired = True
            try:
                sock = socket.fromfd(self.conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM)
            except Exception:  # pylint: disable=broad-except
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, socket.error):
                pass
            finally:
                sock.close()

    def stop(self):
        # Under the lock: once stop() returns, fire() cannot touch a socket the caller then closes.
        with self.lock:
            self.done = True
        if self.timer is not None:
            self.timer.cancel()


def _result_rows(cur):
    """The current result of the cursor as dicts of text values (as the server sent them), or None without rows."""
    if cur.description is None:
        return None
    res = cur.pgresult
    columns = [res.fname(i).decode('utf-8', 'replace') for i in range(res.nfields)]
    rows = []
    for row in range(res.ntuples):
        values = []
        for col in range(res.nfields):
            value = res.get_value(row, col)
            values.append(None if value is None else bytes(value).decode('utf-8', 'replace'))
        rows.append(dict(zip(columns, values)))
    return rows


class PgConnection(object):
    """One connection to PostgreSQL or PgBouncer; a context manager.

    sslmode is one of SSLMODES; with verify-ca or verify-full, sslrootcert (a CA file, or
    `system` for the system's trusted CAs, verify-full only) must be given.
    """

    def __init__(self, host, port, user, password=None, database=None, timeout=5, sslmode='prefer',
                 application_name='rtmx.ha', sslrootcert=None):
        self.address = '%s:%s' % (host, port)
        self.timeout = timeout
        self.conn = None
        problem = libpq_problem()
        if problem:
            raise PgError('cannot connect to %s: %s' % (self.address, problem))
        if sslmode not in SSLMODES:
            raise PgError('cannot connect to %s: sslmode %r is not one of %s'
                          % (self.address, sslmode, ', '.join(SSLMODES)))
        if sslmode in VERIFYING_SSLMODES and not sslrootcert:
            raise PgError('cannot connect to %s: sslmode=%s verifies the server certificate and needs the CA '
                          'that signed it: give a CA file as sslrootcert' % (self.address, sslmode))
        params = dict(
            host=host,
            port=int(port),
            user=user,
            dbname=database or user,
            application_name=application_name,
            sslmode=sslmode,
            # Anything but SCRAM-SHA-256 (cleartext, MD5, no authentication at all) is refused by libpq,
            # which also checks the server's SCRAM signature.
            require_auth='scram-sha-256',
            gssencmode='disable',
            # libpq counts whole seconds and takes at least 2.
            connect_timeout=max(2, int(math.ceil(timeout))) if timeout else 0,
        )
        if password is not None:
            params['password'] = password
        if sslrootcert:
            params['sslrootcert'] = sslrootcert
        try:
            self.conn = psycopg.connect(autocommit=True, prepare_threshold=None, cursor_factory=psycopg.ClientCursor,
                                        **params)
        except psycopg.Error as exc:
            raise PgError('cannot connect to PostgreSQL/PgBouncer at %s: %s' % (self.address, _describe(exc)),
                          sqlstate=getattr(exc, 'sqlstate', None))

    def query(self, sql, timeout=None):
        """Run a simple query (may hold several statements); returns the last statement's rows as dicts.

        Values are text, as the server sent them, or None. Without an answer within `timeout`
        seconds (default: the connection's timeout; 0 waits forever) the connection is dropped
        and PgError raised.
        """
        limit = self.timeout if timeout is None else timeout
        watchdog = _Watchdog(self.conn, limit)
        try:
            rows = []
            with self.conn.cursor() as cur:
                # No parameters and prepare=False: a simple Query message (PQsendQuery).
                cur.execute(sql, prepare=False)
                while True:
                    found = _result_rows(cur)
                    if found is not None:
                        rows = found
                    if not cur.nextset():
                        break
            return rows
        except psycopg.Error as exc:
            if watchdog.fired:
                raise PgError('%s: no answer within %ss' % (self.address, limit))
            raise PgError('%s: %s' % (self.address, _describe(exc)), sqlstate=getattr(exc, 'sqlstate', None))
        finally:
            watchdog.stop()

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def quote_literal(value):
    """SQL string literal (standard_conforming_strings on)."""
    return "'" + str(value).replace("'", "''") + "'"


def quote_ident(value):
    return '"' + str(value).replace('"', '""') + '"'


def pgbouncer_argument_spec():
    """Options to reach PgBouncer's admin console, documented by the rtmx.ha.pgbouncer doc fragment."""
    return dict(
        pgbouncer_hosts=dict(type='list', elements='str', default=[]),
        pgbouncer_username=dict(type='str', default='pgbouncer_admin'),
        pgbouncer_password=dict(type='str', no_log=True),
        pgbouncer_sslmode=dict(type='str', default='prefer', choices=SSLMODES, aliases=['pg_sslmode']),
        pgbouncer_sslrootcert=dict(type='path', aliases=['pg_sslrootcert']),
    )


class PgBouncerAdmin(object):
    """The admin console (database `pgbouncer`) of one PgBouncer."""

    def __init__(self, address, username, password, timeout=5, sslmode='prefer', sslrootcert=None):
        host, _sep, port = address.rpartition(':') if ':' in address else (address, '', '6432')
        self.address = '%s:%s' % (host, port)
        self.host, self.port = host, int(port)
        self.username, self.password, self.timeout = username, password, timeout
        self.sslmode, self.sslrootcert = sslmode, sslrootcert

    def run(self, command, timeout=None):
        with PgConnection(self.host, self.port, self.username, self.password, 'pgbouncer',
                          timeout=self.timeout, sslmode=self.sslmode, sslrootcert=self.sslrootcert) as conn:
            return conn.query(command, timeout=timeout or self.timeout)

    def databases(self):
        return dict((row['name'], row) for row in self.run('SHOW DATABASES'))
