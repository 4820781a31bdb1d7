"""The per-frame graph: segment -> refine + smooth mask -> composite -> harmonize.

:class:`FramePipeline` is a FrameProcessor (``proc(rgb, t) -> rgb``) for the transcoder and
the live engine. It times each stage so benchmarks and telemetry can report them.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .color import apply_grid_fused
from .composite import composite
from .config import Config
from .mask import segmentation_input
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

    def seconds(self) -> dict:
        return dict(self.total)

    def ms(self, stage: str) -> float:
        n = self.count.get(stage, 0)
        return 1000.0 * self.total.get(stage, 0.0) / n if n else 0.0


def build_harmonizer(cfg: Config):
    return registry.harmonizers.create(cfg.harmonizer.name, cfg.harmonizer)


def _one_model_thread(harmonizer, cfg: Config) -> None:
    """A learned model on the CPU runs on one torch thread: the decoder, MediaPipe and the
    encoder already keep the cores busy, and torch's second thread then spins against them
    (measured: phnet-grid's fit took 315 ms per 720p frame in a transcode beside another
    busy process, about 5 ms on one thread)."""
    import sys
    torch = sys.modules.get("torch")
    dev = next((d for d in (getattr(harmonizer, "device", None),
                            getattr(getattr(harmonizer, "net", None), "device", None),
                            cfg.harmonizer.device) if isinstance(d, str)), "cpu")
    if torch is not None and not str(dev).startswith("cuda"):
        try:
            if torch.get_num_threads() != 1:
                torch.set_num_threads(1)
        except Exception:  # pragma: no cover
            pass


class FramePipeline:
    """Cut the person out of each frame, put them on ``background`` and harmonize.

    ``harmonizer`` (optional) is shared and owned by the caller, like a provider given as
    ``background``; the pipeline resets both on start. ``background`` is a
    :class:`vidharm.composite.BackgroundProvider` (shared, owned by the caller) or a spec for :func:`vidharm.composite.make_background` (image path, video path,
    ``"blur"``; then the pipeline owns it). ``video=True`` enables temporal smoothing (mask
    and harmonizer) and MediaPipe's VIDEO mode; stills use ``video=False``.
    """

    def __init__(self, cfg: Config, background, video: bool = True,
                 segmenter=None, harmonizer=None, harmonizer_smoothing: float = 0.7):
        from ._threads import pin_blas_single_thread, tune_allocator
        from .composite import BackgroundProvider, make_background
        from .mask import MaskRefiner
        tune_allocator()
        pin_blas_single_thread()
        self.cfg = cfg
        self.video = video
        self._owns_background = not isinstance(background, BackgroundProvider)
        self.background = make_background(background, cfg) if self._owns_background else background
        self.background.reset()
        self.segmenter = segmenter or registry.segmenters.create(cfg.segmentation.segmenter,
                                                                 cfg.segmentation)
        self.refiner = MaskRefiner(cfg.mask, smooth=video)
        self._owns_harmonizer = harmonizer is None
        self.harmonizer = harmonizer or build_harmonizer(cfg)
        self.harmonizer.reset()
        _one_model_thread(self.harmonizer, cfg)
        if video and hasattr(self.harmonizer, "smoothing"):
            self.harmonizer.smoothing = harmonizer_smoothing
        self.timer = StageTimer()
        self.last_mask: np.ndarray | None = None
        self.last_bg: np.ndarray | None = None
        self._last_rgb: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray, t: float | None = None) -> np.ndarray:
        clock = time.perf_counter
        t0 = clock()
        self._last_rgb = rgb
        # the model's own input size: the mask comes back at that size and the refiner's
        # guide is made on the way (see vidharm.mask.segmentation_input)
        seg_in, small = segmentation_input(rgb, getattr(self.segmenter, "input_size", None)
                                           if self.refiner.guided else None)
        raw = self.segmenter.segment(seg_in, t if self.video else None)
        t1 = clock()
        mask = self.refiner(raw, rgb, small=small)
        t2 = clock()
        h, w = rgb.shape[:2]
        bg = self.background.frame((w, h), t or 0.0, current=rgb, mask=mask)
        # grid harmonizers fit on a subsampled composite, then one fused full-res pass does
        # compositing and colour transform together: out = bg + m * (T(fg) - bg)
        step = max(1, min(h, w) // self.cfg.harmonizer.work_size)
        small_mask = mask[::step, ::step]
        comp = composite(rgb[::step, ::step], bg[::step, ::step], small_mask) if step > 1 else None
        if comp is None:
            comp = composite(rgb, bg, mask)
        t3 = clock()
        grid = self.harmonizer.fit(comp, small_mask)
        if grid is not None:
            out = apply_grid_fused(rgb, bg, mask, grid)
        else:
            out = self.harmonizer(comp if step == 1 else composite(rgb, bg, mask), mask)
        t4 = clock()
        for name, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.timer.add(name, dt)
        self.last_mask, self.last_bg = mask, bg
        return out

    @property
    def last_composite(self) -> np.ndarray | None:
        """The plain composite of the last frame (computed on request, for previews)."""
        if self.last_mask is None or self._last_rgb is None:
            return None
        return composite(self._last_rgb, self.last_bg, self.last_mask)

    @property
    def timings(self) -> dict:
        """Cumulative seconds per stage (read by the transcoder and benchmarks)."""
        return self.timer.seconds()

    def reset(self) -> None:
        self.refiner.reset()
        self.harmonizer.reset()
        self.background.reset()

    def close(self) -> None:
        parts = ([self.segmenter] + ([self.harmonizer] if self._owns_harmonizer else [])
                 + ([self.background] if self._owns_background else []))
        for part in parts:
            close = getattr(part, "close", None)
            if close:
                close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
