#!/usr/bin/python3
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lab alert receiver of rtmx.ha: records every Alertmanager notification.

Alertmanager's webhook posts to POST /alerts; each notification is appended to
a JSON lines file with the time it arrived, so tests and drills can see what
an operator would have received, and when. GET /notifications answers them as
a JSON array (?since=<unix seconds> keeps the later ones); DELETE /notifications
empties the file. Both need HTTP basic authentication; GET /health does not.

Configuration from the environment (systemd EnvironmentFile):
  ALERT_RECEIVER_LISTEN     address:port
  ALERT_RECEIVER_FILE       the JSON lines file
  ALERT_RECEIVER_USERNAME / ALERT_RECEIVER_PASSWORD
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 1024 * 1024


def authorised(header: str | None, username: str, password: str) -> bool:
    """True when an Authorization header carries this user and password (constant time)."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode(), ("%s:%s" % (username, password)).encode())


class Store:
    """The JSON lines file, one writer at a time."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def read(self, since: float = 0.0) -> list[dict]:
        with self.lock:
            try:
                with open(self.path, encoding="utf-8") as source:
                    lines = source.readlines()
            except FileNotFoundError:
                return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: skipped, the others still count
            if record.get("received_at", 0) >= since:
                records.append(record)
        return records

    def clear(self) -> None:
        with self.lock, open(self.path, "w", encoding="utf-8"):
            pass


def summarise(payload: dict) -> dict:
    """What an operator reads first: status, and each alert's name, severity and state."""
    return {
        "status": payload.get("status"),
        "receiver": payload.get("receiver"),
        "alerts": [
            {
                "alertname": alert.get("labels", {}).get("alertname"),
                "severity": alert.get("labels", {}).get("severity"),
                "status": alert.get("status"),
                "startsAt": alert.get("startsAt"),
                "endsAt": alert.get("endsAt"),
            }
            for alert in payload.get("alerts", [])
        ],
    }


def make_handler(store: Store, username: str, password: str, clock=time.time):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="rtmx-alert-receiver"')
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            if authorised(self.headers.get("Authorization"), username, password):
                return True
            self._send(401)
            return False

        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            if url.path == "/health":
                self._send(200, b"ok\n", "text/plain")
                return
            if not self._authorised():
                return
            if url.path != "/notifications":
                self._send(404)
                return
            try:
                since = float(parse_qs(url.query).get("since", ["0"])[0])
            except ValueError:
                self._send(400, b'{"error": "since must be a number"}')
                return
            self._send(200, json.dumps(store.read(since)).encode())

        def do_POST(self):  # noqa: N802
            if not self._authorised():
                return
            if urlsplit(self.path).path != "/alerts":
                self._send(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._send(413 if length > MAX_BODY else 400)
                return
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError:
                self._send(400, b'{"error": "not JSON"}')
                return
            store.append({"received_at": clock(), "summary": summarise(payload), "payload": payload})
            self._send(200, b"{}")

        def do_DELETE(self):  # noqa: N802
            if not self._authorised():
                return
            if urlsplit(self.path).path != "/notifications":
                self._send(404)
                return
            store.clear()
            self._send(200, b"{}")

        def log_message(self, *args):  # journald gets what matters: the records are in the file
            pass

    return Handler


def main(env=os.environ) -> None:
    host, _, port = env["ALERT_RECEIVER_LISTEN"].rpartition(":")
    store = Store(env["ALERT_RECEIVER_FILE"])
    handler = make_handler(store, env["ALERT_RECEIVER_USERNAME"], env["ALERT_RECEIVER_PASSWORD"])
    ThreadingHTTPServer((host, int(port)), handler).serve_forever()


if __name__ == "__main__":
    main()
