"""How the demo sheet's person changes on its four backgrounds (vidharm demo's
sample_backgrounds.png): frame 45 of the sample clip, the creator-quality profile's segmentation
and mask, each phnet-grid weights file given fitted as the demo fits it; per background the
change of the person's mean (pixels with mask > 0.5), harmonized minus composite, in grey
levels: luma, red minus blue (warmer > 0) and green minus the mean of red and blue. Fitted
relative to the camera frame, as the demo and every command apply it (``--absolute``: on the
composite alone); ``own room`` is what the fit on the camera frame alone does to him.

    .venv/bin/python bench/sheet_shift.py vidharm/weights/phnet-grid.safetensors [OTHER ...]
    .venv/bin/python bench/sheet_shift.py --harmonizer phnet-grid-local WEIGHTS...
    .venv/bin/python bench/sheet_shift.py --absolute WEIGHTS...
"""
import numpy as np, sys
from vidharm import assets
from vidharm.config import load_config, HarmonizerConfig
from vidharm.registry import registry
from vidharm.composite import composite, make_background
from vidharm.color import apply_grid_fused, relative_fit_of
from vidharm.commands.demo import SHEET_BACKGROUNDS
from vidharm.video import VideoReader
from vidharm.mask import MaskRefiner
args = sys.argv[1:]
hname, relative = "phnet-grid", True
while args[:1] in (["--harmonizer"], ["--absolute"]):
    if args[0] == "--absolute":
        relative, args = False, args[1:]
    else:
        hname, args = args[1], args[2:]
cfg = load_config("creator-quality")
for i, (rgb, t, _) in enumerate(VideoReader(str(assets.path("sample-clip")))):
    if i == 45: break
seg = registry.segmenters.create(cfg.segmentation.segmenter, cfg.segmentation)
mask = MaskRefiner(cfg.mask, smooth=False)(seg.segment(rgb, None), rgb)
h, w = rgb.shape[:2]; step = max(1, min(h, w) // 256)
for wpath in args:
    H = registry.harmonizers.create(hname, HarmonizerConfig(name=hname, weights=wpath, device="cpu"))
    small = lambda a: np.ascontiguousarray(a[::step, ::step])
    fit = lambda comp: relative_fit_of(H)(small(comp), small(mask), small(rgb) if relative else None)
    m = mask > 0.5
    own = apply_grid_fused(rgb, rgb, mask, H.fit(small(rgb), small(mask)))
    L = lambda x: 0.2126*x[0]+0.7152*x[1]+0.0722*x[2]
    a, b = rgb[m].astype(float).mean(0), own[m].astype(float).mean(0)
    row = [f"own room (alone): luma {L(b)-L(a):+.1f}"]
    for name, cap in SHEET_BACKGROUNDS:
        pr = make_background(str(assets.path(name)), cfg); bg = pr.frame((w, h), 0.0, current=rgb, mask=mask)
        comp = composite(rgb, bg, mask)
        grid = fit(comp)
        out = apply_grid_fused(rgb, bg, mask, grid)
        a, b = comp[m].astype(float).mean(0), out[m].astype(float).mean(0)
        row.append(f"{cap}: luma {L(b)-L(a):+.1f} R-B {(b[0]-b[2])-(a[0]-a[2]):+.1f} G-(R+B)/2 {(b[1]-(b[0]+b[2])/2)-(a[1]-(a[0]+a[2])/2):+.1f}")
    print(hname, wpath.split('/')[-1], "|", " | ".join(row))
