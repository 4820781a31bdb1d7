"""phnet-grid: a PHNet-style harmonizer that predicts the colour transform itself.

Instead of predicting pixels and fitting a colour grid to them afterwards, the network outputs
the grid that vidharm applies at full resolution (:class:`vidharm.color.ColorGrid`): a global
3x4 affine colour transform plus a local residual on a ``grid x grid`` lattice of cells. This is
the white-box route of Harmonizer (filter arguments), DCCF (readable filters) and PCT-Net
(per-pixel affine transforms predicted at low resolution): a few hundred outputs, so it learns
from little data, costs a few ms, and is easy to smooth over time.

Built from PHNet's parts, at the network's own input size S (128 by default):

1. **Patch statistics of person and scene** (PHNet's PN/PFE idea, on colour): for every grid
   size g in ``stat_grids`` the frame is cut into g x g cells and each cell gives the masked
   mean and standard deviation of the foreground and of the background pixels, and how much
   of the cell each covers (:func:`patch_stats`) -> (B, 14, g, g).
   Two illuminant cues of the whole frame are added (:func:`light_cues`): the grey-edge
   estimate (mean absolute gradient per channel) and a soft bright-pixel estimate, for
   person and scene.
2. **A small encoder** on (image, mask) at ``enc_size`` (64): four stride-2 stages (to 4x4),
   whose last
   feature map is pooled PN-style: masked means of foreground and background features, over
   the whole frame and per cell of the output grid.
3. **A head** (:class:`GridHead`): an MLP on the global features gives the global transform
   (12 numbers); a 1x1-conv head on each cell's features (and the global embedding) gives
   the local residual (12 per cell). Both final layers start at zero, so a fresh model is
   the identity (the plain composite).
4. Optionally (``joint`` > 0) **a joint head** (:class:`JointHead`) for the relative form,
   where vidharm has the frame the person was cut from: an MLP on the global features of the
   composite and of that source frame gives a correction (3x4) added to the transform for the
   composite with the one for the source frame undone. Each fit alone sees one picture; the
   joint head sees both, so it can weigh how the new background's light differs from the
   room's. Its last layer starts at zero: without training it changes nothing.

The output transform of cell (i, j) acts on RGB in [0, 1]::

    T_ij(x) = (I + A_g + A_ij) x + (b_g + b_ij)                               (3x3, 3)

:meth:`GridNet.forward` returns the composite with the transform applied to the person
(``x + m * (T(x) - x)``, coefficients interpolated bilinearly between cell centres exactly as
:func:`vidharm.color.apply_grid` does), so the published loss is computed on the image *after*
the transform; :meth:`GridNet.predict_grid` returns the coefficients, (B, grid, grid, 3, 4).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_arch, register_model

GRID_DEFAULT_OPTIONS: Dict[str, Any] = {
    "in_size": 128,            # the network's input size (square): the statistics
    "enc_size": 64,            # the encoder's input size (the image area-downsampled)
    "grid": 4,                 # output cells per side
    "stat_grids": [1, 2, 4],   # patch-statistics grids (PN at several grid sizes)
    "hidden": 96,              # width of the head
    "local_scale": 0.5,        # the local residual's share (a fresh model: 0)
    "ring": 0,                 # >0: also the statistics of the bands of this many pixels on
                               # either side of the mask's edge (person and scene side by side)
    "joint": 0,                # >0: width of the joint head (:class:`JointHead`), 0: none
}
N_STATS = 14                   # per cell: fg mean/std, bg mean/std (3 each), fg/bg coverage
N_CUES = 12                    # grey-edge and bright-pixel estimates, fg and bg (3 each)
EPS = 1e-4


def masked_mean_std(x: Tensor, w: Tensor, g: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-cell weighted mean and std of ``x`` (B,C,H,W) under weights ``w`` (B,1,H,W) on a
    g x g grid of cells -> mean (B,C,g,g), std (B,C,g,g), coverage (B,1,g,g) in [0, 1]."""
    cov = F.adaptive_avg_pool2d(w, g)
    n = cov + EPS
    mu = F.adaptive_avg_pool2d(x * w, g) / n
    var = F.adaptive_avg_pool2d(x * x * w, g) / n - mu * mu
    return mu, torch.sqrt(var.clamp_min(0.0) + EPS), cov


def patch_stats(image: Tensor, mask: Tensor, g: int) -> Tensor:
    """PN/PFE-style statistics of person and scene per cell: (B, 14, g, g)."""
    mf, sf, cf = masked_mean_std(image, mask, g)
    mb, sb, cb = masked_mean_std(image, 1.0 - mask, g)
    return torch.cat([mf, sf, mb, sb, cf, cb], 1)


