"""Harmonizers: ``none`` (plain composite), ``stats`` (learning-free PN statistics transfer),
and learned models (PHNet) registered by :mod:`vidharm.harmonize.learned` when available."""
from ..registry import registry
from .base import BaseHarmonizer, NoneHarmonizer, as_float_mask

registry.harmonizers.add("none", NoneHarmonizer, "plain composite, no colour change")

__all__ = ["BaseHarmonizer", "NoneHarmonizer", "as_float_mask"]

from . import stats  # noqa: E402,F401  (registers "stats")
from . import learned  # noqa: E402,F401  (registers "phnet", "phnet-lite", "fmm"; torch loads lazily)
