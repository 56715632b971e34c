#!/usr/bin/python3
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus exporter for PgBouncer's admin console, shipped by rtmx.ha.pgbouncer_exporter.

Debian 12's prometheus-pgbouncer-exporter (1.7) reads SHOW STATS' total_requests,
a column PgBouncer removed in 1.8: with Debian's PgBouncer 1.18 every scrape
fails. This one reads SHOW POOLS, SHOW DATABASES, SHOW STATS and SHOW CONFIG
at each scrape, with a stats-only user, and names its series like
prometheus-community/pgbouncer_exporter (pgbouncer_pools_*, pgbouncer_databases_*,
pgbouncer_stats_*, pgbouncer_config_*, pgbouncer_up), labelled by the pooled
database name clients use (`database`) and, for pools, the user.

Configuration from the environment (systemd EnvironmentFile):
  PGBOUNCER_EXPORTER_LISTEN   address:port to serve /metrics on
  PGBOUNCER_EXPORTER_USERNAME / PGBOUNCER_EXPORTER_PASSWORD   basic auth asked of scrapers
  PGBOUNCER_HOST, PGBOUNCER_PORT, PGBOUNCER_USER, PGBOUNCER_PASSWORD   the admin console
"""

from __future__ import annotations

import base64
import hmac
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# SHOW POOLS column -> (series, help)
POOL_COLUMNS = {
    "cl_active": ("pgbouncer_pools_client_active_connections", "Client connections linked to a server connection"),
    "cl_waiting": ("pgbouncer_pools_client_waiting_connections", "Client connections waiting for a server connection"),
    "sv_active": ("pgbouncer_pools_server_active_connections", "Server connections linked to a client"),
    "sv_idle": ("pgbouncer_pools_server_idle_connections", "Server connections idle and ready"),
    "sv_used": ("pgbouncer_pools_server_used_connections", "Server connections idle more than server_check_delay"),
    "sv_tested": ("pgbouncer_pools_server_testing_connections", "Server connections being tested or reset"),
    "sv_login": ("pgbouncer_pools_server_login_connections", "Server connections logging in"),
    "maxwait": ("pgbouncer_pools_client_maxwait_seconds", "Age of the oldest unserved client connection"),
}
# SHOW DATABASES column -> (series, help)
DATABASE_COLUMNS = {
    "pool_size": ("pgbouncer_databases_pool_size", "Maximum number of server connections of the pool"),
    "reserve_pool": ("pgbouncer_databases_reserve_pool", "Extra server connections allowed when clients wait"),
    "max_connections": ("pgbouncer_databases_max_connections", "Maximum server connections (0: unlimited)"),
    "current_connections": ("pgbouncer_databases_current_connections", "Current server connections"),
}
# SHOW STATS column -> (series, help, divisor): counters since PgBouncer started.
STATS_COLUMNS = {
    "total_xact_count": ("pgbouncer_stats_sql_transactions_pooled_total", "SQL transactions pooled", 1),
    "total_query_count": ("pgbouncer_stats_queries_pooled_total", "SQL queries pooled", 1),
    "total_received": ("pgbouncer_stats_received_bytes_total", "Bytes received from clients", 1),
    "total_sent": ("pgbouncer_stats_sent_bytes_total", "Bytes sent to clients", 1),
    "total_xact_time": ("pgbouncer_stats_sql_transactions_duration_seconds_total", "Time in transactions", 1e6),
    "total_query_time": ("pgbouncer_stats_queries_duration_seconds_total", "Time in queries", 1e6),
    "total_wait_time": ("pgbouncer_stats_client_wait_seconds_total", "Time clients waited for a server", 1e6),
}
CONFIG_KEYS = {
    "max_client_conn": ("pgbouncer_config_max_client_connections", "max_client_conn"),
    "default_pool_size": ("pgbouncer_config_default_pool_size", "default_pool_size"),
}


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _labels(pairs) -> str:
    return "{" + ",".join('%s="%s"' % (key, _escape(value)) for key, value in pairs) + "}"


def render(pools, databases, stats, config, up=True) -> str:
    """Prometheus text format of the admin console's answers (lists of dict rows)."""
    out = []

    def family(name, help_text, kind, samples):
        out.append("# HELP %s %s" % (name, help_text))
        out.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            out.append("%s%s %s" % (name, _labels(labels) if labels else "", repr(float(value))))

    family("pgbouncer_up", "1 when the admin console answered this scrape", "gauge", [((), 1 if up else 0)])
    if not up:
        return "\n".join(out) + "\n"
    for column, (name, help_text) in POOL_COLUMNS.items():
        samples = []
        for row in pools:
            value = _number(row.get(column))
            if value is not None and row.get("database") != "pgbouncer":
                samples.append(((("database", row.get("database")), ("user", row.get("user"))), value))
        family(name, help_text, "gauge", samples)
    for column, (name, help_text) in DATABASE_COLUMNS.items():
        samples = []
        for row in databases:
            value = _number(row.get(column))
            if value is not None and row.get("name") != "pgbouncer":
                samples.append(((("database", row.get("name")), ("backend_database", row.get("database"))), value))
        family(name, help_text, "gauge", samples)
    for column, (name, help_text, divisor) in STATS_COLUMNS.items():
        samples = []
        for row in stats:
            value = _number(row.get(column))
            if value is not None and row.get("database") != "pgbouncer":
                samples.append(((("database", row.get("database")),), value / divisor))
        family(name, help_text, "counter", samples)
    settings = {row.get("key"): row.get("value") for row in config}
    for key, (name, help_text) in CONFIG_KEYS.items():
        value = _number(settings.get(key))
        if value is not None:
            family(name, help_text, "gauge", [((), value)])
    return "\n".join(out) + "\n"