def edge_bands(mask: Tensor, ring: int) -> tuple[Tensor, Tensor]:
    """The person's band inside the mask's edge and the scene's band outside it, each
    ``ring`` pixels wide (mask (B,1,H,W) in {0,1}) -> two (B,1,H,W) weights."""
    k = 2 * ring + 1
    dilated = F.max_pool2d(mask, k, stride=1, padding=ring)
    eroded = -F.max_pool2d(-mask, k, stride=1, padding=ring)
    return mask - eroded, dilated - mask


def light_cues(image: Tensor, mask: Tensor, sharpness: float = 12.0) -> Tensor:
    """Illuminant estimates of person and scene: grey-edge (mean |gradient| per channel,
    normalised to unit sum) and a soft bright-pixel mean (weights exp(k * luminance)),
    (B, 12)."""
    out = []
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs()[..., :-1, :]
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs()[..., :, :-1]
    grad = dx + dy                                                     # (B,3,H-1,W-1)
    luma = image.mean(1, keepdim=True)
    for w in (mask, 1.0 - mask):
        wg = w[..., :-1, :-1]
        ge = (grad * wg).flatten(2).sum(2) / (wg.flatten(2).sum(2) + EPS)
        ge = ge / (ge.sum(1, keepdim=True) + EPS)
        bw = w * torch.exp(sharpness * (luma - 1.0))
        bp = (image * bw).flatten(2).sum(2) / (bw.flatten(2).sum(2) + EPS)
        out += [ge, bp]
    return torch.cat(out, 1)


def interp_weights(size: int, cells: int, device=None, dtype=torch.float32) -> Tensor:
    """(size, cells) bilinear weights from cell centres ``(i + 0.5) * size / cells`` to pixel
    centres, clamped at the outer centres (as :func:`vidharm.color._interp_weights`)."""
    g = ((torch.arange(size, device=device, dtype=dtype) + 0.5) * cells / size - 0.5).clamp(0, cells - 1)
    i0 = g.floor().long()
    i1 = (i0 + 1).clamp_max(cells - 1)
    f = g - i0
    w = torch.zeros(size, cells, device=device, dtype=dtype)
    rows = torch.arange(size, device=device)
    w[rows, i0] += 1 - f
    w[rows, i1] += f
    return w


def apply_coeffs(image: Tensor, mask: Tensor, coeffs: Tensor) -> Tensor:
    """``x + m * (T(x) - x)`` for coefficients (B, gh, gw, 3, 4), interpolated bilinearly
    between cell centres (clamped at the border) exactly as :func:`vidharm.color.apply_grid`:
    separable, ``Wy @ C @ Wx^T`` per coefficient plane."""
    a = _pixel_coeffs(image, coeffs)
    x = image.unsqueeze(1)                                                   # (B,1,3,H,W)
    t = ((a[:, :, :3] * x).sum(2) + a[:, :, 3]).clamp(0.0, 1.0)      # T(x), clipped as applied
    return image + mask * (t - image)


def _pixel_coeffs(image: Tensor, coeffs: Tensor) -> Tensor:
    """Each pixel's (3, 4) transform, (B, 3, 4, H, W): the cells' coefficients interpolated
    bilinearly between cell centres (clamped at the border), ``Wy @ C @ Wx^T`` per plane."""
    b, gh, gw = coeffs.shape[:3]
    h, w = image.shape[-2:]
    planes = coeffs.reshape(b, gh, gw, 12).permute(0, 3, 1, 2)              # (B,12,gh,gw)
    wy = interp_weights(h, gh, image.device, image.dtype)
    wx = interp_weights(w, gw, image.device, image.dtype)
    return torch.matmul(torch.matmul(wy, planes), wx.t()).reshape(b, 3, 4, h, w)


def project_global(image: Tensor, mask: Tensor, coeffs: Tensor, ridge: float = 1e-2) -> Tensor:
    """The one 3x4 transform per image closest, over the person (weights ``mask``), to what
    the grid ``coeffs`` (B, gh, gw, 3, 4) does to ``image``: differentiable weighted least
    squares with a ridge toward the mean of the cells, as :func:`vidharm.color.global_refit`
    (what phnet-grid applies, :func:`vidharm.models.runner.applied_grid`) -> (B, 1, 1, 3, 4)."""
    b, gh, gw = coeffs.shape[:3]
    a = _pixel_coeffs(image, coeffs)
    y = ((a[:, :, :3] * image.unsqueeze(1)).sum(2) + a[:, :, 3]).flatten(2).transpose(1, 2)
    x4 = torch.cat([image, torch.ones_like(image[:, :1])], 1).flatten(2).transpose(1, 2)
    wt = mask.flatten(1)                                                  # (B, N)
    xtx = torch.einsum("bn,bni,bnj->bij", wt, x4, x4)
    xty = torch.einsum("bn,bni,bnj->bij", wt, x4, y)
    eye = torch.eye(4, device=image.device, dtype=image.dtype)
    scale = eye.clone()
    scale[3, 3] = 0.1                                                     # offsets are cheap
    lam = ridge * wt.sum(1).clamp_min(1.0)[:, None, None] * scale
    prior = coeffs.reshape(b, gh * gw, 3, 4).mean(1)                      # (B, 3, 4)
    sol = torch.linalg.solve(xtx + lam + 1e-6 * eye, xty + lam @ prior.transpose(1, 2))
    return sol.transpose(1, 2).reshape(b, 1, 1, 3, 4)


