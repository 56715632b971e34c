"""Token authentication (auth.py), log redaction and the CLI (token subcommand,
--check, graceful drain). No Redis or PostgreSQL: at most an in-process uvicorn."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import secrets
import signal
import sys
import time
from types import SimpleNamespace

import jwt
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from uvicorn.logging import AccessFormatter

from rtmx_sync import cli
from rtmx_sync.auth import (
    AuthError,
    Grant,
    RedactingFilter,
    TokenVerifier,
    issue,
    load_keys,
    redact,
    token_from_request,
)
from rtmx_sync.config import ConfigError

KEY = secrets.token_urlsafe(48).encode()
OTHER_KEY = secrets.token_urlsafe(48).encode()


def verifier(*keys: bytes, allow_anonymous: bool = False) -> TokenVerifier:
    return TokenVerifier(keys or (KEY,), allow_anonymous=allow_anonymous)


def key_file(tmp_path, *lines: bytes | str, name: str = "sync.key") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines))
    return str(path)


def claims(**overrides):
    now = int(time.time())
    base = {"sub": "alice", "room": "doc-1", "ro": False, "iat": now, "exp": now + 600, "aud": "rtmx-sync"}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(payload, key: bytes = KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def refused(token, room="doc-1", v: TokenVerifier | None = None) -> str:
    with pytest.raises(AuthError) as caught:
        (v or verifier()).verify(token, room)
    return str(caught.value)


# --- issue / verify ----------------------------------------------------------------


def test_issue_verify_round_trip():
    now = time.time()
    token = issue(KEY, "doc-1", "alice", 600, now=now)
    grant = verifier().verify(token, "doc-1")
    assert grant == Grant(user="alice", room="doc-1", read_only=False, expires_at=float(int(now + 600)))
    claims_ = jwt.decode(token, KEY, algorithms=["HS256"], audience="rtmx-sync")
    assert claims_["aud"] == "rtmx-sync" and claims_["iat"] == int(now) and claims_["ro"] is False
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_expired_token_is_refused_with_its_own_reason():
    assert refused(issue(KEY, "doc-1", "alice", 3600, now=time.time() - 7200)) == "token expired"


def test_leeway_tolerates_small_clock_skew():
    # expired 10 s ago, issued 10 s "in the future": both inside the 30 s leeway
    verifier().verify(issue(KEY, "doc-1", "alice", 3600, now=time.time() - 3610), "doc-1")
    verifier().verify(issue(KEY, "doc-1", "alice", 3600, now=time.time() + 10), "doc-1")


def test_not_yet_valid_token_is_refused():
    assert refused(sign(claims(nbf=int(time.time()) + 300))) == "invalid token"
    assert refused(issue(KEY, "doc-1", "alice", 3600, now=time.time() + 300)) == "invalid token"  # iat
    verifier().verify(sign(claims(nbf=int(time.time()) - 5)), "doc-1")


def test_wrong_key_is_refused():
    assert refused(issue(OTHER_KEY, "doc-1", "alice", 600)) == "invalid token"


@pytest.mark.parametrize("audience", ["other-service", ["other-service"], None])
def test_wrong_or_missing_audience_is_refused(audience):
    assert refused(sign(claims(aud=audience))) == "invalid token"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_and_other_algorithms_are_refused():
    payload = claims()
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    assert refused(unsigned) == "invalid token"
    assert refused(sign(payload, algorithm="HS512")) == "invalid token"
    assert refused(sign(payload, algorithm="HS384")) == "invalid token"
    # alg header rewritten to HS256 over an HS512 signature
    header, body, signature = sign(payload, algorithm="HS512").split(".")
    assert refused(f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{body}.{signature}") == "invalid token"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "x" * 10_000])
def test_malformed_tokens_are_refused(token):
    assert refused(token) in ("invalid token", "authentication required")


def test_room_exact_and_prefix_patterns():
    v = verifier()
    exact = issue(KEY, "doc-1", "alice", 600)
    assert v.verify(exact, "doc-1").room == "doc-1"
    for other in ("doc-10", "doc-", "DOC-1", "x/doc-1"):
        assert refused(exact, other) == "token not valid for this room"
    prefix = issue(KEY, "project-42/*", "alice", 600)
    assert v.verify(prefix, "project-42/spec").room == "project-42/spec"
    assert v.verify(prefix, "project-42/a/b").room == "project-42/a/b"
    for other in ("project-43/spec", "project-42", "project-420/spec", "x/project-42/spec"):
        assert refused(prefix, other) == "token not valid for this room"
    assert v.verify(issue(KEY, "*", "ops", 600), "anything/at/all").user == "ops"


def test_read_only_claim():
    v = verifier()
    assert v.verify(issue(KEY, "doc-1", "bob", 600, read_only=True), "doc-1").read_only is True
    assert v.verify(sign(claims(ro=None)), "doc-1").read_only is False  # default
    assert refused(sign(claims(ro="yes"))) == "invalid token"


@pytest.mark.parametrize("missing", ["sub", "room", "exp"])
def test_missing_required_claims_are_refused(missing):
    assert refused(sign(claims(**{missing: None}))) == "invalid token"


@pytest.mark.parametrize("bad", [{"sub": ""}, {"sub": 42}, {"room": ""}, {"room": ["doc-1"]}, {"exp": "soon"}])
def test_bad_claim_types_are_refused(bad):
    assert refused(sign(claims(**bad))) == "invalid token"


def test_key_rotation_first_key_signs_every_key_verifies(tmp_path, capsys):
    path = key_file(tmp_path, "# rotated in 2024-06", KEY, "", OTHER_KEY)
    assert load_keys(path) == (KEY, OTHER_KEY)
    v = TokenVerifier.from_settings(SimpleNamespace(auth_key_file=path, allow_anonymous=False))
    assert v.verify(issue(KEY, "doc-1", "new", 600), "doc-1").user == "new"
    assert v.verify(issue(OTHER_KEY, "doc-1", "old", 600), "doc-1").user == "old"
    # an expired token signed by the second key is reported as expired, not invalid
    assert refused(issue(OTHER_KEY, "doc-1", "old", 60, now=time.time() - 3600), v=v) == "token expired"
    # the CLI signs with the first key only
    assert cli.main(["token", "--key-file", path, "--room", "doc-1", "--user", "u"]) == 0
    token = capsys.readouterr().out.strip()
    assert verifier(KEY).verify(token, "doc-1").user == "u"
    assert refused(token, v=verifier(OTHER_KEY)) == "invalid token"


def test_key_file_trailing_newline_and_crlf_are_ignored(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(KEY + b"\r\n")
    assert load_keys(path) == (KEY,)
    path.write_bytes(KEY)
    assert load_keys(path) == (KEY,)


def test_short_or_missing_keys_are_refused_at_start(tmp_path):
    short = key_file(tmp_path, KEY, b"x" * 31)
    with pytest.raises(ConfigError, match=r"line 2 .* 31 bytes, at least 32"):
        TokenVerifier.from_settings(SimpleNamespace(auth_key_file=short, allow_anonymous=True))
    empty = key_file(tmp_path, "", "# nothing", name="empty.key")
    with pytest.raises(ConfigError, match="holds no key"):
        TokenVerifier.from_settings(SimpleNamespace(auth_key_file=empty, allow_anonymous=False))
    with pytest.raises(ConfigError, match="cannot read"):
        TokenVerifier.from_settings(SimpleNamespace(auth_key_file=str(tmp_path / "absent"), allow_anonymous=False))
    with pytest.raises(ValueError, match="at least 32"):
        issue(b"short", "doc-1", "alice", 60)


def test_anonymous_mode_lets_everyone_in():
    v = TokenVerifier.from_settings(SimpleNamespace(auth_key_file="", allow_anonymous=True))
    expected = Grant(user="anonymous", room="doc-1", read_only=False, expires_at=None)
    assert v.verify(None, "doc-1") == expected
    assert v.verify("garbage", "doc-1") == expected
    assert v.verify(issue(OTHER_KEY, "elsewhere", "x", 60), "doc-1") == expected


def test_no_key_and_no_anonymous_refuses_everyone():
    v = TokenVerifier.from_settings(SimpleNamespace(auth_key_file="", allow_anonymous=False))
    assert refused(None, v=v) == "authentication required"
    assert refused(issue(KEY, "doc-1", "alice", 60), v=v) == "invalid token"


def test_a_key_requires_a_token_even_when_anonymous_is_allowed(tmp_path):
    path = key_file(tmp_path, KEY)
    v = TokenVerifier.from_settings(SimpleNamespace(auth_key_file=path, allow_anonymous=True))
    assert refused(None, v=v) == "authentication required"
    assert refused("", v=v) == "authentication required"
    assert refused("garbage", v=v) == "invalid token"
    assert v.verify(issue(KEY, "doc-1", "alice", 60), "doc-1").user == "alice"


# --- where the token comes from -----------------------------------------------------


def test_token_from_query():
    assert token_from_request(QueryParams("token=abc&x=1"), Headers({})) == ("abc", None)
    assert token_from_request(QueryParams("token="), Headers({})) == (None, None)
    assert token_from_request({}, Headers({})) == (None, None)


def test_token_from_bearer_header():
    assert token_from_request(QueryParams(""), Headers({"Authorization": "Bearer abc"})) == ("abc", None)
    assert token_from_request(QueryParams(""), Headers({"authorization": "bearer  abc "})) == ("abc", None)
    assert token_from_request(QueryParams(""), Headers({"Authorization": "Basic dXNlcjpwdw=="})) == (None, None)
    # the header wins over the query string
    assert token_from_request(QueryParams("token=q"), Headers({"Authorization": "Bearer h"})) == ("h", None)


def test_token_from_subprotocol():
    token = issue(KEY, "doc-1", "alice", 60)
    headers = Headers({"Sec-WebSocket-Protocol": f"rtmx-sync, token.{token}"})
    assert token_from_request(QueryParams(""), headers) == (token, "rtmx-sync")
    # several headers, other order
    raw = [(b"sec-websocket-protocol", f"token.{token}".encode()), (b"sec-websocket-protocol", b"rtmx-sync")]
    assert token_from_request(QueryParams(""), Headers(raw=raw)) == (token, "rtmx-sync")
    # rtmx-sync alone is still echoed (browsers fail the handshake otherwise); a query token is used
    only = Headers({"Sec-WebSocket-Protocol": "rtmx-sync"})
    assert token_from_request(QueryParams("token=q"), only) == ("q", "rtmx-sync")
    # without rtmx-sync offered nothing is echoed (never the token entry)
    assert token_from_request(QueryParams(""), Headers({"Sec-WebSocket-Protocol": "token.abc"})) == ("abc", None)
    assert token_from_request(QueryParams(""), Headers({"Sec-WebSocket-Protocol": "other, token."})) == (None, None)
    # the subprotocol wins over the query string
    assert token_from_request(QueryParams("token=q"), headers) == (token, "rtmx-sync")


# --- log redaction -----------------------------------------------------------------

JWT = issue(KEY, "doc-1", "alice", 60)


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"/doc-1?token={JWT}", "/doc-1?token=REDACTED"),
        (f"/doc-1?x=1&token={JWT}&y=2", "/doc-1?x=1&token=REDACTED&y=2"),
        ("/doc-1?token=plain-secret-value", "/doc-1?token=REDACTED"),
        ("/doc-1?access_token=abc", "/doc-1?access_token=REDACTED"),
        (f"GET /doc-1?token%3D{JWT}", "GET /doc-1?token%3DREDACTED"),
        (f"Sec-WebSocket-Protocol: rtmx-sync, token.{JWT}", "Sec-WebSocket-Protocol: rtmx-sync, token.REDACTED"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer REDACTED"),
        ("authorization: bearer opaque-123", "authorization: bearer REDACTED"),
        (f"unexpected {JWT} here", "unexpected REDACTED here"),
        ("token expired", "token expired"),
        ("invalid token", "invalid token"),
        ("closing a client of room doc-1: token not valid for this room", None),
        ('127.0.0.1:5000 - "WebSocket /doc-1" [accepted]', None),
    ],
)
def test_redact(text, expected):
    assert redact(text) == (text if expected is None else expected)
    assert KEY.decode() not in redact(text)


def record(name, msg, args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, exc_info)


def filtered(rec: logging.LogRecord) -> logging.LogRecord:
    assert RedactingFilter().filter(rec) is True
    return rec


def test_filter_redacts_uvicorn_websocket_accepted_record_and_keeps_its_args():
    rec = filtered(
        record("uvicorn.error", '%s - "WebSocket %s" [accepted]', ("10.0.0.9:51234", f"/doc-1?token={JWT}&v=2"))
    )
    assert rec.getMessage() == '10.0.0.9:51234 - "WebSocket /doc-1?token=REDACTED&v=2" [accepted]'
    assert rec.args == ("10.0.0.9:51234", "/doc-1?token=REDACTED&v=2")


def test_filter_redacts_uvicorn_access_record_and_access_formatter_still_works():
    rec = filtered(
        record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', ("10.0.0.9:1", "GET", f"/health?token={JWT}", "1.1", 200))
    )
    line = AccessFormatter(use_colors=False).format(rec)
    assert JWT not in line and "/health?token=REDACTED" in line and "200" in line


def test_filter_handles_dict_args_literal_messages_split_tokens_and_exceptions():
    rec = filtered(record("app", "%(path)s by %(user)s", {"path": f"/r?token={JWT}", "user": "alice"}))
    assert rec.getMessage() == "/r?token=REDACTED by alice" and isinstance(rec.args, dict)
    rec = filtered(record("app", f"connect /r?token={JWT}", ()))
    assert rec.getMessage() == "connect /r?token=REDACTED"
    # the token is an argument of its own, and not JWT-shaped: the message is formatted then redacted
    rec = filtered(record("app", "connect /r?token=%s (%d)", ("opaque-secret", 3)))
    assert rec.getMessage() == "connect /r?token=REDACTED (3)"
    rec = filtered(record("app", "token %s", (JWT,)))
    assert rec.getMessage() == "token REDACTED"
    rec = filtered(record("app", "%s - %d", ("nothing secret", 5)))
    assert rec.getMessage() == "nothing secret - 5" and rec.args == ("nothing secret", 5)
    try:
        raise ValueError(f"bad url /r?token={JWT}")
    except ValueError:
        rec = filtered(record("app", "failed", (), exc_info=sys.exc_info()))
    assert JWT not in rec.exc_text and "token=REDACTED" in rec.exc_text
    rec = filtered(record("app", "%s %s", (f"token={JWT}",)))  # wrong number of arguments
    assert JWT not in str(rec.msg) + str(rec.args)


@contextlib.contextmanager
def root_logging(stream):
    """The CLI's handler on the root logger at INFO, as `rtmx-sync` installs it."""
    root = logging.getLogger()
    handler = cli.log_handler(stream)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_cli_handler_redacts_records_propagated_from_uvicorn_loggers():
    stream = io.StringIO()
    with root_logging(stream):
        logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", f"/d?token={JWT}")
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/?token={JWT}", "1.1", 200
        )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error", "uvicorn.access"]
    assert JWT not in stream.getvalue()
    assert lines[0]["message"] == '1.2.3.4:5 - "WebSocket /d?token=REDACTED" [accepted]'


