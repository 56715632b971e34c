#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: sentinel_failover
short_description: Controlled Redis Sentinel failover that waits for every Sentinel and HAProxy to follow
version_added: 0.1.0
description:
  - Checks first, and refuses with a message naming each problem, changing nothing, when the
    Sentinels do not all answer and agree on one master, C(SENTINEL CKQUORUM) fails, a failover
    is already in progress, a node contradicts the Sentinels, or no replica has a healthy link.
  - Then sends C(SENTINEL FAILOVER) to one Sentinel and waits until every Sentinel names the new
    master, the new master says C(role:master), the old master replicates from it, and (with
    I(haproxy_stats_urls)) every HAProxy routes I(haproxy_redis_backend) to the new master alone.
  - With I(from_master), fails over only while that node is the master, so a second run is
    C(ok), unchanged. Check mode reports what would happen.
  - With I(to_replica), the Sentinels promote that replica. Its C(replica-priority) is lowered
    (every other replica's kept above it) until the failover ends, then every node's value is
    restored, also when the failover fails.
options:
  redis_password:
    description: Password of the Redis nodes, to check their roles before and after.
    required: true
  from_master:
    description:
      - Fail over only when this C(host:port) is the current master; otherwise return unchanged.
        Makes the task idempotent.
      - Give the port, in the form the Sentinels name the master (C(10.0.0.11:6379)); a value
        without one is refused before anything is done, as it would never match.
    type: str
  to_replica:
    description:
      - The replica (C(host:port), as the Sentinels name it) to promote; refused, changing nothing,
        unless it is a replica with a healthy link. Already the master, nothing to do.
    type: str
  failover_timeout:
    description: Seconds to wait for the Sentinels, the nodes and HAProxy to follow the new master.
    type: int
    default: 60
  haproxy_stats_urls:
    description:
      - HAProxy statistics pages (C(http://lb1:7000/)), one per lb. When given, waits until every
        HAProxy routes I(haproxy_redis_backend) to the new master alone.
  haproxy_redis_backend:
    description: Name of HAProxy's Redis backend.
    type: str
    default: redis
attributes:
  check_mode:
    support: full
    details: Checks every precondition and says which master it would fail over from, without C(SENTINEL FAILOVER).
  diff_mode:
    support: none
  platform:
    platforms: posix
  action_group:
    membership: [rtmx.ha.ha, rtmx.ha.sentinel, rtmx.ha.haproxy]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - rtmx.ha.sentinel
  - rtmx.ha.haproxy_stats
author:
  - RTMX HA maintainers (@rtmx-ha)
requirements:
  - redis >= 5 (redis-py)
notes:
  - Clients connected through HAProxy lose their connection when the master changes
    (C(on-marked-down shutdown-sessions)) and must reconnect; writes acknowledged by the old
    master but not yet replicated are lost (bounded by C(min-replicas-max-lag)).
seealso:
  - module: rtmx.ha.sentinel_info
  - module: rtmx.ha.ha_verify
'''

EXAMPLES = r'''
- name: Move the Redis master away from pg1
  rtmx.ha.sentinel_failover:
    sentinels: [10.0.0.11:26379, 10.0.0.12:26379, 10.0.0.13:26379]
    sentinel_password: "{{ redis_sentinel_password }}"
    redis_password: "{{ redis_password }}"
    from_master: 10.0.0.11:6379
    haproxy_stats_urls: [http://10.0.0.31:7000/, http://10.0.0.32:7000/]
    haproxy_stats_password: "{{ haproxy_stats_password }}"
  delegate_to: localhost
  run_once: true
  register: redis_failover

- name: Make 10.0.0.13 the Redis master (nothing to do when it is)
  rtmx.ha.sentinel_failover:
    sentinels: [10.0.0.11:26379, 10.0.0.12:26379, 10.0.0.13:26379]
    sentinel_password: "{{ redis_sentinel_password }}"
    redis_password: "{{ redis_password }}"
    to_replica: 10.0.0.13:6379
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
previous_master:
  description: The master before the module ran.
  returned: success
  type: str
  sample: 10.0.0.11:6379
master:
  description: The master when the module returned.
  returned: success
  type: str
  sample: 10.0.0.12:6379
timings:
  description:
    - Seconds from the C(SENTINEL FAILOVER) command until every Sentinel named the new master
      (C(sentinels_agree)), the new master answered C(role:master) (C(new_master_writable)),
      every HAProxy routed to it (C(haproxy_routed)) and the old master replicated from it
      (C(old_master_replicating)); C(total) for the whole module.
  returned: changed
  type: dict
  sample: {sentinels_agree: 1.9, new_master_writable: 1.9, haproxy_routed: 3.1, old_master_replicating: 3.1, total: 3.3}
redis:
  description: The Sentinels' view when the module returned (see M(rtmx.ha.sentinel_info)).
  returned: success
  type: dict
  sample: {master: 10.0.0.12:6379, agreement: true, problems: []}
'''

import re

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.rtmx.ha.plugins.module_utils.haproxy_stats import (
    haproxy_stats_argument_spec, routing_problems)
from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import (
    HAS_REDIS, REDIS_IMPORT_ERROR, RedisConnection, RedisError, healthy_replicas, query_redis, read_redis, redis_problem,
    sentinel_argument_spec, split_address)
from ansible_collections.rtmx.ha.plugins.module_utils.timing import Stopwatch, poll


def master_address(value):
    """'host:port' or '[v6]:port' -> 'host:port' as Sentinel names a master; None without a port."""
    value = value.strip()
    if value.startswith('['):
        host, dummy, rest = value[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else ''
    else:
        host, dummy, port = value.rpartition(':')
    if not host or not re.match(r'^[0-9]{1,5}$', port) or not 0 < int(port) < 65536:
        return None
    return '%s:%s' % (host, int(port))


# Sentinel promotes the replica with the lowest replica-priority (0: never).
PREFERRED_PRIORITY = 1


def set_priorities(priorities, password, timeout, before=None):
    """CONFIG SET replica-priority on each node; the values they had go into before as each is set."""
    for address, priority in priorities.items():
        host, port = split_address(address, 6379)
        with RedisConnection(host, port, password, timeout) as conn:
            had = int(conn.command('CONFIG', 'GET', 'replica-priority')[1])
            conn.command('CONFIG', 'SET', 'replica-priority', str(priority))
            if before is not None:
                before.setdefault(address, had)


def preference(target, replicas):
    """Priorities that make Sentinel pick target: it lowest, every other promotable replica above it."""
    wanted = {target['address']: PREFERRED_PRIORITY}
    for replica in replicas:
        if replica['address'] != target['address'] and 0 < replica['priority'] <= PREFERRED_PRIORITY:
            wanted[replica['address']] = PREFERRED_PRIORITY + 1
    return wanted


def sentinels_see(state, wanted):
    """Every reachable Sentinel reports the wanted priorities (it reads them from INFO every 10 s)."""
    for answer in state['sentinels']:
        if not answer['reachable']:
            continue
        seen = dict((r['address'], r['priority']) for r in answer.get('replicas') or [])
        if any(seen.get(address) != priority for address, priority in wanted.items()):
            return False
    return True


def argument_spec():
    spec = sentinel_argument_spec(redis_password_required=True)
    spec.update(haproxy_stats_argument_spec())
    spec.update(
        from_master=dict(type='str'),
        to_replica=dict(type='str'),
        failover_timeout=dict(type='int', default=60),
        haproxy_redis_backend=dict(type='str', default='redis'),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib('redis'), exception=REDIS_IMPORT_ERROR)
    problem = redis_problem()
    if problem:
        module.fail_json(msg=problem)
    p = module.params
    watch = Stopwatch()
    from_master = None
    if p['from_master']:
        # A bare host never equals the master Sentinel names, so it would always look like nothing to do.
        from_master = master_address(p['from_master'])
        if not from_master:
            module.fail_json(msg='refusing to fail over, nothing was changed: from_master %r is not host:port; give '
                                 'it with its port, the way the Sentinels name the master (e.g. 10.0.0.11:6379)'
                                 % p['from_master'])

    to_replica = None
    if p['to_replica']:
        to_replica = master_address(p['to_replica'])
        if not to_replica:
            module.fail_json(msg='refusing to fail over, nothing was changed: to_replica %r is not host:port; give '
                                 'it the way the Sentinels name the replica (e.g. 10.0.0.12:6379)' % p['to_replica'])

    def read():
        return read_redis(p['sentinels'], p['sentinel_password'], p['master_name'], p['redis_password'], p['timeout'])

    state = read()
    previous = state['master']
    if from_master and previous and previous != from_master and not state['problems']:
        module.exit_json(changed=False, previous_master=previous, master=previous, redis=state,
                         msg='%s is not the master (%s is): nothing to do' % (from_master, previous))
    if to_replica and previous == to_replica and not state['problems']:
        module.exit_json(changed=False, previous_master=previous, master=previous, redis=state,
                         msg='%s is the master already: nothing to do' % to_replica)
    problems = list(state['problems'])
    candidates = healthy_replicas(state)
    if not candidates:
        problems.append('no replica has a healthy link to the master (Sentinel would answer NOGOODSLAVE)')
    target = None
    if to_replica and candidates:
        target = next((r for r in candidates if r['address'] == to_replica), None)
        if target is None:
            problems.append('to_replica %s is not a replica with a healthy link (those are: %s)'
                            % (to_replica, ', '.join(r['address'] for r in candidates)))
    if problems:
        module.fail_json(msg='refusing to fail over, nothing was changed: %s' % ' | '.join(problems), redis=state)
    if module.check_mode:
        module.exit_json(changed=True, previous_master=previous, master=previous, redis=state,
                         msg='would fail over away from %s%s' % (previous, ' to %s' % to_replica if target else ''))

    restore = {}
    failed, result = False, {}
    if target:
        wanted = preference(target, state['replicas'])
        try:
            set_priorities(wanted, p['redis_password'], p['timeout'], restore)
            seen, dummy = poll(lambda: sentinels_see(read(), wanted), p['failover_timeout'], 0.5)
            if not seen:
                failed, result = True, dict(msg='the Sentinels did not see the replica priorities %s within %ss'
                                                % (wanted, p['failover_timeout']))
        except RedisError as exc:
            failed, result = True, dict(msg='could not set replica-priority to prefer %s: %s' % (to_replica, exc))
    if not failed:
        failed, result = failover(p, read, state, previous, watch, to_replica)
    if restore:
        try:
            set_priorities(restore, p['redis_password'], p['timeout'])
        except RedisError as exc:
            failed = True
            result['msg'] = '%s; restoring replica-priority %s failed: %s' % (
                result.get('msg', 'failed over'), restore, exc)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


def failover(p, read, state, previous, watch, to_replica):
    """SENTINEL FAILOVER, then wait for the Sentinels, the nodes and HAProxy to follow: (failed, result)."""
    sent_by = None
    for answer in state['sentinels']:
        host, port = split_address(answer['sentinel'], 26379)
        try:
            with RedisConnection(host, port, p['sentinel_password'], p['timeout']) as conn:
                conn.command('SENTINEL', 'FAILOVER', p['master_name'])
            sent_by = answer['sentinel']
            break
        except RedisError as exc:
            if 'INPROG' in str(exc) or 'NOGOODSLAVE' in str(exc):
                return True, dict(msg='Sentinel %s refused the failover: %s' % (answer['sentinel'], exc), redis=state)
    if not sent_by:
        return True, dict(msg='no Sentinel accepted SENTINEL FAILOVER', redis=state)
    started = Stopwatch()
    timings = {}

    def sentinels_follow():
        now = read()
        if now['agreement'] and now['master'] and now['master'] != previous:
            return now
        return None

    now, dummy = poll(sentinels_follow, p['failover_timeout'], 0.2)
    timings['sentinels_agree'] = started.lap()
    if not now:
        return True, dict(changed=True, timings=timings,
                          msg='the Sentinels did not all name a new master within %ss: %s'
                          % (p['failover_timeout'], read()['votes']))
    master = now['master']
    if to_replica and master != to_replica:
        return True, dict(changed=True, timings=timings, msg='the Sentinels promoted %s, not %s' % (master, to_replica))
    writable, dummy = poll(lambda: query_redis(master, p['redis_password'], p['timeout'])['role'] == 'master',
                           p['failover_timeout'], 0.2)
    timings['new_master_writable'] = started.lap()
    if not writable:
        return True, dict(changed=True, timings=timings, msg='the new master %s does not say role:master' % master)

    def haproxy_problems():
        return routing_problems(p['haproxy_stats_urls'], p['haproxy_stats_username'], p['haproxy_stats_password'],
                                p['timeout'], [(p['haproxy_redis_backend'], master)])[0]

    if p['haproxy_stats_urls']:
        routed, dummy = poll(lambda: not haproxy_problems(), p['failover_timeout'], 0.2)
        timings['haproxy_routed'] = started.lap()
        if not routed:
            return True, dict(changed=True, timings=timings,
                              msg='HAProxy does not route Redis to the new master %s: %s'
                              % (master, '; '.join(haproxy_problems())))

    def old_master_replicates():
        node = query_redis(previous, p['redis_password'], p['timeout'])
        return node['role'] == 'slave' and node.get('master_host') == master and node.get('master_link_status') == 'up'

    replicating, dummy = poll(old_master_replicates, p['failover_timeout'], 0.5)
    timings['old_master_replicating'] = started.lap()
    timings['total'] = watch.lap()
    final = read()
    result = dict(changed=True, previous_master=previous, master=master, timings=timings, redis=final)
    if not replicating:
        result['msg'] = ('failed over to %s, but the old master %s does not replicate from it after %ss'
                         % (master, previous, p['failover_timeout']))
        return True, result
    return False, result


if __name__ == '__main__':
    main()
