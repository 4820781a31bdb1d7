"""The per-frame graph: segment -> refine + smooth mask -> composite -> harmonize.

:class:`FramePipeline` is a FrameProcessor (``proc(rgb, t) -> rgb``) for the transcoder and
the live engine. It times each stage so benchmarks and telemetry can report them.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .config import Config
from .registry import registry

STAGES = ("segment", "refine", "composite", "harmonize")


@dataclass
class StageTimer:
    """Accumulated seconds and counts per stage."""

    total: dict = field(default_factory=lambda: defaultdict(float))
    count: dict = field(default_factory=lambda: defaultdict(int))

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] += seconds
        self.count[stage] += 1

    def ms(self, stage: str) -> float:
        n = self.count.get(stage, 0)
        return 1000.0 * self.total.get(stage, 0.0) / n if n else 0.0


def build_harmonizer(cfg: Config):
    return registry.harmonizers.create(cfg.harmonizer.name, cfg.harmonizer)


class FramePipeline:
    """Cut the person out of each frame, put them on ``background`` and harmonize.

    ``background`` is a spec for :func:`vidharm.composite.make_background` (image path,
    video path, or ``"blur"``). ``video=True`` enables temporal smoothing (mask and
    harmonizer); stills use ``video=False``.
    """

    def __init__(self, cfg: Config, background: str, video: bool = True,
                 segmenter=None, harmonizer=None, harmonizer_smoothing: float = 0.7):
        from .composite import make_background
        from .mask import MaskRefiner
        self.cfg = cfg
        self.video = video
        self.background = make_background(background, cfg.background)
        self.segmenter = segmenter or registry.segmenters.create(
            cfg.segmentation.segmenter, model=cfg.segmentation.model, video=video)
        self.refiner = MaskRefiner(cfg.mask, temporal=video)
        self.harmonizer = harmonizer or build_harmonizer(cfg)
        if video and hasattr(self.harmonizer, "smoothing"):
            self.harmonizer.smoothing = harmonizer_smoothing
        self.timer = StageTimer()
        self.last_mask: np.ndarray | None = None
        self.last_composite: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray, t: float | None = None) -> np.ndarray:
        clock = time.perf_counter
        t0 = clock()
        raw = self.segmenter.segment(rgb, t if self.video else None)
        if self.cfg.segmentation.threshold > 0:
            raw = np.where(raw < self.cfg.segmentation.threshold, 0.0, raw).astype(np.float32)
        t1 = clock()
        mask = self.refiner(raw, rgb)
        t2 = clock()
        h, w = rgb.shape[:2]
        bg = self.background.frame((w, h), t or 0.0, current=rgb)
        from .composite import composite
        comp = composite(rgb, bg, mask)
        t3 = clock()
        out = self.harmonizer(comp, mask)
        t4 = clock()
        for name, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.timer.add(name, dt)
        self.last_mask, self.last_composite = mask, comp
        return out

    def reset(self) -> None:
        self.refiner.reset()
        self.harmonizer.reset()

    def close(self) -> None:
        for part in (self.segmenter, self.harmonizer, self.background):
            close = getattr(part, "close", None)
            if close:
                close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
