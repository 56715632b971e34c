# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read HAProxy's statistics page as CSV: which servers each backend routes to."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import csv

from ansible.module_utils.six.moves import http_client
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url


def haproxy_stats_argument_spec():
    """Options to read the HAProxy statistics pages, documented by the rtmx.ha.haproxy_stats doc fragment."""
    return dict(
        haproxy_stats_urls=dict(type='list', elements='str', default=[]),
        haproxy_stats_username=dict(type='str', default='admin'),
        haproxy_stats_password=dict(type='str', no_log=True),
    )


class HaproxyError(Exception):
    pass


def parse_stats_csv(text):
    """CSV (first line '# pxname,svname,...') -> {backend: {server: {status, addr}}} for real servers."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith('# '):
        raise HaproxyError('not an HAProxy CSV statistics page')
    lines[0] = lines[0][2:]
    out = {}
    for row in csv.DictReader(lines):
        server = row.get('svname')
        if server in ('FRONTEND', 'BACKEND') or not server:
            continue
        out.setdefault(row['pxname'], {})[server] = {'status': row.get('status', ''), 'addr': row.get('addr', '')}
    return out


def fetch_stats(url, username, password, timeout=5):
    """GET <url>;csv with basic auth; url is the stats page (http://lb1:7000/)."""
    csv_url = url.rstrip('/') + '/;csv'
    headers = {}
    if password is not None:
        token = '%s:%s' % (username, password)
        headers['Authorization'] = 'Basic ' + base64.b64encode(token.encode('utf-8')).decode('ascii')
    try:
        response = open_url(csv_url, headers=headers, timeout=timeout, follow_redirects='none')
        return parse_stats_csv(response.read().decode('utf-8', 'replace'))
    except HTTPError as exc:
        if exc.code == 401:
            raise HaproxyError('HAProxy stats at %s refused the credentials of %r (HTTP 401)' % (url, username))
        raise HaproxyError('HAProxy stats at %s answered HTTP %s' % (url, exc.code))
    except (URLError, OSError, ValueError) as exc:
        raise HaproxyError('HAProxy stats at %s are unreachable: %s' % (url, getattr(exc, 'reason', exc)))


def up_servers(stats, backend):
    """Addresses (host:port) HAProxy sends traffic to in that backend (status UP...)."""
    return sorted(srv['addr'] for srv in stats.get(backend, {}).values() if srv['status'].startswith('UP'))


def routes_only_to(stats, backend, address):
    """Problem text when `backend` does not send to `address` (host:port) alone, else None."""
    if backend not in stats:
        return 'backend %s is missing (known: %s)' % (backend, ', '.join(sorted(stats)))
    up = up_servers(stats, backend)
    if up != [address]:
        return 'backend %s routes to %s, expected only %s' % (backend, ', '.join(up) or 'nothing', address)
    return None


def down_servers(stats, backend):
    """Server names in that backend that are not UP, with their status."""
    return dict((name, srv['status']) for name, srv in stats.get(backend, {}).items()
                if not srv['status'].startswith('UP'))


def routing_problems(urls, username, password, timeout, routes, also=None, fetch=None):
    """Read every HAProxy's statistics page and check that each (backend, address) of `routes` sends
    traffic to that address (host:port) alone.

    Returns (problems, pages): one text per problem, named by the page's URL, empty when every HAProxy
    routes as expected; pages maps each URL that could be read to its parsed statistics. A page that
    cannot be read (refused, unreachable, or cut short while HAProxy reloads) is a problem of that
    page, never an exception, so a caller polling for the routing simply tries again.
    also(stats) returns more problem texts (or None) for one page; fetch replaces fetch_stats.
    """
    fetch = fetch or fetch_stats
    problems = []
    pages = {}
    for url in urls:
        try:
            stats = fetch(url, username, password, timeout)
        except HaproxyError as exc:
            problems.append(str(exc))
            continue
        except (http_client.HTTPException, csv.Error) as exc:
            problems.append('%s: %s' % (url, exc))
            continue
        pages[url] = stats
        found = [routes_only_to(stats, backend, address) for backend, address in routes]
        if also is not None:
            found.extend(also(stats))
        problems.extend('%s: %s' % (url, problem) for problem in found if problem)
    return problems, pages
