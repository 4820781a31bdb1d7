"""What one harmonizer refresh costs: ``fit(composite, mask) -> ColorGrid`` at the working size,
alone and relative to the camera frame as vidharm applies it (two fits:
:func:`vidharm.color.fit_relative`).

    .venv/bin/python bench/bench_fit.py                       # phnet-grid, light, phnet-lite
    .venv/bin/python bench/bench_fit.py --harmonizers phnet-grid --threads 1 2 --size 256

A real frame of the sample clip on the sample background, its MediaPipe matte, subsampled to
``--size`` (short side) as the pipeline does; each harmonizer's ``fit`` is timed ``--repeat``
times after a warm-up, per torch thread count; min / median / max in ms. Print the machine
load with it: timings on a busy 2-core machine are not a quiet machine's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--harmonizers", nargs="+", default=["phnet-grid", "light", "phnet-lite"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    from vidharm.commands.common import frame_process_settings
    frame_process_settings()             # as the commands do (process-wide, at the entry point)

    import av
    import torch
    from vidharm import assets
    from vidharm.composite import composite, make_background
    from vidharm.config import HarmonizerConfig, SegmentationConfig, load_config
    from vidharm.registry import registry

    with av.open(str(assets.path("sample-clip"))) as c:
        rgb = next(f for i, f in enumerate(c.decode(video=0)) if i == 30).to_ndarray(format="rgb24")
    with registry.segmenters.create("mediapipe", SegmentationConfig(model="general")) as seg:
        mask = seg.segment(rgb, None).astype(np.float32)
    cfg = load_config(None)
    bg = make_background(str(assets.path("sample-background")), cfg).frame(
        (rgb.shape[1], rgb.shape[0]), 0.0, current=rgb, mask=mask)
    step = max(1, min(rgb.shape[:2]) // args.size)
    comp = np.ascontiguousarray(composite(rgb, bg, mask)[::step, ::step])
    small = np.ascontiguousarray(mask[::step, ::step])
    frame = np.ascontiguousarray(rgb[::step, ::step])
    from vidharm.color import fit_relative
    print(f"fit at {comp.shape[1]}x{comp.shape[0]}, load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores, {args.repeat} runs each")
    print(f"{'harmonizer':>12s} {'threads':>7s} | {'min ms':>7s} {'median':>7s} {'max':>7s} | "
          f"relative: {'min':>6s} {'median':>7s} {'max':>7s}")
    for name in args.harmonizers:
        h = registry.harmonizers.create(name, HarmonizerConfig(name=name, device="cpu",
                                                               work_size=args.size))
        for t in args.threads:
            torch.set_num_threads(t)
            for _ in range(5):
                h.fit(comp, small)
            times, rel = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                h.fit(comp, small)
                t1 = time.perf_counter()
                fit_relative(h.fit, comp, small, frame)
                times.append(1000 * (t1 - t0))
                rel.append(1000 * (time.perf_counter() - t1))
            print(f"{name:>12s} {t:7d} | {min(times):7.2f} {np.median(times):7.2f} {max(times):7.2f} | "
                  f"{'':9s} {min(rel):6.2f} {np.median(rel):7.2f} {max(rel):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
