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
    """uint8 0..255 or float 0..1 mask -> float32 (H, W) in [0, 1]; validates the size."""
    from ..errors import InputError
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2:
        raise InputError(f"mask must be a single-channel image, got shape {m.shape}",
                         "pass a greyscale matte (0 = background, 255 = person)")
    if shape is not None and m.shape != tuple(shape):
        raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}",
                         "give a mask with the same width and height as the image")
    if m.dtype == np.uint8:
        return m.astype(np.float32) * (1.0 / 255.0)
    if m.dtype == np.uint16:
        return m.astype(np.float32) * (1.0 / 65535.0)
    return np.clip(m.astype(np.float32, copy=False), 0.0, 1.0)


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
