"""Harmonization metrics, iHarmony4 conventions.

* Computed on the BLENDED result ``out*mask + composite*(1-mask)`` against the real image, on the
  0-255 scale. Inputs in [0, 1] are scaled by 255 and (by default) rounded to 8-bit values, as
  the published test code does with its 8-bit images.
* Masks are binarised at 0.5.
* MSE: mean over all pixels and channels. fMSE = Σ M·(pred-gt)² / (3·ΣM) (M one channel).
* PSNR = 10·log10(MAX² / MSE), fPSNR likewise with fMSE. MAX is selectable:
  ``psnr_max="target"`` (default, as published: the target image's own maximum value, per
  image) or ``psnr_max="255"`` (the fixed 8-bit peak some papers use). Reports say which.
* An exact match (MSE 0) would give an infinite PSNR: the MSE is floored at 1e-10 (PSNR at most
  ~148 dB for MAX 255) so averages stay finite. An image with an empty mask has no fMSE/fPSNR
  (NaN, left out of the averages) and falls in the 0-5 % bucket.
* Aggregates are means of the per-image values (iHarmony4 practice), overall and per
  foreground-ratio bucket: 0-5 %, 5-15 %, 15-100 % (ratio = ΣM / (H·W); lower bound inclusive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0-5%", 0.0, 0.05),
    ("5-15%", 0.05, 0.15),
    ("15-100%", 0.15, 1.0 + 1e-9),
)
ALL = "all"
METRIC_NAMES = ("mse", "psnr", "fmse", "fpsnr")
PSNR_MAX_MODES = ("target", "255")
MSE_FLOOR = 1e-10


def blend(pred: torch.Tensor, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``pred*mask + composite*(1-mask)`` with the mask binarised at 0.5."""
    m = (mask > 0.5).to(pred.dtype)
    return pred * m + composite * (1 - m)


def to_255(x: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """[0,1] float -> float64 on the 0-255 scale (rounded to integers when ``quantize``)."""
    y = x.detach().double().clamp(0, 1) * 255.0
    return torch.round(y) if quantize else y


def bucket_of(ratio: float) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= ratio < hi:
            return name
    return BUCKETS[-1][0]


def image_metrics(result: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  psnr_max: str = "target", scale01: bool = True, quantize: bool = True) -> dict[str, torch.Tensor]:
    """Per-image metrics. ``result`` must already be blended. Shapes (B,3,H,W), (B,3,H,W), (B,1,H,W).

    ``scale01``: inputs are in [0, 1] (else already 0-255). Returns float64 tensors of shape (B,):
    mse, psnr, fmse, fpsnr, fg_ratio.
    """
    if psnr_max not in PSNR_MAX_MODES:
        raise ValueError(f"psnr_max must be one of {PSNR_MAX_MODES}, not {psnr_max!r}")
    if result.dim() == 3:
        result, target, mask = result[None], target[None], mask[None]
    if scale01:
        r, t = to_255(result, quantize), to_255(target, quantize)
    else:
        r, t = result.detach().double(), target.detach().double()
    m = (mask.detach() > 0.5).double()
    if m.shape[1] != 1:
        m = m[:, :1]
    b = r.shape[0]
    c = r.shape[1]
    sq = (r - t).pow(2)
    mse = sq.flatten(1).mean(1)
    area = m.flatten(1).sum(1)
    fsum = (sq * m).flatten(1).sum(1)
    fmse = torch.where(area > 0, fsum / (c * area.clamp_min(1)), torch.full_like(area, float("nan")))
    if psnr_max == "target":
        peak = t.flatten(1).max(1).values
    else:
        peak = torch.full((b,), 255.0, dtype=torch.float64, device=r.device)
    psnr = 10 * torch.log10(peak.pow(2) / mse.clamp_min(MSE_FLOOR))
    fpsnr = 10 * torch.log10(peak.pow(2) / fmse.clamp_min(MSE_FLOOR))  # NaN stays NaN
    ratio = area / (m.shape[-1] * m.shape[-2])
    return {"mse": mse, "psnr": psnr, "fmse": fmse, "fpsnr": fpsnr, "fg_ratio": ratio}


@dataclass
class _Sums:
    count: int = 0
    sums: dict = field(default_factory=lambda: {k: 0.0 for k in METRIC_NAMES})
    counts: dict = field(default_factory=lambda: {k: 0 for k in METRIC_NAMES})

    def add(self, values: dict[str, float]) -> None:
        self.count += 1
        for k in METRIC_NAMES:
            v = values[k]
            if not math.isnan(v):
                self.sums[k] += v
                self.counts[k] += 1

    def means(self) -> dict:
        out = {"count": self.count}
        for k in METRIC_NAMES:
            out[k] = self.sums[k] / self.counts[k] if self.counts[k] else None
        return out


class MetricAccumulator:
    """Accumulates per-image metrics; :meth:`summary` gives means overall and per bucket."""

    def __init__(self, psnr_max: str = "target", quantize: bool = True):
        if psnr_max not in PSNR_MAX_MODES:
            raise ValueError(f"psnr_max must be one of {PSNR_MAX_MODES}, not {psnr_max!r}")
        self.psnr_max = psnr_max
        self.quantize = quantize
        self.per_image: list[dict[str, float]] = []

    def update(self, result: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               scale01: bool = True) -> dict[str, torch.Tensor]:
        """Add a batch of BLENDED results (see :func:`blend`)."""
        vals = image_metrics(result, target, mask, self.psnr_max, scale01, self.quantize)
        for i in range(vals["mse"].shape[0]):
            self.per_image.append({k: float(v[i]) for k, v in vals.items()})
        return vals

    def __len__(self) -> int:
        return len(self.per_image)

    def summary(self) -> dict[str, dict]:
        """{"all": {...}, "0-5%": {...}, "5-15%": {...}, "15-100%": {...}}, each with count and
        the means of mse, psnr, fmse, fpsnr (None where no image contributes)."""
        groups = {ALL: _Sums(), **{name: _Sums() for name, _, _ in BUCKETS}}
        for v in self.per_image:
            groups[ALL].add(v)
            groups[bucket_of(v["fg_ratio"])].add(v)
        return {k: g.means() for k, g in groups.items()}


def psnr_convention(psnr_max: str) -> str:
    return ("PSNR MAX = the target image's own maximum (as published)" if psnr_max == "target"
            else "PSNR MAX = 255")
