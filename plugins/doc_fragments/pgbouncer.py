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
    description: Password of I(pgbouncer_username).
    type: str
'''
