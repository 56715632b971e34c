# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Patroni REST client and the decisions the modules take on its answers.

The decision functions are pure (dicts in, dicts out) so unit tests can feed
them recorded REST responses.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url


def patroni_argument_spec(required=True):
    """Options to reach the Patroni REST API, documented by the rtmx.ha.patroni doc fragment.

    With required=False (ha_verify) patroni_urls may be left out: it defaults to [] and Patroni
    is then not asked.
    """
    if required:
        urls = dict(type='list', elements='str', required=True)
    else:
        urls = dict(type='list', elements='str', default=[])
    return dict(
        patroni_urls=urls,
        patroni_username=dict(type='str', default='patroni'),
        patroni_password=dict(type='str', no_log=True),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        timeout=dict(type='int', default=5),
    )


LEADER_ROLES = ('leader', 'master', 'primary', 'standby_leader')


class PatroniError(Exception):
    """A Patroni REST call failed; the message says which member and why."""

    def __init__(self, msg, status=None, body=None):
        super(PatroniError, self).__init__(msg)
        self.status = status
        self.body = body


class PatroniClient(object):
    """Talks to the Patroni REST API of a set of members (any one answers for the cluster)."""

    def __init__(self, urls, username=None, password=None, timeout=5, validate_certs=True, ca_path=None):
        if not urls:
            raise PatroniError('patroni_urls is empty: give the REST URL of at least one member')
        self.urls = [u.rstrip('/') for u in urls]
        self.username = username
        self.password = password
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.ca_path = ca_path

    def request(self, base_url, path, method='GET', body=None, timeout=None):
        """Returns (status, parsed body). HTTP errors with a body are answers, not exceptions."""
        headers = {'Accept': 'application/json'}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers['Content-Type'] = 'application/json'
        if self.password is not None:
            token = '%s:%s' % (self.username or '', self.password)
            headers['Authorization'] = 'Basic ' + base64.b64encode(token.encode('utf-8')).decode('ascii')
        url = base_url + path
        try:
            response = open_url(url, method=method, data=data, headers=headers,
                                timeout=timeout or self.timeout, validate_certs=self.validate_certs,
                                ca_path=self.ca_path, follow_redirects='none')
            status, raw = response.getcode(), response.read()
        except HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read()
            except Exception:  # pylint: disable=broad-except
                raw = b''
        except (URLError, OSError, ValueError) as exc:
            raise PatroniError('Patroni REST API at %s is unreachable: %s' % (url, getattr(exc, 'reason', exc)))
        if status == 401:
            raise PatroniError('Patroni REST API at %s refused the credentials of user %r (HTTP 401): check '
                               'patroni_username/patroni_password' % (url, self.username), status=status)
        text = raw.decode('utf-8', 'replace') if raw else ''
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text.strip()
        return status, parsed

    def each_member(self, path, failure, method='GET', body=None, timeout=None, refusal=None):
        """Send one request to each member in turn until one answers; returns (base_url, status, body).

        A member that is unreachable, or whose answer refusal(url, status, body) explains away
        (it returns why, or None to take the answer), leaves the request to the next member. A 401
        ends it at once: every member checks the same credentials. When none answers, raises
        PatroniError with `failure` and what each member did.
        """
        errors = []
        for url in self.urls:
            try:
                status, answer = self.request(url, path, method=method, body=body, timeout=timeout)
            except PatroniError as exc:
                if exc.status == 401:
                    raise
                errors.append(str(exc))
                continue
            why = refusal(url, status, answer) if refusal else None
            if why is None:
                return url, status, answer
            errors.append(why)
        raise PatroniError('%s: %s' % (failure, '; '.join(errors)))

    def first_answer(self, path):
        """GET path from the first member that answers; returns (base_url, body)."""
        def refusal(url, status, body):
            if status == 200 and isinstance(body, dict):
                return None
            return '%s%s answered HTTP %s' % (url, path, status)
        url, dummy, body = self.each_member(path, 'no Patroni member answered %s' % path, refusal=refusal)
        return url, body

    def cluster(self):
        return self.first_answer('/cluster')[1]

    def config(self):
        return self.first_answer('/config')[1]

    def member_status(self, base_url):
        """GET /patroni of one member (its replication list when leader); None if unreachable."""
        try:
            status, body = self.request(base_url.rstrip('/'), '/patroni')
        except PatroniError as exc:
            if exc.status == 401:
                raise
            return None
        return body if isinstance(body, dict) else None

    def is_primary(self, base_url):
        """True when GET /primary on that member answers 200 (it runs as a writable primary)."""
        try:
            status, dummy = self.request(base_url.rstrip('/'), '/primary')
        except PatroniError as exc:
            if exc.status == 401:
                raise
            return False
        return status == 200

    def patch_config(self, changes):
        """PATCH /config (dynamic configuration in the DCS); returns the new configuration."""
        def refusal(url, status, body):
            return None if status == 200 else '%s answered HTTP %s: %s' % (url, status, body)
        return self.each_member('/config', 'no Patroni member accepted PATCH /config %s' % (changes,),
                                method='PATCH', body=changes, refusal=refusal)[2]

    def check_credentials(self):
        """Raise PatroniError when the REST API refuses our credentials, without changing anything.

        GET endpoints are open, so they cannot tell; POST /switchover with an empty
        body is checked for authentication first and then refused as incomplete (400).
        """
        self.each_member('/switchover', 'no Patroni member answered', method='POST', body={})

    def switchover(self, leader, candidate=None, scheduled_at=None, timeout=60):
        body = {'leader': leader}
        if candidate:
            body['candidate'] = candidate
        if scheduled_at:
            body['scheduled_at'] = scheduled_at
        dummy, status, answer = self.each_member('/switchover', 'no Patroni member accepted POST /switchover',
                                                 method='POST', body=body, timeout=timeout)
        return status, answer


