#!/usr/bin/env bash
# timed.sh FILE NAME CMD...: run CMD, append "NAME  SECONDS  status" to FILE.
set -uo pipefail
file=$1 name=$2
shift 2
mkdir -p "$(dirname "$file")"
start=$(date +%s)
"$@"
rc=$?
printf '%-10s %5ss  %s\n' "$name" "$(($(date +%s) - start))" "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")" | tee -a "$file"
exit $rc
