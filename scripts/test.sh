#!/usr/bin/env bash
# Set up (with test extras) and run the test suite. CI calls this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -q "$@"
