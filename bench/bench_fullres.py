"""How close the full-resolution colour-grid output stays to running the network at full
resolution, and what each costs per frame.

For frames of the sample clip (upscaled to 720p and 1080p) composited onto the sample
background with the MediaPipe mask:
  A = network at full resolution (the reference; slow),
  B = network at 256x256 -> colour grid fitted -> applied at full resolution (vidharm),
  C = network at 256x256 -> output resized up bicubically -> blended (the published test path).
Prints PSNR(B, A) and PSNR(C, A) over the person, ms per frame for A and B, and the grid size.

    .venv/bin/python bench/bench_fullres.py [--weights default] [--frames 5] [--grid 4]
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch


def psnr(a, b, mask):
    m = mask > 0.5
    d = (a.astype(np.float64) - b.astype(np.float64))[m]
    mse = float((d ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="default")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--grid", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vidharm.commands.common import frame_process_settings
    frame_process_settings()               # as the CLI does: one BLAS thread, heap buffers reused
    from vidharm import Harmonizer, assets
    from vidharm.composite import composite, cover_crop
    from vidharm.imageio import load_image
    from vidharm.video import VideoReader
    from vidharm_plugins.segmenters import MediaPipeSegmenter
    h = Harmonizer.from_pretrained(args.weights, device="cpu", grid=(args.grid, args.grid))
    bg_img = load_image(assets.path("sample-background"))
    frames = [f.rgb for i, f in enumerate(VideoReader(assets.path("sample-clip"))) if i % 12 == 0][: args.frames]
    seg = MediaPipeSegmenter(model="general")
    print(f"weights={h.name} grid={args.grid}x{args.grid} threads={args.threads} frames={len(frames)}")
    print(f"{'size':>10s} {'PSNR grid':>10s} {'PSNR resize':>12s} {'ms full-res net':>16s} {'ms grid path':>13s}")
    for (w, hh) in ((1280, 720), (1920, 1080)):
        pg, pr, ta, tb = [], [], [], []
        for rgb in frames:
            big = cv2.resize(rgb, (w, hh), interpolation=cv2.INTER_CUBIC)
            mask = seg.segment(big, None)
            comp = composite(big, cover_crop(bg_img, (w, hh)), mask)
            h(comp, mask)                                      # warm-up for this size
            t0 = time.perf_counter()
            grid_out = h(comp, mask)
            tb.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            full = h.full_resolution(comp, mask)
            ta.append(time.perf_counter() - t0)
            full = (comp + (mask[..., None] > 0.5) * (full.astype(np.float32) - comp)).astype(np.uint8)
            # published path: network at 256, resize back up, blend
            img, m, _, _ = h._to_tensor(comp, mask)
            low = h.run_network(img, m)[0].permute(1, 2, 0).numpy()
            up = cv2.resize(low, (w, hh), interpolation=cv2.INTER_CUBIC)
            mb = (mask > 0.5)[..., None]
            resized = np.where(mb, np.clip(up * 255 + 0.5, 0, 255), comp).astype(np.uint8)
            sel = mask > 0.5
            gb = np.where(sel[..., None], grid_out, comp)
            pg.append(psnr(gb, full, mask))
            pr.append(psnr(resized, full, mask))
        print(f"{w}x{hh:<5d} {np.mean(pg):10.2f} {np.mean(pr):12.2f} {1000 * np.median(ta):16.1f} "
              f"{1000 * np.median(tb):13.1f}")
    print("PSNR over the person (mask > 0.5), 0-255 scale, MAX 255; reference = network at full resolution.")
    seg.close()


if __name__ == "__main__":
    main()
