#!/usr/bin/env bash
# Build the lab node image once per set of inputs.
#   node-image.sh tag     print the image reference (rtmx-ha-node:<hash>)
#   node-image.sh build   build it unless it exists already
# Tries a Dockerfile build first (needs `docker pull debian:bookworm`), then
# falls back to debootstrap + `docker import` for machines without a registry.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
ctx="$here/images/node"
repo=${RTMX_NODE_IMAGE_REPO:-rtmx-ha-node}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
buildlog=/var/tmp/rtmx-node-image.log

hash=$(cat "$ctx/Dockerfile" "$ctx/packages.txt" "$ctx/disabled-services.txt" "$here/scripts/node-image.sh" | sha256sum | cut -c1-12)
image="$repo:$hash"

log() { printf 'node-image: %s\n' "$*" >&2; }

packages() { grep -v '^#' "$ctx/packages.txt" | grep -v '^$'; }

build_dockerfile() {
  docker image inspect debian:bookworm >/dev/null 2>&1 \
    || timeout 120 docker pull debian:bookworm >/dev/null 2>&1 \
    || return 1
  log "building $image from images/node/Dockerfile"
  docker build -q -t "$image" "$ctx" >/dev/null
}

build_debootstrap() {
  "$here/scripts/ensure-packages.sh" debootstrap
  local root
  root=$(mktemp -d /var/tmp/rtmx-node-rootfs.XXXXXX)
  # shellcheck disable=SC2064
  trap "umount -l '$root/proc' 2>/dev/null || true; rm -rf '$root'" EXIT
  log "build log: $buildlog"
  : >"$buildlog"
  log "debootstrap bookworm into $root ($mirror)"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,python3,iproute2,dbus,sudo,procps \
    bookworm "$root" "$mirror" >>"$buildlog" 2>&1
  mount -t proc proc "$root/proc"
  # Packages must not start services inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  log "installing $(packages | wc -l) packages"
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $(packages) >>"$buildlog" 2>&1
  # shellcheck disable=SC2046
  chroot "$root" systemctl disable $(grep -v '^#' "$ctx/disabled-services.txt" | grep -v '^$') >>"$buildlog" 2>&1
  chroot "$root" apt-get clean
  rm -f "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/*
  umount -l "$root/proc"
  log "importing as $image"
  tar -C "$root" -c . | docker import \
    -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
    - "$image" >/dev/null
}

case "${1:-build}" in
  tag) echo "$image" ;;
  build)
    if docker image inspect "$image" >/dev/null 2>&1; then
      log "$image is up to date"
    else
      build_dockerfile || { log "no base image from a registry; using debootstrap"; build_debootstrap; }
    fi
    echo "$image"
    ;;
  *) echo "usage: $0 tag|build" >&2; exit 2 ;;
esac
