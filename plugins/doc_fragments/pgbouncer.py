# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Access to PgBouncer's admin console: the options of
    # module_utils.pgwire.pgbouncer_argument_spec().
    DOCUMENTATION = r'''
options:
  pgbouncer_hosts:
    description:
      - PgBouncer addresses (C(host) or C(host:port), port 6432 by default), one per lb;
        their admin console is used.
    type: list
    elements: str
    default: []
  pgbouncer_username:
    description: An admin user of PgBouncer (in its C(admin_users)).
    type: str
    default: pgbouncer_admin
  pgbouncer_password:
    description:
      - Password of I(pgbouncer_username). It is only ever used for SCRAM-SHA-256 (PgBouncer's
        C(auth_type = scram-sha-256)), which also proves that PgBouncer knows it; a PgBouncer
        asking for an MD5 or cleartext password, or for none, is refused.
    type: str
  pgbouncer_sslmode:
    description:
      - TLS towards each PgBouncer, as libpq's C(sslmode). C(prefer) uses TLS when PgBouncer
        offers it (C(client_tls_sslmode)) and C(require) insists on it, neither verifies the
        certificate; C(verify-ca) verifies it against I(pgbouncer_sslrootcert), C(verify-full)
        also checks that it names the host of I(pgbouncer_hosts).
    type: str
    default: prefer
    choices: [disable, prefer, require, verify-ca, verify-full]
    aliases: [pg_sslmode]
  pgbouncer_sslrootcert:
    description:
      - CA certificate file (PEM) that signed the certificates of the PgBouncers, on the host
        running the module. Required with I(pgbouncer_sslmode=verify-ca) or
        I(pgbouncer_sslmode=verify-full); C(system) takes the system's trusted CAs (with
        C(verify-full) only).
    type: path
    aliases: [pg_sslrootcert]
'''
