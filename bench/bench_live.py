"""Live engine benchmark: sustained fps, dropped frames, harmonizer refresh, added latency.

    .venv/bin/python bench/bench_live.py                              # 720p and 1080p, 30 s each
    .venv/bin/python bench/bench_live.py --sizes 720 --seconds 300    # the 5-minute target run
    .venv/bin/python bench/bench_live.py --sizes 720 --minutes 30     # soak: memory, stalls
    .venv/bin/python bench/bench_live.py --compare none,light,phnet-grid --seconds 60 \
        --chart docs/bench_live.png                                   # side by side, CPU
    .venv/bin/python bench/bench_live.py --profile gpu-1080p60 --harmonizer phnet-grid \
        --sizes 1080 --mjpg 60 --precision bf16       # a GPU machine (scripts/gpu_live.sh)

The sample clip is upscaled (bicubic) and encoded once to H.264 at each size (cached under
the vidharm cache, not timed); :class:`FileSource` plays it at its real pace (30 fps), looping,
as a stand-in camera, so the capture thread pays a real decode per frame as it would pay a
real MJPG decode (``--mjpg FPS``: the clip JPEG-encoded once, then decoded with OpenCV per
frame at FPS, for machines without PyAV and for 60 fps). The live engine runs exactly as
``vidharm run`` does (capture thread, frame loop, harmonizer thread with latest-wins
mailboxes) into the null sink.

Printed per size: sustained fps, dropped frames (camera frames replaced before the loop took
them), harmonizer refresh Hz and fit time, added latency p50/p95/max (capture -> sink: from
the moment the decoded frame exists to the moment the sink returned), the longest gap
between two sent frames (stall), ms per stage, and the machine's load average at the start
(the machine may be shared).

Compare (``--compare A,B,C``): the harmonizers one after the other in this process (the same
as ``vidharm bench live``), one row each: cores used (process CPU time / wall time, all
threads), fps, dropped, latency p50/p95, refresh, and CPU ms per frame by part (capture thread,
the frame loop's stages, the harmonizer thread, native threads: MediaPipe's and FFmpeg's);
``--chart PNG`` draws it.

Stages (``--stages``): the frame loop's stages one by one on 60 frames of the clip, CPU ms
per frame (process CPU time: MediaPipe's threads included), in this thread alone: the
segmentation given the whole frame vs the frame at the model's size, mask refinement, and the
colour apply for a diagonal 4x4, a full 4x4 and a global grid (OpenCV on one thread, as in
the live engine).

Soak (``--minutes``): one long run; the process RSS is sampled every 5 s; memory growth is
the last sample against the first sample after one minute (warm-up: caches, allocator
pools), as a percentage. No stall (gap between sent frames) should exceed 200 ms.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def upscaled_clip(height: int, frames: int = 150) -> tuple[str, tuple[int, int]]:
    from vidharm.commands.bench import live_clip
    return live_clip(height, frames)


class MjpgCamera:
    """A stand-in camera that delivers MJPG, as webcams do at 1080p: the sample clip read with
    OpenCV (so no PyAV is needed: the GPU machine has none), upscaled (bicubic) to ``size``
    and JPEG-encoded (quality 90) once, untimed; then each frame is decoded with OpenCV on the
    capture thread at ``fps``, in real time, forth and back so that the loop has no jump.
    Timestamps start at 0. Protocols: Source, SizedSource, Closable."""

    def __init__(self, clip: str, size: tuple[int, int], fps: float, frames: int = 150,
                 quality: int = 90):
        import cv2
        cap = cv2.VideoCapture(clip)
        self.jpegs: list = []          # encoded frames (uint8 arrays)
        while len(self.jpegs) < frames:
            ok, bgr = cap.read()
            if not ok:
                break
            big = cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC)
            self.jpegs.append(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, quality])[1])
        cap.release()
        if len(self.jpegs) < 2:
            raise SystemExit(f"error: OpenCV could not read frames from {clip}")
        self.size, self.fps = tuple(size), float(fps)
        self._closed = False

    def __iter__(self):
        import cv2
        n = len(self.jpegs)
        order = list(range(n)) + list(range(n - 2, 0, -1))
        start, i = time.monotonic(), 0
        while not self._closed:
            wait = start + i / self.fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            bgr = cv2.imdecode(self.jpegs[order[i % len(order)]], cv2.IMREAD_COLOR)
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i / self.fps
            i += 1

    def close(self) -> None:
        self._closed = True


def run_once(cfg, clip, size, seconds, max_hz, background, soak_sample=None, budget=None,
             grid="auto", camera=None):
    from vidharm.live import LiveEngine
    from vidharm_plugins.sinks import NullSink
    if camera is not None:
        src = camera
    else:
        from vidharm_plugins.sources import FileSource
        src = FileSource(clip, loop=True, realtime=True)
    kw = {"grid_mode": grid} if budget is None else {"harmonizer_budget": budget, "grid_mode": grid}
    eng = LiveEngine(cfg, src, NullSink(), background, max_refresh_hz=max_hz, **kw)
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    if soak_sample:
        def sampler():
            t0 = time.monotonic()
            while not stop.wait(soak_sample):
                samples.append((time.monotonic() - t0, rss_mb()))
        threading.Thread(target=sampler, daemon=True).start()
    try:
        s = eng.run(duration=seconds)
    finally:
        stop.set()
    return s, samples, eng


def stages(cfg, height, background, n=60, rounds=3) -> int:
    import numpy as np

    from vidharm.commands.common import frame_process_settings
    from vidharm.color import ColorGrid, apply_grid_fused
    from vidharm.composite import composite, make_background
    from vidharm.mask import MaskRefiner, _resize, segmentation_input, work_size
    from vidharm.registry import registry
    from vidharm.video import VideoReader
    frame_process_settings(live=True)    # as `vidharm run` does
    clip, size = upscaled_clip(height)
    frames = [f for f, _, _ in VideoReader(clip)][:n]
    seg = registry.segmenters.create(cfg.segmentation.segmenter, cfg.segmentation)
    ref = MaskRefiner(cfg.mask, smooth=True)
    bgp = make_background(background, cfg)
    wh = work_size(frames[0].shape)
    rng = np.random.default_rng(0)
    diag = ColorGrid.identity(4, 4).coeffs.copy()
    for c in range(3):
        diag[..., c, c] = 1 + 0.1 * rng.standard_normal((4, 4))
        diag[..., c, 3] = 0.05 * rng.standard_normal((4, 4))
    full = diag.copy()
    full[..., 0, 1], full[..., 2, 0] = 0.05, -0.03
    grids = {"apply diagonal 4x4": ColorGrid(diag), "apply full 4x4": ColorGrid(full),
             "apply global 1x1": ColorGrid(full[:1, :1].copy())}
    acc: dict[str, float] = {}
    t = 0.0

    def timed(name, fn):
        c0 = time.process_time()
        r = fn()
        acc[name] = acc.get(name, 0.0) + time.process_time() - c0
        return r

    for _ in range(rounds):
        for f in frames:
            t += 1 / 30
            timed("segment: whole frame + mask to work size",
                  lambda: _resize(seg.segment(f, t), wh))
            t += 1 / 30
            sin, small = timed("segment: frame at the model's size + guide",
                               lambda: segmentation_input(f, seg.input_size))
            raw = timed("segment: frame at the model's size + guide",
                        lambda: seg.segment(sin, t))
            m = timed("refine (guided filter + smoothing)", lambda: ref(raw, f, small=small))
            b = np.asarray(bgp.frame((f.shape[1], f.shape[0]), t, current=f, mask=m))
            timed("composite (harmonizer none)", lambda: composite(f, b, m))
            for name, g in grids.items():
                timed(name, lambda: apply_grid_fused(f, b, m, g))
    k = rounds * len(frames)
    load = os.getloadavg()
    print(f"stages at {size[0]}x{size[1]}, {k} frames, CPU ms per frame (load {load[0]:.2f}):")
    for name, v in acc.items():
        print(f"  {name:44s} {1000 * v / k:6.2f}")
    seg.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="720,1080", help="frame heights (16:9)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--minutes", type=float, default=None, help="soak mode: one run this long")
    ap.add_argument("--harmonizer", default=None, help="default: phnet-lite if registered, else stats")
    ap.add_argument("--profile", default="call-cpu")
    ap.add_argument("--weights", default=None, help="weights for a learned harmonizer "
                    "(speed does not depend on the values: a random-init file times the same)")
    ap.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    ap.add_argument("--refresh-hz", type=float, default=None,
                    help="harmonizer refresh cap (default 15 on CPU, none on CUDA)")
    ap.add_argument("--background", default=None, help="default: the sample background")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the model")
    ap.add_argument("--grid", default="auto", choices=["auto", "full", "diagonal"])
    ap.add_argument("--budget", type=float, default=None,
                    help="harmonizer CPU budget, fraction of a core (default: the engine's)")
    ap.add_argument("--switch-ms", type=float, default=None,
                    help="Python GIL switch interval in ms (default: the engine's)")
    ap.add_argument("--compare", default=None, metavar="A,B,C",
                    help="harmonizers side by side (e.g. none,light,phnet-grid), first size only")
    ap.add_argument("--chart", default=None, metavar="PNG", help="with --compare: a chart")
    ap.add_argument("--stages", action="store_true", help="per-stage CPU ms, one by one")
    ap.add_argument("--mjpg", type=float, default=None, metavar="FPS",
                    help="the camera delivers MJPG at FPS (decoded with OpenCV per frame; no "
                    "PyAV needed) instead of the H.264 clip through PyAV at 30 fps")
    ap.add_argument("--cv-threads", type=int, default=None,
                    help="OpenCV's threads (default 1, as `vidharm run` sets them)")
    ap.add_argument("--precision", default=None, choices=["auto", "bf16", "fp16", "fp32"],
                    help="the network's precision on CUDA (default: the profile's)")
    args = ap.parse_args(argv)

    # as the commands do, BEFORE torch is imported: OMP_NUM_THREADS is read at import, and
    # torch.set_num_threads on this thread does not reach the harmonizer's thread (whose
    # torch ops would then keep an OpenMP worker spinning: a whole core, counted as "other")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from vidharm.commands.common import frame_process_settings
    frame_process_settings(live=True)
    if args.cv_threads:
        import cv2
        cv2.setNumThreads(args.cv_threads)
    from vidharm import assets
    from vidharm.config import load_config
    from vidharm.registry import registry
    from vidharm.telemetry import one_line
    try:
        import torch
        torch.set_num_threads(args.threads)
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000.0)
    name = args.harmonizer or ("phnet-lite" if "phnet-lite" in registry.harmonizers else "stats")
    over = {"harmonizer.name": name}
    if args.weights:
        over["harmonizer.weights"] = args.weights
    if args.device:
        over["harmonizer.device"] = args.device
    if args.precision:
        over["harmonizer.precision"] = args.precision
    cfg = load_config(args.profile, over)
    max_hz = args.refresh_hz or "auto"
    bg = args.background or str(assets.path("sample-background"))
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()
    print(f"bench_live: harmonizer={args.compare or name} profile={args.profile} segmentation="
          f"{cfg.segmentation.model} refresh cap={max_hz or 'none'} Hz cpu_count={os.cpu_count()} "
          f"loadavg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f} cuda={cuda} "
          f"opencv_threads={__import__('cv2').getNumThreads()}")
    if args.stages:
        return stages(cfg, sizes[0], bg)
    if args.compare:
        from vidharm.commands.bench import live_chart, live_compare, live_header
        kw = {"grid_mode": args.grid, "max_refresh_hz": max_hz}
        if args.budget is not None:
            kw["harmonizer_budget"] = args.budget
        print(live_header())
        rows = live_compare([h for h in args.compare.split(",") if h], sizes[0], args.seconds,
                            args.profile, args.weights, args.background, **kw)
        if args.chart:
            print("wrote", live_chart(rows, args.chart, title=f"vidharm live, {args.profile}, "
                                      f"{args.seconds:g} s each, load {load[0]:.1f} on "
                                      f"{os.cpu_count()} cores"))
        return 0
    if args.minutes:
        clip, size = upscaled_clip(sizes[0])
        s, samples, eng = run_once(cfg, clip, size, args.minutes * 60, max_hz, bg, soak_sample=5.0,
                                   budget=args.budget, grid=args.grid)
        base = [m for t, m in samples if t >= 60.0] or [m for _, m in samples]
        first, last = (base[0], base[-1]) if base else (float("nan"), float("nan"))
        peak = max(base) if base else float("nan")
        print(f"soak {size[0]}x{size[1]} {args.minutes:g} min: {one_line(s)}")
        print(f"  memory: RSS {first:.0f} MB at 1 min -> {last:.0f} MB at end (peak {peak:.0f}), "
              f"growth {100 * (last - first) / first:+.2f} % (target <= 5 %); max stall "
              f"{s['max_stall_ms']:.0f} ms (target <= 200 ms); dropped {s['dropped']} "
              f"({s['dropped_pct']:.2f} %); latency max {s['latency_max_ms']:.0f} ms")
        marks = [m for m in (1, 2, 5, 10, 15, 20, 25, 30, 45, 60) if m <= args.minutes]
        path = []
        for m in marks:
            near = [mb for t, mb in samples if t <= m * 60.0]
            if near:
                path.append(f"{m} min {near[-1]:.0f}")
        print(f"  RSS (MB) over the run: {', '.join(path)}")
        return 0
    print(f"{'size':>9s} {'fps':>6s} {'dropped':>9s} {'refresh':>8s} {'fit':>6s} "
          f"{'lat p50':>8s} {'p95':>6s} {'max':>6s} {'stall':>6s}  ms/frame per stage")
    for h in sizes:
        camera = None
        if args.mjpg:
            from vidharm.commands.bench import size_16_9
            size = size_16_9(h)
            camera = MjpgCamera(str(assets.path("sample-clip")), size, args.mjpg)
            clip = None
        else:
            clip, size = upscaled_clip(h)
        s, _, eng = run_once(cfg, clip, size, args.seconds, max_hz, bg, budget=args.budget,
                             grid=args.grid, camera=camera)
        if h == sizes[0]:
            w = eng.worker
            net = getattr(getattr(w, "harmonizer", None), "net", None) if w else None
            print(f"  (harmonizer on {w.device if w else '-'}"
                  f"{', ' + net.precision if getattr(net, 'precision', None) else ''}, "
                  f"camera {'MJPG at %g fps' % args.mjpg if args.mjpg else 'H.264 clip'}, refresh cap "
                  f"{(w.max_hz if w else None) or 'none'} Hz, CPU budget "
                  f"{(w.cpu_budget if w else None) or 'none'}, grid "
                  f"{'diagonal' if w and w.diagonal else 'full'})")
        st = " ".join(f"{k} {v:.1f}" for k, v in s["stages_ms"].items())
        print(f"{size[0]}x{size[1]:<4d} {s['fps']:6.1f} {s['dropped']:4d} {s['dropped_pct']:3.1f}% "
              f"{s['refresh_hz']:6.2f}Hz {s['fit_ms_p50']:5.1f} {s['latency_p50_ms']:8.1f} "
              f"{s['latency_p95_ms']:6.1f} {s['latency_max_ms']:6.0f} {s['max_stall_ms']:6.0f}  {st}")
        for note in s["notes"]:
            print(f"  note: {note}")
    print("fps: frames sent per second over the run; dropped: camera frames replaced before the "
          "loop took them; refresh: harmonizer grids published per second (fit: ms per fit, p50); "
          "lat: capture -> sink ms; stall: longest gap between two sent frames, ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
