"""``vidharm transcode``: recorded clips -> person on a new background, harmonized, H.264 MP4."""
from __future__ import annotations

import click

from .common import (check_plugins, config_from_flags, frame_process_settings, pipeline_options,
                     report_batch)


@click.command("transcode", epilog="""\b
Examples:
  vidharm transcode talk.mp4 -o talk_bg.mp4 --background beach.jpg
  vidharm transcode 'clips/*.mp4' --out-dir out/ --background blur
  vidharm transcode in.mov --out-dir out/ --background loop.mp4 --profile creator-quality --overwrite
""")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", metavar="OUT.mp4", help="Output file (one input only).")
@click.option("--out-dir", metavar="DIR", help="Output folder (one MP4 per input).")
@click.option("--background", "-b", required=True, metavar="IMAGE|VIDEO|blur",
              help="Still image, looping video, or 'blur' to blur the real background.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
@click.option("--suffix", default="_harmonized", show_default=True, help="Added to names in --out-dir.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@pipeline_options
def command(inputs, output, out_dir, background, overwrite, suffix, no_progress, profile, **kw):
    """Cut the person out of recorded clips, put them on BACKGROUND, harmonize, write H.264 MP4.

    Timestamps (also variable frame rate), rotation and audio are kept. Outputs appear only
    when complete; existing ones are skipped unless --overwrite. The exit code is non-zero if
    any file failed.
    """
    from ..composite import make_background
    from ..pipeline import FramePipeline, build_harmonizer
    from ..transcode import transcode_files
    frame_process_settings()
    cfg = config_from_flags(profile, **kw)
    check_plugins(cfg)
    # background and harmonizer (weights) are loaded once, before any work: a bad file fails
    # here with one line, and a batch does not reload them per clip
    harmonizer = build_harmonizer(cfg)
    try:
        with make_background(background, cfg) as bg:
            result = transcode_files(
                list(inputs), out=output, out_dir=out_dir, overwrite=overwrite,
                make_processor=lambda info: FramePipeline(cfg, bg, video=True, harmonizer=harmonizer),
                output_cfg=cfg.output, suffix=suffix, progress=not no_progress)
    finally:
        harmonizer.close()
    report_batch(result)
