#!/usr/bin/env bash
# The prepared run for a lent GPU machine: its CUDA tests, then the four-stage phnet-grid
# recipe (scripts/train_grid_weights.sh) on CUDA, in one call of under 10 minutes.
#
# That machine has torch with CUDA, numpy, OpenCV, Pillow, safetensors, click and pytest, no
# package registry, and takes at most 64 MiB of the tree. So, first, here:
#
#   .venv/bin/python scripts/pack_training_data.py gpu-kit/train-64.npz      # 18 MiB
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl kornia==0.9.0 kornia_rs==0.2.0
#
# then run `bash scripts/gpu_train.sh` there, carrying gpu-kit and .whl. What comes back in
# $OUT: the log, the stage-4 weights and each stage's curves. Nothing here is shipped: the
# weights are evaluated and looked at here (vidharm eval --recipes, bench/sheet_shift.py)
# before anything is copied into vidharm/weights.
#
# Settings: WORKERS (processes building pairs, default: cores - 2), STAGE1 (arguments for
# stage 1 only, e.g. "--steps 6000"), TESTS=0 to skip the CUDA tests, START=N with INIT=FILE
# to begin at stage N from the weights of stage N-1 that an earlier call brought back (carry
# FILE too). For a smoke run on a CPU: PY=.venv/bin/python WHEELS=0 DEVICE=cpu WORKERS=1
# MORE="--steps 4 --val-every 2".
#
# Measured on an H200 (2026-11-30, 14 workers): 0.017-0.019 s a step in stages 1-2, about
# 0.026 in stage 3; stages 1 and 2 took about 330 s, so the four stages do not fit in one
# 600 s call: run stages 1-2 (DEADLINE=560), then START=3 INIT=<the grid-ft weights>.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_train.log") 2>&1
ls gpu-kit/train-64.npz .whl/kornia-*.whl >/dev/null || {
  echo "error: gpu-kit/train-64.npz or .whl/kornia-*.whl is missing -- make them first (see the top of this script) and carry both"
  exit 2; }
PY=${PY:-python3}
if [ "${WHEELS:-1}" = 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null || true
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
t0=$(date +%s)
if [ "${TESTS:-1}" = 1 ]; then
  # the CUDA tests that need no PyAV, MediaPipe or fetched assets there
  $PY -m pytest -q -p no:cacheprovider tests/test_phnet.py::test_cuda_fp16_close_to_fp32 \
    tests/test_grid_harmonizers.py::test_grid_training_on_cuda
  echo "tests: exit $? after $(( $(date +%s) - t0 )) s"
fi
W=${WORKERS:-$(( $(nproc) - 2 ))}
# stop training at DEADLINE seconds from the start (default 540), so that what is done comes back
left=$(( ${DEADLINE:-540} - ($(date +%s) - t0) ))
V="$PY -m vidharm.cli" RUNS="$OUT/runs" SHIP=0 START=${START:-1} INIT=${INIT:-} \
  EXTRA="--device ${DEVICE:-cuda} --workers $W --data-dir gpu-kit/train-64.npz ${MORE:-}" \
  timeout -k 10 "$left" bash scripts/train_grid_weights.sh ${STAGE1:-}
rc=$?
echo "training: exit $rc after $(( $(date +%s) - t0 )) s"
# at most 8 files come back: the weights, four curves, the log
for s in grid grid-ft grid-rel grid-joint; do      # each stage's curves; the last that finished
  [ -f "$OUT/runs/$s/curves.jsonl" ] && cp "$OUT/runs/$s/curves.jsonl" "$OUT/curves-$s.jsonl"
  [ -f "$OUT/runs/$s/phnet-grid.safetensors" ] && last=$s
done
if [ -n "${last:-}" ]; then
  cp "$OUT/runs/$last/phnet-grid.safetensors" "$OUT/phnet-grid-gpu-$last.safetensors"
  echo "weights of stage $last: $OUT/phnet-grid-gpu-$last.safetensors"
fi
rm -rf "$OUT/runs"
exit $rc
