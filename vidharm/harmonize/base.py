"""The harmonizer contract: one frame in, one colour grid out, no state.

    grid = harmonizer.fit(composite_small, mask_small)      # -> vidharm.color.ColorGrid

- ``composite_small``: uint8 RGB ``(h, w, 3)``, the person already pasted on the new
  background, at low resolution (the frame graph subsamples to ``work_size``).
- ``mask_small``: float32 ``(h, w)`` in [0, 1], the person's soft matte (1 = person).
- returns the :class:`~vidharm.color.ColorGrid` that adjusts the person to the background at
  FULL strength. The driver applies it at full resolution fused with compositing, and applies
  ``strength`` there, once (:meth:`ColorGrid.scaled`).

**Relative to the person's own surroundings.** vidharm always has the frame the person was
cut from (the camera frame, the source clip's frame, the input photo): the person as lit by
their own room, which is right for that room by definition. The drivers therefore apply
:meth:`BaseHarmonizer.fit_relative`: the transform for the composite with the transform the
same harmonizer gives for the source frame undone (``harmonizer.relative``, on by default).
The harmonizer's estimate of the light on the person then cancels (its bias for this face and
these clothes: from the composite alone phnet-grid brightens the sample clip's man by about
10 grey levels in his own room); what is left is how the new background's light differs from
the room's, and a background like the room leaves the person as they are. A harmonizer may
override ``fit_relative`` (``light`` uses other settings there; phnet-grid adds its joint
head's correction, computed from both frames together).

``fit`` keeps nothing from one call to the next: temporal smoothing, cut detection and resets
belong to the driver (:class:`vidharm.temporal.GridTracker`). A harmonizer that can carry
statistics across the frames of a stream (PHNet's PN statistics) says so by having the optional
:class:`Streaming` capability; the driver then tells it how much to carry and when to forget.

Implementations subclass :class:`BaseHarmonizer` and register a factory ``factory(cfg)`` (cfg:
:class:`vidharm.config.HarmonizerConfig`) under a name in
``vidharm.registry.registry.harmonizers``. One that produces an image instead of a grid
implements :meth:`BaseHarmonizer.harmonize`; the base class's ``fit`` then fits a grid to its
output.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..color import ColorGrid, apply_grid, fit_grid, fit_relative
from ..errors import InputError
from ..mask import to_float_mask


def as_float_mask(mask: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Any matte -> float32 (H, W) in [0, 1] (see :func:`vidharm.mask.to_float_mask`),
    checked against the image's ``shape``."""
    m = to_float_mask(mask)
    if shape is not None and m.shape != tuple(shape):
        raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}",
                         "give a mask with the same width and height as the image")
    return m


@runtime_checkable
class Streaming(Protocol):
    """Optional capability: statistics carried across the frames of a stream.

    ``set_streaming(s)``: from the next fit on, carry the statistics with EMA weight ``s``
    (0 = every frame on its own, as for stills). ``reset_stream()``: forget them (a cut)."""

    def set_streaming(self, smoothing: float) -> None: ...

    def reset_stream(self) -> None: ...


class BaseHarmonizer:
    """Base class of harmonizers: implement :meth:`fit` (a grid) or :meth:`harmonize` (an image)."""

    name = "base"
    #: grid cells used when a grid is fitted to an image harmonizer's output
    grid_cells = 4

    def fit(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        """The person's colour transform for this frame, at full strength (see the module)."""
        out = self.harmonize(composite, mask)
        g = self.grid_cells
        s = max(1, min(mask.shape) // 128)
        return fit_grid(composite[::s, ::s], out[::s, ::s], mask[::s, ::s], (g, g))

    def fit_relative(self, composite: np.ndarray, mask: np.ndarray,
                     source: np.ndarray | None) -> ColorGrid:
        """:meth:`fit` on ``composite`` relative to :meth:`fit` on ``source``, the frame the
        person was cut from (same size and matte; see the module docstring):
        ``fit(composite).relative_to(fit(source))``. ``source`` None, or equal to the
        composite (a background like the room): :meth:`fit` alone / no change."""
        return fit_relative(self.fit, composite, mask, source)

    def harmonize(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """An image harmonizer's output (uint8 (h, w, 3)); grid harmonizers need not have it."""
        raise NotImplementedError(f"harmonizer '{self.name}' implements neither fit nor harmonize")

    def __call__(self, composite: np.ndarray, mask: np.ndarray, strength: float = 1.0,
                 source: np.ndarray | None = None) -> np.ndarray:
        """A still: fit on ``composite`` itself (relative to ``source``, the photo the person
        was cut from, when given: :meth:`fit_relative`) and apply the grid at ``strength``."""
        for what, a in (("composite", composite), ("source", source)):
            if a is not None and (a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8):
                raise InputError(f"{what} must be uint8 HxWx3 RGB, got {a.dtype} {a.shape}")
        m = as_float_mask(mask, composite.shape[:2])
        comp = np.ascontiguousarray(composite)
        src = None if source is None else np.ascontiguousarray(source)
        return apply_grid(comp, m, self.fit_relative(comp, m, src).scaled(strength))

    def close(self) -> None:
        """Release resources (threads, GPU memory)."""


class NoneHarmonizer(BaseHarmonizer):
    """Plain composite: no colour change."""

    name = "none"

    def __init__(self, cfg=None):
        self.cfg = cfg

    def fit(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        return ColorGrid.identity()
