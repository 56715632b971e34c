#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: patroni_switchover
short_description: Controlled Patroni switchover, with PgBouncer paused around it
version_added: 0.1.0
description:
  - Moves the Patroni leader to I(candidate), or to the best replica when none is named
    (streaming, on the leader's timeline, least lag; in synchronous mode the sync standby).
  - Checks every precondition first and refuses, changing nothing, with a message naming each
    one that fails. The cluster must have exactly one leader and not be paused (unless
    I(allow_paused)); the candidate must be a member, streaming from the leader on its
    timeline, lag at most I(max_lag) bytes, not tagged nofailover, and in synchronous mode be
    the sync standby (or be made one, see I(make_candidate_sync)). When synchronous mode has no sync standby yet, waits up to
    I(sync_standby_timeout) seconds for one instead of hanging.
  - With I(pgbouncer_pause), first checks that every PgBouncer in I(pgbouncer_hosts) answers,
    then runs C(PAUSE) on each for I(pgbouncer_databases), so clients wait instead of failing;
    after the switchover it runs C(RECONNECT) and C(RESUME). Once a C(PAUSE) was sent, every
    database is resumed on every PgBouncer on every path out of the module (failures and
    unexpected errors included, and when C(RECONNECT) fails there), and synchronous_node_count
    is put back even when a C(RESUME) fails; the result names what could not be done.
  - With I(pgbouncer_pause), every run first looks for I(pgbouncer_databases) still paused
    (C(SHOW DATABASES)) by a run that was interrupted, and resumes them, also when it then has
    nothing to do; see RV(resumed_stale_pause). Never run two switchovers at once, as the second
    would resume the pause of the first.
  - Waits until the new leader answers C(GET /primary) (and, with I(haproxy_stats_urls), until
    every HAProxy routes writes only to it), then until the old leader streams from the new one.
  - Idempotent; the candidate already leading means C(ok), unchanged. Check mode reports the
    plan without acting. With I(scheduled_at), asks Patroni to switch over at that time and
    returns at once.
options:
  patroni_password:
    description: Password of the REST API's basic authentication (Patroni requires it for C(POST /switchover)).
  timeout:
    description: Seconds to wait for each REST or PgBouncer call.
  candidate:
    description: Member that should lead. Omit to take the best eligible replica.
    type: str
  max_lag:
    description: Largest replication lag, in bytes, a candidate may have.
    type: int
    default: 1048576
  allow_paused:
    description: Switch over even when the cluster is in maintenance mode.
    type: bool
    default: false
  sync_standby_timeout:
    description:
      - In synchronous mode with no sync standby, seconds to wait for one before refusing.
    type: int
    default: 30
  make_candidate_sync:
    description:
      - In synchronous mode, when the named I(candidate) is healthy but not the sync standby,
        raise C(synchronous_node_count) through C(PATCH /config) until it is one (waiting up to
        I(sync_standby_timeout)), switch over, then put the setting back. With C(false) such a
        candidate is refused.
    type: bool
    default: true
  switchover_timeout:
    description:
      - Seconds to wait for the new leader to serve writes, and again for the old leader to
        stream from it.
    type: int
    default: 60
  scheduled_at:
    description:
      - Schedule the switchover at this time (ISO 8601 with a timezone, for example
        C(2026-11-28T02:00:00+00:00)) instead of doing it now. Patroni performs it; the module
        returns after Patroni accepted it. The same schedule again is C(ok), unchanged.
    type: str
  pgbouncer_pause:
    description: Pause PgBouncer on every host of I(pgbouncer_hosts) around the switchover.
    type: bool
    default: false
  pgbouncer_databases:
    description:
      - PgBouncer databases to pause (the read-write one). Every database is reconnected after
        the switchover, so read-only pools leave the old topology too.
    type: list
    elements: str
    default: [rtmx]
  pgbouncer_pause_timeout:
    description:
      - Seconds C(PAUSE) may take (it waits for running transactions). Past this the
        switchover is refused and PgBouncer resumed.
    type: int
    default: 15
  haproxy_stats_urls:
    description:
      - HAProxy statistics pages (C(http://lb1:7000/)), one per lb. When given, PgBouncer is
        resumed only after every HAProxy routes I(haproxy_rw_backend) to the new leader alone.
  haproxy_rw_backend:
    description: Name of HAProxy's read-write PostgreSQL backend.
    type: str
    default: postgres_rw
attributes:
  check_mode:
    support: full
    details:
      - Checks every precondition and returns the plan (the candidate, and whether it would first
        make it the sync standby or wait for one) and the PgBouncer databases a run would resume,
        without pausing, resuming, patching, scheduling or switching over.
  diff_mode:
    support: none
  platform:
    platforms: posix
  action_group:
    membership: [rtmx.ha.ha, rtmx.ha.patroni, rtmx.ha.haproxy]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - rtmx.ha.patroni
  - rtmx.ha.pgbouncer
  - rtmx.ha.haproxy_stats
author:
  - RTMX HA maintainers (@rtmx-ha)
requirements:
  - psycopg >= 3.1 with libpq >= 16 (C(psycopg[binary]) bundles one), for I(pgbouncer_pause)
notes:
  - Run it once (C(run_once)) from a host that reaches every member's REST port and every
    PgBouncer.
  - Logs in to PgBouncer's admin console with SCRAM-SHA-256 only (PgBouncer's
    C(auth_type = scram-sha-256)); a PgBouncer asking for an MD5 or cleartext password, or for
    none, is refused.
  - Without I(pgbouncer_pause), clients see failed writes while the leader changes.
seealso:
  - module: rtmx.ha.patroni_info
  - module: rtmx.ha.ha_verify
'''

EXAMPLES = r'''
- name: Switch over to pg2 with PgBouncer paused on both lbs
  rtmx.ha.patroni_switchover:
    patroni_urls: [http://10.0.0.11:8008, http://10.0.0.12:8008, http://10.0.0.13:8008]
    patroni_password: "{{ patroni_restapi_password }}"
    candidate: pg2
    pgbouncer_pause: true
    pgbouncer_hosts: [10.0.0.31, 10.0.0.32]
    pgbouncer_password: "{{ pgbouncer_admin_password }}"
    haproxy_stats_urls: [http://10.0.0.31:7000/, http://10.0.0.32:7000/]
    haproxy_stats_password: "{{ haproxy_stats_password }}"
  delegate_to: localhost
  run_once: true
  register: switchover

- name: Switch over to the best replica tonight at 02:00 UTC
  rtmx.ha.patroni_switchover:
    patroni_urls: [http://10.0.0.11:8008, http://10.0.0.12:8008, http://10.0.0.13:8008]
    patroni_password: "{{ patroni_restapi_password }}"
    scheduled_at: "2026-11-28T02:00:00+00:00"
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
previous_leader:
  description: The leader before the module ran.
  returned: success
  type: str
  sample: pg1
leader:
  description: The leader when the module returned (the candidate after a switchover).
  returned: success
  type: str
  sample: pg2
candidate:
  description: The chosen candidate (named, or the best eligible replica).
  returned: success
  type: str
  sample: pg2
scheduled:
  description: Whether the switchover was scheduled rather than done now.
  returned: success
  type: bool
  sample: false
plan:
  description: What the module decided, and which replicas it found ineligible and why.
  returned: success
  type: dict
  sample: {action: switchover, leader: pg1, candidate: pg2, rejected: {pg3: ['synchronous mode is on and it is not the sync standby (sync standby: pg2)']}}
timings:
  description:
    - Seconds, measured on the host running the module. C(pgbouncer_pause) is how long PAUSE
      took; C(new_leader_writable) from the switchover request until the candidate answered
      C(/primary); C(haproxy_routed) until every HAProxy routed to it; C(clients_paused) how long
      clients waited at PgBouncer; C(old_leader_streaming) until the old leader streamed from
      the new one; C(total) the whole module.
  returned: changed and not scheduled
  type: dict
  sample: {pgbouncer_pause: 0.02, new_leader_writable: 2.61, haproxy_routed: 3.4, clients_paused: 3.46, old_leader_streaming: 9.8, total: 10.2}
resumed_stale_pause:
  description:
    - PgBouncer databases (C(address/database)) found paused at the start of the run, left by an
      interrupted run, and resumed (in check mode, that would be resumed). The run then reports
      C(changed) and says so in C(msg).
  returned: with pgbouncer_pause
  type: list
  elements: str
  sample: [10.0.0.31:6432/rtmx]
cluster:
  description: The cluster after the module ran, as returned by M(rtmx.ha.patroni_info).
  returned: success
  type: dict
  sample: {leader: pg2, timeline: 4}
'''

import datetime
import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.rtmx.ha.plugins.module_utils.haproxy_stats import (
    fetch_stats, haproxy_stats_argument_spec, routing_problems)
from ansible_collections.rtmx.ha.plugins.module_utils.patroni import (
    PatroniClient, PatroniError, member_api_base, patroni_argument_spec, plan_switchover, read_cluster)
from ansible_collections.rtmx.ha.plugins.module_utils.pgwire import (
    HAS_PSYCOPG, PSYCOPG_IMPORT_ERROR, PgBouncerAdmin, PgError, libpq_problem, pgbouncer_argument_spec)
from ansible_collections.rtmx.ha.plugins.module_utils.timing import Stopwatch, poll


def parse_schedule(value):
    """ISO 8601 with a timezone -> aware datetime, or None when the text is not one."""
    text = value.strip().replace('Z', '+00:00')
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def is_paused(row):
    """SHOW DATABASES row -> whether that database is paused (the column is 0 or 1)."""
    return str(row.get('paused') or '0').strip().lower() in ('1', 't', 'true')


class Finished(Exception):
    """The module's answer. run() emits it only after PgBouncer is resumed and synchronous_node_count put back,
    so nothing can exit between PAUSE and RESUME."""

    def __init__(self, failed, result):
        super(Finished, self).__init__(result.get('msg'))
        self.failed = failed
        self.result = result


class Switchover(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        self.p = p
        self.client = PatroniClient(p['patroni_urls'], p['patroni_username'], p['patroni_password'],
                                    p['timeout'], p['validate_certs'], p['ca_path'])
        self.bouncers = [PgBouncerAdmin(h, p['pgbouncer_username'], p['pgbouncer_password'], p['timeout'],
                                        sslmode=p['pgbouncer_sslmode'], sslrootcert=p['pgbouncer_sslrootcert'])
                         for h in p['pgbouncer_hosts']] if p['pgbouncer_pause'] else []
        self.pausing = False
        self.restore_sync = (False, None)
        self.pause_watch = None
        self.stale = []
        self.stale_resumed = False
        self.problems = []
        self.released = []
        self.timings = {}
        self.watch = Stopwatch()

    def fail(self, msg, **extra):
        raise Finished(True, dict(msg=msg, **extra))

    def finish(self, **result):
        raise Finished(False, result)

    def cluster(self):
        try:
            return read_cluster(self.client)
        except PatroniError as exc:
            self.fail('%s' % exc)

    # Every exit ------------------------------------------------------------
    def run(self):
        outcome = None
        try:
            try:
                self.flow()
            except Finished as done:
                outcome = done
            except Exception as exc:  # pylint: disable=broad-except
                # A truncated HTTP answer or a parser error must not leave clients paused either.
                outcome = Finished(True, dict(msg='unexpected error: %s: %s' % (type(exc).__name__, exc),
                                              exception=traceback.format_exc()))
        finally:
            # Also on KeyboardInterrupt or a stray sys.exit, which then go on up.
            self.release()
        self.emit(outcome)

    def release(self):
        """RESUME PgBouncer and put synchronous_node_count back; never raises, safe to call twice.

        What was done goes to self.released and what could not to self.problems, both for the
        message; returns whether something could not be done this time.
        """
        problems = self.resume() + self.restore_sync_count()
        self.problems.extend(problems)
        return bool(problems)

    def emit(self, outcome):
        result = dict(outcome.result)
        failed = outcome.failed or bool(self.problems)
        msg = [result['msg']] if result.get('msg') else []
        stale_note = bool(self.stale) and (self.stale_resumed or self.module.check_mode)
        if stale_note:
            msg.insert(0, '%s PgBouncer databases left paused by an interrupted run: %s'
                       % ('would resume' if self.module.check_mode else 'resumed', ', '.join(self.stale)))
        if failed:
            # Say what state the failure leaves behind: resumed and put back, or what to do by hand.
            msg.extend(self.problems + self.released)
            result.setdefault('timings', self.timings)
        if msg:
            result['msg'] = '; '.join(msg)
        if self.p['pgbouncer_pause']:
            result['resumed_stale_pause'] = self.stale
            result['changed'] = bool(result.get('changed') or stale_note)
        if failed:
            self.module.fail_json(**result)
        self.module.exit_json(**result)

    # PgBouncer -------------------------------------------------------------
    def reconnect_and_resume(self, bouncer, databases):
        """RECONNECT (server connections may still go to the old leader), then RESUME each database,
        each step tried even when the one before failed; returns the errors."""
        errors = []
        try:
            bouncer.run('RECONNECT')
        except Exception as exc:  # pylint: disable=broad-except
            errors.append('RECONNECT on %s failed (%s)' % (bouncer.address, exc))
        for database in databases:
            try:
                bouncer.run('RESUME %s' % database)
            except Exception as exc:  # pylint: disable=broad-except
                if 'not paused' not in str(exc):
                    errors.append('RESUME %s on %s failed (%s)' % (database, bouncer.address, exc))
        return errors

    def resume_stale_pause(self):
        """RESUME what a run killed or cut off while PgBouncer was paused left paused."""
        errors = []
        for bouncer in self.bouncers:
            try:
                known = bouncer.databases()
            except PgError as exc:
                # check_bouncers refuses before any PAUSE when it does not answer; here it only cannot be looked at.
                self.module.warn('PgBouncer %s could not be checked for a pause left by an interrupted run: %s'
                                 % (bouncer.address, exc))
                continue
            paused = [d for d in self.p['pgbouncer_databases'] if d in known and is_paused(known[d])]
            if not paused:
                continue
            self.stale.extend('%s/%s' % (bouncer.address, d) for d in paused)
            if not self.module.check_mode:
                errors.extend(self.reconnect_and_resume(bouncer, paused))
        self.stale_resumed = bool(self.stale) and not self.module.check_mode and not errors
        if errors:
            self.fail('PgBouncer has databases paused by an interrupted run and they could not all be resumed: %s; '
                      'run RESUME on its admin console now (psql -p 6432 -U %s pgbouncer -c "RESUME <db>")'
                      % ('; '.join(errors), self.p['pgbouncer_username']))

    def check_bouncers(self):
        for bouncer in self.bouncers:
            try:
                known = bouncer.databases()
            except PgError as exc:
                self.fail('refusing to switch over: PgBouncer admin console at %s does not answer (%s); fix '
                          'pgbouncer_hosts/pgbouncer_password or run without pgbouncer_pause' % (bouncer.address, exc))
            missing = [d for d in self.p['pgbouncer_databases'] if d not in known]
            if missing:
                self.fail('refusing to switch over: PgBouncer at %s has no database %s (it has: %s)'
                          % (bouncer.address, ', '.join(missing), ', '.join(sorted(known))))

    def pause(self):
        if not self.bouncers:
            return
        watch = Stopwatch()
        # From here every exit resumes every database on every PgBouncer: a PAUSE cut short by its
        # timeout is still pending there, and one whose answer was lost may have taken effect.
        self.pausing = True
        for bouncer in self.bouncers:
            for database in self.p['pgbouncer_databases']:
                try:
                    bouncer.run('PAUSE %s' % database, timeout=self.p['pgbouncer_pause_timeout'])
                except PgError as exc:
                    self.fail('refusing to switch over, the leader was not changed: PAUSE %s on PgBouncer %s did not '
                              'complete within %ss (%s); a long transaction holds a server connection'
                              % (database, bouncer.address, self.p['pgbouncer_pause_timeout'], exc))
        self.timings['pgbouncer_pause'] = watch.lap()
        self.pause_watch = Stopwatch()

    def resume(self):
        """RECONNECT and RESUME every database on every PgBouncer once pausing began; returns the problems."""
        if not self.pausing:
            return []
        self.pausing = False
        errors = []
        for bouncer in self.bouncers:
            errors.extend(self.reconnect_and_resume(bouncer, self.p['pgbouncer_databases']))
        self.timings['clients_paused'] = self.pause_watch.lap() if self.pause_watch else None
        if errors:
            return ['PgBouncer was not fully resumed: %s; run RECONNECT and RESUME on its admin console now '
                    '(psql -p 6432 -U %s pgbouncer -c RESUME)' % ('; '.join(errors), self.p['pgbouncer_username'])]
        self.released.append('PgBouncer was resumed')
        return []

    def restore_sync_count(self):
        """Put synchronous_node_count back after make_sync; returns the problems."""
        pending, original = self.restore_sync
        if not pending:
            return []
        self.restore_sync = (False, None)
        try:
            self.client.patch_config({'synchronous_node_count': original})
        except Exception as exc:  # pylint: disable=broad-except
            return ['synchronous_node_count could not be put back to %s (%s); set it with `patronictl edit-config` '
                    'or re-run site.yml' % (original, exc)]
        self.released.append('synchronous_node_count was put back to %s' % original)
        return []

    # HAProxy ---------------------------------------------------------------
    def haproxy_routes_to(self, address):
        """Why not every HAProxy routes writes to `address` alone (a page cut short is one more poll).

        fetch is this module's fetch_stats, looked up at each call, so tests can stand in for HAProxy.
        """
        p = self.p
        return routing_problems(p['haproxy_stats_urls'], p['haproxy_stats_username'], p['haproxy_stats_password'],
                                p['timeout'], [(p['haproxy_rw_backend'], address)], fetch=fetch_stats)[0]

    # The switchover --------------------------------------------------------
    def plan(self, info):
        p = self.p
        plan = plan_switchover(info, p['candidate'], p['max_lag'], p['allow_paused'])
        if plan['action'] == 'wait_sync' and not self.module.check_mode:
            def eligible():
                state = self.cluster()
                again = plan_switchover(state, p['candidate'], p['max_lag'], p['allow_paused'])
                return again if again['action'] != 'wait_sync' else None
            found, waited = poll(eligible, p['sync_standby_timeout'], 1.0)
            self.timings['sync_standby_wait'] = waited
            if not found:
                self.fail('refusing to switch over: synchronous mode is on and no replica became the sync standby '
                          'within %ss; check replication with rtmx.ha.patroni_info (are the replicas streaming?) '
                          'or raise sync_standby_timeout' % p['sync_standby_timeout'], plan=plan)
            plan = found
        if plan['action'] == 'make_sync' and not p['make_candidate_sync']:
            plan = dict(plan, action='refuse', reasons=['%s: %s' % (p['candidate'], '; '.join(plan['rejected'][p['candidate']])),
                                                        'pass make_candidate_sync=true or choose the sync standby'])
        if plan['action'] == 'refuse':
            self.fail('refusing to switch over, nothing was changed: %s' % ' | '.join(plan['reasons']),
                      plan=plan, cluster=info)
        return plan

    def make_sync(self, info, candidate):
        """Widen synchronous_node_count until the candidate is a sync standby; release() puts it back."""
        p = self.p
        original = info['synchronous_node_count']
        streaming = len([m for m in info['members'] if m['name'] != info['leader'] and m['streaming']])
        watch = Stopwatch()
        # Pending before the PATCH: one that timed out may still have been applied.
        self.restore_sync = (True, original)
        try:
            self.client.patch_config({'synchronous_node_count': max(streaming, (original or 1) + 1)})
        except PatroniError as exc:
            self.fail('could not widen synchronous_node_count to make %s a sync standby: %s' % (candidate, exc))

        def candidate_is_sync():
            state = self.cluster()
            return candidate in state['sync_standbys']
        ok, dummy = poll(candidate_is_sync, p['sync_standby_timeout'], 0.5)
        self.timings['make_candidate_sync'] = watch.lap()
        if not ok:
            self.fail('%s did not become a sync standby within %ss of widening synchronous_node_count; the leader '
                      'was not changed' % (candidate, p['sync_standby_timeout']))

    def flow(self):
        p = self.p
        # First, so clients held by an interrupted run wait no longer, whatever this run then does.
        self.resume_stale_pause()
        info = self.cluster()
        previous = info['leader']
        try:
            self.client.check_credentials()
        except PatroniError as exc:
            self.fail('refusing to switch over, nothing was changed: %s' % exc)
        if p['scheduled_at']:
            return self.schedule(info)
        if info['scheduled_switchover']:
            self.fail('refusing to switch over: a switchover is already scheduled (%s); cancel it with '
                      '`patronictl flush <cluster> switchover` first' % info['scheduled_switchover'])
        plan = self.plan(info)
        if plan['action'] == 'none':
            self.finish(changed=False, previous_leader=previous, leader=previous,
                        candidate=previous, scheduled=False, plan=plan, cluster=info)
        if plan['action'] == 'make_sync' and self.module.check_mode:
            self.finish(changed=True, previous_leader=previous, leader=previous, candidate=p['candidate'],
                        scheduled=False, plan=plan, cluster=info,
                        msg='would make %s a sync standby (synchronous_node_count), then switch over to it'
                        % p['candidate'])
        if plan['action'] == 'wait_sync':
            self.finish(changed=True, previous_leader=previous, leader=previous, candidate=p['candidate'],
                        scheduled=False, plan=plan, cluster=info,
                        msg='would wait up to %ss for a sync standby, then switch over' % p['sync_standby_timeout'])
        candidate = plan['candidate']
        if self.module.check_mode:
            self.finish(changed=True, previous_leader=previous, leader=previous, candidate=candidate,
                        scheduled=False, plan=plan, cluster=info,
                        msg='would switch over from %s to %s' % (previous, candidate))
        self.check_bouncers()
        if plan['action'] == 'make_sync':
            self.make_sync(info, candidate)
        members = dict((m['name'], m) for m in info['members'])
        target = members[candidate]
        self.pause()
        request = Stopwatch()
        try:
            status, body = self.client.switchover(previous, candidate, timeout=p['switchover_timeout'])
        except PatroniError as exc:
            self.fail('switchover request failed: %s' % exc)
        if status != 200:
            state = self.cluster()
            if state['leader'] != candidate:
                self.fail('Patroni refused or failed the switchover from %s to %s (HTTP %s: %s); the leader is %s'
                          % (previous, candidate, status, body, state['leader']), cluster=state)
        base = member_api_base(target)
        ok, waited = poll(lambda: self.client.is_primary(base), p['switchover_timeout'], 0.2)
        self.timings['new_leader_writable'] = request.lap()
        if not ok:
            self.fail('%s did not become a writable primary within %ss after the switchover request'
                      % (candidate, p['switchover_timeout']))
        if p['haproxy_stats_urls']:
            address = '%s:%s' % (target['host'], target['port'] or 5432)
            problems, dummy = poll(lambda: not self.haproxy_routes_to(address), p['switchover_timeout'], 0.2)
            self.timings['haproxy_routed'] = request.lap()
            if not problems:
                self.fail('HAProxy did not route writes to the new leader %s within %ss: %s'
                          % (candidate, p['switchover_timeout'], '; '.join(self.haproxy_routes_to(address))))
        result = dict(changed=True, previous_leader=previous, leader=candidate, candidate=candidate,
                      scheduled=False, plan=plan, timings=self.timings)
        if self.release():
            self.fail('switched over from %s to %s, but not everything was put back' % (previous, candidate), **result)

        def old_leader_streams():
            state = self.cluster()
            old = [m for m in state['members'] if m['name'] == previous]
            if state['leader'] == candidate and old and old[0]['streaming'] and old[0]['timeline'] == state['timeline']:
                return state
            return None
        final, dummy = poll(old_leader_streams, p['switchover_timeout'], 0.5)
        self.timings['old_leader_streaming'] = request.lap()
        self.timings['total'] = self.watch.lap()
        if not final:
            self.fail('switched over to %s, but the old leader %s does not stream from it after %ss: '
                      'check its Patroni log (pg_rewind, replication slot) and `patronictl list`'
                      % (candidate, previous, p['switchover_timeout']), cluster=self.cluster(), **result)
        self.finish(cluster=final, **result)

    def schedule(self, info):
        p = self.p
        when = parse_schedule(p['scheduled_at'])
        if when is None:
            self.fail('scheduled_at %r is not an ISO 8601 time with a timezone, e.g. 2026-11-28T02:00:00+00:00'
                      % p['scheduled_at'])
        existing = info['scheduled_switchover']
        if existing:
            same_time = parse_schedule(existing.get('at', '')) == when
            same_target = not p['candidate'] or existing.get('to') == p['candidate']
            if same_time and same_target:
                self.finish(changed=False, previous_leader=info['leader'], leader=info['leader'],
                            candidate=existing.get('to'), scheduled=True, cluster=info)
            self.fail('another switchover is already scheduled (%s); cancel it with `patronictl flush <cluster> '
                      'switchover` first' % existing)
        if when <= datetime.datetime.now(when.tzinfo):
            self.fail('scheduled_at %s is in the past' % p['scheduled_at'])
        plan = plan_switchover(info, p['candidate'], p['max_lag'], p['allow_paused'])
        if plan['action'] == 'make_sync':
            self.fail('refusing to schedule the switchover: in synchronous mode a scheduled switchover must target '
                      'the sync standby (%s); %s is not' % (', '.join(info['sync_standbys']), p['candidate']), plan=plan)
        if plan['action'] in ('refuse', 'wait_sync'):
            self.fail('refusing to schedule the switchover: %s' % ' | '.join(
                plan.get('reasons') or ['synchronous mode is on and there is no sync standby']), plan=plan)
        if plan['action'] == 'none':
            self.finish(changed=False, previous_leader=info['leader'], leader=info['leader'],
                        candidate=p['candidate'], scheduled=False, plan=plan, cluster=info)
        candidate = plan.get('candidate') or p['candidate']
        if not self.module.check_mode:
            try:
                status, body = self.client.switchover(info['leader'], candidate, when.isoformat())
            except PatroniError as exc:
                self.fail('scheduling the switchover failed: %s' % exc)
            if status not in (200, 202):
                self.fail('Patroni refused to schedule the switchover (HTTP %s: %s)' % (status, body))
        self.finish(changed=True, previous_leader=info['leader'], leader=info['leader'],
                    candidate=candidate, scheduled=True, plan=plan, cluster=info)


def argument_spec():
    spec = patroni_argument_spec()
    spec.update(pgbouncer_argument_spec())
    spec.update(haproxy_stats_argument_spec())
    spec.update(
        candidate=dict(type='str'),
        max_lag=dict(type='int', default=1048576),
        allow_paused=dict(type='bool', default=False),
        sync_standby_timeout=dict(type='int', default=30),
        make_candidate_sync=dict(type='bool', default=True),
        switchover_timeout=dict(type='int', default=60),
        scheduled_at=dict(type='str'),
        pgbouncer_pause=dict(type='bool', default=False),
        pgbouncer_databases=dict(type='list', elements='str', default=['rtmx']),
        pgbouncer_pause_timeout=dict(type='int', default=15),
        haproxy_rw_backend=dict(type='str', default='postgres_rw'),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[('pgbouncer_sslmode', 'verify-ca', ['pgbouncer_sslrootcert']),
                     ('pgbouncer_sslmode', 'verify-full', ['pgbouncer_sslrootcert'])],
    )
    # Not required_if: it only asks whether an option was given, and pgbouncer_hosts always is
    # (default []); an empty list or an empty password must be refused too.
    if module.params['pgbouncer_pause'] and not (module.params['pgbouncer_hosts'] and module.params['pgbouncer_password']):
        module.fail_json(msg='pgbouncer_pause needs pgbouncer_hosts (one per lb) and pgbouncer_password')
    if module.params['pgbouncer_pause']:
        if not HAS_PSYCOPG:
            module.fail_json(msg=missing_required_lib('psycopg'), exception=PSYCOPG_IMPORT_ERROR)
        problem = libpq_problem()
        if problem:
            module.fail_json(msg='pgbouncer_pause needs psycopg: %s' % problem)
    for database in module.params['pgbouncer_databases']:
        if not re.match(r'^[A-Za-z0-9_]+$', database):
            module.fail_json(msg='pgbouncer_databases: %r is not a plain database name' % database)
    Switchover(module).run()


if __name__ == '__main__':
    main()
