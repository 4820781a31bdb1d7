"""Does the person follow a change of their own room's light? The case with an exact answer:
the whole frame relit (:class:`vidharm.training.recipes.Light`: exposure in stops, colour
temperature), the person pasted back unchanged, the unchanged frame as the person's own frame
(the source); the truth is the person relit the same way. Applied as vidharm applies it
(relative to the source frame).

On frame 45 of the sample clip (the demo sheet's frame, full 640x360, the creator-quality
profile's mask) and on the held-out people of ``vidharm eval --recipes`` (their ``unedited``
pairs, 256 px). Per change: the person's hue change (log(red / blue) of the mean, percent, as
``bench/sheet_shift.py`` prints it) and luma change (log2 of the mean luma, stops), the truth
beside them; for the held-out people the mean of each and of the hue error.

    .venv/bin/python bench/relit_room.py [--harmonizer NAME] [WEIGHTS]
"""
from _common import script_args, sheet_frame, warmth

args = script_args(__doc__, ("--harmonizer",))

import numpy as np
import torch

from vidharm.color import LUMA, apply_grid, relative_fit_of
from vidharm.config import HarmonizerConfig
from vidharm.registry import registry
from vidharm.training.recipe_eval import _u8, load_validation
from vidharm.training.recipes import Light

hname = "phnet-grid"
if args[:1] == ["--harmonizer"]:
    hname, args = args[1], args[2:]
weights = args[0] if args else ""
H = registry.harmonizers.create(hname, HarmonizerConfig(name=hname, weights=weights, device="cpu"))
fit = relative_fit_of(H)
CHANGES = (("1 stop darker", Light(exposure=-1.0)), ("0.7 stop brighter", Light(exposure=0.7)),
           ("warmer", Light(temperature=0.3)), ("cooler", Light(temperature=-0.3)),
           ("darker and warmer", Light(temperature=0.3, exposure=-1.0)))


def hue_luma(img: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    mu = img[m].astype(np.float64).mean(0)
    return warmth(mu), np.log2(mu @ LUMA)


def relit(rgb: np.ndarray, mask: np.ndarray, light: Light, step: int = 1):
    """(result, composite, truth) for the frame ``rgb`` (uint8) relit by ``light``."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    lit = _u8(light(x))
    m3 = mask[..., None]
    comp = np.clip(rgb * m3 + lit * (1 - m3) + 0.5, 0, 255).astype(np.uint8)
    s = lambda a: np.ascontiguousarray(a[::step, ::step])
    out = apply_grid(comp, mask, fit(s(comp), s(mask), s(rgb)))
    return out, comp, lit


rgb, mask = sheet_frame()
step = max(1, min(rgb.shape[:2]) // 256)
pairs = load_validation()["unedited"]
print(f"{hname} {weights.rsplit('/', 1)[-1] or '(shipped)'}: result (truth); hue = log(red/blue) "
      f"change in %, luma in stops")
for name, light in CHANGES:
    m = mask > 0.5
    out, comp, lit = relit(rgb, mask, light, step)
    (h0, l0), (h1, l1), (ht, lt) = hue_luma(comp, m), hue_luma(out, m), hue_luma(lit, m)
    rows = []
    for p in pairs:
        real = _u8(p["real"])
        pm = p["mask"][0].numpy().astype(np.float32)
        o, c, t = relit(real, pm, light)
        (a0, b0), (a1, b1), (at, bt) = hue_luma(c, pm > 0.5), hue_luma(o, pm > 0.5), hue_luma(t, pm > 0.5)
        rows.append((a1 - a0, at - a0, b1 - b0, bt - b0))
    r = np.array(rows)
    print(f"  {name:18s} sample frame: hue {h1 - h0:+6.1f} ({ht - h0:+6.1f}), luma {l1 - l0:+.2f} "
          f"({lt - l0:+.2f}) | {len(r)} held-out: hue {r[:, 0].mean():+6.1f} ({r[:, 1].mean():+6.1f}), "
          f"|hue error| {np.abs(r[:, 0] - r[:, 1]).mean():4.1f}, luma {r[:, 2].mean():+.2f} "
          f"({r[:, 3].mean():+.2f})")
