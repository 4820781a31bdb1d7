"""The per-frame graph, one for live and offline alike.

    frame ─▶ segmenter ─▶ check ─▶ refine + temporal smoothing of the mask
                                        │
    background provider ───────────────▶ low-res job ─▶ grid provider (fit: sync or thread)
                                        │                    │
                                        ▼                    ▼
                  fused pass: out = bg + m·(T(frame) − bg), T = provider's grid at strength

:class:`FrameGraph` does one frame: ``graph.process(rgb, t) -> FrameOut``. The drivers around
it differ only in their grid provider (:mod:`vidharm.fitting`): the offline pipeline
(:mod:`vidharm.pipeline`) fits in its loop, the live engine (:mod:`vidharm.live`) on a thread.

Privacy guard: when segmentation raises or returns garbage (:func:`check_mask`), or anything
after it fails, the frame is the background alone (a strong blur of the room for a blur
background), never the camera frame; a person the fast segmentation model sees where the
general model sees nobody is not shown either (:mod:`vidharm.person_check`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from .color import ColorGrid, apply_grid_fused
from .composite import BackgroundProvider, BlurBackground, composite
from .config import Config
from .errors import first_line
from .fitting import FitJob, GridProvider, job_step
from .mask import MaskRefiner, segmentation_input
from .person_check import PersonCheck
from .protocols import SizedSegmenter

log = logging.getLogger("vidharm.graph")

#: the graph's stages, in order (seconds of each are reported per frame)
STAGES = ("segment", "refine", "background", "apply")
#: segmentation failures in a row after which the graph asks for a fresh segmenter
SEGMENTER_RETRIES = 30


def check_mask(mask: Any, shape: tuple[int, int]) -> str | None:
    """Why the segmenter's ``mask`` must not be used for a frame of ``shape`` (H, W), or
    None when it is usable. Garbage: not a 2-D array of the frame's size, NaN/inf, values
    outside [0, 1], or covering (> 0.5) practically the whole frame."""
    if not isinstance(mask, np.ndarray):
        return f"the mask is not an array ({type(mask).__name__})"
    m = mask[:, :, 0] if mask.ndim == 3 and mask.shape[2] == 1 else mask
    if m.ndim != 2 or m.shape != tuple(shape):
        return f"the mask has shape {mask.shape}, the frame {tuple(shape)}"
    if m.dtype == np.uint8:
        hi, half = 255.0, 127.5
    elif np.issubdtype(m.dtype, np.floating):
        hi, half = 1.0, 0.5
        if not _all_finite(m):
            return "the mask has NaN/inf values"
    else:
        return f"the mask has type {m.dtype}"
    sub = m[::8, ::8]
    if float(sub.min()) < -0.01 * hi or float(sub.max()) > 1.01 * hi:
        return "the mask has values outside [0, 1]"
    if float((sub > half).mean()) > 0.98:
        return "the mask covers the whole frame"
    return None


def _all_finite(m: np.ndarray) -> bool:
    """No NaN/inf in a float image (OpenCV's SIMD sum: 0.03 ms at 720p, numpy's 0.25)."""
    return math.isfinite(cv2.sumElems(np.ascontiguousarray(m))[0])


@dataclass
class FrameOut:
    """One processed frame: the picture to send, whether it is the privacy fallback, and the
    seconds (wall clock and this thread's CPU) of each stage."""

    out: np.ndarray
    private: bool = False
    stages: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)


@dataclass
class Segmented:
    """:meth:`FrameGraph.segment` of one frame: the segmenter's mask (checked) and the
    refiner's guide, or why the mask cannot be used; the segment stage's seconds."""

    raw: np.ndarray | None
    small: np.ndarray | None
    reason: str | None
    stages: dict
    cpu: dict
    mask: np.ndarray | None = None     # refined too (``segment(..., refine=True)``)


def _privacy_blur(cfg: Config) -> BlurBackground:
    """A blur of the room strong enough that nobody in it can be made out."""
    return BlurBackground(max(36.0, 3.0 * cfg.background.blur_sigma))


