#!/usr/bin/env bash
# ansible-test must run from a path ending in ansible_collections/rtmx/ha, and
# reads files from git: copy the tracked (and new, unignored) files there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/sanity/ansible_collections/rtmx/ha"
rm -rf "$dest"
mkdir -p "$dest"
cd "$root"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dest" 2>/dev/null || true
cd "$dest"
git init -q . && git add -A >/dev/null
# ansible-test bootstraps pip in its per-test venvs from a script it downloads
# from a host we cannot reach; give it an offline stand-in.
pip_version=$(python3 -c 'import re, ansible_test._internal.python_requirements as r, inspect; print(re.search(r"pip=.([0-9.]+).", inspect.getsource(r)).group(1))')
mkdir -p ~/.ansible/test/cache
cp "$root/scripts/get-pip-offline.py" ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
python_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Plugins only (the roles and the sync server have their own linters); each
# in the sanity virtualenv (requirements-sanity.txt, made by `make sanity`).
exec ansible-test sanity --local --python "$python_version" --color yes "${@:-plugins/}"
