"""PgConnection against a fake PostgreSQL server that tries to talk it out of the password.

The server speaks just enough of the protocol (startup, SSLRequest refused, authentication); each scenario
is one way to downgrade the login. Only a complete SCRAM-SHA-256 exchange with the right server signature
(the control scenario, which computes it from the password like a real server) is accepted.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import threading

import pytest

from ansible_collections.rtmx.ha.plugins.module_utils.pgwire import PgConnection, PgError

PASSWORD = "the-password"
SALT = b"0123456789abcdef"
ITERATIONS = 4096


def message(kind, payload=b""):
    return kind + struct.pack("!i", len(payload) + 4) + payload


def auth(code, payload=b""):
    return message(b"R", struct.pack("!i", code) + payload)


def scram_server_signature(client_first_bare, server_first, client_final_without_proof):
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), SALT, ITERATIONS)
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    auth_message = b",".join((client_first_bare, server_first, client_final_without_proof))
    return base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest())


class FakeServer:
    """Accepts one connection and plays `scenario`; `received` holds every byte the client sent."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.received = b""
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def recv_exact(self, conn, size):
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        self.received += data
        return data

    def read_message(self, conn):
        header = self.recv_exact(conn, 5)
        return header[:1], self.recv_exact(conn, struct.unpack("!i", header[1:])[0] - 4)

    def serve(self):
        conn, _addr = self.listener.accept()
        conn.settimeout(10)
        try:
            while True:  # SSLRequest / GSSENCRequest are refused, then the StartupMessage
                length, code = struct.unpack("!ii", self.recv_exact(conn, 8))
                if code in (80877103, 80877104):
                    conn.sendall(b"N")
                    continue
                self.recv_exact(conn, length - 8)
                break
            self.scenario(self, conn)
            conn.recv(1024)  # until the client closes
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            self.listener.close()

    def scram(self, conn, final):
        """SASL up to the server's final message, which `final(signature)` decides."""
        conn.sendall(auth(10, b"SCRAM-SHA-256\x00\x00"))
        kind, body = self.read_message(conn)
        assert kind == b"p"
        mechanism, _sep, rest = body.partition(b"\x00")
        assert mechanism == b"SCRAM-SHA-256"
        client_first = rest[4:]
        client_first_bare = client_first.split(b",", 2)[2]
        nonce = dict(item.split(b"=", 1) for item in client_first_bare.split(b","))[b"r"]
        server_first = b"r=%s%s,s=%s,i=%d" % (nonce, base64.b64encode(os.urandom(9)), base64.b64encode(SALT),
                                               ITERATIONS)
        conn.sendall(auth(11, server_first))
        kind, client_final = self.read_message(conn)
        assert kind == b"p"
        without_proof = client_final.rsplit(b",p=", 1)[0]
        final(scram_server_signature(client_first_bare, server_first, without_proof))

    def ready(self, conn):
        conn.sendall(auth(0) + message(b"S", b"server_version\x0015.0\x00") + message(b"K", struct.pack("!ii", 1, 2))
                     + message(b"Z", b"I"))


def scram_complete(server, conn):
    server.scram(conn, lambda signature: conn.sendall(auth(12, b"v=" + signature)))
    server.ready(conn)


def scram_wrong_signature(server, conn):
    server.scram(conn, lambda signature: conn.sendall(auth(12, b"v=" + base64.b64encode(b"\x00" * 32))))
    server.ready(conn)


def scram_skipped_final(server, conn):
    """AuthenticationOk right after the client's proof: no server signature at all."""
    server.scram(conn, lambda signature: None)
    server.ready(conn)


def no_authentication(server, conn):
    server.ready(conn)


def cleartext(server, conn):
    conn.sendall(auth(3))
    server.ready(conn)


def md5(server, conn):
    conn.sendall(auth(5, b"salt"))
    server.ready(conn)


def scram_plus_only(server, conn):
    """Only channel binding is offered, which needs TLS: nothing the client may use."""
    conn.sendall(auth(10, b"SCRAM-SHA-256-PLUS\x00\x00"))
    server.ready(conn)


def connect(server, sslmode="prefer"):
    return PgConnection("127.0.0.1", server.port, "rtmx", PASSWORD, "rtmx", timeout=5, sslmode=sslmode)


@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
def test_control_a_complete_scram_exchange_is_accepted(sslmode):
    server = FakeServer(scram_complete)
    connect(server, sslmode).close()
    assert PASSWORD.encode() not in server.received


@pytest.mark.parametrize("scenario, reason", [
    (scram_wrong_signature, "incorrect server signature"),
    (scram_skipped_final, "server did not complete authentication"),
    (no_authentication, "server did not complete authentication"),
    (cleartext, "server requested a cleartext password"),
    (md5, "server requested a hashed password"),
    (scram_plus_only, "server offered SCRAM-SHA-256-PLUS authentication over a non-SSL connection"),
])
def test_every_downgrade_is_refused_and_the_password_never_sent(scenario, reason):
    server = FakeServer(scenario)
    with pytest.raises(PgError) as err:
        connect(server)
    message_text = str(err.value)
    assert message_text.startswith("cannot connect to PostgreSQL/PgBouncer at 127.0.0.1:%d: " % server.port)
    assert reason in message_text, message_text
    server.thread.join(5)
    assert PASSWORD.encode() not in server.received
    assert b"md5" not in server.received  # no MD5 answer either
