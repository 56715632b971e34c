# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter rtmx.ha.redis_master: the roles' choice of the Redis master, on module_utils' majority rule."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: redis_master
short_description: Which inventory host is the Redis master, from Sentinel and node answers
version_added: 0.1.0
description:
  - The decision of the roles C(rtmx.ha.redis) and C(rtmx.ha.redis_sentinel) (C(tasks/discover_master.yml)),
    on the same majority rule as the modules (C(module_utils/redis_client.py)).
  - A majority of all Sentinels naming one node decides; without one, the only node that is master with
    connected replicas; a brand-new deployment (no node configured, no replica) takes I(initial_master).
positional: sentinel_results, node_results, members, initial_master, deployed
options:
  _input:
    description: Results of C(SENTINEL get-master-addr-by-name) per Sentinel (registered C(command) loop results).
    type: list
    elements: dict
    required: true
  node_results:
    description: Results of C(INFO replication) per Redis node, in the order of I(members).
    type: list
    elements: dict
    required: true
  members:
    description: Inventory host of each Redis node address, as a mapping from address to host.
    type: dict
    required: true
  initial_master:
    description: Host to make the master of a brand-new deployment.
    type: str
    required: true
  deployed:
    description: Whether any node already carries the role's configuration.
    type: bool
    required: true
'''

EXAMPLES = r'''
- name: Decide which node is the master
  ansible.builtin.set_fact:
    master: "{{ sentinel_answers.results | rtmx.ha.redis_master(node_answers.results, members, 'pg1', false) }}"
'''

RETURN = r'''
_value:
  description: The keys C(master) (empty when nothing decides) and C(reason).
  type: dict
'''

from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import choose_master


def redis_master(sentinel_results, node_results, members, initial_master, deployed):
    named = [r['stdout_lines'][0] for r in sentinel_results
             if r.get('rc') == 0 and len(r.get('stdout_lines') or []) >= 2]
    hosts = list(members.values())
    roles = {}
    for host, result in zip(hosts, node_results):
        roles[host] = result.get('stdout') if result.get('rc') == 0 else None
    return choose_master(named, len(sentinel_results), roles, members, initial_master, bool(deployed))


class FilterModule(object):
    def filters(self):
        return {'redis_master': redis_master}
