"""PHNet encoder-decoder (patch-normalised portrait harmonization), configurable.

The default options reproduce the published implementation exactly (its state-dict keys,
its quirks and its outputs)::

    x_harm = PFE(image, mask)                         (B,3,H,W)
    e_1..e_n = encoder(image)                         conv k4s2 / k3s1 alternating, IN, ReLU
    x = SE(e_n, x_harm)
    for i in 0..n-1:                                  s_i = e_{n-i}, PN'd for i >= start
        x = decoder[i](skip[i](cat[x, s_i]))
    out = sigmoid(x)                                  (B,3,H,W), unblended

Options beyond the published model (used by the lite configurations registered at the
bottom of this module):

- ``skip_kernel``: kernel of the ``skip.i.rconv`` fusion convolutions (published 3).
- ``quirk_bg_div255``: the published PFE composite uses ``bg/255`` for the background
  (image is already in [0,1]); ``False`` uses ``bg``.
- ``quirk_scalar_se``: the published SE adds ONE scalar per image derived from ``x_harm``;
  ``False`` learns a per-channel gate from x_harm's mean and max (``SE_block.harm_fc``).
- ``keep_unused``: the published state dict has a last normalizer and ``skip.{n}`` that are
  never called; ``True`` builds them so strict loading works, ``False`` leaves them out.
- ``pfe_grid``: PFE grid (published: ``grid_count[1]``).
- ``residual_output``: the published head is ``sigmoid(x)``: the network must learn to
  reproduce the whole image before it can correct colour. ``True`` returns
  ``clamp(image + x, 0, 1)`` with the last layer initialised near zero, so a fresh model
  starts AT the composite and training only has to learn the correction (what made CPU
  training of the shipped phnet-lite feasible).
- ``fmm`` (not a default option; absent = off, and then nothing changes: no extra
  parameters, keys or computation): ``{"levels": [i, ...], "self_attention": bool,
  "modulation": bool, "reduction": int, "eps": float}`` inserts an
  :class:`vidharm.models.fmm.FMM` module on the decoder feature entering stage ``i`` (before
  its skip fusion; stage 0 = the SE'd bottleneck), with the mask at that resolution. Its
  parameters are ``fmm.<i>.*``. Recorded in ``config["fmm"]`` only when given.

Input sizes: any H, W. Inputs whose sides are not multiples of 8 (or are smaller than 16,
the least size at which the deepest InstanceNorm sees more than one pixel) are padded at the
bottom/right with ``replicate`` padding (edge pixels repeated; works for any size, unlike
``reflect``, and keeps the padded strip's colours close to the frame's border so the
statistics move little), run, and cropped back. When H and W are already multiples of 8 and
>= 16 nothing is padded and the computation is the published one, bit for bit.
Note that padded rows/columns take part in the PN/PFE statistics.

Streaming (video): ``set_streaming(smoothing)`` / ``reset_stream()`` forward to every PN block
and to the PFE statistics (see :mod:`vidharm.models.blocks`). 0 = off = exact per-frame.

Devices: :func:`infer` runs a model on CPU (fp32) or CUDA (fp32 / fp16 / bf16 autocast,
optionally channels_last); PN/PFE statistics always run in float32.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ._registry import register_arch, register_model
from .padding import PaddedForward

from .blocks import FeatureExtractor, PatchNorm, SEBlock, SkipConv

#: defaults for every option (published behaviour)
DEFAULT_OPTIONS: Dict[str, Any] = dict(
    skip_kernel=3,
    se_reduction=8,
    quirk_bg_div255=True,
    quirk_scalar_se=True,
    keep_unused=True,
    pfe_grid=None,
    residual_output=False,
)


def _encoder_layer(cin: int, cout: int, downsample: bool) -> nn.Sequential:
    if downsample:
        conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1)
    else:
        conv = nn.Conv2d(cin, cout, 3, stride=1, padding=1)
    return nn.Sequential(conv, nn.InstanceNorm2d(cout), nn.ReLU(inplace=True))


def _decoder_layer(cin: int, cout: int, upsample: bool, norm: bool, act: bool) -> nn.Sequential:
    if upsample:
        layers: List[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)]
    else:
        layers = [nn.ConvTranspose2d(cin, cout, 3, stride=1, padding=1)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(nn.LeakyReLU(0.01, inplace=True))
    return nn.Sequential(*layers)


class PHNet(PaddedForward, nn.Module):
    """PHNet. ``forward(image (B,3,H,W) in [0,1], mask (B,1,H,W) in {0,1}) -> (B,3,H,W)``.

    Args:
        enc_sizes: channel widths ``[3, c1, ..., cn]`` (published: 7 entries, n = 6).
        grid_count: PN grids, published semantics: ``start = len(enc_sizes)-len(grid_count)``,
            decoder stage ``i >= start`` normalises its skip with ``normalizers[i-start]``;
            the last entry belongs to a normalizer that is never called.
        name: registry name recorded in ``.config``.
        **options: see :data:`DEFAULT_OPTIONS` and the module docstring.
    """

    def __init__(self, enc_sizes: Sequence[int], grid_count: Sequence[int], *,
                 name: str = "phnet-custom", fmm: Optional[Dict[str, Any]] = None,
                 **options: Any):
        super().__init__()
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise TypeError(f"unknown PHNet option(s): {', '.join(sorted(unknown))}")
        opts = {**DEFAULT_OPTIONS, **options}
        enc_sizes = [int(c) for c in enc_sizes]
        grid_count = [int(g) for g in grid_count]
        n = len(enc_sizes) - 1
        if n < 2 or len(grid_count) < 1 or len(grid_count) > len(enc_sizes):
            raise ValueError("need len(enc_sizes) >= 3 and 1 <= len(grid_count) <= len(enc_sizes)")
        if enc_sizes[0] != 3:
            raise ValueError("enc_sizes[0] must be 3 (RGB input)")
        pfe_grid = opts["pfe_grid"] if opts["pfe_grid"] is not None else \
            grid_count[1 if len(grid_count) > 1 else 0]

        self.config: Dict[str, Any] = dict(name=name, arch="phnet", enc_sizes=enc_sizes,
                                           grid_count=grid_count, **opts)
        self.start = len(enc_sizes) - len(grid_count)
        self.n_stages = n
        # inputs must divide by the total stride (2 per even encoder layer), and the deepest
        # InstanceNorm needs more than one pixel: 8 and 16 for the published 6 stages
        self.pad_multiple = 2 ** ((n + 1) // 2)
        self.min_size = 2 * self.pad_multiple

        self.feature_extractor = FeatureExtractor(pfe_grid, bg_div255=opts["quirk_bg_div255"])
        self.encoder = nn.ModuleList(
            _encoder_layer(enc_sizes[i], enc_sizes[i + 1], downsample=(i % 2 == 0))
            for i in range(n))
        # normalizers[k] works on decoder stage start+k, whose skip has enc_sizes[n-(start+k)]
        n_norm = len(grid_count) if opts["keep_unused"] else (n - self.start)
        self.normalizers = nn.ModuleList(
            PatchNorm(enc_sizes[n - (self.start + k)], grid_count[k]) for k in range(n_norm))
        dec_out = [enc_sizes[n - 1 - i] for i in range(n)]          # ..., c1, 3
        self.decoder = nn.ModuleList(
            _decoder_layer(enc_sizes[n - i], dec_out[i], upsample=(i % 2 == 1),
                           norm=(i < n // 2), act=(i < n - 1))
            for i in range(n))
        n_skip = len(enc_sizes) if opts["keep_unused"] else n
        self.skip = nn.ModuleList(
            SkipConv(enc_sizes[n - i], opts["skip_kernel"]) for i in range(n_skip))
        self.SE_block = SEBlock(enc_sizes[n], reduction=opts["se_reduction"],
                                scalar_harm=opts["quirk_scalar_se"])
        self.residual_output = bool(opts["residual_output"])
        if self.residual_output:
            last = self.decoder[n - 1][0]
            with torch.no_grad():
                last.weight.mul_(0.01)
                last.bias.zero_()
        # optional FMM modules on decoder inputs (off by default: no keys, no computation)
        self.fmm: Optional[nn.ModuleDict] = None
        if fmm is not None:
            from .fmm import FMM, fmm_options
            spec = fmm_options(fmm)
            bad = [i for i in spec["levels"] if not 0 <= i < n]
            if bad:
                raise ValueError(f"fmm levels must lie in [0, {n - 1}], got {bad}")
            self.config["fmm"] = spec
            # decoder stage i's input x has enc_sizes[n-i] channels
            self.fmm = nn.ModuleDict({
                str(i): FMM(enc_sizes[n - i], spec["reduction"], spec["self_attention"],
                            spec["modulation"], spec["eps"]) for i in spec["levels"]})

    # ---------------------------------------------------------------- streaming
    def _stream_modules(self):
        yield self.feature_extractor.patch_harmonizer
        yield from self.normalizers

    def set_streaming(self, smoothing: float) -> "PHNet":
        """EMA the PN/PFE statistics across calls: x_t = s*x_{t-1} + (1-s)*x_new; 0 = off."""
        for m in self._stream_modules():
            m.set_streaming(smoothing)
        return self

    def reset_stream(self) -> None:
        """Forget carried statistics (new clip, scene cut)."""
        for m in self._stream_modules():
            m.reset_stream()

    @property
    def smoothing(self) -> float:
        return self.feature_extractor.patch_harmonizer.smoothing

    # ---------------------------------------------------------------- forward
    def forward_padded(self, image: Tensor, mask: Tensor) -> Tensor:
        """The published computation; H, W must be multiples of ``pad_multiple`` (8) and at
        least ``min_size`` (16)."""
        x_harm = self.feature_extractor(image, mask)
        feats: List[Tensor] = []
        masks: List[Tensor] = []
        x, m = image, mask
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i % 2 == 0:
                m = m[..., ::2, ::2]
            feats.append(x)
            masks.append(m)
        x = self.SE_block(x, x_harm)
        n = self.n_stages
        for i in range(n):
            s = feats[n - 1 - i]
            if i >= self.start:
                s = self.normalizers[i - self.start](s, masks[n - 1 - i]).to(x.dtype)
            if self.fmm is not None and str(i) in self.fmm:
                x = self.fmm[str(i)](x, masks[n - 1 - i])
            x = self.decoder[i](self.skip[i](torch.cat([x, s], dim=1)))
        if self.residual_output:
            return (image + x).clamp(0.0, 1.0)
        return torch.sigmoid(x)


# -------------------------------------------------------------------- device helpers

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def prepare(model: nn.Module, device: str | torch.device = "cpu",
            channels_last: Optional[bool] = None) -> nn.Module:
    """Move ``model`` to ``device`` in eval mode; channels_last by default on CUDA only."""
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def infer(model: nn.Module, image: Tensor, mask: Tensor, precision: str = "auto",
          channels_last: Optional[bool] = None) -> Tensor:
    """Run ``model`` on the model's device; returns float32 (B,3,H,W).

    precision: ``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp32``, ``fp16`` or ``bf16``.
    Half precisions use ``torch.autocast`` (CUDA only; on CPU they fall back to fp32);
    PN/PFE statistics stay float32 inside the blocks. ``channels_last`` (default: on CUDA)
    converts the inputs; call :func:`prepare` once to convert the model too.
    """
    p = next(model.parameters())
    device = p.device
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision not in _DTYPES:
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if channels_last is None:
        channels_last = device.type == "cuda"
    image = image.to(device=device, dtype=torch.float32, non_blocking=True)
    mask = mask.to(device=device, dtype=torch.float32, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
        mask = mask.contiguous(memory_format=torch.channels_last)
    if precision != "fp32" and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=_DTYPES[precision]):
            out = model(image, mask)
    else:
        out = model(image, mask)
    return out.float()


# ------------------------------------------------------------------------------- the table
register_arch("phnet", PHNet, DEFAULT_OPTIONS, required=("enc_sizes", "grid_count"),
              optional=("fmm",))

#: configurations that load the authors' published .pth files
PUBLISHED_MODELS = ("phnet-ffhqh", "phnet-iharmony4")
register_model(
    "phnet-ffhqh", "PHNet as published, FFHQH portraits (39.9M params; ffhqh*.pth)",
    arch="phnet", enc_sizes=[3, 16, 64, 128, 256, 512, 1024], grid_count=[4, 3, 2, 1])
register_model(
    "phnet-iharmony4", "PHNet as published, iHarmony4 (10.0M params; iharmony512.pth)",
    arch="phnet", enc_sizes=[3, 16, 32, 64, 128, 256, 512], grid_count=[10, 5, 1])
_LITE = dict(arch="phnet", grid_count=[4, 3, 2, 1], skip_kernel=1, quirk_bg_div255=False,
             quirk_scalar_se=False, keep_unused=False, residual_output=True)
register_model(
    "phnet-lite", "real-time PHNet (1.1M params, published quirks fixed)",
    weights="phnet-lite.safetensors", enc_sizes=[3, 8, 16, 32, 64, 128, 256], **_LITE)
register_model(
    "phnet-lite-s", "smaller real-time PHNet (0.6M params, published quirks fixed)",
    enc_sizes=[3, 8, 12, 24, 48, 96, 192], **_LITE)
register_model(
    "phnet-lite-fmm", "phnet-lite + FMM on the decoder input of stage 1 (128 ch, 1/8 size)",
    enc_sizes=[3, 8, 16, 32, 64, 128, 256], **_LITE,
    fmm=dict(levels=[1], self_attention=True, modulation=True, reduction=8, eps=1e-5))
