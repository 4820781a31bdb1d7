#!/usr/bin/env bash
# Set up vidharm on a fresh machine: virtualenv, pinned CPU torch, the package, the assets.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --test   # + test dependencies and the test clips
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VIDHARM_VENV:-.venv}
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# torch first and pinned: any other torch spec pulls gigabytes of CUDA packages.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0"
  pip install "torch==2.13.0"
fi
echo "[setup] installing vidharm"
if [ $want_test = 1 ]; then pip install -e ".[test]"; else pip install -e .; fi
echo "[setup] fetching assets (pinned SHA-256, cached in ~/.cache/vidharm)"
if [ $want_test = 1 ]; then
  "$VENV/bin/vidharm" assets fetch --group core --group extra
else
  "$VENV/bin/vidharm" assets fetch
fi
echo "[setup] done"
