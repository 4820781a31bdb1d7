"""What a harmonizer's remaining error on the held-out recipe sets is made of: its result as
vidharm applies it (relative to the pair's source frame), then that result corrected with the
ground truth by one transform over the person of a few kinds, from fewest parameters up:

- ``gain``: one gain for the three channels (brightness);
- ``gain+offset``: one gain and one offset for the three channels (brightness and contrast);
- ``mean``: an offset per channel (the person's mean colour);
- ``per-channel``: a gain and an offset per channel;
- ``3x4``: a full affine colour transform (:func:`vidharm.color.fit_grid` with one cell, as
  ``vidharm eval`` fits its 4x4 ceiling).

Mean PSNR in dB (MAX = the target's maximum) per set. What a correction of a kind gains is
how much of the error lies in what that kind can express; the composite fitted with the 3x4
transform is the ceiling of a global transform.

    .venv/bin/python bench/error_parts.py [--harmonizer NAME] [WEIGHTS]    # under a minute
"""
from _common import script_args

args = script_args(__doc__, ("--harmonizer",))

import numpy as np
import torch

from vidharm.color import ColorGrid, apply_grid, fit_grid, relative_fit_of
from vidharm.training.metrics import MetricAccumulator
from vidharm.training.recipe_eval import _t, _u8, harmonizer_for, load_validation

KINDS = ("gain", "gain+offset", "mean", "per-channel", "3x4")


def correction(out: np.ndarray, real: np.ndarray, mask: np.ndarray, kind: str) -> ColorGrid:
    """The least-squares transform of ``kind`` from ``out`` to ``real`` over the person."""
    if kind == "3x4":
        return fit_grid(out, real, mask, (1, 1), ridge=1e-3)
    w = mask > 0.5
    x = out[w].astype(np.float64) / 255.0
    y = real[w].astype(np.float64) / 255.0
    M = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)
    if kind == "gain":
        M[:, :3] *= (x * y).sum() / max((x * x).sum(), 1e-12)
    elif kind == "gain+offset":
        A = np.stack([x.ravel(), np.ones(x.size)], 1)
        g, o = np.linalg.lstsq(A, y.ravel(), rcond=None)[0]
        M[:, :3] *= g
        M[:, 3] = o
    elif kind == "mean":
        M[:, 3] = y.mean(0) - x.mean(0)
    elif kind == "per-channel":
        for c in range(3):
            A = np.stack([x[:, c], np.ones(len(x))], 1)
            M[c, c], M[c, 3] = np.linalg.lstsq(A, y[:, c], rcond=None)[0]
    return ColorGrid(M[None, None].astype(np.float32))


if __name__ == "__main__":
    torch.set_num_threads(1)
    name = "phnet-grid"
    if args[:1] == ["--harmonizer"]:
        name, args = args[1], args[2:]
    fit = relative_fit_of(harmonizer_for(name, args[0] if args else ""))
    sets = load_validation(size=256, per_image=4)
    cols = ("composite", name) + tuple(f"+{k}" for k in KINDS) + ("composite+3x4",)
    print(f"{'set':12s}" + "".join(f"{c:>14s}" for c in cols))
    for recipe, pairs in sets.items():
        if recipe == "unedited":
            continue
        accs = {c: MetricAccumulator() for c in cols}
        for p in pairs:
            comp, real = _u8(p["composite"]), _u8(p["real"])
            mask = p["mask"][0].numpy().astype(np.float32)
            src = _u8(p["source"]) if "source" in p else None
            out = apply_grid(comp, mask, fit(comp, mask, src))
            imgs = [comp, out] + [apply_grid(out, mask, correction(out, real, mask, k)) for k in KINDS]
            imgs.append(apply_grid(comp, mask, correction(comp, real, mask, "3x4")))
            m = p["mask"][None].double()
            for c, img in zip(cols, imgs):
                accs[c].update(_t(img)[None], _t(real)[None], m)
        print(f"{recipe:12s}" + "".join(f"{accs[c].summary()['all']['psnr']:14.2f}" for c in cols),
              flush=True)
