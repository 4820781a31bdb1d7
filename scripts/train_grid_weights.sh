#!/usr/bin/env bash
# How the shipped phnet-grid weights (vidharm/weights/phnet-grid.safetensors) are made, on CPU.
# Needs the fetched training data (python scripts/fetch_training_data.py). About 30 + 10 + 10
# + 7 minutes on one core of the 2-core development machine (a second core builds the pairs).
#
# Settings from the environment (scripts/gpu_train.sh uses them on a GPU machine):
#   V      the vidharm command (default .venv/bin/vidharm)
#   EXTRA  options added to every stage, e.g. "--device cuda --workers 14 --data-dir PACK.npz"
#   RUNS   the folder of the four run folders (default runs)
#   SHIP   1 (default): copy stage 4 into vidharm/weights and export ONNX; 0: leave them
#   START  the first stage to run, 1 (default) to 4; from 2 on, it starts from the stage
#          before's weights: INIT if given (the weights a GPU call that stopped at its deadline
#          brought back), else $RUNS/<that stage's folder>/phnet-grid.safetensors
# Arguments are added to stage 1 only (e.g. --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
V=${V:-.venv/bin/vidharm}
RUNS=${RUNS:-runs}
START=${START:-1}
read -r -a EXTRA <<< "${EXTRA:-}"
case "$START" in 1|2|3|4) ;; *) echo "error: START must be 1, 2, 3 or 4, not '$START'"; exit 2;; esac
# the weights stage N starts from: the stage before's, or INIT for the first stage run
init_of() {
  local prev=(x x grid grid-ft grid-rel)
  if [ "$1" = "$START" ] && [ -n "${INIT:-}" ]; then echo "$INIT"
  else echo "$RUNS/${prev[$1]}/phnet-grid.safetensors"; fi
}
if [ "$START" -gt 1 ] && [ ! -f "$(init_of "$START")" ]; then
  echo "error: START=$START needs the weights of stage $((START - 1)): $(init_of "$START") is not there (give INIT=FILE)"
  exit 2
fi
# 1. the recipe mix: FFHQH 0.3, light-person 0.25, light-scene 0.3, unedited 0.15
[ "$START" -le 1 ] && \
$V train --model phnet-grid --steps 12000 --batch-size 32 --lr 2e-3 --val-every 250 \
  --out-dir "$RUNS/grid" "${EXTRA[@]}" "$@"
# 2. fine-tune with the whole image colour-augmented over the light recipes' full range
#    (absolute colour and exposure then carry no information, only person vs scene does)
[ "$START" -le 2 ] && \
$V train --model phnet-grid --steps 5000 --batch-size 32 --lr 1e-3 --val-every 250 \
  --init-weights "$(init_of 2)" --augment-scale 1.0 --augment-share 0.9 \
  --recipe-weights '{"ffhqh": 0.28, "light-person": 0.2, "light-scene": 0.24, "unedited": 0.28}' \
  --out-dir "$RUNS/grid-ft" "${EXTRA[@]}"
# 3. fine-tune for what vidharm applies: the transform relative to the person's own frame,
#    plus the fit on the composite alone (--apply both), with the cross recipe (the source
#    frame shows other content) so that a region unlike its surroundings is not "corrected"
[ "$START" -le 3 ] && \
$V train --model phnet-grid --steps 6000 --batch-size 32 --lr 7e-4 --val-every 500 \
  --init-weights "$(init_of 3)" --augment-scale 1.0 --augment-share 0.9 \
  --apply both \
  --recipe-weights '{"ffhqh": 0.25, "light-person": 0.15, "light-scene": 0.2, "unedited": 0.1, "cross": 0.3}' \
  --out-dir "$RUNS/grid-rel" "${EXTRA[@]}"
# 4. the joint head (it sees the composite and the person's own frame together) trained with
#    the rest of the model, with the other-photo recipe (a person on another natural photo)
$V train --model phnet-grid --steps 4000 --batch-size 32 --lr 3e-4 --val-every 250 \
  --init-weights "$(init_of 4)" --augment-scale 1.0 --augment-share 0.9 \
  --apply joint \
  --recipe-weights '{"ffhqh": 0.25, "light-person": 0.15, "light-scene": 0.15, "unedited": 0.1, "cross": 0.2, "other-photo": 0.15}' \
  --out-dir "$RUNS/grid-joint" "${EXTRA[@]}"
[ "${SHIP:-1}" = 1 ] || exit 0
cp "$RUNS/grid-joint/phnet-grid.safetensors" vidharm/weights/phnet-grid.safetensors
# 5. the ONNX export the CPU runs without torch (needs `pip install onnx`; checked against torch)
.venv/bin/python scripts/export_onnx.py
