#!/usr/bin/env bash
# ensure-packages.sh [WHAT...]: install the Debian packages that are missing,
# and nothing else. WHAT is a package name or one of these groups:
#   @tests  redis-server, postgresql-15, pgbouncer: the unit tests run real ones;
#           nodejs and npm when `node` or `npm` is missing (the Yjs client test);
#           prometheus and prometheus-alertmanager for promtool and amtool (the
#           alert rule and Alertmanager configuration tests); pgbackrest (the
#           rendered pgBackRest files are parsed by the real one; it starts nothing)
#   @venv   git (ansible-lint, scripts/sanity.sh), and python3-venv when
#           $PYTHON (default python3) cannot create a virtualenv without it
# Without WHAT: @tests. The one place that calls apt-get for `make`.
set -euo pipefail

log() { printf 'ensure-packages: %s\n' "$*" >&2; }

wanted=()
for what in "${@:-@tests}"; do
  case "$what" in
    @tests)
      wanted+=(redis-server postgresql-15 pgbouncer)
      wanted+=(prometheus prometheus-alertmanager pgbackrest)
      # Decided by what works, not by dpkg: a NodeSource nodejs ships its own
      # npm and conflicts with Debian's npm package.
      command -v node >/dev/null 2>&1 || wanted+=(nodejs)
      command -v npm >/dev/null 2>&1 || wanted+=(npm)
      ;;
    @venv)
      # Decided by what works, not by dpkg: git may come from elsewhere, and a
      # pyenv or self-built Python has ensurepip, which Debian moves into
      # python3-venv.
      command -v git >/dev/null 2>&1 || wanted+=(git)
      "${PYTHON:-python3}" -c 'import ensurepip, venv' 2>/dev/null || wanted+=(python3-venv)
      ;;
    @*) log "unknown group $what"; exit 2 ;;
    *) wanted+=("$what") ;;
  esac
done

missing=()
for package in ${wanted[@]+"${wanted[@]}"}; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  log "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  exit 1
fi
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine (or a Debian container image) has no package lists at all,
# and old ones name versions the mirror no longer has: update first, once.
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
