# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter rtmx.ha.restore_plan: playbooks/restore.yml's checks of its input, on module_utils/restore.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: restore_plan
short_description: Check a restore request of playbooks/restore.yml and say what to do
version_added: 0.1.0
description:
  - The checks restore.yml makes before it changes anything (C(module_utils/restore.py)); the playbook fails listing
    the I(problems) of the result.
  - A recovery type of C(latest), C(immediate), C(time) (a time with its zone, normalized to UTC, not in the future),
    C(lsn) or C(name) (a restore point); a cluster restore needs C(confirm=yes) and a member; a restore for inspection
    needs a host outside the cluster that may read the repository, a port and a directory.
positional: members, hosts, restore_hosts, pg_port, now
options:
  _input:
    description:
      - The request, with the keys C(confirm), C(type), C(target), C(set), C(target_timeline), C(member),
        C(target_host), C(inspect_port) and C(inspect_dir) (restore.yml's C(restore_*) variables).
    type: dict
    required: true
  members:
    description: The cluster's members (the postgres group).
    type: list
    elements: str
    required: true
  hosts:
    description: Every inventory host.
    type: list
    elements: str
    required: true
  restore_hosts:
    description: Hosts that may read the repository besides the members (backup hosts and pgbackrest_restore_hosts).
    type: list
    elements: str
    required: true
  pg_port:
    description: PostgreSQL's port on the members (an inspection instance must use another).
    type: int
    required: true
  now:
    description: The current time (Unix seconds); a time target after it is refused.
    type: float
    required: false
'''

EXAMPLES = r'''
- name: Check the request
  ansible.builtin.set_fact:
    plan: >-
      {{ {'confirm': restore_confirm | default(''), 'type': 'time', 'target': '2026-11-28 10:15:00+01'}
         | rtmx.ha.restore_plan(groups['postgres'], groups['all'], groups['backup'], 5432) }}

- name: Stop on any problem
  ansible.builtin.assert:
    that: plan.problems | length == 0
    fail_msg: "{{ plan.problems }}"
'''

RETURN = r'''
_value:
  description:
    - The keys C(problems) (list, empty when it may go on), C(mode) (C(cluster) or C(inspect)), C(member),
      C(target_host), C(type), C(target) (normalized), C(target_epoch), C(set), C(options) (pgbackrest restore
      options), C(inspect_port), C(inspect_dir) and C(summary).
  type: dict
'''

from ansible_collections.rtmx.ha.plugins.module_utils.restore import restore_plan


class FilterModule(object):
    def filters(self):
        return {'restore_plan': restore_plan}
