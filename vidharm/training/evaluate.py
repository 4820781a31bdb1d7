"""Evaluation: iHarmony4-style metrics per foreground-ratio bucket, for a model and for the
plain composite (the "do nothing" baseline), plus a contact sheet.

    from vidharm.training.evaluate import evaluate, render_table, to_json
    report = evaluate(model, "/data/iHarmony4/HAdobe5k", contact_sheet="sheet.png")
    rich.print(render_table(report)); Path("report.json").write_text(to_json(report))

``dataset`` is a torch Dataset of ``{"composite", "mask", "real"}`` dicts (any of
:mod:`vidharm.training.folders`, :mod:`vidharm.training.data`) or a folder path: iHarmony4 or
FFHQH layout (its ``split`` list), or a plain folder of photos, from which deterministic
synthetic composites are made (person masks computed once with MediaPipe).

Protocol (as the published test script): the composite is resized to the model size
(``size``, bicubic; mask bilinear then binarised) when it differs, the model runs, its output is
resized back bicubically, clamped, and blended with the composite under the mask at the
sample's own resolution; metrics as in :mod:`vidharm.training.metrics` (0-255, blended, PSNR
MAX selectable). Temporal pair samples (a frame axis) also get a temporal error: the mean
absolute difference, inside either frame's mask, between the result's frame-to-frame change
and the ground truth's (0-255 scale; lower is steadier).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .._fs import atomic_path
from .metrics import ALL, BUCKETS, MetricAccumulator, blend, psnr_convention


@dataclass
class EvalReport:
    name: str
    psnr_max: str
    count: int
    composite: dict                      # bucket -> {count, mse, psnr, fmse, fpsnr}
    model: dict | None = None
    model_name: str | None = None
    size: int | None = None
    temporal: dict | None = None         # {"composite": err, "model": err, "pairs": n}
    contact_sheet: str | None = None
    convention: str = ""
    notes: list = field(default_factory=list)


def _model_name(model: nn.Module | None) -> str | None:
    if model is None:
        return None
    cfg = getattr(model, "config", None)
    if isinstance(cfg, dict) and cfg.get("name"):
        return str(cfg["name"])
    return type(model).__name__


def _open(dataset, split: str, size: int | None, seed: int) -> tuple[Dataset, str]:
    if isinstance(dataset, (str, os.PathLike)):
        from .folders import detect_layout, open_folder
        kw = {"seed": seed} if detect_layout(dataset) == "photos" else {}
        return open_folder(dataset, split=split, size=size, **kw), Path(dataset).name
    return dataset, type(dataset).__name__


def _run_model(model: nn.Module, comp: torch.Tensor, mask: torch.Tensor, size: int | None) -> torch.Tensor:
    h, w = comp.shape[-2:]
    need = size is not None and (h, w) != (size, size)
    if not need and (h % 8 or w % 8):  # PHNet needs multiples of 8
        need, size = True, max(8, int(round(max(h, w) / 8)) * 8)
    if need:
        c = F.interpolate(comp, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        m = (F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False) > 0.5).float()
        out = model(c, m).float()
        out = F.interpolate(out, size=(h, w), mode="bicubic", align_corners=False)
    else:
        out = model(comp, (mask > 0.5).float()).float()
    return out.clamp(0, 1)


def _grid_mode(comp: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """What vidharm ships: the model's effect fitted as a colour grid (vidharm.color) and
    applied to the composite, instead of taking the network's pixels."""
    from ..color import apply_grid, fit_grid
    out = []
    for c, p, m in zip(comp, pred, mask):
        c8 = (c.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        pn = p.permute(1, 2, 0).cpu().numpy().astype(np.float32)
        mn = (m[0].cpu().numpy() > 0.5).astype(np.float32)
        g = fit_grid(c8, pn, mn, (grid, grid), ridge=1e-3)
        out.append(torch.from_numpy(apply_grid(c8, mn, g)).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(comp.device)


def _temporal_error(res: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum over the pairs of flattened (2B,...) frame pairs of the mean absolute difference, inside
    either frame's mask, between the result's frame-to-frame change and the ground truth's
    (0-255)."""
    b = res.shape[0] // 2
    r = res.view(b, 2, *res.shape[1:]) * 255
    g = real.view(b, 2, *real.shape[1:]) * 255
    m = (mask.view(b, 2, *mask.shape[1:]) > 0.5).any(1).float()
    d = ((r[:, 1] - r[:, 0]) - (g[:, 1] - g[:, 0])).abs() * m
    return float((d.flatten(1).sum(1) / (3 * m.flatten(1).sum(1).clamp_min(1))).sum())


def _tile(t: torch.Tensor, height: int) -> np.ndarray:
    a = (t.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    from PIL import Image
    h, w = a.shape[:2]
    return np.asarray(Image.fromarray(a).resize((max(1, round(w * height / h)), height),
                                                Image.Resampling.BICUBIC))


def save_contact_sheet(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], path: str | os.PathLike,
                       tile_height: int = 192, labels=("composite", "result", "ground truth")) -> Path:
    """A PNG grid, one row per sample: composite | result | ground truth; written atomically."""
    from PIL import Image, ImageDraw

    path = Path(path)
    lines = []
    for r in rows:
        tiles = [_tile(t, tile_height) for t in r]
        gap = np.full((tile_height, 4, 3), 255, np.uint8)
        lines.append(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], 1))
    width = max(l.shape[1] for l in lines)
    lines = [np.pad(l, ((0, 4), (0, width - l.shape[1]), (0, 0)), constant_values=255) for l in lines]
    header = np.full((18, width, 3), 255, np.uint8)
    sheet = Image.fromarray(np.concatenate([header] + lines, 0))
    draw = ImageDraw.Draw(sheet)
    tw = lines[0].shape[1] // 3 if lines else 0
    for i, lab in enumerate(labels):
        draw.text((i * tw + 4, 3), lab, fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


@torch.no_grad()
def evaluate(model: nn.Module | None, dataset, *, size: int | None = 256, split: str = "test",
             psnr_max: str = "target", batch_size: int = 8, device: str | torch.device = "cpu",
             contact_sheet: str | os.PathLike | None = None, sheet_rows: int = 8,
             max_samples: int | None = None, seed: int = 0, name: str | None = None,
             progress: Callable[[int, int], None] | None = None, mode: str = "network") -> EvalReport:
    """Metrics for ``model`` (None: the composite baseline only) on ``dataset``.

    ``mode``: "network" = the published protocol (the network's pixels, resized back and
    blended); "grid" = how vidharm uses a model (its effect fitted as a colour grid and applied
    to the composite; see :mod:`vidharm.color`).

    ``size``: the model's input size (and, for a folder path, the size the dataset is read at;
    None keeps each image's own size). Returns an :class:`EvalReport`.
    """
    ds, default_name = _open(dataset, split, size, seed)
    n_total = len(ds) if max_samples is None else min(len(ds), max_samples)
    device = torch.device(device)
    if model is not None:
        model = model.to(device).eval()
    acc_c = MetricAccumulator(psnr_max)
    acc_m = MetricAccumulator(psnr_max) if model is not None else None
    sheet: list[tuple] = []
    sheet_every = max(1, n_total // max(1, sheet_rows))
    t_err = {"composite": 0.0, "model": 0.0, "pairs": 0}
    pending: list[dict] = []

    def flush() -> None:
        if not pending:
            return
        comp = torch.stack([p["composite"] for p in pending]).to(device)
        mask = torch.stack([p["mask"] for p in pending]).to(device)
        real = torch.stack([p["real"] for p in pending]).to(device)
        pair = comp.dim() == 5
        if pair:
            comp, mask, real = comp.flatten(0, 1), mask.flatten(0, 1), real.flatten(0, 1)
        acc_c.update(blend(comp, comp, mask), real, mask)
        result = comp
        if model is not None:
            pred = _run_model(model, comp, mask, size)
            if mode == "grid":
                pred = _grid_mode(comp, pred, mask)
            result = blend(pred, comp, mask)
            acc_m.update(result, real, mask)
        if pair:
            t_err["composite"] += _temporal_error(comp, real, mask)
            if model is not None:
                t_err["model"] += _temporal_error(result, real, mask)
            t_err["pairs"] += comp.shape[0] // 2
        for i, p in enumerate(pending):
            if p["_index"] % sheet_every == 0 and len(sheet) < sheet_rows:
                j = i * 2 if pair else i
                sheet.append((comp[j].cpu(), result[j].cpu(), real[j].cpu()))
        pending.clear()

    shape = None
    for i in range(n_total):
        s = ds[i]
        s = {"composite": s["composite"], "mask": s["mask"], "real": s["real"], "_index": i}
        if shape is not None and (s["composite"].shape != shape or len(pending) >= batch_size):
            flush()
        shape = s["composite"].shape
        pending.append(s)
        if progress:
            progress(i + 1, n_total)
    flush()

    report = EvalReport(
        name=name or default_name, psnr_max=psnr_max, count=len(acc_c),
        composite=acc_c.summary(), model=acc_m.summary() if acc_m is not None else None,
        model_name=_model_name(model), size=size, convention=psnr_convention(psnr_max))
    if t_err["pairs"]:
        report.temporal = {"pairs": t_err["pairs"],
                           "composite": t_err["composite"] / t_err["pairs"],
                           "model": t_err["model"] / t_err["pairs"] if model is not None else None}
    if contact_sheet is not None and sheet:
        report.contact_sheet = str(save_contact_sheet(sheet, contact_sheet))
    return report


def _fmt(v, nd=2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def render_table(report: EvalReport):
    """A rich Table: one row per bucket (and all), composite baseline vs model."""
    from rich.table import Table

    title = f"{report.name}: {report.count} images"
    if report.model_name:
        title += f", model {report.model_name}"
    t = Table(title=title, caption=f"blended, 0-255; {report.convention}")
    t.add_column("fg ratio")
    t.add_column("n", justify="right")
    cols = [("composite", report.composite)]
    if report.model is not None:
        cols.append(("model", report.model))
    for label, _ in cols:
        for metric in ("MSE", "PSNR", "fMSE", "fPSNR"):
            t.add_column(f"{label} {metric}", justify="right")
    for bucket in [b for b, _, _ in BUCKETS] + [ALL]:
        row = [bucket, str(report.composite[bucket]["count"])]
        for _, res in cols:
            m = res[bucket]
            row += [_fmt(m["mse"]), _fmt(m["psnr"]), _fmt(m["fmse"]), _fmt(m["fpsnr"])]
        t.add_row(*row, end_section=bucket == BUCKETS[-1][0])
    if report.temporal:
        t.caption += (f"; temporal error (pairs {report.temporal['pairs']}): composite "
                      f"{_fmt(report.temporal['composite'])}, model {_fmt(report.temporal['model'])}")
    return t


def to_json(report: EvalReport) -> str:
    return json.dumps(asdict(report), indent=1, sort_keys=True)
