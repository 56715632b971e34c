# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Access to the HAProxy statistics pages: the options of
    # module_utils.haproxy_stats.haproxy_stats_argument_spec(). Each module says in its own
    # description of haproxy_stats_urls what it checks there.
    DOCUMENTATION = r'''
options:
  haproxy_stats_urls:
    description: HAProxy statistics pages (C(http://lb1:7000/)), one per lb.
    type: list
    elements: str
    default: []
  haproxy_stats_username:
    description: User of the statistics page.
    type: str
    default: admin
  haproxy_stats_password:
    description: Password of the statistics page.
    type: str
'''
