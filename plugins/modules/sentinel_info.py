#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: sentinel_info
short_description: Read what the Redis Sentinels say about the master and its replicas
version_added: 0.1.0
description:
  - Asks every Sentinel for the master it monitors under I(master_name), its replicas, its flags
    and C(SENTINEL CKQUORUM), and returns the master a majority names, whether all agree, and
    the problems an operator should know about.
  - With I(redis_password), also asks each Redis node for C(INFO replication), so the answer shows
    what the nodes themselves claim (a node claiming master that Sentinel does not name is a
    split-brain symptom).
  - Read only.
attributes:
  check_mode:
    support: full
    details: Read only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
  action_group:
    membership: [rtmx.ha.ha, rtmx.ha.sentinel]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - rtmx.ha.sentinel
author:
  - RTMX HA maintainers (@rtmx-ha)
requirements:
  - redis >= 5 (redis-py)
seealso:
  - module: rtmx.ha.sentinel_failover
  - module: rtmx.ha.ha_verify
'''

EXAMPLES = r'''
- name: Read the Sentinels' view
  rtmx.ha.sentinel_info:
    sentinels: [10.0.0.11:26379, 10.0.0.12:26379, 10.0.0.13:26379]
    sentinel_password: "{{ redis_sentinel_password }}"
    redis_password: "{{ redis_password }}"
  delegate_to: localhost
  run_once: true
  register: sentinel

- name: Fail when the Sentinels disagree
  ansible.builtin.assert:
    that: sentinel.redis.agreement
    fail_msg: "{{ sentinel.redis.problems }}"
'''

RETURN = r'''
redis:
  description: The Sentinels' combined view.
  returned: success
  type: dict
  contains:
    master:
      description: The master (C(host:port)) a majority of Sentinels names; null without a majority.
      type: str
      sample: 10.0.0.11:6379
    masters_named:
      description: Every distinct master the reachable Sentinels name (more than one is disagreement).
      type: list
      elements: str
      sample: [10.0.0.11:6379]
    agreement:
      description: True when every Sentinel answered and all name the same master.
      type: bool
      sample: true
    votes:
      description: How many Sentinels name each master.
      type: dict
      sample: {10.0.0.11:6379: 3}
    majority:
      description: Sentinels needed for a majority.
      type: int
      sample: 2
    sentinels_total:
      description: Sentinels asked.
      type: int
      sample: 3
    sentinels_reachable:
      description: Sentinels that answered.
      type: int
      sample: 3
    ckquorum_ok:
      description: C(SENTINEL CKQUORUM) succeeded on every reachable Sentinel.
      type: bool
      sample: true
    failover_in_progress:
      description: A Sentinel reports a failover in progress.
      type: bool
      sample: false
    replicas:
      description: Replicas as the Sentinels see them.
      type: list
      elements: dict
      sample: [{address: 10.0.0.12:6379, flags: slave, master_link_status: ok, offset: 81234, priority: 100}]
    sentinels:
      description: Each Sentinel's own answer (master, flags, quorum, config epoch, error).
      type: list
      elements: dict
      sample: [{sentinel: 10.0.0.11:26379, reachable: true, master: 10.0.0.11:6379, quorum: 2, error: null}]
    nodes:
      description: Each Redis node's own C(INFO replication) (only with I(redis_password)).
      type: list
      elements: dict
      sample: [{address: 10.0.0.11:6379, reachable: true, role: master, connected_replicas: 2}]
    problems:
      description: What is wrong, one sentence each; empty when healthy.
      type: list
      elements: str
      sample: []
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import (
    HAS_REDIS, REDIS_IMPORT_ERROR, read_redis, redis_problem, sentinel_argument_spec)


def argument_spec():
    return sentinel_argument_spec()


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib('redis'), exception=REDIS_IMPORT_ERROR)
    problem = redis_problem()
    if problem:
        module.fail_json(msg=problem)
    p = module.params
    state = read_redis(p['sentinels'], p['sentinel_password'], p['master_name'], p['redis_password'], p['timeout'])
    module.exit_json(changed=False, redis=state)


if __name__ == '__main__':
    main()
