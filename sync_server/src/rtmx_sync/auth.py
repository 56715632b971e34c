"""Token authentication: signed, expiring, per-room tokens (JWT, HS256).

A token is a JWT signed with HMAC-SHA256 with the key in ``server.auth_key_file``.
Its claims:

- ``sub``  (required) the user, a non-empty string;
- ``room`` (required) the exact room name, or a pattern ending in ``*`` that
  matches every room starting with what precedes it (``"project-42/*"``;
  ``"*"`` alone matches every room);
- ``ro``   (optional, default false) read-only: the client may read the room
  but its updates are refused;
- ``exp``  (required) expiry, ``iat`` issue time, optional ``nbf``: seconds
  since the epoch, checked with ``LEEWAY_S`` of tolerance for clock skew;
- ``aud``  (required) must be ``"rtmx-sync"`` (a token minted for another
  service with the same key is refused).

Only HS256 is accepted (no ``none``, no other algorithm).

The key file holds one key per line (blank lines and lines starting with ``#``
are ignored); each key is at least 32 bytes, e.g. ``openssl rand -base64 48``.
The first key signs (``rtmx-sync token``), every key verifies: to rotate,
prepend a new key and deploy, switch the token issuers over, and remove the old
key once the tokens it signed have expired.

Precedence: when a key file is set a valid token is always required, even if
``server.allow_anonymous`` is true; only with no key file and
``allow_anonymous`` is every client let in, as user ``anonymous`` with
read-write access to any room.

A client presents its token in one of three ways (checked in this order):
``Authorization: Bearer <token>``; the WebSocket subprotocol list
``Sec-WebSocket-Protocol: rtmx-sync, token.<token>`` (for browsers, which
cannot set headers; keeps the token out of URLs and access logs; the server
answers with the ``rtmx-sync`` subprotocol); or ``?token=<token>`` in the URL
(what y-websocket's ``params`` option does). ``redact`` and
``RedactingFilter`` keep tokens out of every log line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

from .config import ConfigError

AUDIENCE = "rtmx-sync"
ALGORITHM = "HS256"
SUBPROTOCOL = "rtmx-sync"
SUBPROTOCOL_TOKEN_PREFIX = "token."
LEEWAY_S = 30.0
MIN_KEY_BYTES = 32
# A token longer than this is refused before any parsing (cheap DoS guard).
MAX_TOKEN_CHARS = 4096
ANONYMOUS = "anonymous"

# Close reasons (str(AuthError)).
REASON_REQUIRED = "authentication required"
REASON_INVALID = "invalid token"
REASON_EXPIRED = "token expired"
REASON_ROOM = "token not valid for this room"


class AuthError(Exception):
    """The client may not open this room; str(error) is a short close reason."""


@dataclass(frozen=True)
class Grant:
    user: str
    room: str
    read_only: bool
    expires_at: float | None  # seconds since the epoch; None: never (anonymous)


def load_keys(path: str | Path) -> tuple[bytes, ...]:
    """The keys in a key file, first (signing) key first; ConfigError if unusable."""
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"setting server.auth_key_file: cannot read {path}: {error.strerror or error}") from None
    keys = []
    for number, line in enumerate(content.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith(b"#"):
            continue
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"setting server.auth_key_file: the key on line {number} of {path} is {len(key)} bytes, "
                f"at least {MIN_KEY_BYTES} are required (generate one with: openssl rand -base64 48)"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(f"setting server.auth_key_file: {path} holds no key")
    return tuple(keys)


def issue(key: bytes, room: str, user: str, ttl_s: float, read_only: bool = False, now: float | None = None) -> str:
    """A token for `user` on `room` (a name or a ``prefix*`` pattern) valid for `ttl_s` seconds."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the signing key must be at least {MIN_KEY_BYTES} bytes")
    if not user:
        raise ValueError("user must not be empty")
    if not room:
        raise ValueError("room must not be empty")
    if not ttl_s > 0:
        raise ValueError("ttl_s must be positive")
    now = time.time() if now is None else now
    claims = {
        "sub": user,
        "room": room,
        "ro": bool(read_only),
        "iat": int(now),
        "exp": int(now + ttl_s),
        "aud": AUDIENCE,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def room_matches(pattern: str, room: str) -> bool:
    if pattern.endswith("*"):
        return room.startswith(pattern[:-1])
    return room == pattern


class TokenVerifier:
    def __init__(self, keys: tuple[bytes, ...] = (), allow_anonymous: bool = False, leeway_s: float = LEEWAY_S):
        for key in keys:
            if len(key) < MIN_KEY_BYTES:
                raise ConfigError(f"setting server.auth_key_file: every key must be at least {MIN_KEY_BYTES} bytes")
        self.keys = tuple(keys)
        self.allow_anonymous = allow_anonymous
        self.leeway_s = leeway_s

    @classmethod
    def from_settings(cls, settings) -> TokenVerifier:
        """Reads settings.auth_key_file (may be ""); raises ConfigError if the file is unusable."""
        path = getattr(settings, "auth_key_file", "")
        keys = load_keys(path) if path else ()
        return cls(keys, allow_anonymous=bool(getattr(settings, "allow_anonymous", False)))

    @property
    def anonymous(self) -> bool:
        """True when every client is let in without a token."""
        return not self.keys and self.allow_anonymous

    def verify(self, token: str | None, room: str) -> Grant:
        if self.anonymous:
            return Grant(user=ANONYMOUS, room=room, read_only=False, expires_at=None)
        if not token:
            raise AuthError(REASON_REQUIRED)
        if not self.keys:
            # No key and anonymous access not allowed: nobody gets in (fail closed).
            raise AuthError(REASON_INVALID)
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(REASON_INVALID)
        claims = self._decode(token)
        user = claims.get("sub")
        pattern = claims.get("room")
        read_only = claims.get("ro", False)
        if not isinstance(user, str) or not user:
            raise AuthError(REASON_INVALID)
        if not isinstance(pattern, str) or not pattern:
            raise AuthError(REASON_INVALID)
        if not isinstance(read_only, bool):
            raise AuthError(REASON_INVALID)
        if not room_matches(pattern, room):
            raise AuthError(REASON_ROOM)
        return Grant(user=user, room=room, read_only=read_only, expires_at=float(claims["exp"]))

    def _decode(self, token: str) -> dict:
        for key in self.keys:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    leeway=self.leeway_s,
                    options={"require": ["exp", "sub", "room", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue  # maybe signed with another (older or newer) key
            except jwt.ExpiredSignatureError:
                # Checked after the signature: the token is genuine but too old.
                raise AuthError(REASON_EXPIRED) from None
            except jwt.PyJWTError:
                raise AuthError(REASON_INVALID) from None
            except Exception:  # anything unexpected in a hostile token is just invalid
                raise AuthError(REASON_INVALID) from None
        raise AuthError(REASON_INVALID)


def _header_values(headers, name: str) -> list[str]:
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    value = headers.get(name)
    return [value] if value else []


def token_from_request(query_params, headers) -> tuple[str | None, str | None]:
    """(token or None, subprotocol to accept the WebSocket with or None).

    `headers` is a case-insensitive mapping (Starlette Headers), `query_params`
    a mapping. The subprotocol is "rtmx-sync" whenever the client offered it
    (browsers fail the handshake if an offered subprotocol is not echoed); the
    ``token.<jwt>`` entry is never echoed.
    """
    token: str | None = None
    subprotocol: str | None = None
    offered: list[str] = []
    for value in _header_values(headers, "sec-websocket-protocol"):
        offered.extend(item.strip() for item in value.split(",") if item.strip())
    if SUBPROTOCOL in offered:
        subprotocol = SUBPROTOCOL
    authorization = headers.get("authorization") or ""
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip()
    if token is None:
        for item in offered:
            if item.startswith(SUBPROTOCOL_TOKEN_PREFIX) and len(item) > len(SUBPROTOCOL_TOKEN_PREFIX):
                token = item[len(SUBPROTOCOL_TOKEN_PREFIX) :]
                break
    if token is None:
        value = query_params.get("token") if query_params is not None else None
        if value:
            token = value
    return token, subprotocol


# --- keeping tokens out of logs ------------------------------------------------

REDACTED = "REDACTED"
_REDACTIONS = (
    # ?token=..., &access_token=..., token%3D... in URLs and query strings
    (re.compile(r"(?i)(token(?:=|%3D))[^&\s\"'#;,)\]}]+"), r"\1" + REDACTED),
    # Sec-WebSocket-Protocol: rtmx-sync, token.<jwt>
    (re.compile(r"(?<![\w.])(token\.)[A-Za-z0-9_\-.~+/=%]+"), r"\1" + REDACTED),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9_\-.~+/=%]+"), r"\1" + REDACTED),
    # any other JWT-shaped string (a JSON header always encodes to "eyJ...")
    (re.compile(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), REDACTED),
)


def redact(text: str) -> str:
    """`text` with every token value replaced by REDACTED."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(value):
    return redact(value) if isinstance(value, str) else value


class RedactingFilter(logging.Filter):
    """Removes tokens from log records; install it on the handler(s) so it sees
    the records of every logger (uvicorn.access and uvicorn.error included).

    The arguments are redacted one by one when that suffices (so formatters that
    use record.args, like uvicorn's AccessFormatter, keep working); otherwise
    the message is formatted, redacted and stored without arguments.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception:  # never lose a line, never leak one: drop to a safe message
            record.msg = "log record could not be redacted (suppressed)"
            record.args = ()
        return True

    @staticmethod
    def _redact(record: logging.LogRecord) -> None:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        color_message = record.__dict__.get("color_message")
        if isinstance(color_message, str):
            record.color_message = redact(color_message)
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not match the format: logging reports the error
            # with msg and args, so redact those as strings.
            record.msg = redact(str(record.msg))
            if isinstance(record.args, Mapping):
                record.args = {key: redact(str(value)) for key, value in record.args.items()}
            elif isinstance(record.args, tuple):
                record.args = tuple(redact(str(value)) for value in record.args)
            return
        clean = redact(message)
        if clean == message:
            return
        args = record.args
        if isinstance(args, Mapping):
            candidate = {key: _redact_arg(value) for key, value in args.items()}
        elif isinstance(args, tuple):
            candidate = tuple(_redact_arg(value) for value in args)
        else:
            candidate = None
        if candidate and isinstance(record.msg, str):
            record.args = candidate
            try:
                formatted = record.getMessage()
            except Exception:
                formatted = None
            if formatted is not None and redact(formatted) == formatted:
                return
        record.msg = clean
        record.args = ()
