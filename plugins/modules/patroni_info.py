#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: patroni_info
short_description: Read the state of a Patroni cluster
version_added: 0.1.0
description:
  - Asks the Patroni REST API (C(/cluster), C(/config), and the leader's C(/patroni)) for the
    members of the cluster and returns who leads, on which timeline, which replicas stream from
    the leader and how far they lag, the sync standby, pending restarts and maintenance mode.
  - Read only; never changes anything. Works from any host that reaches one member's REST port
    (the controller, or a node), without Python libraries beyond Ansible's.
options:
  patroni_password:
    description:
      - Password of the REST API's basic authentication. Read endpoints of Patroni may be open;
        without it, the module still reads them.
attributes:
  check_mode:
    support: full
    details: Read only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
  action_group:
    membership: [rtmx.ha.ha, rtmx.ha.patroni]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - rtmx.ha.patroni
author:
  - RTMX HA maintainers (@rtmx-ha)
notes:
  - Patroni 3.0 reports every replica as C(running); C(streaming) comes from the leader's
    C(pg_stat_replication) (the C(replication) list of its C(GET /patroni)).
seealso:
  - module: rtmx.ha.patroni_switchover
  - module: rtmx.ha.ha_verify
'''

EXAMPLES = r'''
- name: Read the Patroni cluster
  rtmx.ha.patroni_info:
    patroni_urls: "{{ groups['postgres'] | map('extract', hostvars, 'rtmx_address')
                      | map('regex_replace', '^(.*)$', 'http://\\1:8008') | list }}"
    patroni_password: "{{ patroni_restapi_password }}"
  delegate_to: localhost
  run_once: true
  register: patroni

- name: Show the leader
  ansible.builtin.debug:
    msg: "{{ patroni.cluster.leader }} leads on timeline {{ patroni.cluster.timeline }}"
'''

RETURN = r'''
cluster:
  description: The cluster as the members report it.
  returned: success
  type: dict
  contains:
    leader:
      description: Name of the leader, or null when there is not exactly one.
      type: str
      sample: pg1
    leaders:
      description: Names of every member that claims the leader role (more than one is split-brain).
      type: list
      elements: str
      sample: [pg1]
    timeline:
      description: The leader's timeline.
      type: int
      sample: 3
    members:
      description: One entry per member.
      type: list
      elements: dict
      sample:
        - name: pg2
          role: sync_standby
          state: running
          host: 10.0.0.12
          port: 5432
          api_url: http://10.0.0.12:8008/patroni
          timeline: 3
          lag: 0
          streaming: true
          sync_state: sync
          pending_restart: false
          nofailover: false
    sync_standbys:
      description: Names of the synchronous standbys.
      type: list
      elements: str
      sample: [pg2]
    paused:
      description: Whether the cluster is in maintenance mode (no automatic failover).
      type: bool
      sample: false
    scheduled_switchover:
      description: The scheduled switchover, if any, as Patroni reports it.
      type: dict
      sample: {at: '2026-11-28T02:00:00+00:00', from: pg1, to: pg2}
    synchronous_mode:
      description: Whether synchronous replication is on (dynamic configuration).
      type: bool
      sample: true
    synchronous_mode_strict:
      description: Whether writes stop when no synchronous standby is available.
      type: bool
      sample: false
    pending_restart:
      description: Members whose PostgreSQL needs a restart to apply a setting.
      type: list
      elements: str
      sample: []
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rtmx.ha.plugins.module_utils.patroni import (
    PatroniClient, PatroniError, patroni_argument_spec, read_cluster)


def argument_spec():
    return patroni_argument_spec()


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    client = PatroniClient(p['patroni_urls'], p['patroni_username'], p['patroni_password'],
                           p['timeout'], p['validate_certs'], p['ca_path'])
    try:
        cluster = read_cluster(client)
    except PatroniError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, cluster=cluster)


if __name__ == '__main__':
    main()
