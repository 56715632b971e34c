# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis and Sentinel through redis-py, and the decisions taken on their answers.

redis-py is imported the way community.postgresql imports psycopg: when it is
missing, HAS_REDIS is False and the module fails with missing_required_lib('redis').
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import traceback

REDIS_IMPORT_ERROR = None
try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:
    redis = None
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_REDIS = True


def redis_problem():
    """Why this redis-py cannot be used (missing, older than 5), or None."""
    if not HAS_REDIS:
        return 'the redis Python library (redis-py 5 or later) is not installed'
    try:
        major = int(str(getattr(redis, '__version__', '0')).split('.', 1)[0])
    except ValueError:
        return None
    if major < 5:
        return ('redis-py %s is too old: 5 or later is needed (on the host running the module: '
                'pip install -r requirements.txt of rtmx.ha)' % redis.__version__)
    return None


def sentinel_argument_spec(required=True, redis_password_required=False):
    """Options to ask the Sentinels (and the Redis nodes), documented by the rtmx.ha.sentinel doc fragment.

    With required=False (ha_verify) sentinels may be left out: it defaults to [] and the Sentinels
    are then not asked. redis_password_required=True for a module that must read the nodes' roles.
    """
    if required:
        sentinels = dict(type='list', elements='str', required=True)
    else:
        sentinels = dict(type='list', elements='str', default=[])
    redis_password = dict(type='str', no_log=True)
    if redis_password_required:
        redis_password['required'] = True
    return dict(
        sentinels=sentinels,
        sentinel_password=dict(type='str', no_log=True),
        master_name=dict(type='str', default='rtmx'),
        redis_password=redis_password,
        timeout=dict(type='int', default=3),
    )


class RedisError(Exception):
    """A connection or protocol failure, or an error reply."""


class RedisReplyError(RedisError):
    """The server answered with an error reply (-ERR ...)."""


def split_address(address, default_port):
    """'host:port' or 'host' or '[v6]:port' -> (host, port)."""
    address = address.strip()
    if address.startswith('['):
        host, _sep, rest = address[1:].partition(']')
        port = rest.lstrip(':') or default_port
        return host, int(port)
    if address.count(':') == 1:
        host, port = address.split(':')
        return host, int(port)
    return address, int(default_port)


def _reply_text(exc):
    """An error reply as the server sent it (redis-py takes the code off the ones it knows)."""
    text = str(exc)
    code = getattr(exc, 'status_code', None)
    if code and not text.startswith(code):
        text = '%s %s' % (code, text)
    return text


def _argument(value):
    if isinstance(value, (bytes, str, int, float)) and not isinstance(value, bool):
        return value
    return str(value)


class RedisConnection(object):
    """One connection to a Redis node or Sentinel (AUTH on connect); a context manager.

    command() returns the reply as the server sent it, decoded (no redis-py response callbacks),
    so the parsers here read the same with every redis-py version: INFO is text, SENTINEL
    replies flat lists. An error reply raises RedisReplyError; nothing is retried.
    """

    def __init__(self, host, port, password=None, timeout=3, username=None):
        self.address = '%s:%s' % (host, port)
        self.client = None
        problem = redis_problem()
        if problem:
            raise RedisError('cannot connect to %s: %s' % (self.address, problem))
        try:
            # single_connection_client: connects (and AUTHs) now, so a refusal is known here.
            self.client = redis.Redis(host=host, port=int(port), password=password or None, username=username or None,
                                      socket_timeout=timeout, socket_connect_timeout=timeout, protocol=2,
                                      decode_responses=True, encoding_errors='replace',
                                      retry=Retry(NoBackoff(), 0), single_connection_client=True)
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
            raise RedisError('%s refused the password: %s' % (self.address, _reply_text(exc)))
        except (redis.exceptions.RedisError, OSError, socket.error) as exc:
            raise RedisError('cannot connect to %s: %s' % (self.address, exc))
        self.client.response_callbacks = {}

    def close(self):
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def command(self, *args):
        try:
            return self.client.execute_command(*[_argument(arg) for arg in args])
        except (redis.exceptions.ResponseError, redis.exceptions.AuthenticationError) as exc:
            # AuthenticationError: NOAUTH or WRONGPASS, an error reply as well.
            raise RedisReplyError(_reply_text(exc))
        except (redis.exceptions.RedisError, OSError, socket.error) as exc:
            raise RedisError('%s: %s' % (self.address, exc))


