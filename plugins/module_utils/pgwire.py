# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal PostgreSQL wire-protocol client: simple queries, SCRAM-SHA-256/MD5 auth, optional TLS.

Enough for PgBouncer's admin console (PAUSE, RESUME, RECONNECT, SHOW) and
for the write check of ha_verify, with no driver needed on the node the
module runs on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct


class PgError(Exception):
    """Connection, protocol or server error; `sqlstate` is set for server errors."""

    def __init__(self, msg, sqlstate=None):
        super(PgError, self).__init__(msg)
        self.sqlstate = sqlstate


def _cstr(value):
    return value.encode('utf-8') + b'\x00'


def _xor(left, right):
    return bytes(a ^ b for a, b in zip(bytearray(left), bytearray(right)))


class ScramClient(object):
    """RFC 5802/7677 SCRAM-SHA-256 without channel binding, as PostgreSQL and PgBouncer speak it."""

    def __init__(self, password, nonce=None, username=''):
        # PostgreSQL ignores the SCRAM user name (it has the startup packet's); RFC vectors use one.
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode('ascii')
        self.first_bare = 'n=%s,r=%s' % (username, self.nonce)
        self.server_signature = None

    def first_message(self):
        return ('n,,' + self.first_bare).encode('utf-8')

    def final_message(self, server_first):
        server_first = server_first.decode('utf-8')
        attrs = dict(item.split('=', 1) for item in server_first.split(','))
        if not attrs['r'].startswith(self.nonce):
            raise PgError('SCRAM: the server nonce does not extend ours')
        salt = base64.b64decode(attrs['s'])
        iterations = int(attrs['i'])
        salted = hashlib.pbkdf2_hmac('sha256', self.password.encode('utf-8'), salt, iterations)
        client_key = hmac.new(salted, b'Client Key', hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = 'c=biws,r=' + attrs['r']
        auth_message = ','.join((self.first_bare, server_first, without_proof)).encode('utf-8')
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = base64.b64encode(_xor(client_key, signature)).decode('ascii')
        server_key = hmac.new(salted, b'Server Key', hashlib.sha256).digest()
        self.server_signature = base64.b64encode(
            hmac.new(server_key, auth_message, hashlib.sha256).digest()).decode('ascii')
        return (without_proof + ',p=' + proof).encode('utf-8')

    def verify(self, server_final):
        attrs = dict(item.split('=', 1) for item in server_final.decode('utf-8').split(','))
        if attrs.get('v') != self.server_signature:
            raise PgError('SCRAM: the server signature is wrong (not the server we meant?)')


class PgConnection(object):
    def __init__(self, host, port, user, password=None, database=None, timeout=5, sslmode='prefer',
                 application_name='rtmx.ha'):
        self.address = '%s:%s' % (host, port)
        self.params = {}
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        except (OSError, socket.error) as exc:
            raise PgError('cannot connect to PostgreSQL/PgBouncer at %s: %s' % (self.address, exc))
        try:
            if sslmode in ('prefer', 'require'):
                self._negotiate_tls(host, sslmode)
            self._startup(user, password, database or user, application_name)
        except (OSError, socket.error, ssl.SSLError) as exc:
            self.close()
            raise PgError('%s: %s' % (self.address, exc))
        except PgError:
            self.close()
            raise

    def _negotiate_tls(self, host, sslmode):
        self.sock.sendall(struct.pack('!ii', 8, 80877103))
        answer = self._recv_exact(1)
        if answer == b'S':
            context = ssl.create_default_context()
            # Like libpq's sslmode=prefer/require: encrypt, do not verify the certificate.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.sock = context.wrap_socket(self.sock, server_hostname=host)
        elif sslmode == 'require':
            raise PgError('%s does not offer TLS (sslmode=require)' % self.address)

    def _startup(self, user, password, database, application_name):
        body = struct.pack('!i', 196608)
        for key, value in (('user', user), ('database', database), ('application_name', application_name)):
            body += _cstr(key) + _cstr(value)
        body += b'\x00'
        self.sock.sendall(struct.pack('!i', len(body) + 4) + body)
        scram = None
        while True:
            kind, payload = self._message()
            if kind == b'R':
                code = struct.unpack('!i', payload[:4])[0]
                if code == 0:
                    continue
                if password is None:
                    raise PgError('%s asks for a password for user %r and none was given' % (self.address, user))
                if code == 3:
                    self._send(b'p', _cstr(password))
                elif code == 5:
                    salt = payload[4:8]
                    inner = hashlib.md5((password + user).encode('utf-8')).hexdigest().encode('ascii')
                    digest = 'md5' + hashlib.md5(inner + salt).hexdigest()
                    self._send(b'p', _cstr(digest))
                elif code == 10:
                    mechanisms = payload[4:].split(b'\x00')
                    if b'SCRAM-SHA-256' not in mechanisms:
                        raise PgError('%s offers only %s' % (self.address, mechanisms))
                    scram = ScramClient(password)
                    first = scram.first_message()
                    self._send(b'p', _cstr('SCRAM-SHA-256') + struct.pack('!i', len(first)) + first)
                elif code == 11:
                    self._send(b'p', scram.final_message(payload[4:]))
                elif code == 12:
                    scram.verify(payload[4:])
                else:
                    raise PgError('%s asks for an unsupported authentication method (%d)' % (self.address, code))
            elif kind == b'S':
                key, value = payload.split(b'\x00')[:2]
                self.params[key.decode()] = value.decode()
            elif kind == b'E':
                raise self._error(payload)
            elif kind == b'Z':
                return

    def _send(self, kind, payload):
        self.sock.sendall(kind + struct.pack('!i', len(payload) + 4) + payload)

    def _recv_exact(self, size):
        data = b''
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise PgError('%s closed the connection' % self.address)
            data += chunk
        return data

    def _message(self):
        header = self._recv_exact(5)
        kind, length = header[:1], struct.unpack('!i', header[1:])[0]
        return kind, self._recv_exact(length - 4)

    def _error(self, payload):
        fields = {}
        for item in payload.split(b'\x00'):
            if item:
                fields[item[:1]] = item[1:].decode('utf-8', 'replace')
        return PgError('%s: %s: %s' % (self.address, fields.get(b'S', 'ERROR'), fields.get(b'M', '')),
                       sqlstate=fields.get(b'C'))

    def query(self, sql, timeout=None):
        """Run a simple query (may hold several statements); returns the last statement's rows as dicts."""
        try:
            if timeout is not None:
                self.sock.settimeout(timeout)
            self._send(b'Q', _cstr(sql))
            rows, columns, errors = [], [], []
            while True:
                kind, payload = self._message()
                if kind == b'T':
                    count = struct.unpack('!h', payload[:2])[0]
                    columns, pos = [], 2
                    for dummy in range(count):
                        end = payload.index(b'\x00', pos)
                        columns.append(payload[pos:end].decode('utf-8'))
                        pos = end + 1 + 18
                    rows = []
                elif kind == b'D':
                    count = struct.unpack('!h', payload[:2])[0]
                    values, pos = [], 2
                    for dummy in range(count):
                        size = struct.unpack('!i', payload[pos:pos + 4])[0]
                        pos += 4
                        if size < 0:
                            values.append(None)
                        else:
                            values.append(payload[pos:pos + size].decode('utf-8', 'replace'))
                            pos += size
                    rows.append(dict(zip(columns, values)))
                elif kind == b'E':
                    errors.append(self._error(payload))
                elif kind == b'Z':
                    if errors:
                        raise errors[0]
                    return rows
        except (OSError, socket.error, ssl.SSLError) as exc:
            raise PgError('%s: %s' % (self.address, exc))

    def close(self):
        try:
            self._send(b'X', b'')
        except Exception:  # pylint: disable=broad-except
            pass
        try:
            self.sock.close()
        except (OSError, socket.error):
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
    )


class PgBouncerAdmin(object):
    """The admin console (database `pgbouncer`) of one PgBouncer."""

    def __init__(self, address, username, password, timeout=5):
        host, _sep, port = address.rpartition(':') if ':' in address else (address, '', '6432')
        self.address = '%s:%s' % (host, port)
        self.host, self.port = host, int(port)
        self.username, self.password, self.timeout = username, password, timeout

    def run(self, command, timeout=None):
        with PgConnection(self.host, self.port, self.username, self.password, 'pgbouncer',
                          timeout=self.timeout) as conn:
            return conn.query(command, timeout=timeout or self.timeout)

    def databases(self):
        return dict((row['name'], row) for row in self.run('SHOW DATABASES'))
