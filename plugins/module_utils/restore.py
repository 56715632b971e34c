# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What playbooks/restore.yml is asked to do, checked before anything changes (filters rtmx.ha.restore_plan and
rtmx.ha.restore_backup_check): the recovery target, where to restore, and whether the repository can serve it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import re
import shlex
import time

TYPES = ('latest', 'time', 'lsn', 'name', 'immediate')
TIME_RE = re.compile(r'^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?\s*(Z|[+-]\d{2}(?::?\d{2})?)$')
LSN_RE = re.compile(r'^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$')
SET_RE = re.compile(r'^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$')
NAME_MAX = 63  # a restore point name is at most MAXFNAMELEN - 1 bytes
FUTURE_SLACK_S = 60


def _text(value):
    return '' if value is None else str(value).strip()


def parse_time(text):
    """'2026-11-28 10:15:00+01' (or ...T..., fractions, Z, +01:00) -> (epoch seconds, 'YYYY-MM-DD HH:MM:SS[.f]+00').
    A time without a zone is refused: the servers' and the operator's zones may differ. ValueError when invalid."""
    match = TIME_RE.match(text)
    if not match:
        raise ValueError('not a time like 2026-11-28 10:15:00+00')
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zone = match.group(7) or '', match.group(8)
    try:
        parts = time.strptime('%04d-%02d-%02d %02d:%02d:%02d' % (year, month, day, hour, minute, second),
                              '%Y-%m-%d %H:%M:%S')
    except ValueError:
        raise ValueError('no such date or time')
    offset = 0
    if zone != 'Z':
        sign = -1 if zone[0] == '-' else 1
        digits = zone[1:].replace(':', '')
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 14 or minutes > 59:
            raise ValueError('no such time zone offset')
        offset = sign * (hours * 3600 + minutes * 60)
    epoch = calendar.timegm(parts) - offset
    utc = time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(epoch)) + fraction + '+00'
    return epoch + (float(fraction) if fraction else 0.0), utc


def lsn_value(text):
    high, low = text.split('/')
    return (int(high, 16) << 32) + int(low, 16)


def restore_plan(request, members, hosts, restore_hosts, pg_port, now=None):
    """Check the restore request (restore.yml's restore_* variables) and say what to do.

    Returns a dict: problems (empty when it may go on), mode (cluster or inspect), member or target_host, type,
    target (normalized), target_epoch (time targets), options (pgbackrest restore options) and summary."""
    now = time.time() if now is None else now
    problems = []
    kind = _text(request.get('type')) or 'latest'
    target = _text(request.get('target'))
    backup_set = _text(request.get('set'))
    timeline = _text(request.get('target_timeline'))
    target_host = _text(request.get('target_host'))
    plan = {'problems': problems, 'type': kind, 'target': target, 'target_epoch': None, 'set': backup_set,
            'mode': 'inspect' if target_host else 'cluster', 'member': '', 'target_host': target_host}

    if kind not in TYPES:
        problems.append('restore_type %r is not one of %s' % (kind, ', '.join(TYPES)))
    elif kind in ('latest', 'immediate'):
        if target:
            problems.append('restore_type %s takes no restore_target (got %r)' % (kind, target))
    elif not target:
        problems.append('restore_type %s needs restore_target (%s)' % (kind, {
            'time': "a time with its zone, like '2026-11-28 10:15:00+00'",
            'lsn': "an LSN, like '0/3000060'", 'name': 'a restore point name (pg_create_restore_point)'}[kind]))
    elif kind == 'time':
        try:
            plan['target_epoch'], plan['target'] = parse_time(target)
        except ValueError as exc:
            problems.append("restore_target %r: %s (give the zone: '2026-11-28 10:15:00+00')" % (target, exc))
        else:
            if plan['target_epoch'] > now + FUTURE_SLACK_S:
                problems.append('restore_target %s is in the future' % plan['target'])
    elif kind == 'lsn':
        if not LSN_RE.match(target):
            problems.append("restore_target %r is not an LSN like '0/3000060'" % target)
        else:
            plan['target'] = target.upper()
    elif kind == 'name':
        if len(target.encode('utf-8')) > NAME_MAX or re.search(r'[\'"\\\x00-\x1f\x7f]', target):
            problems.append('restore_target %r is not a restore point name (at most %d bytes, no quote, backslash or '
                            'control character)' % (target, NAME_MAX))
    if backup_set and not SET_RE.match(backup_set):
        problems.append("restore_set %r is not a backup label like 20261122-010203F or "
                        "20261122-010203F_20261123-010512D" % backup_set)
    if timeline and not re.match(r'^(latest|current|\d+)$', timeline):
        problems.append('restore_target_timeline %r is not latest, current or a timeline number' % timeline)

    if target_host:
        port = _text(request.get('inspect_port'))
        directory = _text(request.get('inspect_dir'))
        if target_host not in hosts:
            problems.append('restore_target_host %s is not in the inventory' % target_host)
        elif target_host in members:
            problems.append('restore_target_host %s is a cluster member: restore for inspection onto another host '
                            '(the cluster restore needs no restore_target_host)' % target_host)
        elif target_host not in restore_hosts:
            problems.append('restore_target_host %s may not read the repository: add it to pgbackrest_restore_hosts '
                            '(or use a backup host: %s) and run site.yml' % (target_host, ', '.join(restore_hosts)))
        if not port.isdigit() or not 1024 <= int(port) <= 65535 or int(port) == int(pg_port):
            problems.append('restore_inspect_port %r must be a port from 1024 to 65535 other than PostgreSQL\'s %s'
                            % (port, pg_port))
        plan['inspect_port'] = int(port) if port.isdigit() else None
        if not directory.startswith('/') or len([part for part in directory.split('/') if part]) < 2 \
                or '..' in directory.split('/'):
            problems.append('restore_inspect_dir %r must be an absolute path two levels deep at least' % directory)
        plan['inspect_dir'] = directory.rstrip('/')
    else:
        confirm = request.get('confirm')
        if not (confirm is True or _text(confirm) == 'yes'):
            problems.append('a cluster restore replaces the data of every member: run it again with '
                            '-e restore_confirm=yes (or restore onto another host with -e restore_target_host=HOST)')
        member = _text(request.get('member')) or (members[0] if members else '')
        if member not in members:
            problems.append('restore_member %r is not a member of the cluster (%s)' % (member, ', '.join(members)))
        plan['member'] = member

    options = ['--type=%s' % ('default' if kind == 'latest' else kind)]
    if kind in ('time', 'lsn', 'name'):
        options.append('--target=%s' % plan['target'])
    if kind != 'latest':
        options.append('--target-action=promote')
    if backup_set:
        options.append('--set=%s' % backup_set)
    if timeline:
        options.append('--target-timeline=%s' % timeline)
    plan['options'] = options
    what = {'latest': 'the end of the WAL archive', 'immediate': 'the end of the backup',
            'time': plan['target'], 'lsn': 'LSN %s' % plan['target'], 'name': 'restore point %r' % plan['target']}
    plan['summary'] = '%s to %s%s' % (
        'restore onto %s (port %s, %s) for inspection' % (target_host, plan.get('inspect_port'), plan.get('inspect_dir'))
        if target_host else 'point-in-time recovery of the whole cluster, first on %s,' % plan['member'],
        what.get(kind, kind), ' from backup %s' % backup_set if backup_set else '')
    return plan


