"""Harmonization networks: a small registry of named configurations (timm-style).

    >>> from vidharm.models import create_model, list_models, model_config
    >>> list_models()
    ['fmm', 'fmm-base', 'fmm-nosa', 'fmm-sa', 'phnet-ffhqh', 'phnet-iharmony4', 'phnet-lite',
     'phnet-lite-fmm', 'phnet-lite-s']
    >>> net = create_model("phnet-lite")            # nn.Module, random init
    >>> net.config["enc_sizes"]
    [3, 8, 16, 32, 64, 128, 256]

Configurations
--------------
``phnet-grid``       vidharm's default (``arch: grid``, :mod:`vidharm.models.gridnet`): predicts
                     the colour transform itself (a global 3x4 affine + a 4x4 local residual)
                     from PN-style patch statistics of person and scene and a small encoder at
                     64 px; trained with the loss on the image after the transform.
``phnet-ffhqh``      the paper's model (39,921,641 params); loads ``ffhqh{256,512,1024}.pth``.
``phnet-iharmony4``  the iHarmony4 model (9,994,295 params); loads ``iharmony512.pth``.
``phnet-lite``       vidharm's real-time variant (1,103,872 params, ~15-20 ms per 256x256
                     frame on 2 CPU cores). Same blocks (PFE, encoder, SE, PN on the three
                     highest-resolution skips with grids 4/3/2, decoder), but:
                       * widths 3-8-16-32-64-128-256 (published ffhqh: 3-16-64-...-1024);
                       * lean skip fusion: ``skip.i.rconv`` is 1x1 instead of 3x3;
                       * the unused last normalizer and ``skip.6`` are not built;
                       * FIXES the PFE quirk: the composite uses ``bg`` instead of ``bg/255``;
                       * residual output: clamp(image + x) with a near-zero last layer, so
                         a fresh model starts at the composite (published: sigmoid(x));
                       * FIXES the SE quirk: the x_harm gate is a learned per-channel gate
                         (``SE_block.harm_fc`` on x_harm's mean and max) instead of one scalar
                         per image.
``phnet-lite-s``     the same with widths 3-8-12-24-48-96-192 (~0.62M params), a little faster.
``phnet-lite-fmm``   phnet-lite with FMM modules (Hao, Iizuka and Fukui's attention-based
                     foreground-background feature map modulation, :mod:`vidharm.models.fmm`)
                     on the decoder input of stage 1 (128 channels at 1/8 size).
``fmm``              a small U-Net (widths 4-16-32-64-128, RGB + mask input, residual output)
                     with the full FMM module (self-attention + modulation) at the bottleneck
                     (``arch: fmm``).
``fmm-base`` / ``fmm-sa`` / ``fmm-nosa``  its ablations: no module; self-attention only;
                     modulation without the self-attention block.

Both published configurations keep every published quirk so their outputs match the
authors' code. Every model has ``.config`` (a JSON-able dict with ``name`` and ``arch``) so
saved weights can record it (:func:`vidharm.models.weights.save_weights`).

Importing this package does not import torch; :func:`create_model` does.
"""
from __future__ import annotations

import copy
import difflib
from typing import Any, Dict, List

from ..errors import ConfigError

__all__ = ["create_model", "build_model", "list_models", "model_config", "register_model",
           "PUBLISHED_MODELS"]

_MODELS: Dict[str, Dict[str, Any]] = {}
_HELP: Dict[str, str] = {}

#: configurations that load the authors' published .pth files
PUBLISHED_MODELS = ("phnet-ffhqh", "phnet-iharmony4")


def register_model(name: str, help: str = "", **config: Any) -> None:
    """Add a named configuration (``arch`` defaults to ``phnet``)."""
    cfg = {"arch": "phnet", **copy.deepcopy(config)}
    cfg["name"] = name
    _MODELS[name] = cfg
    _HELP[name] = help


def list_models() -> List[str]:
    """Names of the registered configurations, sorted."""
    return sorted(_MODELS)


