#!/usr/bin/env bash
# How the shipped FMM weights (vidharm/weights/fmm.safetensors) were trained on the 2-core
# CPU, with the same data and loss as phnet-lite (scripts/train_default_weights.sh): stage A
# at 128 px, stage B fine-tune at 256 px (the size the harmonizer runs the network at).
# Needs the training data:  python scripts/fetch_training_data.py
# Re-running continues from the checkpoints (--resume). Then:
#   cp runs/fmm-b/final.safetensors vidharm/weights/fmm.safetensors
#   .venv/bin/python scripts/model_card.py --weights vidharm/weights/fmm.safetensors \
#       --train-dirs runs/fmm-a runs/fmm-b --out docs/model-card-fmm.md
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/vidharm
$V train --model fmm --size 128 --batch-size 16 --steps 1200 --lr 2e-4 --seed 0 \
  --out-dir runs/fmm-a --val-every 400 --checkpoint-every 200 --workers 1 --no-progress --resume
$V train --model fmm --size 256 --batch-size 8 --steps 400 --lr 5e-5 --seed 1 \
  --init-weights runs/fmm-a/final.safetensors \
  --out-dir runs/fmm-b --val-every 200 --checkpoint-every 100 --workers 1 --no-progress --resume
