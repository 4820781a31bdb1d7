#!/usr/bin/env python3
"""Tune the learning-free ``light`` harmonizer's dead zones and strengths on TRAINING sources.

The held-out sources that ``vidharm eval --recipes`` reports are never looked at here: the
pairs are built from the training split (people and scenes not held out) with the validation
recipes. For every combination of parameters the script prints mean PSNR on the light-change
and FFHQH recipes and on unedited photos, and the best combination that keeps unedited photos at
40 dB or better.

    .venv/bin/python scripts/tune_light.py [--data-dir DIR] [--chroma-only]   # on the composite alone
    .venv/bin/python scripts/tune_light.py --relative       # the setting relative to the person's frame

``--relative`` sweeps the white point (dead zone, strength) of ``light.RELATIVE`` with the
transform taken relative to each pair's source frame, and picks the best on the ``cross``
pairs only: there the source frame shows other content (another crop of the photo), as in
use. On the other sets the source frame shows the same scene as the composite, where
comparing the two scenes' statistics recovers a change of light too easily.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools

import numpy as np

from vidharm.color import apply_grid
from vidharm.harmonize.light import RELATIVE, LightHarmonizer, LightParams, light_grid
from vidharm.training.data import split_by_source
from vidharm.training.grid_train import VAL_PEOPLE, VAL_SCENES
from vidharm.training.recipe_eval import _u8
from vidharm.training.recipes import load_items, short_side_for, validation_sets


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = max(float(((a.astype(np.float64) - b) ** 2).mean()), 1e-10)
    return 10 * np.log10(float(b.max()) ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--per-image", type=int, default=1)
    ap.add_argument("--chroma-only", action="store_true",
                    help="sweep the colour part alone around the shipped setting (exposure off): "
                         "dead zone 0.15-0.4, strength 0.3-1, bound 0.2/0.35")
    ap.add_argument("--relative", action="store_true",
                    help="tune the white point of the relative setting on the cross pairs")
    args = ap.parse_args()
    from vidharm.training.data import default_data_dir
    people, scenes = load_items(args.data_dir or default_data_dir(), short_side_for(256, 0.75))
    tr_p, _ = split_by_source(people, VAL_PEOPLE)
    tr_s, _ = split_by_source(scenes, VAL_SCENES)
    shapes = [p.mask for p in tr_p if (p.mask > 0.5).mean() > 0.03]
    sets = validation_sets(tr_p, tr_s, shapes, size=256, per_image=args.per_image, seed=777)
    data = {k: [(_u8(p["composite"]), p["mask"][0].numpy(), _u8(p["real"])) for p in v]
            for k, v in sets.items()}
    if args.relative:
        return tune_relative(sets)
    print({k: len(v) for k, v in data.items()})
    base = {k: np.mean([psnr(c, r) for c, _, r in v]) for k, v in data.items() if k != "unedited"}
    print("composite:", {k: round(v, 2) for k, v in base.items()})
    grid = itertools.product([0.03, 0.06, 0.1], [0.5, 0.8, 1.0], [0.2, 0.35], [0.25, 0.5, 0.8],
                             [0.5, 0.8], [1.0])
    if args.chroma_only:
        grid = itertools.product([0.15, 0.2, 0.25, 0.3, 0.4], [0.3, 0.5, 0.75, 1.0], [0.2, 0.35],
                                 [9.0], [0.0], [1.0])
    results = []
    for cd, cs, cm, ed, es, em in grid:
        p = LightParams(cd, cs, cm, ed, es, em)
        score = {k: float(np.mean([psnr(apply_grid(c, m, light_grid(c, m, p)), r) for c, m, r in v]))
                 for k, v in data.items()}
        results.append((p, score))
        print(p, {k: round(v, 2) for k, v in score.items()}, flush=True)
    ok = [(p, s) for p, s in results if s["unedited"] >= 40.0]
    best = max(ok or results, key=lambda ps: ps[1]["light"] + ps[1]["ffhqh"])
    print("best (unedited >= 40 dB, max light + ffhqh):", best[0], best[1])


def tune_relative(sets: dict) -> None:
    """The white point of :data:`RELATIVE` on the pairs relative to their source frames, as
    :meth:`LightHarmonizer.fit_relative` applies it (it is what is called)."""
    data = {k: [(_u8(p["composite"]), p["mask"][0].numpy(), _u8(p["real"]), _u8(p["source"]))
                for p in v] for k, v in sets.items()}
    base = {k: np.mean([psnr(c, r) for c, _, r, _ in v]) for k, v in data.items() if k != "unedited"}
    print("composite:", {k: round(v, 2) for k, v in base.items()})
    results = []
    for wd, ws in itertools.product([0.0, 0.05, 0.1, 0.15, 0.2], [0.5, 0.8, 1.0]):
        p = dataclasses.replace(RELATIVE, white_dead=wd, white_strength=ws)
        fit_rel = LightHarmonizer(relative_params=p).fit_relative
        score = {k: float(np.mean([psnr(apply_grid(c, m, fit_rel(c, m, s)), r)
                                   for c, m, r, s in v])) for k, v in data.items()}
        results.append((p, score))
        print(f"white_dead {wd} white_strength {ws}", {k: round(v, 2) for k, v in score.items()},
              flush=True)
    best = max(results, key=lambda ps: ps[1]["cross"])
    print("best on cross:", best[0], best[1])


if __name__ == "__main__":
    main()