def parse_info(text):
    """INFO text -> dict (numbers stay strings; slaveN lines become dicts)."""
    out = {}
    for line in (text or '').splitlines():
        if not line or line.startswith('#') or ':' not in line:
            continue
        key, value = line.split(':', 1)
        if key.startswith('slave') and '=' in value:
            out[key] = dict(item.split('=', 1) for item in value.split(',') if '=' in item)
        else:
            out[key] = value
    return out


def pairs(flat):
    """Sentinel's flat [k1, v1, k2, v2] replies -> dict."""
    return dict(zip(flat[0::2], flat[1::2])) if flat else {}


def query_sentinel(address, password, master_name, timeout):
    """Everything one Sentinel says about the master; never raises (errors go in `error`)."""
    host, port = split_address(address, 26379)
    result = {'sentinel': address, 'reachable': False, 'master': None, 'error': None}
    try:
        with RedisConnection(host, port, password, timeout) as conn:
            result['reachable'] = True
            addr = conn.command('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', master_name)
            if not addr:
                result['error'] = 'does not monitor a master named %r' % master_name
                return result
            result['master'] = '%s:%s' % (addr[0], addr[1])
            master = pairs(conn.command('SENTINEL', 'MASTER', master_name))
            result['flags'] = master.get('flags', '')
            result['quorum'] = int(master.get('quorum', 0))
            result['num_other_sentinels'] = int(master.get('num-other-sentinels', 0))
            result['config_epoch'] = int(master.get('config-epoch', 0))
            result['failover_in_progress'] = 'failover_in_progress' in result['flags']
            result['replicas'] = []
            for raw in conn.command('SENTINEL', 'REPLICAS', master_name) or []:
                replica = pairs(raw)
                result['replicas'].append({
                    'address': '%s:%s' % (replica.get('ip'), replica.get('port')),
                    'flags': replica.get('flags', ''),
                    'master_link_status': replica.get('master-link-status'),
                    'offset': int(replica.get('slave-repl-offset', 0) or 0),
                    'priority': int(replica.get('slave-priority', 100) or 100),
                })
            try:
                result['ckquorum'] = conn.command('SENTINEL', 'CKQUORUM', master_name)
                result['ckquorum_ok'] = True
            except RedisReplyError as exc:
                result['ckquorum'] = str(exc)
                result['ckquorum_ok'] = False
    except RedisError as exc:
        result['error'] = str(exc)
    return result


def query_redis(address, password, timeout):
    """INFO replication of one Redis node; never raises."""
    host, port = split_address(address, 6379)
    result = {'address': address, 'reachable': False, 'role': None, 'error': None}
    try:
        with RedisConnection(host, port, password, timeout) as conn:
            info = parse_info(conn.command('INFO', 'replication'))
            result['reachable'] = True
            result['role'] = info.get('role')
            result['master_repl_offset'] = int(info.get('master_repl_offset', 0) or 0)
            if info.get('role') == 'slave':
                result['master_host'] = '%s:%s' % (info.get('master_host'), info.get('master_port'))
                result['master_link_status'] = info.get('master_link_status')
            else:
                result['connected_replicas'] = int(info.get('connected_slaves', 0) or 0)
    except RedisError as exc:
        result['error'] = str(exc)
    return result


def majority_master(named, sentinels_total):
    """The one rule for "the master": what more than half of all Sentinels (reachable or not) name.

    named: the master each answering Sentinel names. Returns (master or None, votes, majority)."""
    majority = sentinels_total // 2 + 1
    votes = {}
    for master in named:
        votes[master] = votes.get(master, 0) + 1
    winners = [m for m, count in votes.items() if count >= majority]
    return (winners[0] if winners else None), votes, majority


def choose_master(sentinel_named, sentinels_total, node_roles, members, initial_master, deployed):
    """Which inventory host is the Redis master, for the roles (tasks/discover_master.yml).

    sentinel_named: the master address (host, no port) each answering Sentinel names;
    node_roles: {host: INFO replication text or None}; members: {address: host};
    deployed: whether any node already carries the role's configuration.
    A majority of Sentinels decides; without one, the only node that is master with connected
    replicas; a brand-new deployment (no role, no replica anywhere) takes initial_master.
    Returns {'master': host or '', 'reason': text}."""
    master, _votes, _majority = majority_master(sentinel_named, sentinels_total)
    if master is not None and master in members:
        count = len([m for m in sentinel_named if m == master])
        return {'master': members[master], 'reason': '%d of %d Sentinels name it' % (count, sentinels_total)}
    masters, replicas = [], []
    for host in members.values():
        info = parse_info(node_roles.get(host) or '')
        if info.get('role') == 'slave':
            replicas.append(host)
        elif info.get('role') == 'master' and info.get('connected_slaves') != '0':
            masters.append(host)
    if len(masters) == 1:
        return {'master': masters[0], 'reason': 'the only node with connected replicas (no Sentinel majority)'}
    if not masters and not replicas and not deployed:
        return {'master': initial_master, 'reason': 'new deployment: redis_initial_master'}
    return {'master': '', 'reason': 'no Sentinel majority and the nodes do not agree'}


