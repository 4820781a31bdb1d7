"""The offline driver: the frame graph with its grid fitted in the loop.

:class:`FramePipeline` is the frame processor of the transcoder, the demo and the still
commands (``proc(rgb, t) -> rgb``): a :class:`vidharm.graph.FrameGraph` whose grid provider is
:class:`vidharm.fitting.SyncGrids` (the harmonizer fits on every frame, through the same
temporal smoother as live). It adds up each stage's seconds for benchmarks and the transcoder.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .composite import BackgroundProvider, composite, make_background
from .config import Config
from .fitting import GridFitter, SyncGrids
from .graph import STAGES as GRAPH_STAGES
from .graph import FrameGraph
from .protocols import Closable
from .registry import registry
from .temporal import SmoothingTuning

#: stages reported by :attr:`FramePipeline.timings` (the fit is inside "apply")
STAGES = GRAPH_STAGES


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
    """The harmonizer ``cfg`` names (registry lookup; learned ones load their weights)."""
    return registry.harmonizers.create(cfg.harmonizer.name, cfg.harmonizer)


class FramePipeline:
    """Cut the person out of each frame, put them on ``background`` and harmonize.

    ``background``: a :class:`~vidharm.composite.BackgroundProvider` (shared, owned by the
    caller) or a spec for :func:`~vidharm.composite.make_background` (image path, video path,
    ``"blur"``; then the pipeline owns it). ``harmonizer`` (optional) is shared and owned by
    the caller. ``video=True``: temporal smoothing of mask and grid, MediaPipe's VIDEO mode;
    stills use ``video=False``. Errors propagate (a file fails; it is never quietly wrong).

    ``grid_mode`` (video only; stills apply the grid as the harmonizer gives it): as the live
    engine's ``--grid``. For a harmonizer that gives a full affine grid (phnet-grid-local,
    phnet-lite, fmm; phnet-grid itself gives one global transform), "auto" with the model on
    the CPU publishes a cheap form fitted to it (:class:`GridFitter`): one global 3x4
    transform while that is about as close as per-channel grids, else those; at 720p about
    1-4 ms per frame to apply instead of 8, the picture within a grey level of the full
    grid's (tests/test_transcode.py). ``cfg.harmonizer.offline_hz``: fits per second of video
    (0: every frame; see :class:`SyncGrids`).
    """

    def __init__(self, cfg: Config, background, video: bool = True, segmenter=None,
                 harmonizer=None, tuning: SmoothingTuning | None = None, grid_mode: str = "auto"):
        self.cfg = cfg
        self._owns_background = not isinstance(background, BackgroundProvider)
        self.background = make_background(background, cfg) if self._owns_background else background
        self.background.reset()
        self._owns_segmenter = segmenter is None
        self.segmenter = segmenter or registry.segmenters.create(cfg.segmentation.segmenter,
                                                                 cfg.segmentation)
        self._owns_harmonizer = harmonizer is None
        self.harmonizer = harmonizer or build_harmonizer(cfg)
        tuning = tuning or SmoothingTuning(mode="adaptive" if video else "off")
        fitter = GridFitter(self.harmonizer, tuning, relative=cfg.harmonizer.relative)
        device = getattr(self.harmonizer, "device", None) or cfg.harmonizer.device
        fitter.set_grid_mode(grid_mode, "cuda" if device == "cuda" else "cpu")
        fitter.diagonal = fitter.diagonal and video          # stills: the grid as given
        self.grids = SyncGrids(fitter, cfg.harmonizer.offline_hz if video else 0.0)
        self.graph = FrameGraph(cfg, self.background, self.segmenter, grids=self.grids,
                                video=video, strict=True)
        self.graph.harmonize_on = cfg.harmonizer.name != "none"
        self.timer = StageTimer()
        self._last_rgb: np.ndarray | None = None

    def prepare(self, rgb: np.ndarray, t: float | None = None):
        """Segment a frame and refine its mask ahead (the transcoder calls this on its prepare
        thread, in frame order; the result goes back in with the same frame:
        ``pipeline(rgb, t, prepared)``). Once called, every frame must come through here:
        the mask's temporal smoothing then runs on that thread."""
        return self.graph.segment(rgb, t, refine=True)

    def __call__(self, rgb: np.ndarray, t: float | None = None, prepared=None) -> np.ndarray:
        self._last_rgb = rgb
        res = self.graph.process(rgb, t, prepared)
        for stage, seconds in res.stages.items():
            self.timer.add(stage, seconds)
        return res.out

    @property
    def last_mask(self) -> np.ndarray | None:
        return self.graph.last_mask

    @property
    def last_composite(self) -> np.ndarray | None:
        """The plain composite of the last frame (computed on request, for previews)."""
        g = self.graph
        if g.last_mask is None or self._last_rgb is None:
            return None
        return composite(self._last_rgb, g.last_bg, g.last_mask)

    @property
    def timings(self) -> dict:
        """Cumulative seconds per stage (read by the transcoder and benchmarks)."""
        return self.timer.seconds()

    def reset(self) -> None:
        self.graph.cut()
        self.grids.reset()
        self.background.reset()

    def close(self) -> None:
        self.graph.close()
        parts = (([self.segmenter] if self._owns_segmenter else [])
                 + ([self.harmonizer] if self._owns_harmonizer else [])
                 + ([self.background] if self._owns_background else []))
        for part in parts:
            if isinstance(part, Closable):
                part.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
