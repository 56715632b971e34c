#!/usr/bin/env bash
# Make a Docker engine available: install Debian's docker.io when absent,
# start dockerd when it is not running, reuse a running one.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ] && ! docker info >/dev/null 2>&1; then
  log "not root and no usable Docker engine: run as root or start dockerd yourself"
  exit 1
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Debian's docker.io"
  "$(dirname "$0")/ensure-packages.sh" docker.io
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  # systemd is not PID 1 on every build machine: start the daemon directly.
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi

if ! docker info >/dev/null 2>&1; then
  log "dockerd did not come up within 60 s; see /var/log/dockerd.log"
  tail -n 20 /var/log/dockerd.log >&2 || true
  exit 1
fi
log "Docker engine ready"
