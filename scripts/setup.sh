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
if [ $want_test = 1 ] && ! { command -v Xvfb && command -v xdotool && command -v xwd; } >/dev/null; then
  # for tests/test_preview_x11.py (the preview window under a real X server); a few MB
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing xvfb xdotool x11-apps (preview-window test)"
    apt-get install -y -q --no-install-recommends xvfb xdotool x11-apps >/dev/null 2>&1 \
      || echo "[setup] could not install them: tests/test_preview_x11.py will skip"
  else
    echo "[setup] no Xvfb/xdotool/xwd (Debian: sudo apt-get install xvfb xdotool x11-apps):" \
         "tests/test_preview_x11.py will skip"
  fi
fi
echo "[setup] fetching assets (pinned SHA-256, cached in ~/.cache/vidharm)"
if [ $want_test = 1 ]; then
  "$VENV/bin/vidharm" assets fetch --group core --group extra
else
  "$VENV/bin/vidharm" assets fetch
fi
echo "[setup] done"
