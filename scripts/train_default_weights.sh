#!/usr/bin/env bash
# How the shipped default weights (vidharm/weights/phnet-lite.safetensors) were trained on
# the 2-core CPU: stage A at 128 px, stage B fine-tune at 256 px. Needs the training data:
#   python scripts/fetch_training_data.py
# Re-running continues from the checkpoints (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/vidharm
$V train --model phnet-lite --size 128 --batch-size 16 --steps 1200 --lr 2e-4 --seed 0 \
  --out-dir runs/lite-a --val-every 400 --checkpoint-every 200 --workers 1 --no-progress --resume
$V train --model phnet-lite --size 256 --batch-size 8 --steps 300 --lr 5e-5 --seed 1 \
  --init-weights runs/lite-a/final.safetensors \
  --out-dir runs/lite-b --val-every 200 --checkpoint-every 100 --workers 1 --no-progress
# stage C: longer fine-tune at 256 px, lower learning rate
$V train --model phnet-lite --size 256 --batch-size 8 --steps 1500 --lr 2e-5 --seed 2 \
  --init-weights runs/lite-b/final.safetensors \
  --out-dir runs/lite-c --val-every 250 --checkpoint-every 250 --workers 1 --no-progress