async def serve_in_process(server: uvicorn.Server):
    task = asyncio.create_task(server.serve())
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    return task, server.servers[0].sockets[0].getsockname()[1]


def uvicorn_config(app) -> uvicorn.Config:
    return uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None, timeout_graceful_shutdown=2)


def test_real_uvicorn_websocket_accepted_line_is_redacted():
    async def endpoint(websocket):
        await websocket.accept()
        await websocket.close(1000)

    app = Starlette(routes=[WebSocketRoute("/{room:path}", endpoint)])
    stream = io.StringIO()

    async def scenario():
        server = uvicorn.Server(uvicorn_config(app))
        task, port = await serve_in_process(server)
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/doc-1?token={JWT}&v=1") as ws:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.recv()
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

    with root_logging(stream):
        asyncio.run(scenario())
    output = stream.getvalue()
    assert JWT not in output
    assert '"WebSocket /doc-1?token=REDACTED&v=1\\" [accepted]' in output, output


# --- CLI ---------------------------------------------------------------------------


def test_cli_token_subcommand_prints_a_token_that_verifies(tmp_path, capsys):
    path = key_file(tmp_path, KEY)
    before = time.time()
    rc = cli.main(
        ["token", "--key-file", path, "--room", "project-42/*", "--user", "drill", "--ttl", "120", "--read-only"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and out.count("\n") == 1
    grant = verifier().verify(out.strip(), "project-42/spec")
    assert grant.user == "drill" and grant.read_only is True
    assert before + 118 <= grant.expires_at <= time.time() + 120
    assert cli.main(["token", "--key-file", path, "--room", "r", "--user", "u"]) == 0
    grant = verifier().verify(capsys.readouterr().out.strip(), "r")
    assert grant.read_only is False and grant.expires_at > time.time() + 3500  # default one hour


def test_cli_token_subcommand_errors(tmp_path, capsys):
    assert cli.main(["token", "--key-file", key_file(tmp_path, "short"), "--room", "r", "--user", "u"]) == 2
    assert "at least 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["token", "--key-file", key_file(tmp_path, KEY), "--room", "r"])  # --user missing
    with pytest.raises(SystemExit):
        cli.main(["token", "--key-file", key_file(tmp_path, KEY), "--room", "r", "--user", "u", "--ttl", "0"])


@pytest.fixture
def env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("RTMX_SYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RTMX_SYNC_POSTGRES_DSN", "postgresql://x@h/db")
    monkeypatch.setenv("RTMX_SYNC_REDIS_URL", "redis://h:6379/0")
    return monkeypatch


def test_cli_check_still_works(env, tmp_path, capsys):
    env.setenv("RTMX_SYNC_SERVER_ALLOW_ANONYMOUS", "true")
    assert cli.main(["--check"]) == 0
    assert capsys.readouterr().out == "configuration OK\n"
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nauth_key_file = "{key_file(tmp_path, KEY)}"\n')
    assert cli.main(["--config", str(config), "--check"]) == 0
    assert capsys.readouterr().out == "configuration OK\n"


def test_cli_check_refuses_a_short_key(env, tmp_path, capsys):
    env.setenv("RTMX_SYNC_SERVER_AUTH_KEY_FILE", key_file(tmp_path, "too-short"))
    assert cli.main(["--check"]) == 2
    assert "server.auth_key_file" in capsys.readouterr().err
    env.delenv("RTMX_SYNC_SERVER_AUTH_KEY_FILE")
    assert cli.main(["--check"]) == 2  # neither a key nor allow_anonymous
    assert "auth_key_file is required" in capsys.readouterr().err


# --- graceful drain on SIGTERM -----------------------------------------------------


@contextlib.contextmanager
def sigterm_ignored():
    """uvicorn re-raises the signals it caught once it has stopped: keep pytest alive."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def http_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


def drain_app(release: asyncio.Event | None):
    calls = []

    async def health(_):
        return PlainTextResponse("draining" if calls else "ok", status_code=503 if calls else 200)

    async def begin_drain():
        calls.append(time.monotonic())
        if release is not None:
            await release.wait()
        else:
            await asyncio.Event().wait()  # never finishes

    app = Starlette(routes=[Route("/health", health)])
    app.state.begin_drain = begin_drain
    return app, calls


def test_sigterm_drains_while_still_serving_then_stops():
    async def scenario():
        release = asyncio.Event()
        app, calls = drain_app(release)
        server = cli.DrainingServer(uvicorn_config(app), begin_drain=app.state.begin_drain, drain_timeout_s=10)
        task, port = await serve_in_process(server)
        assert await http_status(port, "/health") == 200
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert len(calls) == 1 and server.draining and not server.should_exit
        # still accepting during the drain, and health says so
        assert await http_status(port, "/health") == 503
        release.set()
        await asyncio.wait_for(task, 10)
        assert server.should_exit and not server.force_exit and len(calls) == 1

    with sigterm_ignored():
        asyncio.run(scenario())


def test_second_sigterm_exits_at_once_and_a_stuck_drain_is_bounded():
    async def scenario(second_signal: bool):
        app, calls = drain_app(None)
        server = cli.DrainingServer(uvicorn_config(app), begin_drain=app.state.begin_drain, drain_timeout_s=1.5)
        task, _ = await serve_in_process(server)
        started = time.monotonic()
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert len(calls) == 1 and not server.should_exit
        if second_signal:
            signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 10)
        elapsed = time.monotonic() - started
        if second_signal:
            assert server.force_exit and elapsed < 1.5
        else:
            assert not server.force_exit and 1.4 <= elapsed < 5

    with sigterm_ignored():
        asyncio.run(scenario(True))
        asyncio.run(scenario(False))


def test_without_begin_drain_sigterm_stops_as_plain_uvicorn():
    async def scenario():
        app = Starlette(routes=[Route("/health", lambda _: PlainTextResponse("ok"))])
        begin_drain = getattr(app.state, "begin_drain", None)
        assert begin_drain is None
        server = cli.DrainingServer(uvicorn_config(app), begin_drain=begin_drain)
        task, _ = await serve_in_process(server)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 10)
        assert not server.draining

    with sigterm_ignored():
        asyncio.run(scenario())


def test_a_shutdown_step_that_hangs_is_bounded_logged_where_it_waits_and_left_behind(caplog):
    from rtmx_sync.app import finish_within

    async def hangs_deep_inside():
        await asyncio.Event().wait()

    async def hangs():
        await hangs_deep_inside()

    async def ignores_cancellation():
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def fails():
        raise OSError("connection reset")

    async def scenario():
        finished = []

        async def finishes():
            await asyncio.sleep(0.05)
            finished.append(True)

        started = time.monotonic()
        left = await finish_within(
            {"stuck": hangs(), "stubborn": ignores_cancellation(), "quick": finishes(), "broken": fails()}, 0.5
        )
        assert 0.5 <= time.monotonic() - started < 2
        assert left == ["stubborn", "stuck"] and finished == [True]

    # Not asyncio.run: it would cancel and await the stubborn step at the end, for ever.
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="rtmx_sync.app"):
            loop.run_until_complete(scenario())
    finally:
        loop.close()
    messages = [record.getMessage() for record in caplog.records]
    stuck = [m for m in messages if m.startswith("shutdown: stuck did not finish in 0.5 s")]
    assert len(stuck) == 1 and "in hangs_deep_inside <- " in stuck[0] and stuck[0].endswith("in hangs"), messages
    assert any(m.startswith("shutdown: stubborn did not finish") for m in messages), messages
    assert "shutdown: broken failed: OSError('connection reset')" in messages
    assert not any("quick" in m for m in messages)
