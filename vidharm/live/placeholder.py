"""The picture sent while there is no camera picture to send: the background, dimmed, with a
line of text ("camera unavailable - reconnecting"), or dark grey when there is no background."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


class Placeholder:
    """``placeholder(size, text)`` -> uint8 (H, W, 3), drawn once per size and text (cached
    until :meth:`clear`, e.g. when the background changes). ``background()`` returns the
    current :class:`vidharm.composite.BackgroundProvider`; ``t()`` the video time to take a
    moving background's frame at."""

    def __init__(self, background: Callable[[], object], t: Callable[[], float]):
        self._background = background
        self._t = t
        self._cache: dict = {}

    def __call__(self, size: tuple[int, int], text: str) -> np.ndarray:
        key = (tuple(size), text)
        img = self._cache.get(key)
        if img is None:
            img = self._draw(size, text)
            self._cache = {key: img}
        return img

    def clear(self) -> None:
        self._cache = {}

    def _draw(self, size: tuple[int, int], text: str) -> np.ndarray:
        w, h = size
        img = None
        bg = self._background()
        if not bg.needs_current:
            try:
                img = (np.asarray(bg.frame((w, h), self._t())).astype(np.float32) * 0.45
                       ).astype(np.uint8)
            except Exception:
                img = None
        if img is None or img.shape != (h, w, 3):
            img = np.full((h, w, 3), (32, 32, 36), np.uint8)
        scale = max(0.5, h / 720)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        cv2.putText(img, text, ((w - tw) // 2, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (235, 235, 235), max(1, int(2 * scale)), cv2.LINE_AA)
        return img
