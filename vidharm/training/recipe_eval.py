"""Validation that tells the truth: every harmonizer scored on held-out recipes, each read
against doing nothing and against what the colour grid can reach.

    vidharm eval --recipes --harmonizer phnet-grid       # or light, phnet-lite, fmm, ...

Sets (held out BY SOURCE, see :data:`vidharm.training.grid_train.VAL_PEOPLE` / ``VAL_SCENES``;
built by :func:`vidharm.training.recipes.validation_sets`, the same every run):

``ffhqh``     the FFHQH recipe (the region jittered, the scene kept), on held-out people with
              their own mattes and on held-out natural photos under person-shaped masks;
``light``     a change of light on the person only, or on the scene with the person pasted back
              (the video-call case), alternately, on the same images;
``unedited``  held-out people in their own scene, nothing to fix: scored against the input;
``cross``     a person-shaped region of one crop of a held-out natural photo on another crop of
              it (same light, other content), the light changed on the scene or on the region
              (:func:`vidharm.training.recipes.cross_pair`);
``other-photo`` held-out people on held-out natural photos (another picture, as in use), the
              light changed on the scene or on the person
              (:func:`vidharm.training.recipes.other_photo_pair`). Its ground truth assumes
              that two natural photos are under comparable light, so it is approximate: read
              it as "does the harmonizer follow a change of light, and leave alone a person
              whose new background merely shows other things".

In every set but ``unedited`` each pair changes its region by at least a grey level on average
(:func:`vidharm.training.recipes.changes_region`; a draw that does not is drawn again): a pair
left unchanged scores the composite at the 148 dB cap, which alone moves a bucket's mean.

For each: the plain **composite**; the harmonizer **as vidharm applies it** (``fit`` on the
composite at the working size -> :class:`vidharm.color.ColorGrid`, applied to the composite;
relative to the pair's source frame, :func:`vidharm.color.fit_relative`, as vidharm's commands
apply it by default); with ``relative``, also the harmonizer **on the composite alone**
(``composite only``); the 4x4 grid **fitted with the ground truth**
(:func:`vidharm.color.fit_grid`: the reachable ceiling of the representation).

The source frame (the person's own image under the person's light, see
:mod:`vidharm.training.recipes`) shows, in ``ffhqh``, ``light`` and ``unedited``, the same
scene as the composite under another light; in use the new background is another picture. The
relative figures on those sets therefore measure a harmonizer whose two fits see the same
scene content: the part of the error that comes from two different pictures' contents is not
in them. In ``cross`` and ``other-photo`` the source frame shows other content, as in use.
PSNR/fPSNR/MSE/fMSE by foreground bucket (:mod:`vidharm.training.metrics`, PSNR MAX = the
target's maximum as published).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..color import ColorGrid, apply_grid, fit_grid, fit_relative
from .metrics import MetricAccumulator

ROWS = ("composite", "harmonizer", "fitted grid")
ABSOLUTE_ROW = "composite only"    # with relative: the harmonizer without the source frame


@dataclass
class RecipeReport:
    harmonizer: str
    size: int
    sets: dict = field(default_factory=dict)    # recipe -> row -> bucket -> metrics
    counts: dict = field(default_factory=dict)

    def psnr(self, recipe: str, row: str, bucket: str = "all") -> float | None:
        return self.sets[recipe][row][bucket]["psnr"]


def load_validation(data_dir: str | Path | None = None, size: int = 256, per_image: int = 4,
                    progress: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """The fixed held-out pairs (see the module docstring) at ``size``."""
    from .data import VAL_CLIPS, split_by_source
    from .grid_train import VAL_PEOPLE, VAL_SCENES
    from .recipes import load_items, short_side_for, validation_sets
    from .data import default_data_dir
    dd = Path(data_dir).expanduser() if data_dir else default_data_dir()
    people, scenes = load_items(dd, short_side_for(size, 0.75), clips=VAL_CLIPS, progress=progress)
    tr_p, va_p = split_by_source(people, VAL_PEOPLE + tuple(f"clip:{c}" for c in VAL_CLIPS))
    _, va_s = split_by_source(scenes, VAL_SCENES)
    if not va_p:
        from ..errors import InputError
        raise InputError(f"no held-out people in {dd}", "run scripts/fetch_training_data.py")
    shapes = [p.mask for p in va_p if (p.mask > 0.5).mean() > 0.03]
    return validation_sets(va_p, va_s, shapes, size=size, per_image=per_image)


def _u8(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((t.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).double().div(255.0)


def evaluate_recipes(fit: Callable[[np.ndarray, np.ndarray], ColorGrid], sets: dict[str, list[dict]],
                     name: str = "harmonizer", size: int = 256,
                     sheet: list | None = None, relative: bool = True,
                     relative_fit: Callable | None = None) -> RecipeReport:
    """Score ``fit(composite uint8 (S,S,3), mask float (S,S)) -> ColorGrid`` on ``sets``,
    relative to each pair's ``source`` (when it has one) with ``relative``: by
    ``relative_fit(composite, mask, source)`` (a harmonizer's own, see
    :func:`vidharm.color.relative_fit_of`; default :func:`vidharm.color.fit_relative` over
    ``fit``).
    ``sheet``: a list that receives (recipe, composite, result, target) uint8 images."""
    report = RecipeReport(name, size)
    relative_fit = relative_fit or functools.partial(fit_relative, fit)
    for recipe, pairs in sets.items():
        rows = ROWS + ((ABSOLUTE_ROW,) if relative else ())
        accs = {r: MetricAccumulator() for r in rows}
        for k, p in enumerate(pairs):
            comp, real = _u8(p["composite"]), _u8(p["real"])
            mask = p["mask"][0].numpy().astype(np.float32)
            alone = fit(comp, mask)
            src = _u8(p["source"]) if relative and "source" in p else None
            grid = alone if src is None else relative_fit(comp, mask, src)
            out = apply_grid(comp, mask, grid)
            best = apply_grid(comp, mask, fit_grid(comp, real, mask, (4, 4), ridge=1e-3))
            imgs = (comp, out, best) + ((apply_grid(comp, mask, alone),) if relative else ())
            m = p["mask"][None].double()
            for row, img in zip(rows, imgs):
                accs[row].update(_t(img)[None], _t(real)[None], m)
            if sheet is not None and k < 3:
                sheet.append((recipe, comp, out, real))
        report.sets[recipe] = {r: _with_pooled(a) for r, a in accs.items()}
        report.counts[recipe] = len(pairs)
    return report


def _with_pooled(acc: MetricAccumulator) -> dict:
    """The summary plus ``psnr_pooled``: PSNR (MAX 255) of the mean MSE. The mean of per-image
    PSNRs (the published protocol) rewards leaving some images untouched (capped at ~148 dB)
    more than it punishes damaging others; the pooled figure does not."""
    from .metrics import bucket_of
    out = acc.summary()
    for bucket, vals in out.items():
        mses = [v["mse"] for v in acc.per_image if bucket == "all" or bucket_of(v["fg_ratio"]) == bucket]
        vals["psnr_pooled"] = (10 * np.log10(255.0 ** 2 / max(float(np.mean(mses)), 1e-10))
                               if mses else None)
    return out


def harmonizer_for(name: str, weights: str = "", work_size: int = 256):
    """A registered harmonizer on the CPU, as the eval uses it (stateless: each still on its
    own); its ``fit`` and :func:`vidharm.color.relative_fit_of` are what is scored."""
    from ..config import HarmonizerConfig
    from ..registry import registry
    return registry.harmonizers.create(name, HarmonizerConfig(name=name, weights=weights,
                                                              device="cpu", work_size=work_size))


def render(report: RecipeReport) -> str:
    """A plain-text table: recipe, bucket, then PSNR (fPSNR) per row."""
    lines = [f"harmonizer: {report.harmonizer}   size {report.size}   mean PSNR dB (fPSNR dB), "
             f"MAX = target's maximum; [PSNR of the mean MSE]; harmonizer = as vidharm applies "
             f"it; composite only = without the source frame; fitted grid = 4x4 grid fitted "
             f"with the ground truth",
             f"{'recipe':<12} {'bucket':<8} {'n':>4}  " +
             "  ".join(f"{r:>22}" for r in next(iter(report.sets.values()), ROWS))]
    for recipe, rows in report.sets.items():
        for bucket in rows["composite"]:
            n = rows["composite"][bucket]["count"]
            if not n:
                continue
            cells = []
            for r in rows:
                v = rows[r][bucket]
                f = "" if v["fpsnr"] is None else f"({v['fpsnr']:.1f})"
                cells.append(f"{v['psnr']:>7.2f} {f:>6} [{v['psnr_pooled']:5.1f}]")
            lines.append(f"{recipe:<12} {bucket:<8} {n:>4}  " + "  ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def to_json(report: RecipeReport) -> str:
    return json.dumps({"harmonizer": report.harmonizer, "size": report.size,
                       "counts": report.counts, "sets": report.sets}, indent=1)


def contact_sheet(rows: list, path: str | Path, height: int = 160) -> None:
    """composite | result | target per row, one row per pair in ``rows``."""
    import cv2
    from .._fs import atomic_path
    strips = []
    for recipe, comp, out, real in rows:
        tiles = [cv2.resize(x, (height, height), interpolation=cv2.INTER_AREA) for x in (comp, out, real)]
        strip = np.concatenate(tiles, 1)
        cv2.putText(strip, recipe, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        strips.append(strip)
    img = np.concatenate(strips, 0)
    p = Path(path)
    with atomic_path(p) as tmp:
        ok, buf = cv2.imencode(".png", img[..., ::-1])
        Path(tmp).write_bytes(buf.tobytes())