class AdminConsole:
    """One connection to the admin console, opened again after any error."""

    def __init__(self, env):
        self.env = env
        self.conn = None
        self.lock = threading.Lock()

    def _connect(self):
        import psycopg

        return psycopg.connect(
            host=self.env.get("PGBOUNCER_HOST", "127.0.0.1"),
            port=int(self.env.get("PGBOUNCER_PORT", "6432")),
            user=self.env["PGBOUNCER_USER"],
            password=self.env["PGBOUNCER_PASSWORD"],
            dbname="pgbouncer",
            connect_timeout=5,
            autocommit=True,
            prepare_threshold=None,
            # The admin console speaks the simple query protocol only.
            cursor_factory=psycopg.ClientCursor,
        )

    def _show(self, what):
        with self.conn.cursor() as cur:
            cur.execute("SHOW " + what)
            names = [column.name for column in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def scrape(self) -> str:
        with self.lock:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = self._connect()
                return render(self._show("POOLS"), self._show("DATABASES"), self._show("STATS"), self._show("CONFIG"))
            except Exception as exc:  # any failure is pgbouncer_up 0, and a new connection next time
                print("scrape failed: %s" % exc, file=sys.stderr, flush=True)
                if self.conn is not None:
                    try:
                        self.conn.close()
                    except Exception:
                        pass
                self.conn = None
                return render([], [], [], [], up=False)


def authorised(header: str | None, username: str, password: str) -> bool:
    """True when an Authorization header carries this user and password (constant time)."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode(), ("%s:%s" % (username, password)).encode())


def make_handler(console, username, password):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if not authorised(self.headers.get("Authorization"), username, password):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="pgbouncer-exporter"')
                self.end_headers()
                return
            if self.path.split("?")[0] != "/metrics":
                self.send_response(404)
                self.end_headers()
                return
            body = console.scrape().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes every few seconds: no access log
            pass

    return Handler


def main(env=os.environ) -> None:
    host, _, port = env["PGBOUNCER_EXPORTER_LISTEN"].rpartition(":")
    handler = make_handler(AdminConsole(env), env["PGBOUNCER_EXPORTER_USERNAME"], env["PGBOUNCER_EXPORTER_PASSWORD"])
    ThreadingHTTPServer((host, int(port)), handler).serve_forever()


if __name__ == "__main__":
    main()