class _Stopwatch:
    """Wall and thread-CPU seconds per stage, in the order the stages end."""

    def __init__(self):
        self.stages: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._t, self._c = time.perf_counter(), time.thread_time()

    def lap(self, stage: str) -> None:
        t, c = time.perf_counter(), time.thread_time()
        self.stages[stage] = self.stages.get(stage, 0.0) + t - self._t
        self.cpu[stage] = self.cpu.get(stage, 0.0) + c - self._c
        self._t, self._c = t, c


class FrameGraph:
    """Segment, refine, background, fused colour transform: one frame at a time.

    - ``background``: a :class:`~vidharm.composite.BackgroundProvider` (owned by the caller).
    - ``segmenter``: a :class:`~vidharm.protocols.Segmenter` (owned by the caller).
    - ``grids``: a :class:`~vidharm.fitting.GridProvider`, or None (plain composite).
    - ``video``: temporal smoothing of the mask and the segmenter's stream mode; False for stills.
    - ``strict``: an exception in segmentation or compositing propagates (offline: a failed
      file, not a file of background frames); otherwise it gives the privacy fallback (live).
    - ``note(text)``: where one-line notes of fallbacks go (telemetry); ``placeholder(text)``:
      a picture for when even the background fails; ``on_segmenter_failing()``: called after
      :data:`SEGMENTER_RETRIES` failures in a row (live starts a fresh segmenter).

    Attributes a driver may switch between frames: ``background``, ``segmenter``, ``grids``,
    ``harmonize_on``, ``show_mask``, ``strength`` (applied to the grid here, once).
    """

    def __init__(self, cfg: Config, background: BackgroundProvider, segmenter, *,
                 grids: GridProvider | None = None, video: bool = True, strict: bool = False,
                 note: Callable[[str], None] | None = None,
                 placeholder: Callable[[str], np.ndarray | None] | None = None,
                 on_segmenter_failing: Callable[[], None] | None = None):
        self.cfg = cfg
        self.background = background
        self.segmenter = segmenter
        self.grids = grids
        self.video = video
        self.strict = strict
        self.refiner = MaskRefiner(cfg.mask, smooth=video)
        self.harmonize_on = grids is not None
        self.show_mask = False
        self.strength = float(cfg.harmonizer.strength)
        self.work_size = int(cfg.harmonizer.work_size)
        self.note = note
        self.placeholder = placeholder
        self.on_segmenter_failing = on_segmenter_failing
        self.privacy_frames = 0            # frames of the current fallback (0 = none now)
        self.last_mask: np.ndarray | None = None
        self.last_bg: np.ndarray | None = None
        self._privacy_blur = _privacy_blur(cfg)
        self.person_check = PersonCheck.for_config(cfg.segmentation, note)
        self._seg_streak = 0
        self._sized: tuple = (None, False)
        self._logged: set[str] = set()
        self._cut_pending = True
        self._refine_ahead = False          # masks come refined from segment(refine=True)

    # ------------------------------------------------------------------ settings
    def set_config(self, cfg: Config) -> None:
        """New mask / background / strength settings from the next frame on (a new segmenter
        and its person check come through :meth:`set_person_check`)."""
        old, self.cfg = self.cfg, cfg
        if cfg.mask != old.mask:
            self.refiner = MaskRefiner(cfg.mask, smooth=self.video)
        if cfg.background != old.background:
            self._privacy_blur = _privacy_blur(cfg)
        self.strength = float(cfg.harmonizer.strength)
        self.work_size = int(cfg.harmonizer.work_size)

    def set_person_check(self, check: PersonCheck | None) -> None:
        """A new person check (with a new segmenter: built off the frame loop by the driver)."""
        self.close()
        self.person_check = check

    def cut(self, mask: bool = True) -> None:
        """The next frame starts over: mask smoothing (unless ``mask`` is False) and the
        grid's temporal state."""
        if mask:
            self.refiner.reset()
        self._cut_pending = True

    # ------------------------------------------------------------------ one frame
    def segment(self, rgb: np.ndarray, t: float | None, refine: bool = False) -> "Segmented":
        """The first half of :meth:`process`: segmentation, its checks and the person check,
        and with ``refine`` the mask's refinement and smoothing too. Offline it may run ahead
        on another thread (the transcoder's prepare thread), in frame order, while
        :meth:`process` finishes the frame before; nothing it touches is used by the rest (the
        refiner then belongs to that thread: every frame must come through here, in order)."""
        t = 0.0 if t is None else float(t)
        watch = _Stopwatch()
        raw = small = None
        try:
            size = self._input_size() if self.refiner.guided else None
            # the model's own input size: the mask comes back at that size; the refiner's
            # guide is made on the way (see vidharm.mask.segmentation_input)
            seg_in, small = segmentation_input(rgb, size)
            raw = self.segmenter.segment(seg_in, t if self.video else None)
            reason = check_mask(raw, seg_in.shape[:2])
            if reason is None and self.person_check is not None:
                raw = self.person_check(raw, seg_in, t)
            self._seg_streak = 0
        except Exception as exc:
            if self.strict:
                raise
            reason = f"segmentation failed ({type(exc).__name__}: {first_line(exc)})"
            self._seg_streak += 1
            if self._seg_streak == SEGMENTER_RETRIES and self.on_segmenter_failing:
                self.on_segmenter_failing()
        watch.lap("segment")
        seg = Segmented(raw, small, reason, watch.stages, watch.cpu)
        if refine:
            self._refine_ahead = True
            if reason is None:
                seg.mask, seg.reason = self._refine(rgb, seg, watch)
            if seg.reason is not None:     # this frame falls back: smoothing starts over here,
                self.refiner.reset()       # in frame order (see background_only)
        return seg

    def process(self, rgb: np.ndarray, t: float | None,
                segmented: "Segmented | None" = None) -> FrameOut:
        """The output for camera frame ``rgb`` (uint8 (H, W, 3)) at video time ``t`` (None
        for a still). ``segmented``: :meth:`segment` of this frame, when it was done ahead.
        The raw camera frame is never returned."""
        t = 0.0 if t is None else float(t)
        seg = segmented if segmented is not None else self.segment(rgb, t)
        watch = _Stopwatch()
        watch.stages.update(seg.stages)
        watch.cpu.update(seg.cpu)
        mask, reason = self._mask(rgb, seg, watch)
        if reason is not None:
            return self._fallback(rgb, t, reason, watch)
        try:
            h, w = rgb.shape[:2]
            bg = np.asarray(self.background.frame((w, h), t, current=rgb, mask=mask))
            watch.lap("background")
            out = self._apply(rgb, bg, mask, t)
            watch.lap("apply")
        except Exception as exc:
            if self.strict:
                raise
            return self._fallback(rgb, t, f"compositing failed ({type(exc).__name__}: "
                                           f"{first_line(exc)})", watch)
        self.last_mask, self.last_bg = mask, bg
        return FrameOut(out, False, watch.stages, watch.cpu)

    def _mask(self, rgb: np.ndarray, seg: "Segmented", watch: _Stopwatch):
        """(refined mask, None) or (None, why it cannot be used)."""
        if seg.reason is not None:
            return None, seg.reason
        self._recovered()
        if seg.mask is not None:                 # refined ahead (segment(refine=True))
            return seg.mask, None
        return self._refine(rgb, seg, watch)

    def _refine(self, rgb: np.ndarray, seg: "Segmented", watch: _Stopwatch):
        reason = None
        try:
            mask = self.refiner(seg.raw, rgb, small=seg.small)
            if not _all_finite(mask):
                reason = "the refined mask has NaN/inf values"
        except Exception as exc:
            if self.strict:
                raise
            reason = f"mask refinement failed ({type(exc).__name__}: {first_line(exc)})"
        watch.lap("refine")
        return (mask, None) if reason is None else (None, reason)

    def _input_size(self) -> tuple[int, int] | None:
        seg = self.segmenter
        if self._sized[0] is not seg:          # a runtime protocol check once per segmenter
            self._sized = (seg, isinstance(seg, SizedSegmenter))
        return seg.input_size if self._sized[1] else None

    def _apply(self, rgb: np.ndarray, bg: np.ndarray, mask: np.ndarray, t: float) -> np.ndarray:
        if self.show_mask:
            m8 = (mask * 255.0 + 0.5).astype(np.uint8)
            return np.repeat(m8[:, :, None], 3, axis=2)
        grid = None
        if self.harmonize_on and self.grids is not None:
            self.grids.submit(self.job(rgb, bg, mask, t))
            grid = self.grids.grid_at(t)
        if grid is None or self.strength <= 0.0:
            return composite(rgb, bg, mask)
        return apply_grid_fused(rgb, bg, mask, grid.scaled(self.strength))

    def job(self, rgb: np.ndarray, bg: np.ndarray, mask: np.ndarray, t: float) -> FitJob:
        """The job of a frame: its arrays (new every frame, or read-only ones, and never
        written after this) and the step down to the harmonizer's working size."""
        step = job_step(rgb.shape, self.work_size)
        cut, self._cut_pending = self._cut_pending, False
        return FitJob(rgb, bg, mask, t, cut, step)

    # ------------------------------------------------------------------ privacy
    def _recovered(self) -> None:
        if self.privacy_frames:
            log.warning("segmentation usable again after %d background-only frames",
                        self.privacy_frames)
            self.privacy_frames = 0
            self._logged = {k for k in self._logged if not k.startswith("privacy:")}

    def _fallback(self, rgb: np.ndarray, t: float, reason: str, watch: _Stopwatch) -> FrameOut:
        out = self.background_only(rgb, t, reason)
        watch.lap("background")
        return FrameOut(out, True, watch.stages, watch.cpu)

    def background_only(self, rgb: np.ndarray, t: float, reason: str) -> np.ndarray:
        """PRIVACY: the frame to send when the mask cannot be trusted: the background alone
        (for a blur background: a much stronger blur of the room), never the camera frame."""
        key = "privacy:" + reason.split(" (")[0]
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s: sending the background only (privacy) until it recovers", reason)
            if self.note:
                self.note(f"privacy fallback: {reason}")
        self.privacy_frames += 1
        # masks refined ahead on another thread had their smoothing reset there, in order
        self.cut(mask=not self._refine_ahead)
        h, w = rgb.shape[:2]
        try:
            if self.background.needs_current:
                out = self._privacy_blur.frame((w, h), t, current=rgb, mask=None)
            else:
                out = self.background.frame((w, h), t)
            out = np.asarray(out)
            if out.shape == rgb.shape and out.dtype == np.uint8:
                return out
        except Exception:
            pass
        ph = self.placeholder("background unavailable") if self.placeholder else None
        if ph is not None and ph.shape == rgb.shape:
            return ph
        return np.full_like(rgb, 32)

    def close(self) -> None:
        """Free what the graph made itself (the person check's second model); the
        segmenter, background and grid provider belong to the driver."""
        if self.person_check is not None:
            self.person_check.close()

    # ------------------------------------------------------------------ warm-up
    def warm_up(self, size: tuple[int, int]) -> None:
        """Run the stages after segmentation on a blank frame of ``size`` (W, H), so that
        first-call costs do not fall on the first real frames: OpenCV kernel set-up and the
        first touch of every large buffer (the heap keeps them for the next frames). Twice
        through the refiner (the second call runs the temporal smoother), with a mask
        covering nearly the whole frame (the largest box a person can give) and every grid
        kind (4x4 per-channel, 4x4 full, one global transform): before, the second real 1080p
        frame took 181 ms (refine 54, apply 123) and three camera frames were dropped at every
        start."""
        w, h = size
        try:
            frame = np.zeros((h, w, 3), np.uint8)
            raw = np.zeros((h, w), np.float32)
            raw[2:, 2:w - 2] = 1.0
            self.refiner(raw, frame)
            mask = self.refiner(raw, frame)
            bg = self.background.frame((w, h), 0.0, current=frame, mask=mask)
            diagonal = ColorGrid.identity(4, 4).coeffs.copy()
            diagonal[..., [0, 1, 2], [0, 1, 2]] = 0.9
            full = diagonal.copy()
            full[..., 0, 1] = 0.05
            for coeffs in (diagonal, full, full[:1, :1]):   # 4x4 per-channel, 4x4 full, global
                apply_grid_fused(frame, np.asarray(bg), mask, ColorGrid(coeffs))
            if self.person_check is not None:
                size = self._input_size()
                self.person_check.warm_up(segmentation_input(frame, size)[0])
        except Exception as exc:
            log.debug("warm-up skipped: %s", first_line(exc))
        finally:
            self.refiner.reset()
