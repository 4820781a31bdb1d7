"""Public Python API: :class:`Harmonizer`.

    >>> from vidharm import Harmonizer
    >>> h = Harmonizer.from_pretrained("default")           # shipped phnet-grid, no network
    >>> out = h(composite_rgb, mask)                         # uint8 HxWx3, uint8 HxW -> uint8 HxWx3

The network runs at its own resolution (``work_size``, square, as the published test script
did); its effect is fitted as a grid of affine colour transforms (:mod:`vidharm.color`) and
applied to the full-resolution composite, so the person's detail is kept. Background pixels
come back unchanged.

This module is a face over the core (:class:`vidharm.models.runner.ModelRunner`); nothing in
vidharm imports it but the package's ``__init__`` and the command line.
"""
from __future__ import annotations

from .models import WEIGHTS_DIR
from .models.runner import ModelRunner, resolve_device

__all__ = ["Harmonizer", "resolve_device", "WEIGHTS_DIR"]


class Harmonizer(ModelRunner):
    """A harmonization network plus the full-resolution colour-transform fitting.

    ``Harmonizer.from_pretrained(name_or_path, device="auto")`` loads shipped or given weights;
    ``h(composite, mask)`` harmonizes one frame, ``h.batch(...)`` several in one network call,
    ``h.fit(...)`` returns the :class:`vidharm.color.ColorGrid` without applying it. See
    :class:`vidharm.models.runner.ModelRunner` for every method.
    """
