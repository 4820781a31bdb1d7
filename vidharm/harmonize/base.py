"""The harmonizer interface the pipeline calls.

A harmonizer takes the composite (person already pasted on the new background) and the
person's matte, and returns the composite with the person's colours adjusted to the
background. Background pixels must come back unchanged.

    out = harmonizer(composite, mask)

- ``composite``: uint8 RGB, (H, W, 3), C-contiguous.
- ``mask``: float32 in [0, 1] (H, W) soft matte (1 = person), or uint8 0..255.
- returns uint8 RGB (H, W, 3).

Harmonizers may keep temporal state between calls on a stream (for video); ``reset()`` forgets
it (call on a cut or when a new clip starts). Implementations register by name in
``vidharm.registry.registry.harmonizers``; the factory is called as ``factory(cfg)`` with the
:class:`vidharm.config.HarmonizerConfig`.
"""
from __future__ import annotations

import numpy as np


def as_float_mask(mask: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Any matte -> float32 (H, W) in [0, 1] (see :func:`vidharm.mask.to_float_mask`),
    checked against the image's ``shape``."""
    from ..errors import InputError
    from ..mask import to_float_mask
    m = to_float_mask(mask)
    if shape is not None and m.shape != tuple(shape):
        raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}",
                         "give a mask with the same width and height as the image")
    return m


class GridStream:
    """Temporal smoothing of a harmonizer's fitted colour grids on a video stream.

    ``update(new)`` returns ``new`` eased toward the previous grid by ``smoothing`` (EMA) while
    the change is small, and ``new`` itself after a cut (a change larger than
    ``cut_threshold``, see :meth:`vidharm.color.ColorGrid.distance`); ``smoothing = 0`` passes
    every grid through (stills). ``cut`` tells whether the last update was a cut.
    """

    def __init__(self, smoothing: float = 0.0, cut_threshold: float = 0.08):
        self.smoothing = smoothing
        self.cut_threshold = cut_threshold
        self.cut = False
        self._grid = None

    def update(self, new):
        old = self._grid
        self.cut = old is not None and old.distance(new) >= self.cut_threshold
        if old is not None and self.smoothing > 0 and not self.cut:
            new = new.lerp(old, self.smoothing)
        self._grid = new
        return new

    def reset(self) -> None:
        self._grid = None
        self.cut = False


class BaseHarmonizer:
    """Base class: subclasses implement :meth:`harmonize`."""

    name = "base"

    def __call__(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from ..errors import InputError
        if composite.ndim != 3 or composite.shape[2] != 3 or composite.dtype != np.uint8:
            raise InputError(f"composite must be uint8 HxWx3 RGB, got {composite.dtype} {composite.shape}")
        m = as_float_mask(mask, composite.shape[:2])
        return self.harmonize(np.ascontiguousarray(composite), m)

    def harmonize(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, composite: np.ndarray, mask: np.ndarray):
        """Grid harmonizers return the :class:`vidharm.color.ColorGrid` for this frame
        (``composite``/``mask`` may be low resolution); the pipeline then applies it at full
        resolution fused with compositing. Others return None and are called instead."""
        return None

    def reset(self) -> None:
        """Forget temporal state (new clip, scene cut)."""

    def close(self) -> None:
        """Release resources (threads, GPU memory)."""


class NoneHarmonizer(BaseHarmonizer):
    """Plain composite: returns the input unchanged."""

    name = "none"

    def __init__(self, cfg=None):
        self.cfg = cfg

    def harmonize(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return composite


class GridHarmonizer(BaseHarmonizer):
    """A harmonizer that fits a :class:`vidharm.color.ColorGrid` per frame (``fit``), smoothed
    over time on a stream by :class:`GridStream`. Subclasses implement ``fit_frame``."""

    def __init__(self, smoothing: float = 0.0, cut_threshold: float = 0.08):
        self.stream = GridStream(smoothing, cut_threshold)

    @property
    def smoothing(self) -> float:
        """0 = per frame (stills); the pipeline sets it for video."""
        return self.stream.smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        self.stream.smoothing = float(value)

    def fit_frame(self, composite: np.ndarray, mask: np.ndarray):
        raise NotImplementedError

    def fit(self, composite: np.ndarray, mask: np.ndarray):
        return self.stream.update(self.fit_frame(composite, mask))

    def harmonize(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from ..color import apply_grid
        return apply_grid(composite, mask, self.fit(composite, mask))

    def reset(self) -> None:
        self.stream.reset()

