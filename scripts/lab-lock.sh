#!/usr/bin/env bash
# lab-lock.sh CMD...: run CMD holding the machine-wide lab lock, or refuse at
# once (exit 75) naming the run that holds it. The lab, molecule and lab-down
# share one Docker engine per machine, so a second run would remove or reuse
# the first one's containers: it must not start, and must not wait either.
# Nested runs (make test calls make molecule) pass: the holder exports
# RTMX_HA_LOCK_HELD=<its pid>:<lock file>, honoured only in its descendants.
# The lock is machine-wide because dockerd is; RTMX_HA_LOCK_FILE moves it.
set -euo pipefail

lock=${RTMX_HA_LOCK_FILE:-/var/lock/rtmx-ha-lab.lock}
holder=$lock.holder

log() { printf 'lab-lock: %s\n' "$*" >&2; }

[ $# -gt 0 ] || { echo "usage: $0 CMD..." >&2; exit 2; }

# Is $1 this process or one of its ancestors? A stale exported marker (dead
# or unrelated pid) must not let a run past the lock.
is_ancestor() {
  local pid=$$
  while [ "$pid" -gt 1 ]; do
    [ "$pid" = "$1" ] && return 0
    pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null) || return 1
    [ -n "$pid" ] || return 1
  done
  return 1
}

held=${RTMX_HA_LOCK_HELD:-}
if [ "${held#*:}" = "$lock" ] && is_ancestor "${held%%:*}"; then
  exec "$@"
fi

mkdir -p "$(dirname "$lock")"
[ -e "$lock" ] || : >>"$lock"
# Read-only is enough for flock(2), and works when another user created it.
exec 9<"$lock"
if ! flock -n 9; then
  log "another run holds $lock: $(cat "$holder" 2>/dev/null || echo 'unknown holder')"
  log "refusing to start: it uses the same Docker engine; wait for it to end (or stop that pid) and run again"
  exit 75
fi
printf 'pid %s, since %s: %s\n' "$$" "$(date '+%F %T %Z')" "$*" >"$holder" 2>/dev/null || true
trap 'rm -f "$holder"' EXIT
export RTMX_HA_LOCK_HELD="$$:$lock"
# Not exec, and fd 9 closed for CMD: the lock lives exactly as long as this
# script, never in a daemon CMD leaves behind (dockerd started by make docker).
rc=0
"$@" 9<&- || rc=$?
exit $rc