def relative_global(coeffs: Tensor, base: Tensor) -> Tensor:
    """Differentiable :meth:`vidharm.color.ColorGrid.relative_to` for one transform per image:
    ``coeffs`` after undoing ``base``, both (B, 1, 1, 3, 4) -> (B, 1, 1, 3, 4)."""
    a, b = coeffs[:, 0, 0], base[:, 0, 0]
    inv = torch.linalg.inv(b[..., :3])
    lin = a[..., :3] @ inv
    return torch.cat([lin, a[..., 3:] - lin @ b[..., 3:]], -1)[:, None, None]


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))


class GridHead(nn.Module):
    """Global transform (MLP) + local residual per cell (1x1 convs); both start at zero."""

    def __init__(self, n_global: int, n_cell: int, hidden: int, grid: int, local_scale: float):
        super().__init__()
        self.grid = grid
        self.local_scale = local_scale
        self.glob = nn.Sequential(nn.Linear(n_global, hidden), nn.LeakyReLU(0.1),
                                  nn.Linear(hidden, hidden), nn.LeakyReLU(0.1))
        self.glob_out = nn.Linear(hidden, 12)
        self.local = nn.Sequential(nn.Conv2d(n_cell + hidden, hidden, 1), nn.LeakyReLU(0.1),
                                   nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1))
        self.local_out = nn.Conv2d(hidden, 12, 1)
        for layer in (self.glob_out, self.local_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, g_feat: Tensor, c_feat: Tensor) -> Tensor:
        """g_feat (B, n_global), c_feat (B, n_cell, grid, grid) -> (B, grid, grid, 3, 4)."""
        b = g_feat.shape[0]
        emb = self.glob(g_feat)                                        # (B, hidden)
        d_glob = self.glob_out(emb)                                    # (B, 12)
        e = emb[:, :, None, None].expand(-1, -1, self.grid, self.grid)
        d_loc = self.local_out(self.local(torch.cat([c_feat, e], 1)))  # (B, 12, g, g)
        d = d_glob[:, :, None, None] + self.local_scale * d_loc
        ident = torch.eye(3, 4, device=d.device, dtype=d.dtype).reshape(1, 12, 1, 1)
        return (ident + d).permute(0, 2, 3, 1).reshape(b, self.grid, self.grid, 3, 4)


class JointHead(nn.Module):
    """The correction to the relative transform from both frames' global features
    (composite ``gc``, source frame ``gs``, each (B, n)) -> (B, 3, 4); starts at zero."""

    def __init__(self, n_global: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * n_global, hidden), nn.LeakyReLU(0.1),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.1))
        self.out = nn.Linear(hidden, 12)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, gc: Tensor, gs: Tensor) -> Tensor:
        return self.out(self.mlp(torch.cat([gc, gs, gc - gs], 1))).reshape(-1, 3, 4)


