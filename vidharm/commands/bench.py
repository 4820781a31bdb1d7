"""``vidharm bench``: measured speed, printed as figures from one run (not a test)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from .common import config_from_flags, frame_process_settings


@click.group("bench")
def command():
    """Benchmarks: transcode speed per stage, model speed."""


def make_test_clip(src: str, dst: Path, size: tuple[int, int], frames: int) -> float:
    """Write ``frames`` frames of ``src`` (looped, resized to ``size``) as an H.264 MP4.

    Returns the clip's frame rate. Not timed: this only prepares the benchmark input.
    """
    import cv2
    from fractions import Fraction

    from ..config import OutputConfig
    from ..video import VideoReader, VideoWriter, probe
    info = probe(src)
    fps = float(info.fps or 30)
    tb = Fraction(1, 90000)
    n = 0
    with VideoWriter(dst, size, time_base=tb, fps=Fraction(fps).limit_denominator(1001),
                     output_cfg=OutputConfig(crf=18, preset="ultrafast"), overwrite=True) as w:
        while n < frames:
            for rgb, _, _ in VideoReader(src):
                if rgb.shape[1] != size[0] or rgb.shape[0] != size[1]:
                    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
                w.write(rgb, n / fps)
                n += 1
                if n >= frames:
                    break
    return fps


@command.command("transcode", epilog="""\b
Example:
  vidharm bench transcode                       # 360p and 720p, stats harmonizer
  vidharm bench transcode --sizes 720 --harmonizer none --frames 300