def describe_sentinels(answers):
    """Combine each Sentinel's answer: the master they name and whether they agree."""
    reachable = [a for a in answers if a['reachable'] and a['master']]
    masters = sorted(set(a['master'] for a in reachable))
    master, votes, majority = majority_master([a['master'] for a in reachable], len(answers))
    replicas = []
    if master:
        for a in reachable:
            if a['master'] == master:
                replicas = a.get('replicas', [])
                break
    return {
        'master': master,
        'masters_named': masters,
        'agreement': len(masters) == 1 and len(reachable) == len(answers),
        'sentinels_total': len(answers),
        'sentinels_reachable': len([a for a in answers if a['reachable']]),
        'majority': majority,
        'votes': votes,
        'ckquorum_ok': bool(reachable) and all(a.get('ckquorum_ok') for a in reachable),
        'failover_in_progress': any(a.get('failover_in_progress') for a in reachable),
        'replicas': replicas,
        'sentinels': answers,
    }


def health_problems(state):
    """What is wrong with the Sentinel view (ha_verify, sentinel_failover preconditions)."""
    problems = []
    for a in state['sentinels']:
        if a['error']:
            problems.append('Sentinel %s: %s' % (a['sentinel'], a['error']))
    if not state['master']:
        problems.append('no master is named by a majority (%d of %d) of Sentinels; they name: %s'
                        % (state['majority'], state['sentinels_total'], state['votes'] or 'nothing'))
    elif len(state['masters_named']) > 1:
        problems.append('Sentinels disagree on the master: %s' % state['votes'])
    if not state['ckquorum_ok']:
        bad = [a['sentinel'] for a in state['sentinels'] if a['reachable'] and not a.get('ckquorum_ok')]
        problems.append('SENTINEL CKQUORUM fails on %s' % ', '.join(bad))
    if state['failover_in_progress']:
        problems.append('a Sentinel failover is in progress')
    return problems


def healthy_replicas(state):
    """Replicas a failover could promote: link up, not down or disconnected."""
    out = []
    for r in state['replicas']:
        flags = r['flags'].split(',')
        if r['master_link_status'] == 'ok' and not set(flags) & {'s_down', 'o_down', 'disconnected'}:
            out.append(r)
    return out


def node_problems(state):
    """Nodes whose own role contradicts the Sentinels (a second master is split-brain)."""
    problems = []
    for node in state.get('nodes') or []:
        if not node['reachable']:
            problems.append('Redis %s: %s' % (node['address'], node['error']))
        elif node['role'] == 'master' and node['address'] != state['master']:
            problems.append('Redis %s claims to be a master but the Sentinels name %s' % (node['address'], state['master']))
        elif node['address'] == state['master'] and node['role'] != 'master':
            problems.append('Redis %s is named master by the Sentinels but says role:%s' % (node['address'], node['role']))
        elif node['role'] == 'slave' and node.get('master_link_status') != 'up':
            problems.append('Redis replica %s: link to its master %s is %s'
                            % (node['address'], node.get('master_host'), node.get('master_link_status')))
    return problems


def read_redis(sentinels, sentinel_password, master_name, redis_password=None, timeout=3):
    """Ask every Sentinel (and, with a password, every node they know) and combine."""
    state = describe_sentinels([query_sentinel(s, sentinel_password, master_name, timeout) for s in sentinels])
    state['nodes'] = []
    if redis_password is not None:
        addresses = set()
        for answer in state['sentinels']:
            if answer.get('master'):
                addresses.add(answer['master'])
            addresses.update(r['address'] for r in answer.get('replicas') or [])
        state['nodes'] = [query_redis(a, redis_password, timeout) for a in sorted(addresses)]
    state['problems'] = health_problems(state) + node_problems(state)
    return state