class GridNet(nn.Module):
    """phnet-grid (see the module docstring). ``forward(image, mask)``: image (B,3,H,W) in
    [0, 1], mask (B,1,H,W) in [0, 1] -> the harmonized image (B,3,H,W), any H, W."""

    def __init__(self, enc_sizes: Sequence[int] = (16, 32, 64, 96), in_size: int = 128,
                 enc_size: int = 64, grid: int = 4, stat_grids: Sequence[int] = (1, 2, 4), hidden: int = 96,
                 local_scale: float = 0.5, ring: int = 0, joint: int = 0,
                 name: str = "phnet-grid"):
        super().__init__()
        if not 1 <= grid <= 16 or not 32 <= in_size <= 1024 or not 16 <= enc_size <= in_size \
                or not 1 <= len(enc_sizes) <= 6 or not all(1 <= c <= 1024 for c in enc_sizes) \
                or not 1 <= hidden <= 1024 or not all(1 <= g <= 16 for g in stat_grids) \
                or not 0 <= ring <= 16 or not 0 <= joint <= 1024:
            raise ValueError(f"grid {grid}, in_size {in_size}, enc_size {enc_size}, enc_sizes "
                             f"{list(enc_sizes)}, hidden {hidden}, stat_grids "
                             f"{list(stat_grids)} or joint {joint} out of range")
        self.config = {"arch": "grid", "name": name, "enc_sizes": [int(c) for c in enc_sizes],
                       "in_size": int(in_size), "enc_size": int(enc_size), "grid": int(grid),
                       "stat_grids": [int(g) for g in stat_grids], "hidden": int(hidden),
                       "local_scale": float(local_scale), "ring": int(ring)}
        if joint:                      # recorded only when present: older files stay as they were
            self.config["joint"] = int(joint)
        self.in_size, self.enc_size, self.grid = int(in_size), int(enc_size), int(grid)
        self.stat_grids = [int(g) for g in stat_grids]
        chans = [4] + [int(c) for c in enc_sizes]
        self.encoder = nn.Sequential(*[_stage(a, b) for a, b in zip(chans[:-1], chans[1:])])
        c = chans[-1]
        self.ring = int(ring)
        n_stats = N_STATS * sum(g * g for g in self.stat_grids) + (12 if self.ring else 0)
        self.n_global = n_stats + N_CUES + 2 * c
        self.head = GridHead(n_global=self.n_global, n_cell=N_STATS + 2 * c,
                             hidden=hidden, grid=self.grid, local_scale=local_scale)
        self.joint = JointHead(self.n_global, int(joint)) if joint else None

    def _input(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        s = self.in_size
        if image.shape[-2:] != (s, s):
            image = F.interpolate(image, size=(s, s), mode="area")
            mask = F.interpolate(mask, size=(s, s), mode="area")
        return image, mask

    def predict_grid(self, image: Tensor, mask: Tensor) -> Tensor:
        """(B,3,H,W) [0,1], (B,1,H,W) [0,1] -> coefficients (B, grid, grid, 3, 4)."""
        return self.predict_with_features(image, mask)[0]

    def predict_with_features(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`predict_grid` and the global features the joint head reads, (B, n_global)."""
        x, m = self._input(image.float(), mask.float())
        stats = [patch_stats(x, m, g) for g in self.stat_grids]
        xm = torch.cat([x, m], 1)
        if self.enc_size != self.in_size:
            xm = F.interpolate(xm, size=(self.enc_size, self.enc_size), mode="area")
        feat = self.encoder(xm)                                        # (B, C, e/16, e/16)
        mf = F.interpolate(m, size=feat.shape[-2:], mode="area")
        ff, _, _ = masked_mean_std(feat, mf, 1)
        fb, _, _ = masked_mean_std(feat, 1.0 - mf, 1)
        if self.ring:
            band_fg, band_bg = edge_bands((m > 0.5).float(), self.ring)
            mf_, sf_, _ = masked_mean_std(x, band_fg, 1)
            mb_, sb_, _ = masked_mean_std(x, band_bg, 1)
            stats.append(torch.cat([mf_, sf_, mb_, sb_], 1))
        g_feat = torch.cat([s.flatten(1) for s in stats] + [light_cues(x, m), ff.flatten(1),
                                                            fb.flatten(1)], 1)
        cf, _, _ = masked_mean_std(feat, mf, self.grid)
        cb, _, _ = masked_mean_std(feat, 1.0 - mf, self.grid)
        cell = patch_stats(x, m, self.grid)
        return self.head(g_feat, torch.cat([cell, cf, cb], 1)), g_feat

    def joint_delta(self, g_composite: Tensor, g_source: Tensor) -> Tensor:
        """The joint head's correction (B, 3, 4) to the relative transform (zeros without
        one)."""
        if self.joint is None:
            return g_composite.new_zeros(len(g_composite), 3, 4)
        return self.joint(g_composite, g_source)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        return apply_coeffs(image, mask, self.predict_grid(image, mask))


# ------------------------------------------------------------------------------- the table
register_arch("grid", GridNet, GRID_DEFAULT_OPTIONS)
register_model(
    "phnet-grid", "predicts the colour grid itself: PN patch statistics of person and scene at "
    "grids 1/2/4 + a small encoder + a global-affine/local-residual head, and a joint head on "
    "both frames for the relative form (vidharm's default)",
    arch="grid", weights="phnet-grid.safetensors", enc_sizes=[16, 32, 64, 96], in_size=64,
    enc_size=64, grid=4, stat_grids=[1, 2, 4], hidden=96, local_scale=0.5, joint=128)