def member_api_base(member):
    """The member's REST base URL (api_url ends in /patroni)."""
    url = member.get('api_url') or ''
    return url[:-len('/patroni')] if url.endswith('/patroni') else url


def describe_cluster(cluster, leader_status=None, config=None):
    """Flatten /cluster (+ the leader's /patroni and /config) into what an operator reads.

    leader_status is the leader's GET /patroni body: its `replication` list says
    which replicas stream from it (Patroni 3.0 reports replicas as `running`).
    """
    members = cluster.get('members') or []
    leaders = [m for m in members if m.get('role') in LEADER_ROLES]
    leader = leaders[0] if len(leaders) == 1 else None
    streaming = {}
    for entry in (leader_status or {}).get('replication') or []:
        streaming[entry.get('application_name')] = entry
    config = config or {}
    out_members = []
    for m in members:
        name = m.get('name')
        lag = m.get('lag')
        replication = streaming.get(name)
        out_members.append({
            'name': name,
            'role': m.get('role'),
            'state': m.get('state'),
            'host': m.get('host'),
            'port': m.get('port'),
            'api_url': m.get('api_url'),
            'timeline': m.get('timeline'),
            'lag': lag if isinstance(lag, int) else None,
            'streaming': bool(replication and replication.get('state') == 'streaming'),
            'sync_state': replication.get('sync_state') if replication else None,
            'pending_restart': bool(m.get('pending_restart')),
            'nofailover': bool((m.get('tags') or {}).get('nofailover')),
        })
    leader_tl = leader.get('timeline') if leader else None
    return {
        'leader': leader.get('name') if leader else None,
        'leaders': [m.get('name') for m in leaders],
        'timeline': leader_tl,
        'members': out_members,
        'sync_standbys': [m['name'] for m in out_members if m['role'] == 'sync_standby'],
        'paused': bool(cluster.get('pause')),
        'scheduled_switchover': cluster.get('scheduled_switchover'),
        'synchronous_mode': bool(config.get('synchronous_mode')),
        'synchronous_mode_strict': bool(config.get('synchronous_mode_strict')),
        'synchronous_node_count': config.get('synchronous_node_count'),
        'pending_restart': [m['name'] for m in out_members if m['pending_restart']],
    }


def replica_problems(info, member, max_lag):
    """Why this replica may not take over (empty list: it may)."""
    problems = []
    if member['state'] not in ('running', 'streaming'):
        problems.append('state is %r, not running' % member['state'])
    if not member['streaming']:
        problems.append('it is not streaming from leader %s' % info['leader'])
    if info['timeline'] is not None and member['timeline'] != info['timeline']:
        problems.append('it is on timeline %s, the leader on %s' % (member['timeline'], info['timeline']))
    if member['lag'] is None:
        problems.append('its lag is unknown')
    elif member['lag'] > max_lag:
        problems.append('it lags %d bytes behind, more than max_lag %d' % (member['lag'], max_lag))
    if member['nofailover']:
        problems.append('it is tagged nofailover')
    return problems


