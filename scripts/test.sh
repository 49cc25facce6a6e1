#!/usr/bin/env bash
# The README's second command: install everything the tests need, then run the whole suite.
# System packages the tests need are installed here, never by hand (CI starts from a fresh clone).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=()
# The cache tests talk to a real redis-server (tests/cache/conftest.py starts it).
command -v redis-server >/dev/null || need_apt+=(redis-server)
# ... and build a Redis Cluster with redis-cli (tests/cache/topology.py); Debian's redis-server
# depends on redis-tools, which holds it, but a hand-built redis-server may come without it.
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# The deployment tests run the project's nginx configuration in a real nginx.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# ... and verify the systemd units with systemd-analyze.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The Kubernetes manifest tests render deploy/k8s/ with kustomize v5: kubectl's built-in one (on
# the project's machine image) or a standalone kustomize. Debian has neither in a usable version
# (its kubernetes-client bundles kustomize v2), so say so here instead of failing deep in pytest.
command -v kubectl >/dev/null || command -v kustomize >/dev/null \
    || echo "scripts/test.sh: no kubectl or kustomize on PATH: tests/integration/test_deploy_k8s.py will fail" >&2
# The viewer tests drive Debian's headless Chromium through its chromedriver (no browser download).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# The IIIF validator (iiif-validator, PyPI) imports python-magic, which loads libmagic.
ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1' || need_apt+=(libmagic1)
if ((${#need_apt[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
# The monitoring tests check deploy/prometheus/ with promtool, from Debian's prometheus package
# (19 MB; without its recommended node exporter; its service is not started in a container).
if ! command -v promtool >/dev/null; then
    ((${#need_apt[@]})) || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi

"$PY" -m pip install --quiet --disable-pip-version-check -e '.[test]'
# The iviewer session test runs OMERO.iviewer's own bundle, from its PyPI wheel (pinned by
# SHA-256, kept in ~/.cache/idrserve/iviewer/; tests/integration/iviewer_wheel.py).
"$PY" -m tests.integration.iviewer_wheel >/dev/null

# The OMERO tests run the OMERO reader worker and a stand-in OMERO under a Python 3.10 venv
# with omero-py (zeroc-ice 3.6 builds from source there: minutes, once). A failed build fails
# the run here, and tests/omero fails rather than skips without it.
bash scripts/setup_omero.sh

"$PY" -m ruff check idrserve tests bench
"$PY" -m ruff format --check idrserve tests bench
"$PY" -m mypy
"$PY" -m pytest -q -p no:cacheprovider "$@"
