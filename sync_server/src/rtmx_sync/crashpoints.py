"""Crash points, for tests only: with RTMX_SYNC_CRASH_AT=<step>[,<step>...] in
its environment a server kills itself (SIGKILL, as a power cut would) when an
update reaches that step, so that a test can show nothing is lost between any
two steps. Never set by the role; unset, a call is one set lookup."""

import os
import signal

# The steps of a client's update, in order.
STEPS = ("applied", "stored", "relayed", "published")

_CRASH_AT = frozenset(step for step in os.environ.get("RTMX_SYNC_CRASH_AT", "").split(",") if step)
if _CRASH_AT - set(STEPS):
    raise SystemExit(f"RTMX_SYNC_CRASH_AT: unknown steps {sorted(_CRASH_AT - set(STEPS))}; known: {STEPS}")


def reached(step: str) -> None:
    if step in _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