def model_config(name: str) -> Dict[str, Any]:
    """A copy of the full configuration of ``name`` (every option spelled out)."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown model '{name}'",
                          f"{hint}known models: {', '.join(list_models())}")
    cfg = _MODELS[name]
    if cfg.get("arch") == "grid":
        from .gridnet import GRID_DEFAULT_OPTIONS
        return copy.deepcopy({**GRID_DEFAULT_OPTIONS, **cfg})
    if cfg.get("arch") == "fmm":
        from .fmm import FMM_DEFAULT_OPTIONS
        return copy.deepcopy({**FMM_DEFAULT_OPTIONS, **cfg})
    from .phnet import DEFAULT_OPTIONS
    return copy.deepcopy({**DEFAULT_OPTIONS, **cfg})


def build_model(config: Dict[str, Any]):
    """Build a model from a full configuration dict (as stored in ``model.config``)."""
    cfg = dict(config)
    arch = cfg.pop("arch", "phnet")
    if arch == "fmm":
        return _build_fmm(cfg)
    if arch == "grid":
        return _build_grid(cfg)
    if arch != "phnet":
        raise ConfigError(f"unknown model architecture '{arch}'",
                          "known architectures: phnet, fmm, grid")
    from .phnet import DEFAULT_OPTIONS, PHNet
    allowed = set(DEFAULT_OPTIONS) | {"enc_sizes", "grid_count", "name", "fmm"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(f"unknown model option(s): {', '.join(unknown)}",
                          f"known options: {', '.join(sorted(allowed))}")
    missing = [k for k in ("enc_sizes", "grid_count") if k not in cfg]
    if missing:
        raise ConfigError(f"model configuration lacks {', '.join(missing)}")
    try:
        return PHNet(**cfg)
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"invalid model configuration: {exc}") from None


def _build_fmm(cfg: Dict[str, Any]):
    from .fmm import FMM_DEFAULT_OPTIONS, FMMNet
    return _build_with_options(cfg, FMM_DEFAULT_OPTIONS, FMMNet)


def _build_grid(cfg: Dict[str, Any]):
    from .gridnet import GRID_DEFAULT_OPTIONS, GridNet
    return _build_with_options(cfg, GRID_DEFAULT_OPTIONS, GridNet)


def _build_with_options(cfg: Dict[str, Any], options: Dict[str, Any], cls):
    """``cls(**cfg)`` for an architecture whose options are ``options`` + enc_sizes + name;
    unknown or missing options and values the class refuses are one-line ConfigErrors."""
    allowed = set(options) | {"enc_sizes", "name"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(f"unknown model option(s): {', '.join(unknown)}",
                          f"known options: {', '.join(sorted(allowed))}")
    if "enc_sizes" not in cfg:
        raise ConfigError("model configuration lacks enc_sizes")
    try:
        return cls(**cfg)
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"invalid model configuration: {exc}") from None


def create_model(name: str, **overrides: Any):
    """Build the named configuration, with any option overridden (e.g. ``skip_kernel=3``).

    Overriding a published configuration makes it a different model: its ``config['name']``
    stays the registry name so weights record where it came from, and its options are all
    recorded in ``config``.
    """
    cfg = model_config(name)
    cfg.update(overrides)
    return build_model(cfg)


register_model(
    "phnet-ffhqh", "PHNet as published, FFHQH portraits (39.9M params; ffhqh*.pth)",
    enc_sizes=[3, 16, 64, 128, 256, 512, 1024], grid_count=[4, 3, 2, 1])
register_model(
    "phnet-iharmony4", "PHNet as published, iHarmony4 (10.0M params; iharmony512.pth)",
    enc_sizes=[3, 16, 32, 64, 128, 256, 512], grid_count=[10, 5, 1])
_LITE = dict(grid_count=[4, 3, 2, 1], skip_kernel=1, quirk_bg_div255=False,
             quirk_scalar_se=False, keep_unused=False, residual_output=True)
register_model(
    "phnet-lite", "real-time PHNet (1.1M params, published quirks fixed)",
    enc_sizes=[3, 8, 16, 32, 64, 128, 256], **_LITE)
register_model(
    "phnet-lite-s", "smaller real-time PHNet (0.6M params, published quirks fixed)",
    enc_sizes=[3, 8, 12, 24, 48, 96, 192], **_LITE)


_FMM_NET = dict(arch="fmm", enc_sizes=[4, 16, 32, 64, 128])
register_model(
    "fmm", "U-Net + attention-based fg/bg feature map modulation at the bottleneck (FMM)",
    fmm_levels=[0], self_attention=True, modulation=True, **_FMM_NET)
register_model(
    "fmm-base", "FMM ablation: the U-Net without the module",
    fmm_levels=[], self_attention=True, modulation=True, **_FMM_NET)
register_model(
    "fmm-sa", "FMM ablation: self-attention block only (no modulation)",
    fmm_levels=[0], self_attention=True, modulation=False, **_FMM_NET)
register_model(
    "fmm-nosa", "FMM ablation: modulation without the self-attention block",
    fmm_levels=[0], self_attention=False, modulation=True, **_FMM_NET)
register_model(
    "phnet-lite-fmm", "phnet-lite + FMM on the decoder input of stage 1 (128 ch, 1/8 size)",
    enc_sizes=[3, 8, 16, 32, 64, 128, 256], **_LITE,
    fmm=dict(levels=[1], self_attention=True, modulation=True, reduction=8, eps=1e-5))


register_model(
    "phnet-grid", "predicts the colour grid itself: PN patch statistics of person and scene at "
    "grids 1/2/4 + a small encoder + a global-affine/local-residual head (vidharm's default)",
    arch="grid", enc_sizes=[16, 32, 64, 96], in_size=64, enc_size=64, grid=4, stat_grids=[1, 2, 4],
    hidden=96, local_scale=0.5)


_LAZY = {"GridNet": "gridnet", "PHNet": "phnet", "FMM": "fmm", "FMMNet": "fmm", "infer": "phnet", "prepare": "phnet",
         "load_published": "weights", "load_weights": "weights", "save_weights": "weights",
         "load_any": "weights", "detect_published": "weights"}


def __getattr__(name: str):  # lazy access to the torch-importing modules
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
