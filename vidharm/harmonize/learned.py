"""Learned harmonizers (phnet-grid, PHNet family, FMM) behind the harmonizer interface.

``phnet-grid`` / ``phnet`` / ``phnet-lite`` / ``fmm`` use the weights shipped in the package (``--weights PATH`` takes a
vidharm ``.safetensors`` or a published PHNet ``.pth`` instead). The network runs at
``work_size`` and its effect is fitted as a :class:`vidharm.color.ColorGrid`, applied at full
resolution by the pipeline. On a stream (``smoothing > 0``) the network's PN/PFE statistics
are carried across frames (EMA) and the fitted grid is smoothed too; a cut resets both.
"""
from __future__ import annotations

import numpy as np

from ..color import ColorGrid
from ..registry import registry
from .base import GridHarmonizer


class LearnedHarmonizer(GridHarmonizer):
    """A harmonization network (default: the shipped phnet-grid) as a colour grid."""

    default_weights = "default"
    registry_name = "phnet"

    def __init__(self, cfg=None, cut_threshold: float = 0.08):
        from ..api import Harmonizer
        from ..config import HarmonizerConfig
        self.cfg = cfg or HarmonizerConfig()
        spec = self.cfg.weights or self.default_weights
        self.net = Harmonizer.from_pretrained(spec, device=self.cfg.device,
                                              work_size=self.cfg.work_size,
                                              grid=(self.cfg.grid, self.cfg.grid))
        self.name = self.net.name
        super().__init__(0.0, cut_threshold)
        self._check_arch()

    #: architectures this harmonizer accepts in --weights (None: any)
    archs: tuple | None = ("phnet", "grid")

    def _check_arch(self) -> None:
        config = getattr(self.net.model, "config", {}) or {}
        arch = config.get("arch", "phnet")
        if self.archs is not None and (arch not in self.archs or config.get("fmm")):
            from ..errors import InputError
            kind = "FMM" if arch == "fmm" or config.get("fmm") else arch
            raise InputError(f"the weights '{self.cfg.weights}' hold a '{config.get('name', '?')}' "
                             f"model ({kind}), not one for harmonizer '{self.registry_name}'",
                             "pick the harmonizer that matches the weights (--harmonizer fmm for "
                             "FMM weights, phnet-grid for grid weights)")

    @GridHarmonizer.smoothing.setter
    def smoothing(self, value: float) -> None:
        """0 = per frame (stills). >0: EMA of the network's statistics and of the grid."""
        self.stream.smoothing = float(value)
        set_streaming = getattr(self.net.model, "set_streaming", None)
        if set_streaming:
            set_streaming(self.stream.smoothing)

    def fit_frame(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        return self.net.fit(composite, mask).scaled(self.cfg.strength)

    def fit(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        grid = super().fit(composite, mask)
        if self.stream.cut:                         # forget the carried network statistics too
            self._reset_network()
        return grid

    def reset(self) -> None:
        super().reset()
        self._reset_network()

    def _reset_network(self) -> None:
        reset = getattr(self.net.model, "reset_stream", None)
        if reset:
            reset()


class PhnetGrid(LearnedHarmonizer):
    """phnet-grid (0.38M parameters): predicts the colour grid itself from PN patch statistics
    of person and scene; vidharm's default (docs/model-card-grid.md)."""

    default_weights = "phnet-grid"
    registry_name = "phnet-grid"
    archs = ("grid",)


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
        config = getattr(self.net.model, "config", {}) or {}
        if config.get("arch") != "fmm" and not config.get("fmm"):
            from ..errors import InputError
            raise InputError(f"the weights '{self.cfg.weights}' hold a '{config.get('name', '?')}' "
                             "model without FMM modules",
                             "use --harmonizer phnet for PHNet weights, or give FMM weights")


registry.harmonizers.add("phnet", LearnedHarmonizer,
                         "PHNet: shipped default weights, or --weights PATH (.safetensors / published .pth)")
registry.harmonizers.add("phnet-lite", PhnetLite)
registry.harmonizers.add("phnet-grid", PhnetGrid)
registry.harmonizers.add("fmm", Fmm, "FMM (attention-based feature map modulation): shipped "
                         "weights, or --weights PATH")