def plan_switchover(info, candidate=None, max_lag=1048576, allow_paused=False):
    """Decide a switchover. Returns a dict with `action` one of:

    - 'none': candidate already leads (idempotent no-op);
    - 'switchover': go, with `leader` and `candidate`;
    - 'refuse': with `reasons` (each precondition that failed, named);
    - 'wait_sync': synchronous mode without an eligible sync standby yet;
    - 'make_sync': synchronous mode, the named candidate is healthy but not
      the sync standby (the caller may widen synchronous_node_count).
    """
    names = [m['name'] for m in info['members']]
    if candidate and candidate not in names:
        return {'action': 'refuse', 'reasons': [
            'candidate %r is not a member of the cluster; members are: %s' % (candidate, ', '.join(sorted(names)))]}
    if len(info['leaders']) != 1:
        return {'action': 'refuse', 'reasons': [
            'the cluster has %d leaders (%s); a switchover needs exactly one: wait for Patroni to elect one '
            'or fix the cluster first' % (len(info['leaders']), ', '.join(info['leaders']) or 'none')]}
    leader = info['leader']
    if candidate == leader:
        return {'action': 'none', 'leader': leader, 'candidate': candidate}
    if info['paused'] and not allow_paused:
        return {'action': 'refuse', 'reasons': [
            'the cluster is in maintenance mode (paused): resume it with `patronictl resume` or pass allow_paused=true']}
    replicas = [m for m in info['members'] if m['name'] != leader]
    if candidate:
        pool = [m for m in replicas if m['name'] == candidate]
    else:
        pool = replicas
    if not pool:
        return {'action': 'refuse', 'reasons': ['the cluster has no replica to switch over to']}
    rejected = {}
    eligible = []
    for m in pool:
        problems = replica_problems(info, m, max_lag)
        if info['synchronous_mode'] and m['role'] != 'sync_standby':
            problems.append('synchronous mode is on and it is not the sync standby (sync standby: %s)'
                            % (', '.join(info['sync_standbys']) or 'none'))
        if problems:
            rejected[m['name']] = problems
        else:
            eligible.append(m)
    if not eligible:
        only_sync_missing = all(
            len(p) == 1 and p[0].startswith('synchronous mode is on') for p in rejected.values())
        if info['synchronous_mode'] and not info['sync_standbys'] and only_sync_missing:
            return {'action': 'wait_sync', 'leader': leader, 'rejected': rejected}
        if candidate and only_sync_missing:
            return {'action': 'make_sync', 'leader': leader, 'candidate': candidate, 'rejected': rejected}
        reasons = ['%s: %s' % (name, '; '.join(p)) for name, p in sorted(rejected.items())]
        return {'action': 'refuse', 'reasons': reasons, 'rejected': rejected}
    # Best candidate: least lag, then name, so the choice is stable.
    best = sorted(eligible, key=lambda m: (m['lag'], m['name']))[0]
    return {'action': 'switchover', 'leader': leader, 'candidate': best['name'], 'rejected': rejected}


def health_problems(info, max_lag):
    """Whole-cluster checks used by ha_verify: one leader, replicas streaming on its timeline."""
    problems = []
    if len(info['leaders']) != 1:
        problems.append('expected exactly one Patroni leader, found %d (%s)'
                        % (len(info['leaders']), ', '.join(info['leaders']) or 'none'))
        return problems
    for m in info['members']:
        if m['name'] == info['leader']:
            if m['state'] != 'running':
                problems.append('leader %s is in state %r' % (m['name'], m['state']))
            continue
        for p in replica_problems(info, m, max_lag):
            if p != 'it is tagged nofailover':
                problems.append('replica %s: %s' % (m['name'], p))
    if info['synchronous_mode'] and len(info['members']) > 1 and not info['sync_standbys']:
        problems.append('synchronous mode is on but no member is the sync standby')
    if info['paused']:
        problems.append('the cluster is paused (maintenance mode): automatic failover is off')
    return problems


def read_cluster(client):
    """GET /cluster, /config and the leader's /patroni, combined by describe_cluster()."""
    cluster = client.cluster()
    try:
        config = client.config()
    except PatroniError as exc:
        if exc.status == 401:
            raise
        config = {}
    leader_status = None
    leaders = [m for m in cluster.get('members') or [] if m.get('role') in LEADER_ROLES]
    if len(leaders) == 1:
        leader_status = client.member_status(member_api_base(leaders[0]))
    return describe_cluster(cluster, leader_status, config)
