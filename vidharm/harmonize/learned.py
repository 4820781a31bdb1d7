"""Learned harmonizers (phnet-grid, the PHNet family, FMM) behind the harmonizer contract.

Each uses the weights shipped in the package (``--weights PATH`` takes a vidharm
``.safetensors`` or a published PHNet ``.pth`` instead). The network runs at ``work_size``;
its effect comes back as a :class:`vidharm.color.ColorGrid` (phnet-grid predicts it, the
others have it fitted to their output). They have the :class:`~vidharm.harmonize.base.Streaming`
capability: the driver may let the network carry its PN/PFE statistics across frames.
"""
from __future__ import annotations

import numpy as np

from ..color import ColorGrid
from ..errors import InputError
from ..models.onnx_grid import onnx_runner
from ..models.runner import ModelRunner
from .base import BaseHarmonizer


class LearnedHarmonizer(BaseHarmonizer):
    """A harmonization network (default: the shipped phnet-grid) as a colour grid."""

    default_weights = "default"
    registry_name = "phnet"
    #: architectures this harmonizer accepts in --weights (None: any)
    archs: tuple | None = ("phnet", "grid")
    #: grid models: apply their own grid, not the global transform closest to it
    local = False

    def __init__(self, cfg=None):
        from ..config import HarmonizerConfig
        self.cfg = cfg or HarmonizerConfig()
        spec = self.cfg.weights or self.default_weights
        # the shipped phnet-grid on the CPU runs without torch (vidharm.models.onnx_grid)
        self.net = onnx_runner(spec, self.cfg.device, self.cfg.work_size, local=self.local) \
            if "grid" in (self.archs or ()) else None
        if self.net is None:
            self.net = ModelRunner.from_pretrained(spec, device=self.cfg.device,
                                                   work_size=self.cfg.work_size,
                                                   grid=(self.cfg.grid, self.cfg.grid),
                                                   local=self.local,
                                                   precision=self.cfg.precision)
        self.name = self.net.name
        self.device = self.net.device
        self._check_arch()

    @property
    def _config(self) -> dict:
        return getattr(self.net.model, "config", {}) or {}

    def _check_arch(self) -> None:
        config = self._config
        arch = config.get("arch", "phnet")
        if self.archs is not None and (arch not in self.archs or config.get("fmm")):
            kind = "FMM" if arch == "fmm" or config.get("fmm") else arch
            raise InputError(f"the weights '{self.cfg.weights}' hold a '{config.get('name', '?')}' "
                             f"model ({kind}), not one for harmonizer '{self.registry_name}'",
                             "pick the harmonizer that matches the weights (--harmonizer fmm for "
                             "FMM weights, phnet-grid for grid weights)")

    def fit(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        return self.net.fit(composite, mask)

    def fit_relative(self, composite: np.ndarray, mask: np.ndarray,
                     source: np.ndarray | None) -> ColorGrid:
        """:meth:`BaseHarmonizer.fit_relative`, by the network's runner: a grid model with a
        joint head adds its correction from both frames (``models.runner.joint_relative``)."""
        return self.net.fit_relative(composite, mask, source)

    # the Streaming capability (vidharm.harmonize.base.Streaming)
    def set_streaming(self, smoothing: float) -> None:
        fn = getattr(self.net.model, "set_streaming", None)
        if fn is not None:
            fn(float(smoothing))

    def reset_stream(self) -> None:
        fn = getattr(self.net.model, "reset_stream", None)
        if fn is not None:
            fn()


class PhnetGrid(LearnedHarmonizer):
    """phnet-grid (0.38M parameters): predicts the colour grid itself from PN patch statistics
    of person and scene, applied as the one global transform closest to it over the person;
    vidharm's default (docs/model-card-grid.md)."""

    default_weights = "phnet-grid"
    registry_name = "phnet-grid"
    archs = ("grid",)


class PhnetGridLocal(PhnetGrid):
    """phnet-grid applying the model's own 4x4 grid of transforms (its local variation
    included) instead of the global transform closest to it."""

    registry_name = "phnet-grid-local"
    local = True


class PhnetLite(LearnedHarmonizer):
    """phnet-lite (1.1M parameters): vidharm's shipped real-time PHNet."""

    default_weights = "phnet-lite"
    registry_name = "phnet-lite"
    archs = ("phnet",)


class Fmm(LearnedHarmonizer):
    """The FMM encoder-decoder (attention-based feature map modulation, 0.52M parameters) with
    its shipped weights (docs/model-card-fmm.md), or ``--weights PATH``."""

    default_weights = "fmm"
    registry_name = "fmm"

    def _check_arch(self) -> None:
        """FMM weights: the fmm architecture or a PHNet with FMM modules."""
        config = self._config
        if config.get("arch") != "fmm" and not config.get("fmm"):
            raise InputError(f"the weights '{self.cfg.weights}' hold a '{config.get('name', '?')}' "
                             "model without FMM modules",
                             "use --harmonizer phnet for PHNet weights, or give FMM weights")
