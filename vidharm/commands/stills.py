"""``vidharm composite`` and ``vidharm harmonize``: one still image in, one out."""
from __future__ import annotations

import click

from .common import (check_output, check_plugins, check_weights, config_from_flags,
                     frame_process_settings, pipeline_options)


@click.command("composite", epilog="""\b
Example:
  vidharm composite me.jpg beach.jpg -o me_on_beach.png
  vidharm composite me.jpg beach.jpg -o cut_and_paste.png --harmonizer none
""")
@click.argument("person")
@click.argument("background")
@click.option("-o", "--output", required=True, metavar="OUT.png|jpg")
@click.option("--mask-out", metavar="PATH", help="Also save the person matte.")
@pipeline_options
def composite(person, background, output, mask_out, profile, **kw):
    """Cut the person out of the PERSON photo, put them on BACKGROUND and harmonize (a still).

    The harmonizer is the profile's (phnet-grid), relative to the PERSON photo itself: how the
    new background's light differs from the photo's (--absolute: from the composite alone).
    """
    from ..composite import make_background
    from ..imageio import load_image, save_image
    from ..pipeline import FramePipeline
    frame_process_settings()
    cfg = config_from_flags(profile, **kw)
    check_plugins(cfg)
    check_output(output, (person, background))
    if mask_out:
        check_output(mask_out, (person, background, output), "--mask-out")
    rgb = load_image(person)
    with make_background(background, cfg) as bg, FramePipeline(cfg, bg, video=False) as pipe:
        out = pipe(rgb, None)
        save_image(output, out)
        if mask_out:
            save_image(mask_out, (pipe.last_mask * 255 + 0.5).astype("uint8"))
    click.echo(f"wrote {output}")


@click.command("harmonize", epilog="""\b
Example:
  vidharm harmonize composite.png mask.png -o harmonized.png --harmonizer stats
""")
@click.argument("composite_path", metavar="COMPOSITE")
@click.argument("mask_path", metavar="MASK")
@click.option("-o", "--output", required=True, metavar="OUT.png|jpg")
@pipeline_options
def harmonize(composite_path, mask_path, output, profile, **kw):
    """Harmonize a ready composite with its person MASK (0 = background, 255 = person)."""
    from ..imageio import load_image, load_mask, save_image
    from ..pipeline import build_harmonizer
    frame_process_settings()
    cfg = config_from_flags(profile, **kw)
    check_weights(cfg)
    check_output(output, (composite_path, mask_path))
    comp = load_image(composite_path)
    mask = load_mask(mask_path, comp.shape[:2])
    h = build_harmonizer(cfg)
    try:
        save_image(output, h(comp, mask))
    finally:
        h.close()
    click.echo(f"wrote {output}")
