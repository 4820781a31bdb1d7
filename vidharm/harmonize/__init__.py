"""Harmonizers: ``none`` (plain composite), ``light`` (learning-free illuminant estimate;
``stats`` is its old name), and learned models (``phnet-grid``, the PHNet family, FMM)
registered by :mod:`vidharm.harmonize.learned`."""
from ..registry import registry
from .base import BaseHarmonizer, NoneHarmonizer, as_float_mask

registry.harmonizers.add("none", NoneHarmonizer, "plain composite, no colour change")

__all__ = ["BaseHarmonizer", "NoneHarmonizer", "as_float_mask"]

from . import light  # noqa: E402,F401  (registers "light" and its old name "stats")
from . import learned  # noqa: E402,F401  (registers "phnet", "phnet-lite", "fmm"; torch loads lazily)
