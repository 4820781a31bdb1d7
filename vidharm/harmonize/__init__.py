"""Harmonizers: the contract (:mod:`.base`), ``none`` (plain composite), ``light``
(learning-free illuminant estimate; ``stats`` is its old name) and the learned models
(``phnet-grid``, the PHNet family, FMM; :mod:`.learned`).

:func:`register` puts them in a :class:`vidharm.registry.PluginRegistry`; it is the
``vidharm.plugins`` entry point of vidharm itself, loaded like any third-party plugin.
"""
from .base import BaseHarmonizer, NoneHarmonizer, Streaming, as_float_mask
from .light import LightHarmonizer

__all__ = ["BaseHarmonizer", "NoneHarmonizer", "LightHarmonizer", "Streaming",
           "as_float_mask", "register"]


def register(reg) -> None:
    """Register the built-in harmonizers in ``reg`` (a :class:`vidharm.registry.PluginRegistry`)."""
    from .learned import (Fmm, LearnedHarmonizer, PhnetGrid, PhnetGridLocal,  # torch: lazily
                          PhnetLite)
    h = reg.harmonizers
    h.add("none", NoneHarmonizer, "plain composite, no colour change")
    h.add("light", LightHarmonizer, LightHarmonizer.__doc__.splitlines()[0])
    h.add("stats", LightHarmonizer, "old name of 'light' (the colour-statistics transfer it "
          "replaced turned people the colour of the room)")
    h.add("phnet", LearnedHarmonizer,
          "PHNet: shipped default weights, or --weights PATH (.safetensors / published .pth)")
    h.add("phnet-lite", PhnetLite, "phnet-lite (1.1M parameters): vidharm's "
          "shipped real-time PHNet")
    h.add("phnet-grid", PhnetGrid, "phnet-grid (0.38M parameters): predicts the "
          "colour grid itself, applied as one global transform; vidharm's default")
    h.add("phnet-grid-local", PhnetGridLocal, "phnet-grid applying its own 4x4 grid "
          "(local variation included)")
    h.add("fmm", Fmm, "FMM (attention-based feature map modulation): shipped "
          "weights, or --weights PATH")
