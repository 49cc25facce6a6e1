#!/usr/bin/env bash
# The README's second command: install everything the tests need, then run the whole suite.
# System packages the tests need are installed here, never by hand (CI starts from a fresh clone).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=()
# The cache tests talk to a real redis-server (tests/cache/conftest.py starts it).
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The deployment tests run the project's nginx configuration in a real nginx.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# ... and verify the systemd units with systemd-analyze.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if ((${#need_apt[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

"$PY" -m pip install --quiet --disable-pip-version-check -e '.[test]'

"$PY" -m ruff check idrserve tests bench
"$PY" -m ruff format --check idrserve tests bench
"$PY" -m mypy
"$PY" -m pytest -q -p no:cacheprovider "$@"
