# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Access to Redis Sentinel and the Redis nodes: the options of
    # module_utils.redis_client.sentinel_argument_spec(). sentinels is documented as required and
    # redis_password as optional, as sentinel_argument_spec() makes them; a module that changes
    # either (required=False, redis_password_required=True) documents that option itself.
    DOCUMENTATION = r'''
options:
  sentinels:
    description: Sentinel addresses, C(host:port) (port 26379 when omitted). Give all of them.
    type: list
    elements: str
    required: true
  sentinel_password:
    description: The Sentinels' C(requirepass).
    type: str
  master_name:
    description: Name under which the Sentinels monitor the master.
    type: str
    default: rtmx
  redis_password:
    description: Password of the Redis nodes; when given, each node's own role is read too.
    type: str
  timeout:
    description: Seconds to wait for each connection and reply.
    type: int
    default: 3
'''
