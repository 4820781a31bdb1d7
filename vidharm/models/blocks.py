"""PHNet building blocks: patch normalization (PN), the patch feature extractor (PFE), SE.

Module and parameter names follow the published PHNet checkpoints exactly, so that
``state_dict()`` keys match ``normalizers.k.*``, ``feature_extractor.*`` and ``SE_block.*``.

Notation (paper names): ``F`` features (B,C,H,W); ``M`` mask (B,1,H,W), 1 = foreground;
``mu_fg, sigma_fg`` / ``mu_bg, sigma_bg`` masked per-channel statistics of the foreground /
background; ``mu_bg_cells`` (B,C,G,G) per-grid-cell background means; ``grid_weights`` the
learned (1,C,G,G) cell weighting; ``mu_patch`` their weighted sum.

Grid cells (PN and PFE alike): an image of height H split into G rows of height ``H // G``;
the last row takes the remainder (rows ``(G-1)*(H//G) .. H-1``). Columns likewise. When
``H < G`` every cell but the last is empty. Cell statistics are vectorised, no Python loop
over cells or pixels: cell sums reshape the first G-1 equal rows/columns into (G-1, H//G)
blocks and sum them, plus one sum for the remainder (:func:`cell_sums`); per-cell values go
back to their pixels through one-hot row/column-to-cell matrices, ``R_y^T @ cells @ R_x``
(:func:`expand_cells`). Statistics that need a second pass (stds) subtract the expanded
cell mean first; whole-image PFE statistics are pooled from the cell moments.

Precision: every statistic is computed in float32 even under autocast (the blocks switch
autocast off locally and cast their inputs to float32); their outputs are float32.

Streaming (video): both PN and PFE can carry their statistics across calls with an
exponential moving average ``x_t = s * x_{t-1} + (1 - s) * x_new``, per batch element (the
statistics have a batch dimension, so batch element b of one call continues the stream of
batch element b of the previous call). ``smoothing = 0`` (default) keeps no state and is the
exact per-frame computation. Stored statistics are detached. A change of batch size, size
of a statistic, device or dtype restarts the stream for that statistic.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

PN_EPS = 1e-7   # PN statistics epsilon (published value)
PFE_EPS = 1e-8  # PFE std epsilon (published value)


# --------------------------------------------------------------------------------------------
# helpers: float32 statistics, grid cells
# --------------------------------------------------------------------------------------------

def fp32_stats(x: Tensor) -> contextlib.AbstractContextManager:
    """Context that turns autocast off for ``x``'s device type (no-op when it is off)."""
    dev = x.device.type
    try:
        on = torch.is_autocast_enabled(dev)
    except TypeError:  # pragma: no cover - very old torch
        on = torch.is_autocast_enabled()
    if on:
        return torch.autocast(device_type=dev, enabled=False)
    return contextlib.nullcontext()


