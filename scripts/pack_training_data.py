#!/usr/bin/env python3
"""Pack the fetched training data into one file for training elsewhere (a GPU machine).

``vidharm train --model phnet-grid`` reads the fetched photos, their mattes and the training
clips' frames (decoded with PyAV, segmented with MediaPipe) at a small size. This writes
exactly those images (people with their mattes, natural photos without people; the clips'
frames included; held-out sources too, for the validation curves) to one compressed ``.npz``,
so that the training runs where only torch, numpy, OpenCV, Pillow, safetensors and click are:

    .venv/bin/python scripts/pack_training_data.py gpu-kit/train-64.npz          # phnet-grid (64 px)
    vidharm train --model phnet-grid --data-dir gpu-kit/train-64.npz ...          # anywhere

The pack holds the licensed photos themselves: keep it out of the repository (``gpu-kit/`` is
ignored); the data folder's ``licences/`` and ``manifest.json`` say what they are.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from vidharm.errors import VidharmError
    from vidharm.training.data import default_data_dir
    from vidharm.training.grid_train import GridTrainConfig
    from vidharm.training.recipes import load_items, save_pack, short_side_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the pack to write (.npz)")
    ap.add_argument("--data-dir", default=None, help="fetched training data (default: the cache)")
    ap.add_argument("--size", type=int, default=64,
                    help="the model's input size (phnet-grid: 64); the images are kept at the "
                         "short side its training decodes")
    ap.add_argument("--short-side", type=int, default=None, help="instead of --size")
    ap.add_argument("--no-clips", action="store_true",
                    help="leave out the training clips' frames (photos only)")
    a = ap.parse_args()
    out = Path(a.out)
    if out.suffix != ".npz":
        print(f"error: {out} must end in .npz -- e.g. gpu-kit/train-64.npz", file=sys.stderr)
        return 2
    short = a.short_side or short_side_for(a.size, 0.6)
    data_dir = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
    try:
        people, scenes = load_items(data_dir, short, clips=() if a.no_clips else GridTrainConfig().clips,
                                    progress=lambda m: print(m, file=sys.stderr))
        if not people or not scenes:
            print(f"error: {data_dir} holds {len(people)} people images and {len(scenes)} scenes"
                  " -- run python scripts/fetch_training_data.py first", file=sys.stderr)
            return 2
        save_pack(out, people, scenes, short)
    except VidharmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {len(people)} people images, {len(scenes)} scenes at {short} px, "
          f"{out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