""")
@click.option("--sizes", default="360,720", show_default=True, help="Frame heights (16:9).")
@click.option("--frames", default=150, show_default=True, help="Frames per size.")
@click.option("--harmonizer", default="phnet-grid", show_default=True)
@click.option("--profile", "-p", default="call-cpu", show_default=True)
@click.option("--background", "-b", default=None, help="Default: the sample background.")
def bench_transcode(sizes, frames, harmonizer, profile, background):
    """Transcode the sample clip (upscaled) and print fps and ms per stage:
    decode, segment, refine, composite, harmonize, encode."""
    import os

    from .. import assets
    from ..composite import make_background
    from ..pipeline import STAGES, FramePipeline
    from ..transcode import transcode_file
    frame_process_settings()
    cfg = config_from_flags(profile, harmonizer=harmonizer)
    clip = str(assets.path("sample-clip"))
    bg_spec = background or str(assets.path("sample-background"))
    cols = ["decode"] + list(STAGES) + ["encode"]
    click.echo(f"vidharm bench transcode: profile={profile} harmonizer={harmonizer} "
               f"segmentation={cfg.segmentation.model} frames={frames} cpu_count={os.cpu_count()}")
    header = f"{'size':>9s} {'fps':>7s} {'x realtime':>10s} " + " ".join(f"{c:>9s}" for c in cols)
    click.echo(header + "   (ms per frame)")
    with tempfile.TemporaryDirectory() as tmp, make_background(bg_spec, cfg) as bg:
        for h in [int(s) for s in sizes.split(",")]:
            w, _ = size_16_9(h)
            src = Path(tmp) / f"in_{h}.mp4"
            clip_fps = make_test_clip(clip, src, (w, h), frames)
            res = transcode_file(str(src), Path(tmp) / f"out_{h}.mp4",
                                 lambda info: FramePipeline(cfg, bg, video=True),
                                 output_cfg=cfg.output, overwrite=True)
            n = max(res.frames, 1)
            ms = {"decode": res.timings.get("decode", 0), "encode": res.timings.get("encode", 0)}
            ms.update(res.stage_timings)
            fps = res.frames / res.seconds
            click.echo(f"{w}x{h:<4d} {fps:7.1f} {fps / clip_fps:10.2f} "
                       + " ".join(f"{1000 * ms.get(c, 0) / n:9.2f}" for c in cols))
    click.echo("x realtime = output fps / the clip's own fps (>1 is faster than real time); "
               "wall ms per frame of each stage on its own thread (decode; segment and refine "
               "on the prepare thread; background and apply, the fit included, in the frame "
               "loop; encode), overlapping one another on the CPU's cores")


# ------------------------------------------------------------------------------ live
#: CPU parts reported per frame, in pipeline order (``other``: MediaPipe's and OpenCV's own
#: worker threads, GIL hand-overs, telemetry: the process total minus the counted parts)
LIVE_CPU_PARTS = ("capture", "segment", "refine", "background", "apply", "sink", "loop",
                  "harmonizer", "native", "other")


def size_16_9(height: int) -> tuple[int, int]:
    """(width, height) of a 16:9 frame ``height`` tall, the width even."""
    return int(round(height * 16 / 9 / 2)) * 2, height


def live_clip(height: int, frames: int = 150) -> tuple[str, tuple[int, int]]:
    """The sample clip upscaled (bicubic) to 16:9 at ``height`` and encoded to H.264 once,
    cached under the vidharm cache: the stand-in camera of the live benchmarks."""
    import os

    from .. import assets
    w, _ = size_16_9(height)
    out = assets.cache_dir() / "bench" / f"sample_{w}x{height}_{frames}.mp4"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.mp4")
        make_test_clip(str(assets.path("sample-clip")), tmp, (w, height), frames)
        os.replace(tmp, out)
    return str(out), (w, height)


def run_live(cfg, clip: str, seconds: float, background: str, **engine_kw) -> tuple[dict, object]:
    """One live run as ``vidharm run`` does it (capture thread, frame loop, harmonizer thread)
    from ``clip`` played at its real pace, looping, into the null sink. Returns the telemetry
    summary (with ``cores``: process CPU time / wall time over the run) and the engine."""
    from vidharm_plugins.sinks import NullSink
    from vidharm_plugins.sources import FileSource

    from ..live import LiveEngine
    src = FileSource(clip, loop=True, realtime=True)
    eng = LiveEngine(cfg, src, NullSink(), background, **engine_kw)
    return eng.run(duration=seconds), eng


def live_compare(harmonizers, height: int = 720, seconds: float = 30.0,
                 profile: str = "call-cpu", weights: str | None = None,
                 background: str | None = None, echo=print, **engine_kw) -> list[dict]:
    """Run the live engine once per harmonizer, one after the other in this process, and
    return one row per harmonizer: cores, fps, dropped, latency, refresh, CPU ms per frame.
    ``NAME:absolute``: the harmonizer from the composite alone (``harmonizer.relative`` off)."""
    import os

    from .. import assets
    from ..config import load_config
    from ..registry import registry
    clip, size = live_clip(height)
    bg = background or str(assets.path("sample-background"))
    rows = []
    for label in harmonizers:
        name, _, mode = label.partition(":")
        if mode not in ("", "absolute"):
            from ..errors import InputError
            raise InputError(f"unknown harmonizer mode '{label}'", "use NAME or NAME:absolute")
        over = {"harmonizer.name": name, "harmonizer.relative": mode != "absolute"}
        learned = name not in ("none", "light", "stats") and name in registry.harmonizers
        if weights and learned:
            over["harmonizer.weights"] = weights
        cfg = load_config(profile, over)
        load = os.getloadavg()[0]
        s, eng = run_live(cfg, clip, seconds, bg, **engine_kw)
        w = eng.worker
        rows.append({"harmonizer": label, "size": size, "load": load, "summary": s,
                     "device": w.device if w else "-",
                     "grid": ("diagonal" if w.diagonal else "full") if w else "-"})
        echo(_live_row(rows[-1]))
    return rows


def live_header() -> str:
    parts = " ".join(f"{p[:6]:>6s}" for p in LIVE_CPU_PARTS)
    return (f"{'harmonizer':<12s} {'size':>9s} {'cores':>5s} {'fps':>5s} {'drop':>5s} "
            f"{'p50':>4s} {'p95':>4s} {'Hz':>5s} {'fit':>5s}  CPU ms/frame: {parts} {'load':>5s}")


def _live_row(r: dict) -> str:
    s = r["summary"]
    cpu = s.get("cpu_ms", {})
    parts = " ".join(f"{cpu.get(p, 0.0):6.2f}" for p in LIVE_CPU_PARTS)
    w, h = r["size"]
    return (f"{r['harmonizer']:<12s} {w:>4d}x{h:<4d} {s['cores']:5.2f} {s['fps']:5.1f} "
            f"{s['dropped']:5d} {s['latency_p50_ms']:4.0f} {s['latency_p95_ms']:4.0f} "
            f"{s['refresh_hz']:5.1f} {s['fit_ms_p50'] if s['refreshes'] else 0:5.1f}"
            f"               {parts} {r['load']:5.2f}")


def live_chart(rows: list[dict], path, title: str = "") -> str:
    """A PNG: CPU ms per frame stacked by part for each harmonizer (cores, fps, drops and
    latency p95 written on each bar)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 5), dpi=100)
    ax = fig.subplots()
    labels = [f"{r['harmonizer']}\n{r['size'][0]}x{r['size'][1]}" for r in rows]
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    for part in LIVE_CPU_PARTS:
        v = [r["summary"].get("cpu_ms", {}).get(part, 0.0) for r in rows]
        if not any(v):
            continue
        ax.bar(x, v, bottom=bottom, width=0.6, label=part)
        bottom = [b + vi for b, vi in zip(bottom, v)]
    for xi, r, b in zip(x, rows, bottom):
        s = r["summary"]
        ax.text(xi, b + 0.5, f"{s['cores']:.2f} cores\n{s['fps']:.1f} fps, {s['dropped']} dropped"
                f"\np95 {s['latency_p95_ms']:.0f} ms, {s['refresh_hz']:.1f} Hz",
                ha="center", va="bottom", fontsize=8)
    fps = max((r["summary"]["fps"] for r in rows), default=30.0) or 30.0
    ax.axhline(500.0 / fps, color="grey", ls="--", lw=1)
    ax.text(len(rows) - 0.5, 500.0 / fps, " 0.5 core", va="bottom", ha="right", fontsize=8,
            color="grey")
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("CPU ms per frame (all threads)")
    ax.set_ylim(0, max(bottom + [500.0 / fps]) * 1.35)
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    ax.set_title(title or "vidharm live: CPU per frame", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(str(path))
    return str(path)


@command.command("live", epilog="""\b
Example:
  vidharm bench live                                     # none / light / phnet-grid, 720p, 30 s each
  vidharm bench live --seconds 60 --chart live.png
  vidharm bench live --harmonizers light,phnet-grid --size 1080
""")
@click.option("--harmonizers", default="none,light,phnet-grid", show_default=True,
              help="Comma-separated harmonizers, run one after the other (NAME:absolute: "
                   "from the composite alone, not relative to the camera frame).")
@click.option("--size", "height", default=720, show_default=True, help="Frame height (16:9).")
@click.option("--seconds", default=30.0, show_default=True, help="Length of each run.")
@click.option("--profile", "-p", default="call-cpu", show_default=True)
@click.option("--weights", default=None, help="Weights for the learned harmonizers.")
@click.option("--background", "-b", default=None, help="Default: the sample background.")
@click.option("--chart", default=None, metavar="PNG", help="Write the comparison as a chart.")
def bench_live(harmonizers, height, seconds, profile, weights, background, chart):
    """The live engine (as `vidharm run`) on the sample clip upscaled and played at 30 fps
    as the camera, null sink: cores used (process CPU time / wall time), fps, dropped
    frames, latency p50/p95 (ms), refresh Hz, fit ms and CPU ms per frame by part."""
    import os
    frame_process_settings(live=True)
    names = [h.strip() for h in harmonizers.split(",") if h.strip()]
    load = os.getloadavg()
    click.echo(f"vidharm bench live: profile={profile} {seconds:g} s each, cpu_count="
               f"{os.cpu_count()}, loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    click.echo(live_header())
    rows = live_compare(names, height, seconds, profile, weights, background, echo=click.echo)
    click.echo("cores: process CPU time / wall time (all threads); CPU ms per frame: capture = "
               "decode + resize, segment..sink = the frame loop's own CPU per stage, harmonizer "
               "= its thread, other = the rest (MediaPipe's own threads...); load: 1-min load "
               "average when the run started")
    if chart:
        live_chart(rows, chart, title=f"vidharm bench live ({profile}, {seconds:g} s each)")
        click.echo(f"wrote {chart}")
