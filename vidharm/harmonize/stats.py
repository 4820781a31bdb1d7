"""``stats``: learning-free patch statistics transfer (the PN block's statistics, on colour).

PHNet's PN block re-normalises the foreground's features with the background's statistics:
a global part, ``z * sigma_bg + mu_bg``, and a patch part, ``z * sigma_bg + mu_patch``, where
``z = (F - mu_fg) / sigma_fg`` and ``mu_patch`` is a mix of the background's per-cell means.
This harmonizer applies the same algebra to RGB colour at a low working resolution, with no
weights:

    gain   = clip(sigma_bg / sigma_fg, 1/max_gain, max_gain)          per channel
    offset = mu_target - gain * mu_fg
    mu_target(cell) = (1 - local_weight) * mu_bg + local_weight * mu_bg_near(cell)

``mu_bg_near`` is the background mean around each grid cell (Gaussian-weighted over cells), so
light that falls differently across the frame reaches the matching part of the person. Since
pasting a person onto a room should not turn them the room's colour, the transform is blended
toward identity by ``strength`` and gains are clipped. The result is a :class:`ColorGrid`
(diagonal affine per cell) applied at full resolution; on a stream the grid is smoothed over
time (EMA), and a cut (large jump in statistics) resets it.
"""
from __future__ import annotations

import numpy as np

from .._threads import blas_single_thread
from ..color import ColorGrid, cell_weights, subsample
from ..registry import registry
from .base import GridHarmonizer

EPS = 1e-4


def masked_mean_std(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted per-channel mean and std. x: (N, 3), w: (K, N) -> (K, 3), (K, 3)."""
    n = w.sum(1, keepdims=True) + EPS
    mu = (w @ x) / n
    var = (w @ (x * x)) / n - mu * mu
    return mu, np.sqrt(np.maximum(var, 0.0) + EPS)


def stats_grid(composite: np.ndarray, mask: np.ndarray, grid: int = 4, local_weight: float = 0.5,
               max_gain: float = 1.6) -> ColorGrid:
    """Fit the statistics-transfer grid on a (low-res) composite.

    composite: (h, w, 3) uint8 or float [0, 1]; mask: (h, w) float [0, 1]. Returns a
    ``grid x grid`` :class:`ColorGrid` (square in grid units, applied over the whole frame).
    """
    img = composite.astype(np.float32) / 255.0 if composite.dtype == np.uint8 else composite
    h, w = mask.shape
    x = img.reshape(-1, 3)
    fg = mask.reshape(1, -1).astype(np.float32)
    bg = 1.0 - fg
    if fg.sum() < 1.0 or bg.sum() < 1.0:                       # nothing to harmonize against
        return ColorGrid.identity(grid, grid)
    mu_fg, sigma_fg = masked_mean_std(x, fg)                   # (1, 3)
    mu_bg, sigma_bg = masked_mean_std(x, bg)                   # (1, 3)
    gain = np.clip(sigma_bg / sigma_fg, 1.0 / max_gain, max_gain)   # (1, 3)
    cw = cell_weights(h, w, grid, grid, sharpness=0.7)         # (K, N): wide, smooth support
    wb = cw * bg                                               # background weight per cell
    mu_near, _ = masked_mean_std(x, wb)                        # (K, 3)
    have = wb.sum(1, keepdims=True)
    # cells with almost no background nearby fall back to the global mean
    trust = np.clip(have / (0.02 * h * w / (grid * grid) + EPS), 0.0, 1.0)
    mu_near = trust * mu_near + (1 - trust) * mu_bg
    mu_target = (1.0 - local_weight) * mu_bg + local_weight * mu_near     # (K, 3)
    offset = mu_target - gain * mu_fg                                      # (K, 3)
    coeffs = np.zeros((grid * grid, 3, 4), np.float32)
    idx = np.arange(3)
    coeffs[:, idx, idx] = gain
    coeffs[:, :, 3] = offset
    return ColorGrid(coeffs.reshape(grid, grid, 3, 4))


class StatsHarmonizer(GridHarmonizer):
    """Patch statistics transfer (PN statistics on colour): fast, deterministic, no weights."""

    name = "stats"

    def __init__(self, cfg=None, smoothing: float = 0.0, cut_threshold: float = 0.08):
        from ..config import HarmonizerConfig
        super().__init__(smoothing, cut_threshold)
        self.cfg = cfg or HarmonizerConfig()

    def fit_frame(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        """This frame's grid, fitted on a strided subsample (statistics need no full res)."""
        small = np.ascontiguousarray(subsample(composite, self.cfg.work_size // 2))
        m = np.ascontiguousarray(subsample(mask, self.cfg.work_size // 2))
        with blas_single_thread():
            return stats_grid(small, m, self.cfg.grid, self.cfg.local_weight).scaled(self.cfg.strength)


registry.harmonizers.add("stats", StatsHarmonizer, StatsHarmonizer.__doc__.splitlines()[0])
