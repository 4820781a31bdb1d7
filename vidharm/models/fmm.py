"""FMM: attention-based foreground-background feature map modulation (Hao, Iizuka and Fukui,
"Image Harmonization with Attention-based Deep Feature Modulation", BMVC 2020), and a small
fully convolutional encoder-decoder that carries it (the ``fmm*`` registry configurations).

Notation: ``h`` features (B,C,H,W); ``M`` the mask at the feature size (B,1,H,W), 1 =
foreground; N = H*W positions; d = max(C // reduction, 1) the query/key width.

The module (:class:`FMM`), in order:

1. optional SAGAN-style self-attention (:class:`SelfAttention2d`), mask-agnostic::

       q = W_q h (B,d,N),  k = W_k h (B,d,N),  v = W_v h (B,C,N)
       h <- h + gamma_sa * softmax(q^T k / sqrt(d)) v            gamma_sa learned, init 0

2. background attention (:func:`background_attention`): every FOREGROUND position queries
   the BACKGROUND positions only; queries/keys are 1x1 convs (C -> d), the values are the
   features themselves, so h_b^a lives in h's channel space and sigma(h_b^a)/sigma(h_f)
   compares like with like::

       h_b^a[:, p] = sum_{j in bg} softmax_j(q_p . k_j / sqrt(d)) h[:, j]   p in fg  (B,C,H,W)

   Two exact implementations: one batched fused SDPA call with a boolean key mask
   (foreground keys -> -inf; for CUDA), or per sample the foreground queries against the
   gathered background keys/values (n_fg * n_bg work instead of N^2; the CPU default).

3. modulation (:func:`modulate`), on the foreground only::

       FMM(h_f, h_b^a) = gamma * h_f * sigma(h_b^a) / sigma(h_f)             gamma (1,C,1,1), init 1
       out = FMM(h_f, h_b^a) on foreground positions, h on background positions

   sigma is the per-channel standard deviation over the FOREGROUND positions (masked,
   population form, sqrt(var + eps)) of each map. So after modulation the foreground's
   per-channel sigma is |gamma| * sigma(h_b^a) (up to eps); its mean is scaled, not shifted
   (the formula as published: no mean subtraction).

Degenerate masks: a sample whose feature-size mask has no foreground or no background
passes through step 3 unchanged (identity; no NaN, zero gradient through the modulation).
Step 1 is applied regardless (it does not use the mask).

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (:func:`attention`)
with q/k zero-padded to the value width so that the fused kernels are eligible (flash on
CPU and CUDA; verified on CPU: 2 MiB instead of 145 MiB extra at 64x64, C=64), so the N x N
attention matrix is never materialised and memory grows with N, not N^2. Compute still
grows with N^2 * C: keep the module at coarse feature maps (the bottleneck).

Measured on this project's CPU (2-core VM, 1 thread, C=64, batch 1, forward only, full
module = self-attention + background attention; ``scripts/fmm_ablation.py --bench-module``):
see ``docs/fmm.md``. GPU: not measured (no GPU was available for this task).

Precision: attention runs in the input dtype (fp16/bf16 under autocast on CUDA); the masked
statistics and the modulation run in float32 and are cast back.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from ._registry import register_arch, register_model
from .padding import PaddedForward

from .blocks import fp32_stats

FMM_EPS = 1e-5

#: defaults of every FMMNet option
FMM_DEFAULT_OPTIONS: Dict[str, Any] = dict(
    fmm_levels=[0],          # decoder levels that get the module (0 = bottleneck)
    self_attention=True,     # the SAGAN block before the modulation
    modulation=True,         # the background attention + foreground modulation
    attn_reduction=8,        # query/key width = C // attn_reduction
    fmm_eps=FMM_EPS,
)


# --------------------------------------------------------------------------------------------
# functional pieces
# --------------------------------------------------------------------------------------------

def feature_mask(mask: Tensor, size: Tuple[int, int], threshold: float = 0.5) -> Tensor:
    """The binary foreground mask at a feature size. mask (B,1,H0,W0) -> (B,1,H,W) bool.

    Area-averaged to (H, W) (any ratio, also non-integer) and thresholded: a feature position
    is foreground when at least ``threshold`` of its area is. A mask already at the size is
    only thresholded.
    """
    m = mask.float()
    if tuple(m.shape[-2:]) != tuple(size):
        m = Fn.adaptive_avg_pool2d(m, size)
    return m >= threshold


def masked_std(x: Tensor, m: Tensor, eps: float = FMM_EPS) -> Tensor:
    """Per-channel std over a region: (B,C,H,W), m (B,1,H,W) {0,1} float -> (B,C,1,1).

    sigma = sqrt(sum(((x - mu) * m)^2) / n + eps), mu = sum(x*m)/n, n = max(sum(m), 1)
    (population form; an empty region gives sqrt(eps), never NaN).
    """
    n = m.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
    mu = (x * m).sum(dim=(2, 3), keepdim=True) / n
    var = (((x - mu) * m) ** 2).sum(dim=(2, 3), keepdim=True) / n
    return torch.sqrt(var + eps)


def _tokens(x: Tensor) -> Tensor:
    """(B,C,H,W) -> (B,1,N,C) contiguous: one attention head, positions as tokens (the fused
    kernels need stride 1 on the last dimension; free for channels_last input)."""
    return x.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Optional[Tensor] = None) -> Tensor:
    """Fused single-head attention over positions.

    q (B,d,Hq,Wq); k (B,d,Hk,Wk); v (B,C,Hk,Wk) -> (B,C,Hq,Wq):
    out[:, p] = sum_j softmax_j(q_p . k_j / sqrt(d) [-inf where not key_mask_j]) v[:, j];
    key_mask (B, Hk*Wk) bool, True = may be attended to (None: all).

    The fused kernels need q, k and v to share their last dimension, with stride 1 (PyTorch's
    CPU flash kernel and CUDA flash both do; otherwise SDPA silently falls back to the math
    path, which materialises the N x N matrix: measured 145 MiB and 3x the time at 64x64,
    C=64). So q and k are zero-padded from d to C channels -- dot products are unchanged --
    and the softmax scale is passed explicitly as 1/sqrt(d).
    """
    B, C = v.shape[:2]
    Hq, Wq = q.shape[-2:]
    d = q.shape[1]
    dt = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)  # autocast mixes
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    qt, kt = _tokens(q), _tokens(k)
    if d < C:
        qt, kt = Fn.pad(qt, (0, C - d)), Fn.pad(kt, (0, C - d))
    mask = None if key_mask is None else key_mask.reshape(B, 1, 1, -1)
    out = Fn.scaled_dot_product_attention(qt, kt, _tokens(v), attn_mask=mask,
                                          scale=1.0 / math.sqrt(d))       # (B,1,Nq,C)
    return out.squeeze(1).transpose(1, 2).reshape(B, C, Hq, Wq)


def background_attention(q: Tensor, k: Tensor, v: Tensor, bg: Tensor,
                         impl: str = "auto") -> Tensor:
    """h_b^a: every FOREGROUND position attends over the BACKGROUND positions only.

    q, k: (B,d,H,W) queries and keys; v: (B,C,H,W) values; bg: (B,1,H,W) bool, True =
    background. Returns (B,C,H,W): at each foreground position p,
    ``sum_{j in bg} softmax_j(q_p . k_j / sqrt(d)) v_j``; 0 at background positions, and 0
    everywhere in a sample without foreground or without background (no NaN). Foreground
    keys and values have no influence at all.

    ``impl``:
      * ``"mask"``: one batched fused SDPA call over all N queries with a boolean key mask
        (foreground keys get -inf inside the kernel). Cost ~N^2*C per sample; no host sync,
        so it suits CUDA (and torch.compile / CUDA graphs).
      * ``"gather"``: per sample, gather the n_fg foreground queries and the n_bg background
        keys/values and run an unmasked fused SDPA on them. Cost n_fg*n_bg*C <= N^2*C/4:
        2-4x less work for typical masks, at the price of a per-sample loop and a
        ``nonzero`` (a device sync on CUDA).
      * ``"auto"`` (default): gather on CPU, mask elsewhere.
    Both give the same values (up to float rounding; tested).
    """
    if impl == "auto":
        impl = "gather" if v.device.type == "cpu" else "mask"
    B, C, H, W = v.shape
    bgf = bg.reshape(B, H * W)
    fgf = ~bgf
    if impl == "mask":
        keys = bgf | ~bgf.any(dim=1, keepdim=True)              # no background: any keys
        out = attention(q, k, v, keys)                          # all-key rows are dropped:
        valid = fgf.any(dim=1) & bgf.any(dim=1)                 # (B,)
        keep = (fgf & valid[:, None]).view(B, 1, H, W)
        return torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))
    if impl != "gather":
        raise ValueError(f"impl must be auto, mask or gather, got {impl!r}")
    d = q.shape[1]
    qf, kf, vf = q.reshape(B, d, H * W), k.reshape(B, d, H * W), v.reshape(B, C, H * W)
    outs = []
    for b in range(B):
        fi = fgf[b].nonzero().squeeze(1)
        bi = bgf[b].nonzero().squeeze(1)
        zero = vf.new_zeros(C, H * W)
        if fi.numel() == 0 or bi.numel() == 0:
            outs.append(zero)
            continue
        o = attention(qf[b:b + 1, :, fi].unsqueeze(-1), kf[b:b + 1, :, bi].unsqueeze(-1),
                      vf[b:b + 1, :, bi].unsqueeze(-1))         # (1,C,n_fg,1)
        outs.append(zero.index_copy(1, fi, o.reshape(C, -1).to(zero.dtype)))
    return torch.stack(outs).view(B, C, H, W)


def modulate(h: Tensor, h_ba: Tensor, fg: Tensor, gamma: Tensor, eps: float = FMM_EPS) -> Tensor:
    """FMM(h_f, h_b^a) = gamma * h_f * sigma(h_b^a) / sigma(h_f) on the foreground.

    h, h_ba: (B,C,H,W); fg: (B,1,H,W) bool; gamma: (1,C,1,1) or scalar. sigma: per-channel
    std over the foreground (:func:`masked_std`). Background positions, and whole samples
    without foreground or without background, are returned unchanged. Computed in float32;
    returns h's dtype.
    """
    with fp32_stats(h):
        hf = h.float()
        m = fg.float()
        n_fg = m.sum(dim=(2, 3), keepdim=True)
        n_all = float(m.shape[-2] * m.shape[-1])
        valid = (n_fg > 0) & (n_fg < n_all)                         # (B,1,1,1)
        ratio = masked_std(h_ba.float(), m, eps) / masked_std(hf, m, eps)   # (B,C,1,1)
        mod = gamma.float() * hf * ratio
        out = torch.where(fg & valid, mod, hf)
    return out.to(h.dtype)


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------

class SelfAttention2d(nn.Module):
    """SAGAN self-attention. forward(x (B,C,H,W)) -> (B,C,H,W) = x + gamma * attention(x).

    query/key: 1x1 convs C -> d = max(C // reduction, 1); value: 1x1 conv C -> C; gamma a
    learned scalar initialised to 0 (the block starts as the identity). Fused SDPA, one head.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        d = max(channels // reduction, 1)
        self.channels, self.dim = channels, d
        self.query = nn.Conv2d(channels, d, 1)
        self.key = nn.Conv2d(channels, d, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dim={self.dim}"

    def forward(self, x: Tensor) -> Tensor:
        out = attention(self.query(x), self.key(x), self.value(x))
        return x + self.gamma.to(out.dtype) * out


class FMM(nn.Module):
    """The feature map modulation module. forward(h (B,C,H,W), mask (B,1,H0,W0)) -> (B,C,H,W).

    ``mask`` is the image-size (or feature-size) foreground mask; it is brought to (H, W) with
    :func:`feature_mask`. Steps (module docstring): optional self-attention (``sa``), then,
    if ``modulation``: h_b^a = :func:`background_attention` with 1x1-conv queries/keys
    (C -> d) and the features as values, then :func:`modulate` with the learned per-channel
    ``gamma`` (init 1).

    Args:
        channels: C.
        reduction: d = max(C // reduction, 1) for every query/key projection.
        self_attention: build and run the SAGAN block first.
        modulation: build and run the background attention + modulation (False gives the
            "self-attention only" ablation).
        eps: variance epsilon of the masked stds.
    """

    def __init__(self, channels: int, reduction: int = 8, self_attention: bool = True,
                 modulation: bool = True, eps: float = FMM_EPS):
        super().__init__()
        if not (self_attention or modulation):
            raise ValueError("FMM needs self_attention, modulation or both")
        self.channels, self.eps, self.modulation = channels, float(eps), bool(modulation)
        self.impl = "auto"   # background_attention implementation (not saved: same result)
        d = max(channels // reduction, 1)
        self.dim = d
        self.sa = SelfAttention2d(channels, reduction) if self_attention else None
        if modulation:
            self.query = nn.Conv2d(channels, d, 1)
            self.key = nn.Conv2d(channels, d, 1)
            self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, dim={self.dim}, "
                f"self_attention={self.sa is not None}, modulation={self.modulation}")

    def attend_background(self, h: Tensor, fg: Tensor) -> Tensor:
        """h_b^a (B,C,H,W) for features h (B,C,H,W) and the feature-size fg mask (B,1,H,W)
        bool (0 at background positions; see :func:`background_attention`)."""
        return background_attention(self.query(h), self.key(h), h, ~fg, self.impl)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        if h.dim() != 4 or h.shape[1] != self.channels:
            raise ValueError(f"features must be (B,{self.channels},H,W), got {tuple(h.shape)}")
        if self.sa is not None:
            h = self.sa(h)
        if not self.modulation:
            return h
        fg = feature_mask(mask, tuple(h.shape[-2:]))
        h_ba = self.attend_background(h, fg)
        return modulate(h, h_ba, fg, self.gamma, self.eps)


# --------------------------------------------------------------------------------------------
# the encoder-decoder
# --------------------------------------------------------------------------------------------

def _conv(cin: int, cout: int, stride: int = 1, norm: bool = True) -> List[nn.Module]:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
        layers.append(nn.ReLU(inplace=True))
    else:
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class FMMNet(PaddedForward, nn.Module):
    """A small U-Net harmonizer with FMM modules in its decoder.

    ``forward(image (B,3,H,W) in [0,1], mask (B,1,H,W) in {0,1}) -> (B,3,H,W) in [0,1]``
    (unblended, like PHNet; callers blend with the mask).

    Layout, n = len(enc_sizes) - 1 stages, widths ``enc_sizes = [4, c1, ..., cn]`` (4 = RGB +
    mask input)::

        e_0 = cat[image, mask]                                   (B,4,H,W)
        e_i = enc[i-1](e_{i-1})   conv3x3 s2 + IN + ReLU, conv3x3 + IN + ReLU   (B,c_i,H/2^i,W/2^i)
        x = e_n                                                  decoder level 0 (bottleneck)
        for j in 0..n-1:
            x = fmm[j](x, mask)         if j in fmm_levels       level j: (B,c_{n-j},H/2^(n-j),.)
            x = dec[j](cat[up2(x), e_{n-j-1}])   (conv3x3 + LReLU) x2 -> c_{n-j-1}
                                                 (last, full-size stage: x1 -> c_1)
        out = clamp(image + head(x), 0, 1)                       head: conv3x3 c1 -> 3

    The decoder has no normalisation, so nothing after the module re-normalises the
    statistics it set. The head's weights start small (0.1x default init): the network
    starts close to the identity (the composite), which a harmonizer is already near.

    Inputs whose sides are not multiples of 2^n, or are smaller than 2^(n+1) (the bottleneck
    InstanceNorm needs more than one position), are padded at the bottom/right with
    replicate padding, run and cropped back.

    Args:
        enc_sizes: [4, c1, ..., cn], n >= 2.
        fmm_levels: decoder levels that get an :class:`FMM` (0 = bottleneck, j = after j
            decoder stages; 0 <= j < n). Empty: the plain baseline.
        self_attention, modulation, attn_reduction, fmm_eps: :class:`FMM` options.
        name: registry name recorded in ``.config``.
    """

    def __init__(self, enc_sizes: Sequence[int] = (4, 16, 32, 64, 128), *,
                 name: str = "fmm-custom", **options: Any):
        super().__init__()
        unknown = set(options) - set(FMM_DEFAULT_OPTIONS)
        if unknown:
            raise TypeError(f"unknown FMMNet option(s): {', '.join(sorted(unknown))}")
        opts = {**FMM_DEFAULT_OPTIONS, **options}
        enc = [int(c) for c in enc_sizes]
        n = len(enc) - 1
        if n < 2:
            raise ValueError("need len(enc_sizes) >= 3")
        if enc[0] != 4:
            raise ValueError("enc_sizes[0] must be 4 (RGB + mask input)")
        levels = sorted({int(j) for j in opts["fmm_levels"]})
        if any(j < 0 or j >= n for j in levels):
            raise ValueError(f"fmm_levels must lie in [0, {n - 1}], got {opts['fmm_levels']}")
        opts["fmm_levels"] = levels
        opts["self_attention"] = bool(opts["self_attention"])
        opts["modulation"] = bool(opts["modulation"])
        if levels and not (opts["self_attention"] or opts["modulation"]):
            raise ValueError("FMM levels given but both self_attention and modulation are off")
        opts["attn_reduction"] = int(opts["attn_reduction"])
        opts["fmm_eps"] = float(opts["fmm_eps"])

        self.config: Dict[str, Any] = dict(name=name, arch="fmm", enc_sizes=enc, **opts)
        self.n_stages = n
        self.pad_multiple = 2 ** n
        self.min_size = 2 ** (n + 1)

        self.enc = nn.ModuleList(
            nn.Sequential(*_conv(enc[i], enc[i + 1], stride=2), *_conv(enc[i + 1], enc[i + 1]))
            for i in range(n))
        dec = []
        for j in range(n):
            cin = enc[n - j] + enc[n - j - 1]
            if j < n - 1:
                cout = enc[n - j - 1]
                dec.append(nn.Sequential(*_conv(cin, cout, norm=False),
                                         *_conv(cout, cout, norm=False)))
            else:   # full resolution: one convolution (the costliest stage)
                dec.append(nn.Sequential(*_conv(cin, enc[1], norm=False)))
        self.dec = nn.ModuleList(dec)
        self.fmm = nn.ModuleDict({
            str(j): FMM(enc[n - j], opts["attn_reduction"], opts["self_attention"],
                        opts["modulation"], opts["fmm_eps"]) for j in levels})
        self.head = nn.Conv2d(enc[1], 3, 3, padding=1)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def forward_padded(self, image: Tensor, mask: Tensor) -> Tensor:
        """H, W multiples of ``pad_multiple`` and >= ``min_size``."""
        feats = [torch.cat([image, mask], dim=1)]
        for layer in self.enc:
            feats.append(layer(feats[-1]))
        n = self.n_stages
        x = feats[n]
        for j in range(n):
            key = str(j)
            if key in self.fmm:
                x = self.fmm[key](x, mask)
            skip = feats[n - j - 1]
            x = Fn.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.dec[j](torch.cat([x, skip.to(x.dtype)], dim=1))
        return (image + self.head(x).to(image.dtype)).clamp(0.0, 1.0)


def fmm_options(spec: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Normalise PHNet's ``fmm`` option: None, or {levels, self_attention, modulation,
    reduction, eps} with every key spelled out (JSON-able)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"fmm must be a dict like {{'levels': [1]}}, got {spec!r}")
    known = {"levels", "self_attention", "modulation", "reduction", "eps"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown fmm option(s): {', '.join(sorted(unknown))}")
    out = dict(levels=sorted({int(j) for j in spec.get("levels", [1])}),
               self_attention=bool(spec.get("self_attention", True)),
               modulation=bool(spec.get("modulation", True)),
               reduction=int(spec.get("reduction", 8)),
               eps=float(spec.get("eps", FMM_EPS)))
    if not (out["self_attention"] or out["modulation"]):
        raise ValueError("fmm needs self_attention, modulation or both")
    return out


# ------------------------------------------------------------------------------- the table
register_arch("fmm", FMMNet, FMM_DEFAULT_OPTIONS)
_FMM_NET = dict(arch="fmm", enc_sizes=[4, 16, 32, 64, 128])
register_model(
    "fmm", "U-Net + attention-based fg/bg feature map modulation at the bottleneck (FMM)",
    weights="fmm.safetensors", fmm_levels=[0], self_attention=True, modulation=True, **_FMM_NET)
register_model(
    "fmm-base", "FMM ablation: the U-Net without the module",
    fmm_levels=[], self_attention=True, modulation=True, **_FMM_NET)
register_model(
    "fmm-sa", "FMM ablation: self-attention block only (no modulation)",
    fmm_levels=[0], self_attention=True, modulation=False, **_FMM_NET)
register_model(
    "fmm-nosa", "FMM ablation: modulation without the self-attention block",
    fmm_levels=[0], self_attention=False, modulation=True, **_FMM_NET)
