"""``vidharm bench``: measured speed, printed as figures from one run (not a test)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click


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
@click.option("--harmonizer", default="stats", show_default=True)
@click.option("--profile", "-p", default="call-cpu", show_default=True)
@click.option("--background", "-b", default=None, help="Default: the sample background.")
def bench_transcode(sizes, frames, harmonizer, profile, background):
    """Transcode the sample clip (upscaled) and print fps and ms per stage:
    decode, segment, refine, composite, harmonize, encode."""
    import os

    from .. import assets
    from ..composite import make_background
    from ..config import load_config
    from ..pipeline import STAGES, FramePipeline
    from ..transcode import transcode_file
    cfg = load_config(profile, {"harmonizer.name": harmonizer})
    clip = str(assets.path("sample-clip"))
    bg_spec = background or str(assets.path("sample-background"))
    cols = ["decode"] + list(STAGES) + ["encode"]
    click.echo(f"vidharm bench transcode: profile={profile} harmonizer={harmonizer} "
               f"segmentation={cfg.segmentation.model} frames={frames} cpu_count={os.cpu_count()}")
    header = f"{'size':>9s} {'fps':>7s} {'x realtime':>10s} " + " ".join(f"{c:>9s}" for c in cols)
    click.echo(header + "   (ms per frame)")
    with tempfile.TemporaryDirectory() as tmp, make_background(bg_spec, cfg) as bg:
        for h in [int(s) for s in sizes.split(",")]:
            w = int(round(h * 16 / 9 / 2)) * 2
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
    click.echo("x realtime = output fps / the clip's own fps (>1 is faster than real time)")
