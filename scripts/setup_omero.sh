#!/usr/bin/env bash
# Builds the Python 3.10 virtualenv the OMERO reader worker runs in (docs/omero.md says why a
# separate interpreter): omero-py needs zeroc-ice 3.6.x, which PyPI has only as a source
# distribution that compiles on Python <= 3.10. Idempotent: a venv that already imports omero
# and Ice is left alone, so scripts/test.sh can call this on every run.
#
#   IDRSERVE_OMERO_VENV   where the venv goes (default: <repo>/.venv-omero, gitignored)
#   IDRSERVE_OMERO_PYTHON the 3.10 interpreter to build it from (default: pyenv's newest 3.10)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${IDRSERVE_OMERO_VENV:-$PWD/.venv-omero}
ICE_SPEC=${IDRSERVE_OMERO_ICE_SPEC:-'zeroc-ice>=3.6.5,<3.7'}
OMERO_SPEC=${IDRSERVE_OMERO_PY_SPEC:-'omero-py>=5.19,<6'}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import Ice, omero, omero.gateway' 2>/dev/null; then
    echo "setup_omero: $VENV ready"
    exit 0
fi

# Build dependencies of the zeroc-ice 3.6 source distribution (C++ compiler, OpenSSL, bzip2).
need_apt=()
command -v g++ >/dev/null || need_apt+=(build-essential)
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
[ -e /usr/include/bzlib.h ] || need_apt+=(libbz2-dev)
if ((${#need_apt[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

PY310=${IDRSERVE_OMERO_PYTHON:-}
if [ -z "$PY310" ]; then
    for root in "${PYENV_ROOT:-$HOME/.pyenv}/versions"/3.10.*; do
        [ -x "$root/bin/python3.10" ] && PY310="$root/bin/python3.10"
    done
fi
if [ -z "$PY310" ] && command -v python3.10 >/dev/null; then
    PY310=$(command -v python3.10)
fi
if [ -z "$PY310" ]; then
    echo "setup_omero: no Python 3.10 found (set IDRSERVE_OMERO_PYTHON or install it with pyenv)" >&2
    exit 1
fi

echo "setup_omero: building $VENV with $PY310 (zeroc-ice compiles from source: a few minutes)"
rm -rf "$VENV"
"$PY310" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip wheel setuptools
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ICE_SPEC"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$OMERO_SPEC" numpy
"$VENV/bin/python" -c 'import Ice, omero, omero.gateway; print("setup_omero: Ice", Ice.stringVersion())'
