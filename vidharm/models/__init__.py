"""Harmonization networks: one table of named configurations (timm-style).

    >>> from vidharm.models import create_model, list_models, model_config, shipped_weights
    >>> list_models()
    ['fmm', 'fmm-base', 'fmm-nosa', 'fmm-sa', 'phnet-ffhqh', 'phnet-grid', 'phnet-iharmony4',
     'phnet-lite', 'phnet-lite-fmm', 'phnet-lite-s']
    >>> net = create_model("phnet-lite")            # nn.Module, random init
    >>> net.config["enc_sizes"]
    [3, 8, 16, 32, 64, 128, 256]

Configurations (those marked * ship with weights: :func:`shipped_names`)
-------------------------------------------------------------------------
``phnet-grid`` *     vidharm's default (``arch: grid``, :mod:`vidharm.models.gridnet`): predicts
                     the colour transform itself (a global 3x4 affine + a 4x4 local residual)
                     from PN-style patch statistics of person and scene and a small encoder at
                     64 px; trained with the loss on the image after the transform.
``phnet-ffhqh``      the paper's model (39,921,641 params); loads ``ffhqh{256,512,1024}.pth``.
``phnet-iharmony4``  the iHarmony4 model (9,994,295 params); loads ``iharmony512.pth``.
``phnet-lite`` *     vidharm's real-time variant (1,103,872 params, ~15-20 ms per 256x256
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
``fmm`` *            a small U-Net (widths 4-16-32-64-128, RGB + mask input, residual output)
                     with the full FMM module (self-attention + modulation) at the bottleneck
                     (``arch: fmm``).
``fmm-base`` / ``fmm-sa`` / ``fmm-nosa``  its ablations: no module; self-attention only;
                     modulation without the self-attention block.

Each configuration is registered next to its definition (the bottom of ``phnet.py``,
``fmm.py``, ``gridnet.py``) in one table (:mod:`vidharm.models._registry`): name ->
architecture and options -> shipped weights file. Both published configurations keep every
published quirk so their outputs match the authors' code. Every model has ``.config`` (a
JSON-able dict with ``name`` and ``arch``) so saved weights can record it
(:func:`vidharm.models.weights.save_weights`), and :func:`build_model` rebuilds it by ``arch``.

Importing this package does not import torch; the functions below do (they import the
families, which fill the table). :class:`vidharm.models.runner.ModelRunner` runs a network on
frames (the public :class:`vidharm.Harmonizer`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from . import _registry
from ._registry import DEFAULT_MODEL, WEIGHTS_DIR, register_arch, register_model

__all__ = ["create_model", "build_model", "list_models", "model_config", "register_model",
           "register_arch", "shipped_names", "shipped_weights", "DEFAULT_MODEL", "WEIGHTS_DIR",
           "PUBLISHED_MODELS"]


def _families():
    """The table, with the built-in families registered."""
    from . import fmm, gridnet, phnet  # noqa: F401  (they register themselves)
    return _registry


def list_models() -> List[str]:
    """Names of the registered configurations, sorted."""
    return _families().list_models()


def model_config(name: str) -> Dict[str, Any]:
    """A copy of the full configuration of ``name`` (every option spelled out)."""
    return _families().model_config(name)


def build_model(config: Dict[str, Any]):
    """Build a model from a full configuration dict (as stored in ``model.config``), by its
    ``arch``; unknown or missing options and values the model refuses are one-line
    ConfigErrors."""
    return _families().build_model(config)


def create_model(name: str, **overrides: Any):
    """Build the named configuration, with any option overridden (e.g. ``skip_kernel=3``).

    Overriding a published configuration makes it a different model: its ``config['name']``
    stays the registry name so weights record where it came from, and its options are all
    recorded in ``config``.
    """
    cfg = model_config(name)
    cfg.update(overrides)
    return build_model(cfg)


def shipped_names() -> List[str]:
    """Names that have weights in the package: "default" (:data:`DEFAULT_MODEL`) and the
    configurations registered with a weights file."""
    return _families().shipped_names()


def shipped_weights(name: str) -> Path:
    """The shipped weights file of ``name`` (one of :func:`shipped_names`); InputError when
    the name has none or the file is missing."""
    return _families().shipped_weights(name)


def __getattr__(name: str):  # PUBLISHED_MODELS lives with PHNet, which imports torch
    if name == "PUBLISHED_MODELS":
        from .phnet import PUBLISHED_MODELS
        return PUBLISHED_MODELS
    raise AttributeError(name)