def bootstrap_command(stanza, options):
    """The command Patroni's custom bootstrap runs (it splits it with shlex)."""
    return ' '.join(shlex.quote(part) for part in ['/usr/bin/pgbackrest', '--stanza=%s' % stanza] + list(options)
                    + ['restore'])


def restore_backup_check(plan, info, stanza):
    """What the repository (`pgbackrest info` JSON) says about the plan. Returns a dict: problems, backups (labels,
    oldest first), replicas_from_repository (whether new replicas may be restored from the newest backup: only when
    the recovery ends after it, else they would start from a backup beyond the new timeline's branch point)."""
    problems = []
    entries = [entry for entry in info or [] if isinstance(entry, dict) and entry.get('name') == stanza]
    backups = []
    if not entries:
        problems.append('the repository has no stanza %s' % stanza)
    else:
        backups = sorted((b for b in entries[0].get('backup') or [] if not b.get('error')),
                         key=lambda b: (b.get('timestamp') or {}).get('stop') or 0)
        if not backups:
            problems.append('the repository has no backup of stanza %s to restore' % stanza)
    labels = [b.get('label') for b in backups]
    result = {'problems': problems, 'backups': labels, 'replicas_from_repository': False}
    if not backups:
        return result
    newest = backups[-1]
    if plan.get('set') and plan['set'] not in labels:
        problems.append('restore_set %s is not in the repository (%s)' % (plan['set'], ', '.join(labels)))
    oldest_stop = (backups[0].get('timestamp') or {}).get('stop') or 0
    if plan.get('type') == 'time' and plan.get('target_epoch') is not None and plan['target_epoch'] < oldest_stop:
        problems.append('restore_target %s is before the end of the oldest backup kept (%s, %s UTC): nothing can '
                        'be recovered that early' % (plan['target'], backups[0].get('label'),
                                                     time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(oldest_stop))))
    newest_stop = (newest.get('timestamp') or {}).get('stop') or 0
    if plan.get('set') and plan['set'] != newest.get('label'):
        after = False
    elif plan.get('type') in ('latest', 'immediate'):
        after = True
    elif plan.get('type') == 'time' and plan.get('target_epoch') is not None:
        after = plan['target_epoch'] >= newest_stop
    elif plan.get('type') == 'lsn' and (newest.get('lsn') or {}).get('stop'):
        after = lsn_value(plan['target']) >= lsn_value(newest['lsn']['stop'])
    else:
        after = False
    result['replicas_from_repository'] = after
    return result
