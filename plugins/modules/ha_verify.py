#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ha_verify
short_description: Verify the whole RTMX HA stack after a deployment, switchover or failover
version_added: 0.1.0
description:
  - Runs every check whose inputs are given and fails listing every check that failed.
  - C(patroni_leader) exactly one Patroni leader; C(patroni_replicas) every other member streams
    from it on its timeline within I(max_lag), a sync standby exists in synchronous mode, the
    cluster is not paused.
  - C(postgres_write) a write through I(pg_host) (the VIP, PgBouncer) commits, on the leader
    (C(inet_server_addr()) is the leader's address and it is not in recovery).
  - C(redis_sentinels) every Sentinel answers and names the same master, C(CKQUORUM) passes, no
    node contradicts them; C(redis_write) a key written through I(redis_host) (the VIP) is read
    back from that master directly.
  - C(haproxy_routing) every HAProxy sends writes to the Patroni leader alone, Redis to the
    Sentinels' master alone, and has every sync server UP.
  - C(sync_servers) every sync server's C(/health) answers 200 (it serves) with status C(ok) (its Redis and
    PostgreSQL answer; C(degraded) names the one that does not).
  - C(api_servers) every RTMX API instance's C(/health) (I(api_health_urls)) answers 200 with status C(ok) (it
    loaded the RTM database); every HAProxy has every server of I(haproxy_api_backend) UP, as many as
    I(api_health_urls); C(GET /health) through the VIP (I(api_url)) answers 200.
  - C(etcd) every etcd member's C(/health) says healthy (Patroni's DCS; a lost member
    changes nothing else visible until quorum is lost).
  - C(vip) exactly one lb holds the VIP (from I(vip_holders), which the caller gathers on the lbs).
  - C(backup) the pgBackRest repository (I(backup_info), which the caller reads on the backup host with
    C(pgbackrest --output=json info)) has the stanza I(backup_stanza) in order and a full or differential backup
    newer than I(backup_max_age); with I(pg_host), the primary's WAL archiver (C(pg_stat_archiver), read through
    I(pg_host)) did not fail its last attempt. The detail gives the newest backup's age and the last archived WAL
    and its age.
  - C(monitoring) every scrape target of Prometheus (I(prometheus_url)) is up and no critical alert fires,
    besides I(monitoring_ignore_alerts) (the alerts that report a failover that already happened, and the error
    budget's fast burn); those and firing warnings are listed in the detail without failing the check.
  - With I(wait_timeout), repeats until all checks pass or the time is up, so it also measures
    how long the stack takes to be whole again after a fault.
options:
  patroni_urls:
    description: REST base URLs of the Patroni members. Enables the Patroni checks.
    required: false
    default: []
  validate_certs:
    description: Verify TLS certificates of C(https) URLs.
  ca_path:
    description: CA bundle for C(https) URLs.
  max_lag:
    description: Largest replication lag in bytes a replica may have.
    type: int
    default: 1048576
  pg_host:
    description: Where applications write (the VIP). Enables C(postgres_write).
    type: str
  pg_port:
    description: Port of I(pg_host) (PgBouncer).
    type: int
    default: 6432
  pg_database:
    description: Database to write to.
    type: str
    default: rtmx
  pg_user:
    description: User that writes.
    type: str
    default: rtmx
  pg_password:
    description: Password of I(pg_user).
    type: str
  pg_sslmode:
    description:
      - TLS towards I(pg_host), as libpq's C(sslmode). C(prefer) uses TLS when the server offers
        it and C(require) insists on it, neither verifies the certificate; C(verify-ca) verifies it
        against I(pg_sslrootcert), C(verify-full) also checks that it names I(pg_host).
      - Whatever the mode, the password is only ever used for SCRAM-SHA-256, which also proves
        that the server knows it; a server asking for anything else is refused.
    type: str
    default: prefer
    choices: [disable, prefer, require, verify-ca, verify-full]
  pg_sslrootcert:
    description:
      - CA certificate file (PEM) that signed the certificate of I(pg_host), on the host running
        the module. Required with I(pg_sslmode=verify-ca) or I(pg_sslmode=verify-full); C(system)
        takes the system's trusted CAs (with C(verify-full) only).
    type: path
  pg_write_table:
    description: Table (created when missing) holding the single row the check upserts.
    type: str
    default: rtmx_ha_verify
  sentinels:
    description: Sentinel addresses C(host:port). Enables C(redis_sentinels).
    required: false
    default: []
  redis_password:
    description: Password of the Redis nodes; when given, each node's own role is checked too.
  redis_host:
    description: Where applications reach Redis (the VIP). Enables C(redis_write), with I(sentinels).
    type: str
  redis_port:
    description: Port of I(redis_host).
    type: int
    default: 6379
  haproxy_stats_urls:
    description: HAProxy statistics pages, one per lb. Enables C(haproxy_routing).
  haproxy_pg_backend:
    description: HAProxy's read-write PostgreSQL backend.
    type: str
    default: postgres_rw
  haproxy_redis_backend:
    description: HAProxy's Redis backend.
    type: str
    default: redis
  haproxy_sync_backend:
    description: HAProxy's sync server backend; an empty string skips it.
    type: str
    default: sync_servers
  sync_health_urls:
    description: The C(/health) URL of every sync server. Enables C(sync_servers).
    type: list
    elements: str
    default: []
  api_url:
    description:
      - The RTMX dashboard and API through the VIP (C(http://10.0.0.100:80)). Enables C(api_servers), which then
        asks C(GET /health) through it.
    type: str
  api_health_urls:
    description: The C(/health) URL of every RTMX API instance. Enables C(api_servers).
    type: list
    elements: str
    default: []
  haproxy_api_backend:
    description:
      - HAProxy's API backend; with I(haproxy_stats_urls), C(api_servers) asks every HAProxy that its servers are
        all UP. An empty string skips that part.
    type: str
    default: api_servers
  etcd_urls:
    description: Client URLs of the etcd members (C(http://10.0.0.11:2379)). Enables C(etcd).
    type: list
    elements: str
    default: []
  vip_holders:
    description:
      - Names of the lbs that hold the VIP now (gathered on each lb, for example with
        C(ip -o addr show to VIP)). Enables C(vip).
    type: list
    elements: str
  prometheus_url:
    description:
      - Base URL of Prometheus (rtmx.ha.prometheus, for example C(http://10.0.0.41:9090)). Enables C(monitoring),
        which reads C(/api/v1/targets) and C(/api/v1/alerts).
    type: str
  prometheus_username:
    description: User of Prometheus' basic authentication.
    type: str
    default: admin
  prometheus_password:
    description: Password of I(prometheus_username) (C(monitoring_admin_password) of the collection's secrets).
    type: str
  backup_info:
    description:
      - What C(pgbackrest --stanza=STANZA --output=json info) answered on the repository host (the parsed JSON list,
        or its text), or a dict with the key C(error) (the message) when it failed. Enables C(backup).
    type: raw
  backup_stanza:
    description: The stanza of the cluster (rtmx.ha.pgbackrest's pgbackrest_stanza).
    type: str
    default: rtmx
  backup_max_age:
    description: Seconds beyond which the newest full or differential backup is too old.
    type: int
    default: 93600
  monitoring_ignore_alerts:
    description:
      - Critical alerts that do not fail C(monitoring). By default the ones that announce a failover that already
        happened (they fire for a minute after it, whatever the state of the stack now), and the fast burn of the
        error budget, which looks back an hour (it counts past outages, so it is listed while the stack may be whole).
    type: list
    elements: str
    default: [RtmxPatroniFailover, RtmxRedisMasterChanged, RtmxVipMoved, RtmxErrorBudgetBurnFast]
  timeout:
    description: Seconds to wait for each call.
    type: int
    default: 5
  wait_timeout:
    description: Seconds to keep repeating the checks until they all pass; 0 checks once.
    type: int
    default: 0
attributes:
  check_mode:
    support: partial
    details:
      - Runs every check that only reads. The writes are not made, so C(postgres_write) only asks
        which server answers through I(pg_host) and whether it is in recovery, and C(redis_write)
        is reported as passed without writing or reading its key.
  diff_mode:
    support: none
  platform:
    platforms: posix
  action_group:
    membership: [rtmx.ha.ha, rtmx.ha.patroni, rtmx.ha.sentinel, rtmx.ha.haproxy]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - rtmx.ha.patroni
  - rtmx.ha.sentinel
  - rtmx.ha.haproxy_stats
author:
  - RTMX HA maintainers (@rtmx-ha)
requirements:
  - psycopg >= 3.1 with libpq >= 16 (C(psycopg[binary]) bundles one), for C(postgres_write)
  - redis >= 5 (redis-py), for C(redis_sentinels) and C(redis_write)
notes:
  - Connects to PostgreSQL/PgBouncer with SCRAM-SHA-256 only (libpq's C(require_auth)); a server
    that asks for an MD5 or cleartext password, or for none, fails C(postgres_write).
  - Writes one row to I(pg_write_table) and one short-lived key (C(rtmx:ha_verify:*), expires
    after 60 s) to Redis each time it checks. In check mode it skips these writes and runs the rest.
seealso:
  - module: rtmx.ha.patroni_info
  - module: rtmx.ha.sentinel_info
'''

EXAMPLES = r'''
- name: Verify the stack, waiting up to two minutes for it to be whole
  rtmx.ha.ha_verify:
    patroni_urls: [http://10.0.0.11:8008, http://10.0.0.12:8008, http://10.0.0.13:8008]
    patroni_password: "{{ patroni_restapi_password }}"
    pg_host: 10.0.0.100
    pg_password: "{{ postgres_rtmx_password }}"
    sentinels: [10.0.0.11:26379, 10.0.0.12:26379, 10.0.0.13:26379]
    sentinel_password: "{{ redis_sentinel_password }}"
    redis_password: "{{ redis_password }}"
    redis_host: 10.0.0.100
    haproxy_stats_urls: [http://10.0.0.31:7000/, http://10.0.0.32:7000/]
    haproxy_stats_password: "{{ haproxy_stats_password }}"
    sync_health_urls: [http://10.0.0.21:8765/health, http://10.0.0.22:8765/health]
    api_url: http://10.0.0.100:80
    api_health_urls: [http://10.0.0.21:8000/health, http://10.0.0.22:8000/health]
    etcd_urls: [http://10.0.0.11:2379, http://10.0.0.12:2379, http://10.0.0.13:2379]
    prometheus_url: http://10.0.0.41:9090
    prometheus_password: "{{ monitoring_admin_password }}"
    backup_info: "{{ pgbackrest_info.stdout | from_json }}"
    vip_holders: "{{ vip_holders }}"
    wait_timeout: 120
  delegate_to: localhost
  run_once: true
  register: verify
'''

RETURN = r'''
ok:
  description: Every check passed.
  returned: always
  type: bool
  sample: true
checks:
  description: Every check that ran, in order, with its verdict and what it found.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: patroni_leader, ok: true, detail: pg2 leads on timeline 4}
    - {name: etcd, ok: true, detail: 3 etcd members healthy}
    - {name: vip, ok: false, detail: '2 lbs hold the VIP: lb1, lb2'}
    - {name: monitoring, ok: true, detail: 'every target of 41 up, no critical alert firing'}
    - {name: backup, ok: true, detail: 'stanza rtmx ok: newest backup diff 20261124-010433D, 3.1 h old (2 full, 3 diff kept);
       last WAL 00000003000000000000001A archived 12 s ago'}
failed_checks:
  description: Names of the checks that failed.
  returned: always
  type: list
  elements: str
  sample: []
elapsed:
  description: Seconds until the checks passed (or until giving up).
  returned: always
  type: float
  sample: 0.42
attempts:
  description: How many rounds of checks ran.
  returned: always
  type: int
  sample: 1
report:
  description: What the checks read, to log or compare (Patroni cluster, Redis view, HAProxy routing).
  returned: always
  type: dict
  sample: {patroni: {leader: pg2}, redis: {master: 10.0.0.12:6379}, haproxy: {}}
'''

import json
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url
from ansible_collections.rtmx.ha.plugins.module_utils.haproxy_stats import (
    down_servers, haproxy_stats_argument_spec, routing_problems)
from ansible_collections.rtmx.ha.plugins.module_utils.patroni import (
    PatroniClient, PatroniError, health_problems as patroni_problems, patroni_argument_spec, read_cluster)
from ansible_collections.rtmx.ha.plugins.module_utils.pgwire import (
    HAS_PSYCOPG, PSYCOPG_IMPORT_ERROR, SSLMODES, PgConnection, PgError, libpq_problem, quote_ident)
from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import (
    HAS_REDIS, REDIS_IMPORT_ERROR, RedisConnection, RedisError, read_redis, redis_problem, sentinel_argument_spec,
    split_address)
from ansible_collections.rtmx.ha.plugins.module_utils.timing import Stopwatch


class Verifier(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.checks = []
        self.report = {}

    def check(self, name, ok, detail):
        self.checks.append({'name': name, 'ok': bool(ok), 'detail': detail})

    def patroni(self):
        p = self.p
        client = PatroniClient(p['patroni_urls'], p['patroni_username'], p['patroni_password'], p['timeout'],
                               p['validate_certs'], p['ca_path'])
        try:
            info = read_cluster(client)
        except PatroniError as exc:
            self.check('patroni_leader', False, str(exc))
            return None
        self.report['patroni'] = info
        problems = patroni_problems(info, p['max_lag'])
        if len(info['leaders']) != 1:
            self.check('patroni_leader', False, problems[0])
            return None
        self.check('patroni_leader', True, '%s leads on timeline %s' % (info['leader'], info['timeline']))
        replicas = [m['name'] for m in info['members'] if m['name'] != info['leader']]
        self.check('patroni_replicas', not problems, '; '.join(problems) or
                   '%s stream on timeline %s' % (', '.join(replicas) or 'no replica', info['timeline']))
        return info

    def postgres_write(self, info):
        p = self.p
        table = quote_ident(p['pg_write_table'])
        sql = ('BEGIN; CREATE TABLE IF NOT EXISTS %s (id int PRIMARY KEY, checked_at timestamptz NOT NULL, '
               'checked_by text NOT NULL); '
               "INSERT INTO %s (id, checked_at, checked_by) VALUES (1, now(), current_setting('application_name')) "
               'ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at, checked_by = excluded.checked_by; '
               'SELECT host(inet_server_addr()) AS server, pg_is_in_recovery()::text AS recovery; COMMIT;'
               % (table, table))
        try:
            with PgConnection(p['pg_host'], p['pg_port'], p['pg_user'], p['pg_password'], p['pg_database'],
                              timeout=p['timeout'], sslmode=p['pg_sslmode'], sslrootcert=p['pg_sslrootcert'],
                              application_name='rtmx.ha.ha_verify') as conn:
                if self.module.check_mode:
                    rows = conn.query('SELECT host(inet_server_addr()) AS server, pg_is_in_recovery()::text AS recovery')
                else:
                    rows = conn.query(sql)
        except PgError as exc:
            hint = ''
            if exc.sqlstate in ('42703', '42601', '42804', '23502'):
                hint = ' (table %s exists with another layout: set pg_write_table to an unused name)' % p['pg_write_table']
            self.check('postgres_write', False, 'write through %s:%s failed: %s%s' % (p['pg_host'], p['pg_port'], exc, hint))
            return
        server = rows[0]['server'] if rows else None
        leader_host = None
        if info:
            leader_host = [m['host'] for m in info['members'] if m['name'] == info['leader']][0]
        recovery = rows[0]['recovery'] if rows else None
        if recovery != 'false':
            self.check('postgres_write', False, 'the write through %s:%s reached %s, which is in recovery'
                       % (p['pg_host'], p['pg_port'], server))
        elif leader_host and server != leader_host:
            self.check('postgres_write', False, 'the write through %s:%s landed on %s, not on the leader %s (%s)'
                       % (p['pg_host'], p['pg_port'], server, info['leader'], leader_host))
        else:
            self.check('postgres_write', True, 'committed through %s:%s on %s' % (p['pg_host'], p['pg_port'], server))

    def redis(self):
        p = self.p
        state = read_redis(p['sentinels'], p['sentinel_password'], p['master_name'], p['redis_password'], p['timeout'])
        self.report['redis'] = state
        self.check('redis_sentinels', not state['problems'], '; '.join(state['problems']) or
                   '%d Sentinels name %s' % (state['sentinels_total'], state['master']))
        if p['redis_host'] and state['master']:
            self.redis_write(state['master'])
        return state

    def redis_write(self, master):
        p = self.p
        key = 'rtmx:ha_verify:%s' % os.getpid()
        value = '%s-%s' % (time.time(), os.urandom(4).hex())
        try:
            if not self.module.check_mode:
                with RedisConnection(p['redis_host'], p['redis_port'], p['redis_password'], p['timeout']) as conn:
                    conn.command('SET', key, value, 'EX', 60)
                host, port = split_address(master, 6379)
                with RedisConnection(host, port, p['redis_password'], p['timeout']) as conn:
                    seen = conn.command('GET', key)
            else:
                seen = value
        except RedisError as exc:
            self.check('redis_write', False, 'write through %s:%s failed: %s' % (p['redis_host'], p['redis_port'], exc))
            return
        self.check('redis_write', seen == value, 'a key written through %s:%s %s on the master %s'
                   % (p['redis_host'], p['redis_port'], 'was read back' if seen == value else 'is missing', master))

    def haproxy(self, info, redis_state):
        p = self.p
        routes = []
        if info and info['leader']:
            leader = [m for m in info['members'] if m['name'] == info['leader']][0]
            routes.append((p['haproxy_pg_backend'], '%s:%s' % (leader['host'], leader['port'] or 5432)))
        if redis_state and redis_state['master']:
            routes.append((p['haproxy_redis_backend'], redis_state['master']))

        def sync_servers_up(stats):
            if not p['haproxy_sync_backend']:
                return []
            if p['haproxy_sync_backend'] not in stats:
                return ['backend %s is missing' % p['haproxy_sync_backend']]
            down = down_servers(stats, p['haproxy_sync_backend'])
            if down:
                return ['sync servers not UP: %s' % ', '.join('%s (%s)' % i for i in sorted(down.items()))]
            return []

        problems, self.report['haproxy'] = routing_problems(
            p['haproxy_stats_urls'], p['haproxy_stats_username'], p['haproxy_stats_password'], p['timeout'],
            routes, also=sync_servers_up)
        self.check('haproxy_routing', not problems, '; '.join(problems) or
                   'every HAProxy routes writes to the leader, Redis to the master, and has every sync server UP')

    def sync_servers(self):
        p = self.p
        problems = []
        for url in p['sync_health_urls']:
            try:
                answer = open_url(url, timeout=p['timeout'], validate_certs=p['validate_certs'], ca_path=p['ca_path'])
                status, body = answer.getcode(), answer.read()
            except HTTPError as exc:
                status, body = exc.code, exc.read()
            except (URLError, OSError, ValueError) as exc:
                problems.append('%s unreachable: %s' % (url, getattr(exc, 'reason', exc)))
                continue
            problems.extend(sync_health_problems(url, status, body))
        self.check('sync_servers', not problems, '; '.join(problems) or
                   '%d sync servers serving, their Redis and PostgreSQL ok' % len(p['sync_health_urls']))

    def get(self, url):
        """(status, body) of a GET; status None and the reason as body when the URL does not answer."""
        p = self.p
        try:
            answer = open_url(url, timeout=p['timeout'], validate_certs=p['validate_certs'], ca_path=p['ca_path'])
            return answer.getcode(), answer.read()
        except HTTPError as exc:
            return exc.code, exc.read()
        except (URLError, OSError, ValueError) as exc:
            return None, str(getattr(exc, 'reason', exc))

    def api_servers(self):
        p = self.p
        problems = []
        for url in p['api_health_urls']:
            status, body = self.get(url)
            problems.extend(api_health_problems(url, status, body))
        if p['haproxy_stats_urls'] and p['haproxy_api_backend']:
            pages = self.report.get('haproxy')
            if pages is None:
                pages = routing_problems(p['haproxy_stats_urls'], p['haproxy_stats_username'],
                                         p['haproxy_stats_password'], p['timeout'], [])[1]
            for url in p['haproxy_stats_urls']:
                if url not in pages:
                    problems.append('%s: statistics unreadable' % url)
                    continue
                problems.extend('%s: %s' % (url, problem) for problem in api_backend_problems(
                    pages[url], p['haproxy_api_backend'], len(p['api_health_urls']) or None))
        if p['api_url']:
            url = p['api_url'].rstrip('/') + '/health'
            status, body = self.get(url)
            problems.extend('through the VIP: %s' % problem for problem in api_health_problems(url, status, body))
        self.check('api_servers', not problems, '; '.join(problems) or
                   '%d API instances serving%s%s' % (
                       len(p['api_health_urls']), ', all UP in HAProxy' if p['haproxy_stats_urls'] else '',
                       ', /health through %s answers 200' % p['api_url'] if p['api_url'] else ''))

    def etcd(self):
        p = self.p
        problems = []
        for url in p['etcd_urls']:
            try:
                answer = open_url(url.rstrip('/') + '/health', timeout=p['timeout'], validate_certs=p['validate_certs'],
                                  ca_path=p['ca_path'])
                health = json.loads(answer.read().decode('utf-8') or '{}').get('health')
            except HTTPError as exc:
                health = 'HTTP %s' % exc.code
            except (URLError, OSError, ValueError) as exc:
                problems.append('%s unreachable: %s' % (url, getattr(exc, 'reason', exc)))
                continue
            if str(health).lower() != 'true':
                problems.append('%s reports health=%s' % (url, health))
        self.check('etcd', not problems, '; '.join(problems) or '%d etcd members healthy' % len(p['etcd_urls']))

    def monitoring(self):
        p = self.p
        base = p['prometheus_url'].rstrip('/')
        answers = {}
        for what in ('targets', 'alerts'):
            url = '%s/api/v1/%s' % (base, what + ('?state=active' if what == 'targets' else ''))
            try:
                answer = open_url(url, timeout=p['timeout'], validate_certs=p['validate_certs'], ca_path=p['ca_path'],
                                  url_username=p['prometheus_username'], url_password=p['prometheus_password'],
                                  force_basic_auth=bool(p['prometheus_password']))
                answers[what] = json.loads(answer.read().decode('utf-8'))
            except HTTPError as exc:
                self.check('monitoring', False, '%s answered HTTP %s' % (url, exc.code))
                return
            except (URLError, OSError, ValueError) as exc:
                self.check('monitoring', False, '%s unreachable: %s' % (url, getattr(exc, 'reason', exc)))
                return
        problems, detail, report = monitoring_problems(answers['targets'], answers['alerts'],
                                                       p['monitoring_ignore_alerts'])
        self.report['monitoring'] = report
        self.check('monitoring', not problems, '; '.join(problems) or detail)

    def backup(self):
        p = self.p
        archiver = None
        if p['pg_host']:
            sql = ("SELECT last_archived_wal, "
                   "extract(epoch FROM now() - last_archived_time)::float8::text AS last_archived_age, "
                   "(last_failed_time IS NOT NULL AND (last_archived_time IS NULL "
                   "OR last_failed_time > last_archived_time))::text AS failing, "
                   "failed_count::text AS failed_count, last_failed_wal FROM pg_stat_archiver")
            try:
                with PgConnection(p['pg_host'], p['pg_port'], p['pg_user'], p['pg_password'], p['pg_database'],
                                  timeout=p['timeout'], sslmode=p['pg_sslmode'], sslrootcert=p['pg_sslrootcert'],
                                  application_name='rtmx.ha.ha_verify') as conn:
                    rows = conn.query(sql)
                archiver = rows[0] if rows else {}
            except PgError as exc:
                archiver = {'error': str(exc)}
        problems, detail, report = backup_problems(p['backup_info'], p['backup_stanza'], time.time(),
                                                   p['backup_max_age'], archiver)
        self.report['backup'] = report
        self.check('backup', not problems, '; '.join(problems) or detail)

    def vip(self):
        holders = self.p['vip_holders']
        self.check('vip', len(holders) == 1, '%d lbs hold the VIP%s' % (
            len(holders), (': ' + ', '.join(holders)) if holders else ''))

    def run_once(self):
        p = self.p
        self.checks, self.report = [], {}
        info = self.patroni() if p['patroni_urls'] else None
        if p['pg_host']:
            self.postgres_write(info)
        redis_state = self.redis() if p['sentinels'] else None
        if p['haproxy_stats_urls']:
            self.haproxy(info, redis_state)
        if p['sync_health_urls']:
            self.sync_servers()
        if p['api_url'] or p['api_health_urls']:
            self.api_servers()
        if p['etcd_urls']:
            self.etcd()
        if p['vip_holders'] is not None:
            self.vip()
        if p['backup_info'] is not None:
            self.backup()
        if p['prometheus_url']:
            self.monitoring()
        return [c['name'] for c in self.checks if not c['ok']]


def sync_health_problems(url, status, body):
    """A sync server's /health: 200 while it serves; its body says whether Redis and PostgreSQL answer
    ("degraded" when one does not: it still serves, buffering, but the stack is not whole)."""
    try:
        health = json.loads(body or b'{}')
    except ValueError:
        health = {}
    if status != 200:
        return ['%s answered HTTP %s (%s)' % (url, status, health.get('status', 'no JSON body'))]
    if health.get('status') != 'ok':
        failing = dict((k, v) for k, v in (health.get('checks') or {}).items() if v != 'ok')
        return ['%s is %s: %s' % (url, health.get('status'), failing or health)]
    return []


def api_health_problems(url, status, body):
    """An API instance's /health (or the VIP's): 200 with status ok while it serves (it loaded the RTM
    database); 503 with the reason otherwise; None when it did not answer (body says why)."""
    if status is None:
        return ['%s unreachable: %s' % (url, body)]
    try:
        health = json.loads(body or b'{}')
    except ValueError:
        health = {}
    if not isinstance(health, dict):
        health = {}
    if status != 200 or health.get('status') != 'ok':
        return ['%s answered HTTP %s (%s)' % (url, status, health.get('reason') or health.get('status') or 'no JSON body')]
    return []


def api_backend_problems(stats, backend, expected=None):
    """HAProxy's API backend on one lb: present, every server UP, and `expected` servers when given."""
    if backend not in stats:
        return ['backend %s is missing (known: %s)' % (backend, ', '.join(sorted(stats)))]
    problems = []
    down = down_servers(stats, backend)
    if down:
        problems.append('API instances not UP: %s' % ', '.join('%s (%s)' % i for i in sorted(down.items())))
    if expected is not None and len(stats[backend]) != expected:
        problems.append('backend %s has %d servers, %d API instances expected' % (backend, len(stats[backend]), expected))
    return problems


def monitoring_problems(targets, alerts, ignore=()):
    """What Prometheus' /api/v1/targets and /api/v1/alerts answers say is wrong: a scrape target not up, a
    critical alert firing (besides `ignore`). Returns (problems, detail when there is none, report)."""
    active = (targets.get('data') or {}).get('activeTargets') or []
    down = []
    for target in active:
        if target.get('health') != 'up':
            labels = target.get('labels') or {}
            down.append('%s/%s %s%s' % (labels.get('job', '?'), labels.get('instance', target.get('scrapeUrl', '?')),
                                        target.get('health', 'unknown'),
                                        (' (%s)' % target['lastError']) if target.get('lastError') else ''))
    firing = [alert for alert in (alerts.get('data') or {}).get('alerts') or [] if alert.get('state') == 'firing']

    def name(alert):
        labels = alert.get('labels') or {}
        where = labels.get('instance') or labels.get('proxy') or labels.get('scope') or labels.get('service')
        return labels.get('alertname', '?') + ('(%s)' % where if where else '')

    critical = [alert for alert in firing if (alert.get('labels') or {}).get('severity') == 'critical']
    paging = [alert for alert in critical if (alert.get('labels') or {}).get('alertname') not in ignore]
    others = [alert for alert in firing if alert not in paging]
    problems = []
    if not active:
        problems.append('Prometheus has no active scrape target')
    if down:
        problems.append('%d of %d targets not up: %s' % (len(down), len(active), ', '.join(sorted(down))))
    if paging:
        problems.append('critical alerts firing: %s' % ', '.join(sorted(name(alert) for alert in paging)))
    detail = 'every target of %d up, no critical alert firing' % len(active)
    if others:
        detail += ' (also firing: %s)' % ', '.join(sorted(name(alert) for alert in others))
    report = {'targets': len(active), 'down': sorted(down), 'firing': sorted(name(alert) for alert in firing)}
    return problems, detail, report


def _hours(seconds):
    return '%.1f h' % (seconds / 3600.0) if seconds >= 3600 else '%d min' % (seconds // 60)


def backup_problems(info, stanza, now, max_age, archiver=None):
    """What the repository (`pgbackrest info` as JSON) and the primary's archiver (a pg_stat_archiver row as text,
    or {'error': ...}) say is wrong with the backups of `stanza`. Returns (problems, detail when there is none,
    report)."""
    if isinstance(info, (str, bytes)):
        try:
            info = json.loads(info)
        except ValueError:
            return ['pgbackrest info answered no JSON'], '', {}
    if isinstance(info, dict) and 'error' in info:
        return ['pgbackrest info failed on the backup host: %s' % info['error']], '', {}
    entries = [entry for entry in info or [] if isinstance(entry, dict) and entry.get('name') == stanza]
    if not entries:
        return ['the repository has no stanza %s' % stanza], '', {}
    entry = entries[0]
    problems = []
    status = entry.get('status') or {}
    if status.get('code') != 0:
        problems.append('stanza %s: %s (code %s)' % (stanza, status.get('message'), status.get('code')))
    backups = [b for b in entry.get('backup') or [] if not b.get('error')]
    counts = dict((kind, len([b for b in backups if b.get('type') == kind])) for kind in ('full', 'diff', 'incr'))
    recent = sorted((b for b in backups if b.get('type') in ('full', 'diff')),
                    key=lambda b: (b.get('timestamp') or {}).get('stop') or 0)
    report = {'stanza': stanza, 'status': status.get('message'), 'backups': counts}
    newest = ''
    if not recent:
        problems.append('no full or differential backup of stanza %s' % stanza)
    else:
        last = recent[-1]
        age = max(0, now - ((last.get('timestamp') or {}).get('stop') or 0))
        report.update(newest=last.get('label'), newest_age=int(age))
        newest = 'newest backup %s %s, %s old' % (last.get('type'), last.get('label'), _hours(age))
        if age > max_age:
            problems.append('the %s (older than %s)' % (newest, _hours(max_age)))
    kept = ', '.join('%d %s' % (counts[kind], kind) for kind in ('full', 'diff', 'incr') if counts[kind])
    archived = ''
    if archiver is not None:
        if 'error' in archiver:
            problems.append('pg_stat_archiver unreadable: %s' % archiver['error'])
        elif archiver.get('failing') == 'true':
            problems.append('the primary\'s last archive attempt failed (WAL %s, %s failures since the statistics '
                            'reset)' % (archiver.get('last_failed_wal'), archiver.get('failed_count')))
        if archiver.get('last_archived_wal'):
            age = float(archiver.get('last_archived_age') or 0)
            archived = '; last WAL %s archived %d s ago' % (archiver['last_archived_wal'], age)
            report.update(last_archived_wal=archiver['last_archived_wal'], last_archived_age=int(age))
        elif 'error' not in archiver:
            # Statistics reset by a crash: nothing archived yet since, which is not a failure.
            archived = '; no WAL archived since the primary\'s statistics were reset'
    detail = 'stanza %s ok: %s (%s kept)%s' % (stanza, newest, kept, archived)
    return problems, detail, report


def argument_spec():
    # The access options of the other modules, with nothing required: each group of checks runs
    # only when its inputs are given.
    spec = patroni_argument_spec(required=False)
    spec.update(sentinel_argument_spec(required=False))
    spec.update(haproxy_stats_argument_spec())
    spec.update(
        max_lag=dict(type='int', default=1048576),
        pg_host=dict(type='str'),
        pg_port=dict(type='int', default=6432),
        pg_database=dict(type='str', default='rtmx'),
        pg_user=dict(type='str', default='rtmx'),
        pg_password=dict(type='str', no_log=True),
        pg_sslmode=dict(type='str', default='prefer', choices=list(SSLMODES)),
        pg_sslrootcert=dict(type='path'),
        pg_write_table=dict(type='str', default='rtmx_ha_verify'),
        redis_host=dict(type='str'),
        redis_port=dict(type='int', default=6379),
        haproxy_pg_backend=dict(type='str', default='postgres_rw'),
        haproxy_redis_backend=dict(type='str', default='redis'),
        haproxy_sync_backend=dict(type='str', default='sync_servers'),
        sync_health_urls=dict(type='list', elements='str', default=[]),
        api_url=dict(type='str'),
        api_health_urls=dict(type='list', elements='str', default=[]),
        haproxy_api_backend=dict(type='str', default='api_servers'),
        etcd_urls=dict(type='list', elements='str', default=[]),
        vip_holders=dict(type='list', elements='str'),
        prometheus_url=dict(type='str'),
        prometheus_username=dict(type='str', default='admin'),
        prometheus_password=dict(type='str', no_log=True),
        backup_info=dict(type='raw'),
        backup_stanza=dict(type='str', default='rtmx'),
        backup_max_age=dict(type='int', default=93600),
        monitoring_ignore_alerts=dict(type='list', elements='str',
                                      default=['RtmxPatroniFailover', 'RtmxRedisMasterChanged', 'RtmxVipMoved',
                                               'RtmxErrorBudgetBurnFast']),
        # One timeout for every call: 5 s, as for Patroni (the Sentinel options alone default to 3).
        timeout=dict(type='int', default=5),
        wait_timeout=dict(type='int', default=0),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[('pg_sslmode', 'verify-ca', ['pg_sslrootcert']), ('pg_sslmode', 'verify-full', ['pg_sslrootcert'])],
    )
    if module.params['pg_host']:
        if not HAS_PSYCOPG:
            module.fail_json(msg=missing_required_lib('psycopg'), exception=PSYCOPG_IMPORT_ERROR)
        problem = libpq_problem()
        if problem:
            module.fail_json(msg='pg_host needs psycopg: %s' % problem)
    if module.params['sentinels']:
        if not HAS_REDIS:
            module.fail_json(msg=missing_required_lib('redis'), exception=REDIS_IMPORT_ERROR)
        problem = redis_problem()
        if problem:
            module.fail_json(msg='sentinels needs redis-py: %s' % problem)
    if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', module.params['pg_write_table']):
        module.fail_json(msg='pg_write_table %r is not a plain table name' % module.params['pg_write_table'])
    verifier = Verifier(module)
    watch = Stopwatch()
    attempts = 0
    while True:
        attempts += 1
        failed = verifier.run_once()
        if not verifier.checks:
            module.fail_json(msg='nothing to verify: give at least one of patroni_urls, pg_host, sentinels, '
                                 'haproxy_stats_urls, sync_health_urls, api_url, api_health_urls, etcd_urls, '
                                 'vip_holders, prometheus_url, backup_info')
        if not failed or watch.lap() >= module.params['wait_timeout']:
            break
        time.sleep(1)
    result = dict(changed=False, ok=not failed, checks=verifier.checks, failed_checks=failed,
                  elapsed=watch.lap(), attempts=attempts, report=verifier.report)
    if failed:
        details = ['%s: %s' % (c['name'], c['detail']) for c in verifier.checks if not c['ok']]
        module.fail_json(msg='HA verification failed (%d of %d checks): %s'
                         % (len(failed), len(verifier.checks), ' | '.join(details)), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