def cell_index(size: int, grid: int, device=None) -> Tensor:
    """Cell of every row (or column): (size,) int64 in [0, grid).

    Cells have ``size // grid`` rows, the last takes the remainder; if ``size < grid`` all
    rows belong to the last cell.
    """
    step = size // grid
    idx = torch.arange(size, device=device)
    if step == 0:
        return torch.full((size,), grid - 1, dtype=torch.long, device=device)
    return torch.clamp(idx // step, max=grid - 1)


def cell_assignment(size: int, grid: int, device=None, dtype=torch.float32) -> Tensor:
    """One-hot row-to-cell matrix R: (grid, size), ``R[g, y] = 1`` iff row y is in cell g."""
    idx = cell_index(size, grid, device)
    return (idx.unsqueeze(0) == torch.arange(grid, device=device).unsqueeze(1)).to(dtype)


def _cell_reduce(x: Tensor, dim: int, grid: int) -> Tensor:
    """Sum ``x`` over the grid cells along ``dim`` (-2 or -1): size -> grid.

    The first G-1 cells are equal (``size // G``) and summed through a reshape; the last cell
    (the remainder) is summed on its own. No matmul, so no TF32 rounding on GPUs.
    """
    size = x.shape[dim]
    step = size // grid
    split = (grid - 1) * step
    tail = x.narrow(dim, split, size - split).sum(dim, keepdim=True)
    if grid == 1:
        return tail
    head = x.narrow(dim, 0, split)
    if step == 0:
        shape = list(x.shape)
        shape[dim] = grid - 1
        return torch.cat([head.new_zeros(shape), tail], dim)
    if dim in (-1, x.dim() - 1):
        head = head.reshape(*x.shape[:-1], grid - 1, step).sum(-1)
    else:
        head = head.reshape(*x.shape[:-2], grid - 1, step, x.shape[-1]).sum(-2)
    return torch.cat([head, tail], dim)


def cell_sums(x: Tensor, grid: int) -> Tensor:
    """Sum of ``x`` over each grid cell. x: (B,C,H,W) -> (B,C,G,G)."""
    return _cell_reduce(_cell_reduce(x, -1, grid), -2, grid)


def _cell_sizes(size: int, grid: int) -> list:
    step = size // grid
    return [step] * (grid - 1) + [size - (grid - 1) * step]


def cell_counts(height: int, width: int, grid: int, device=None) -> Tensor:
    """Pixels per cell: (1,1,G,G) float32 (computed on the host: no device sync)."""
    ny, nx = _cell_sizes(height, grid), _cell_sizes(width, grid)
    counts = [[float(a * b) for b in nx] for a in ny]
    return torch.tensor(counts, dtype=torch.float32, device=device).view(1, 1, grid, grid)


def expand_cells(cells: Tensor, height: int, width: int) -> Tensor:
    """Send per-cell values to their pixels. cells: (B,C,G,G) -> (B,C,H,W).

    On CPU through one-hot matmuls ``R_y^T @ cells @ R_x`` (exact: each output is one value
    times 1 plus zeros; about 10x faster than gathering); elsewhere by indexing, which is
    exact regardless of TF32 settings.
    """
    grid = cells.shape[-1]
    if cells.device.type == "cpu" and cells.dtype == torch.float32:
        r_y = cell_assignment(height, grid, cells.device, cells.dtype)    # (G,H)
        r_x = cell_assignment(width, grid, cells.device, cells.dtype)     # (G,W)
        return torch.matmul(r_y.t(), torch.matmul(cells, r_x))
    iy = cell_index(height, grid, cells.device)
    ix = cell_index(width, grid, cells.device)
    return cells[:, :, iy][:, :, :, ix]


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x >= 0 with gradient 0 (not inf -> NaN) where x == 0. Forward is exact."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))),
                       torch.zeros_like(x))


# --------------------------------------------------------------------------------------------
# PN equations
# --------------------------------------------------------------------------------------------

def masked_mean_std(feat: Tensor, m: Tensor, eps: float = PN_EPS) -> Tuple[Tensor, Tensor]:
    """Masked per-channel statistics over a region.

    feat: (B,C,H,W); m: (B,1,H,W) region weights (mask or 1-mask).
    mu = sum(F*m) / (n+eps);  sigma = sqrt(sum(((F-mu)*m)^2) / (n+eps) + eps),  n = sum(m).
    Returns mu, sigma: (B,C,1,1).
    """
    n = m.sum(dim=(2, 3), keepdim=True)                               # (B,1,1,1)
    mu = (feat * m).sum(dim=(2, 3), keepdim=True) / (n + eps)
    var = (((feat - mu) * m) ** 2).sum(dim=(2, 3), keepdim=True) / (n + eps)
    return mu, torch.sqrt(var + eps)


def masked_cell_mean(feat: Tensor, m: Tensor, grid: int, eps: float = PN_EPS) -> Tensor:
    """Masked mean of every grid cell. feat (B,C,H,W), m (B,1,H,W) -> (B,C,G,G).

    mu[i,j] = sum_cell(F*m) / (sum_cell(m) + eps)  (0 for a cell without region pixels).
    """
    return cell_sums(feat * m, grid) / (cell_sums(m, grid) + eps)


def patch_mean(mu_bg_cells: Tensor, grid_weights: Tensor) -> Tensor:
    """mu_patch = sum_ij grid_weights[c,i,j] * mu_bg[i,j]. (B,C,G,G),(1,C,G,G) -> (B,C,1,1)."""
    return (grid_weights * mu_bg_cells).sum(dim=(2, 3), keepdim=True)


def standardize(feat: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """z = (F - mu) / sigma. (B,C,H,W), (B,C,1,1) x2 -> (B,C,H,W)."""
    return (feat - mu) / sigma


# --------------------------------------------------------------------------------------------
# PFE equations (UNmasked statistics, unbiased std, no eps inside the std)
# --------------------------------------------------------------------------------------------

def mean_std(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and unbiased std over the whole image. (B,C,H,W) -> 2 x (B,C,1,1)."""
    n = x.shape[-2] * x.shape[-1]
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mu) ** 2).sum(dim=(2, 3), keepdim=True) / max(n - 1, 1)
    return mu, safe_sqrt(var)


def cell_moments(x: Tensor, grid: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-cell pixel count (1,1,G,G), mean and sum of squared deviations (B,C,G,G).

    Two-pass (mean, then squared deviations from the cell mean) for accuracy.
    """
    H, W = x.shape[-2:]
    n = cell_counts(H, W, grid, x.device)
    mu = cell_sums(x, grid) / n.clamp(min=1)
    dev = x - expand_cells(mu, H, W)
    return n, mu, cell_sums(dev * dev, grid)


def pooled_mean_std(n: Tensor, mu: Tensor, m2: Tensor) -> Tuple[Tensor, Tensor]:
    """Whole-image mean and unbiased std from cell moments (parallel-variance identity).

    n (1,1,G,G), mu, m2 (B,C,G,G) -> (B,C,1,1) x2;  M2 = sum_c [m2_c + n_c (mu_c - mu)^2].
    Equal to :func:`mean_std` up to float rounding, without two more full-resolution passes.
    """
    total = n.sum()
    mean = (n * mu).sum(dim=(2, 3), keepdim=True) / total
    m2_all = (m2 + n * (mu - mean) ** 2).sum(dim=(2, 3), keepdim=True)
    return mean, safe_sqrt(m2_all / (total - 1).clamp(min=1))


# --------------------------------------------------------------------------------------------
# streaming support
# --------------------------------------------------------------------------------------------

class StreamingStats(nn.Module):
    """Mixin: EMA of named statistics across calls (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.smoothing: float = 0.0
        self._stream: Dict[str, Tensor] = {}

    def set_streaming(self, smoothing: float) -> None:
        s = float(smoothing)
        if not 0.0 <= s < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = s
        self._stream = {}

    def reset_stream(self) -> None:
        self._stream = {}

    def _ema(self, name: str, value: Tensor) -> Tensor:
        """x_t = s*x_{t-1} + (1-s)*x_new for this statistic; identity when smoothing is 0."""
        s = self.smoothing
        if s <= 0.0:
            return value
        prev = self._stream.get(name)
        if prev is not None and prev.shape == value.shape and prev.device == value.device \
                and prev.dtype == value.dtype:
            value = s * prev + (1.0 - s) * value
        self._stream[name] = value.detach()
        return value


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------

class PatchNorm(StreamingStats):
    """PN block: re-targets foreground statistics to the background (global + per-patch).

    forward(features (B,C,H,W), mask (B,1,H,W)) -> (B,C,H,W) float32::

        z        = (F - mu_fg) / sigma_fg
        fg_out   = w0 * ((z*sigma_bg + mu_bg)    * fg_var         + fg_bias)
                 + w1 * ((z*sigma_bg + mu_patch) * patched_fg_var + patched_fg_bias)
        bg_out   = (F - mu_bg) / sigma_bg * bg_var + bg_bias
        out      = fg_out * M + bg_out * (1 - M)

    ``fg_out`` is evaluated as ``z*scale + shift`` with per-channel ``scale, shift`` (same
    value, two full-resolution passes instead of eight; about 1e-7 relative rounding
    difference). The mask may be soft; ``weights`` is (w0, w1).
    """

    def __init__(self, channels: int, grid: int, eps: float = PN_EPS):
        super().__init__()
        self.channels, self.grid, self.eps = channels, grid, eps
        shape = (1, channels, 1, 1)
        self.weights = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.fg_var = nn.Parameter(torch.full(shape, 0.8))
        self.fg_bias = nn.Parameter(torch.zeros(shape))
        self.patched_fg_var = nn.Parameter(torch.full(shape, 0.8))
        self.patched_fg_bias = nn.Parameter(torch.zeros(shape))
        self.bg_var = nn.Parameter(torch.full(shape, 0.8))
        self.bg_bias = nn.Parameter(torch.zeros(shape))
        self.grid_weights = nn.Parameter(
            torch.full((1, channels, grid, grid), 1.0 / (grid * grid * channels)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, grid={self.grid}"

    def statistics(self, feat: Tensor, mask: Tensor) -> Dict[str, Tensor]:
        """mu_fg, sigma_fg, mu_bg, sigma_bg (B,C,1,1) and mu_bg_cells (B,C,G,G), EMA'd if streaming."""
        bg = 1.0 - mask
        mu_fg, sigma_fg = masked_mean_std(feat, mask, self.eps)
        mu_bg, sigma_bg = masked_mean_std(feat, bg, self.eps)
        mu_bg_cells = masked_cell_mean(feat, bg, self.grid, self.eps)
        stats = dict(mu_fg=mu_fg, sigma_fg=sigma_fg, mu_bg=mu_bg, sigma_bg=sigma_bg,
                     mu_bg_cells=mu_bg_cells)
        if self.smoothing > 0.0:
            stats = {k: self._ema(k, v) for k, v in stats.items()}
        return stats

    def fg_affine(self, st: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """Fold fg_out = w0*((z*sigma_bg+mu_bg)*fg_var + fg_bias)
                        + w1*((z*sigma_bg+mu_patch)*patched_fg_var + patched_fg_bias)
        into fg_out = z*scale + shift; (B,C,1,1) each. z itself is formed first, as published,
        so a near-constant foreground (tiny sigma_fg) loses no precision."""
        w0, w1 = self.weights[0], self.weights[1]
        mu_patch = patch_mean(st["mu_bg_cells"], self.grid_weights)
        scale = st["sigma_bg"] * (w0 * self.fg_var + w1 * self.patched_fg_var)
        shift = w0 * (st["mu_bg"] * self.fg_var + self.fg_bias) \
            + w1 * (mu_patch * self.patched_fg_var + self.patched_fg_bias)
        return scale, shift

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        with fp32_stats(features):
            feat = features.float()
            mask = mask.float()
            if mask.shape[-2:] != feat.shape[-2:]:
                mask = Fn.interpolate(mask, size=feat.shape[-2:], mode="nearest")
            st = self.statistics(feat, mask)
            z = standardize(feat, st["mu_fg"], st["sigma_fg"])
            scale, shift = self.fg_affine(st)
            fg_out = torch.addcmul(shift, z, scale)
            bg_out = standardize(feat, st["mu_bg"], st["sigma_bg"]) * self.bg_var + self.bg_bias
            return torch.lerp(bg_out, fg_out, mask)           # fg_out*M + bg_out*(1-M)


class PatchHarmonizer(StreamingStats):
    """PFE statistics part: per-cell and global statistic transfer of fg to bg.

    Holds ``grid_weights`` (2,) = (w_local, w_global). ``forward(image, mask)`` returns
    ``(fg_harmonized, composite)``, both (B,3,H,W) float32::

        fg, bg   = image*M, image*(1-M)          (statistics UNmasked, unbiased std)
        local    = (fg - mean(fg_cell)) * std(bg_cell) / (std(fg_cell)+eps) + mean(bg_cell)
        global   = (fg - mean(fg))      * std(bg)      / (std(fg)+eps)      + mean(bg)
        fg_harm  = w0*local + w1*global
        composite = fg_harm*M + bg*bg_scale*(1-M)    (bg_scale = 1/255 in the published code)
    """

    def __init__(self, grid: int, bg_div255: bool = True, eps: float = PFE_EPS):
        super().__init__()
        self.grid, self.bg_div255, self.eps = grid, bg_div255, eps
        self.grid_weights = nn.Parameter(torch.tensor([0.9, 0.1]))

    def extra_repr(self) -> str:
        return f"grid={self.grid}, bg_div255={self.bg_div255}"

    def statistics(self, fg: Tensor, bg: Tensor) -> Dict[str, Tensor]:
        """Global (B,C,1,1) and per-cell (B,C,G,G) means / stds of fg and bg, EMA'd if streaming."""
        c = fg.shape[1]
        n, mu_c, m2_c = cell_moments(torch.cat([fg, bg], dim=1), self.grid)   # fg, bg stacked
        mu, sd = pooled_mean_std(n, mu_c, m2_c)
        sd_c = safe_sqrt(m2_c / (n - 1).clamp(min=1))
        stats = dict(mu_fg=mu[:, :c], sigma_fg=sd[:, :c], mu_bg=mu[:, c:], sigma_bg=sd[:, c:],
                     mu_fg_cells=mu_c[:, :c], sigma_fg_cells=sd_c[:, :c],
                     mu_bg_cells=mu_c[:, c:], sigma_bg_cells=sd_c[:, c:])
        if self.smoothing > 0.0:
            stats = {k: self._ema(k, v) for k, v in stats.items()}
        return stats

    def forward(self, image: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        with fp32_stats(image):
            image, mask = image.float(), mask.float()
            H, W = image.shape[-2:]
            fg = image * mask
            bg = image * (1.0 - mask)
            st = self.statistics(fg, bg)
            # per-cell gain std_bg/(std_fg+eps); mean_fg, gain, mean_bg sent to the pixels at once
            gain_cells = st["sigma_bg_cells"] / (st["sigma_fg_cells"] + self.eps)
            mu_fg_px, gain_px, mu_bg_px = expand_cells(
                torch.cat([st["mu_fg_cells"], gain_cells, st["mu_bg_cells"]], dim=1), H, W
            ).chunk(3, dim=1)
            local = (fg - mu_fg_px) * gain_px + mu_bg_px
            gain = st["sigma_bg"] / (st["sigma_fg"] + self.eps)
            glob = (fg - st["mu_fg"]) * gain + st["mu_bg"]
            fg_harm = self.grid_weights[0] * local + self.grid_weights[1] * glob
            bg_term = bg / 255.0 if self.bg_div255 else bg
            composite = torch.lerp(bg_term, fg_harm, mask)     # fg_harm*M + bg_term*(1-M)
            return fg_harm, composite


class FeatureExtractor(nn.Module):
    """PFE: statistics part + ``head`` Conv2d(6->3, 3x3) + ReLU on cat([image*M, composite]).

    forward(image (B,3,H,W), mask (B,1,H,W)) -> x_harm (B,3,H,W).
    """

    def __init__(self, grid: int, bg_div255: bool = True, in_channels: int = 3):
        super().__init__()
        self.patch_harmonizer = PatchHarmonizer(grid, bg_div255=bg_div255)
        self.head = nn.Sequential(nn.Conv2d(2 * in_channels, in_channels, 3, padding=1),
                                  nn.ReLU(inplace=True))

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        _, composite = self.patch_harmonizer(image, mask)
        fg = image * mask
        return self.head(torch.cat([fg.to(composite.dtype), composite], dim=1))


class SEBlock(nn.Module):
    """Squeeze-excitation on the bottleneck, gated additionally by the PFE output ``x_harm``.

    y = sigmoid(fc2(relu(fc1(avgpool(x)))))   (B,C)
    published (``scalar_harm=True``): s = sigmoid(mean_c(maxpool(x_harm)))  one scalar per image
    fixed (``scalar_harm=False``):    s = sigmoid(harm_fc(cat[avgpool(x_harm), maxpool(x_harm)]))
                                      one gate per channel, learned from x_harm (B,C)
    out = x * (y + s)
    """

    def __init__(self, channels: int, reduction: int = 8, scalar_harm: bool = True,
                 harm_channels: int = 3):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.scalar_harm = scalar_harm
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Sigmoid())
        if not scalar_harm:
            self.harm_fc = nn.Linear(2 * harm_channels, channels)

    def forward(self, x: Tensor, x_harm: Tensor) -> Tensor:
        b, c = x.shape[:2]
        y = self.fc(x.mean(dim=(2, 3)))                                  # (B,C)
        if self.scalar_harm:
            s = torch.sigmoid(x_harm.amax(dim=(2, 3)).mean(dim=1, keepdim=True))   # (B,1)
        else:
            pooled = torch.cat([x_harm.mean(dim=(2, 3)), x_harm.amax(dim=(2, 3))], dim=1)
            s = torch.sigmoid(self.harm_fc(pooled.to(self.harm_fc.weight.dtype)))  # (B,C)
        gate = (y + s.to(y.dtype)).view(b, c, 1, 1)                       # (B,C,1,1)
        return x * gate.to(x.dtype)


class SkipConv(nn.Module):
    """Decoder fusion: ``rconv`` Conv2d(2C -> C, k x k, no bias) + ReLU on cat([x, skip])."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.rconv = nn.Conv2d(2 * channels, channels, kernel_size,
                               padding=kernel_size // 2, bias=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.rconv(x))
