"""Where the frame graph's colour grid comes from: a harmonizer fitted on low-res jobs.

    graph ──FitJob (frame, background, mask, t, step down)──▶ provider.submit(job)
    graph ◀──────────── ColorGrid for the frame at t ───── provider.grid_at(t)

:class:`GridFitter` is the work itself, the same for every driver: composite at low
resolution, the stream's :class:`~vidharm.temporal.GridTracker` (change, cut, carried
statistics), ``harmonizer.fit`` (relative to the camera frame, ``harmonizer.relative``:
:func:`vidharm.color.relative_fit_of`), optionally a per-channel refit for a cheaper apply
(:func:`vidharm.color.cheap_refits`), the tracker's smoothing. Providers differ only in when
it runs: :class:`SyncGrids` (offline: in the frame loop, on every frame) and
:class:`vidharm.live.worker.HarmonizerWorker` (live: its own thread, latest job wins, never
blocking the frame loop).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from .color import ColorGrid, cheap_refits, diagonal_refit, relative_fit_of
from .composite import composite
from .temporal import GridTracker, SmoothingTuning

__all__ = ["FitJob", "job_step", "GridSnapshot", "GridFitter", "GridProvider", "SyncGrids",
           "GRID_MODES", "cheap_form"]

#: how the harmonizer's colour grid is applied per frame (``--grid``)
GRID_MODES = ("auto", "full", "diagonal")


def cheap_form(grid_mode: str, device: str) -> bool:
    """Whether a video driver publishes a cheap form of the harmonizer's grid (see
    :class:`GridFitter`): ``grid_mode`` "diagonal", or "auto" with the model on the CPU (on
    CUDA the full affine grid is applied). Raises ConfigError for an unknown mode."""
    if grid_mode not in GRID_MODES:
        from .errors import ConfigError
        raise ConfigError(f"unknown grid mode '{grid_mode}'", "use auto, full or diagonal")
    if grid_mode == "auto":
        return device != "cuda"
    return grid_mode == "diagonal"


@dataclass(frozen=True)
class FitJob:
    """One frame for the harmonizer: the arrays as the frame loop has them (never written
    after the job is made) and the subsampling ``step`` to the harmonizer's working size."""

    rgb: np.ndarray         # uint8 (H, W, 3): the camera frame
    bg: np.ndarray          # uint8 (H, W, 3): the new background
    mask: np.ndarray        # float32 (H, W) in [0, 1]
    t: float                # video time, seconds
    cut: bool = False       # start the smoothing over (new clip, camera reconnected, ...)
    step: int = 1           # every step-th row and column

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb, bg, mask) subsampled by ``step`` as new contiguous arrays (made by whoever
        takes the job, not by the frame loop): ``a[:h - h % step:step, :w - w % step:step]``,
        the rows and columns past the last whole step left out. OpenCV's nearest-neighbour
        resize by an exact integer factor picks those same pixels, 0.16 ms for a 720p frame
        where copying the strided view takes about 1 ms."""
        return (_subsample(self.rgb, self.step), _subsample(self.bg, self.step),
                _subsample(np.asarray(self.mask, np.float32), self.step))


def job_step(shape: tuple[int, ...], work_size: int) -> int:
    """The subsampling step from a frame of ``shape`` to the harmonizer's working size: the
    job's short side is the nearest to ``work_size`` a whole step gives (720p at 256: step 3,
    240 rows: a phnet-grid fit 3.92 ms instead of step 2's 5.45 on 40 real 720p jobs, the
    grid 0.18 grey levels on the person from a fit on every pixel where step 2's is 0.05 and
    step 2 shifted by one pixel 0.22; 1080p: 4)."""
    return max(1, int(round(min(shape[:2]) / max(16, int(work_size)))))


def _subsample(a: np.ndarray, step: int) -> np.ndarray:
    if step == 1:
        return np.ascontiguousarray(a)
    h, w = a.shape[:2]
    v = a[:h - h % step, :w - w % step]
    rows_packed = v.strides[1] == v.itemsize * (v.shape[2] if v.ndim == 3 else 1) and \
        (v.ndim == 2 or v.strides[2] == v.itemsize)
    if not rows_packed or v.shape[0] < step or v.shape[1] < step:
        return np.ascontiguousarray(v[::step, ::step])
    return cv2.resize(v, (v.shape[1] // step, v.shape[0] // step),
                      interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class GridSnapshot:
    """A published fit (immutable: a frame loop on another thread just reads it)."""

    grid: ColorGrid
    seq: int
    epoch: int          # changes on a cut: shown grids jump instead of easing
    t: float            # video time of the frame it was fitted on
    fit_s: float


@runtime_checkable
class GridProvider(Protocol):
    """What the frame graph asks for a grid: hand over this frame's job, then the grid to
    apply to the frame at ``t`` (None: none yet, plain composite)."""

    def submit(self, job: FitJob) -> None: ...

    def grid_at(self, t: float) -> ColorGrid | None: ...

    def force_cut(self) -> None: ...

    def close(self) -> None: ...


#: with ``diagonal``: the global form is chosen when its error is on average (EMA over fits)
#: less than GLOBAL_ENTER grey levels above the per-channel grid's, and left again above
#: GLOBAL_LEAVE (hysteresis: the form changes seldom, each change is one small jump)
GLOBAL_ENTER = 0.15
GLOBAL_LEAVE = 0.4


class GridFitter:
    """``harmonizer`` plus the stream's tracker: one :class:`FitJob` -> the smoothed grid.

    ``diagonal``: publish a cheap form of the harmonizer's full affine grid (about half the
    full-resolution apply's cost or less), fitted to what that grid does to this frame's
    person (:func:`vidharm.color.cheap_refits`): the per-channel (gain, offset) grid, or one
    global 3x4 transform while that is about as close (:data:`GLOBAL_ENTER`,
    :data:`GLOBAL_LEAVE`); ``diag_error`` is the mean difference over the person of the form
    published, grey levels (EMA), ``global_share`` the share of fits published global.

    ``relative``: the harmonizer's transform for the composite relative to its transform for
    the job's camera frame (:func:`vidharm.color.relative_fit_of`; two fits per job, the
    identity without any fit when the background is the camera frame itself). A
    :class:`~vidharm.harmonize.base.Streaming` harmonizer then carries no statistics across
    frames (the camera frame's fit would mix into them); the published grid is smoothed as
    always."""

    def __init__(self, harmonizer, tuning: SmoothingTuning | None = None, diagonal: bool = False,
                 relative: bool = False):
        self.harmonizer = harmonizer
        self.relative = relative
        self.tracker = GridTracker(tuning)
        self.diagonal = diagonal
        self.diag_error: float | None = None
        self.last_change = 1.0
        self._seq = 0
        self.allow_global = True             # False: the per-channel grid only
        self._gap: float | None = None       # EMA of (global error - per-channel error)
        self._global = False
        self._cheap_fits = self._global_fits = 0

    @property
    def tuning(self) -> SmoothingTuning:
        return self.tracker.tuning

    def set_grid_mode(self, grid_mode: str, device: str) -> None:
        """What to publish for a ``--grid`` mode with the model on ``device``: a cheap form
        (:func:`cheap_form`), the global one allowed only with "auto"."""
        self.diagonal = cheap_form(grid_mode, device)
        self.allow_global = grid_mode == "auto"

    @property
    def global_share(self) -> float | None:
        return self._global_fits / self._cheap_fits if self._cheap_fits else None

    def fit(self, job: FitJob, forced: bool = False) -> GridSnapshot:
        t0 = time.perf_counter()
        rgb, bg, mask = job.dense()
        forced = forced or job.cut
        comp = composite(rgb, bg, mask)
        change, cut = self.tracker.before_fit(None if self.relative else self.harmonizer,
                                              rgb, bg, mask, job.t, forced)
        self.last_change = change
        grid = relative_fit_of(self.harmonizer)(comp, mask, rgb) if self.relative else \
            self.harmonizer.fit(comp, mask)
        if not np.isfinite(grid.coeffs).all():
            raise FloatingPointError("the harmonizer produced a non-finite colour transform")
        if self.diagonal and not grid.is_diagonal and grid.shape != (1, 1):
            grid, err = self._cheap(grid, comp, mask)
            self.diag_error = err if self.diag_error is None else \
                self.diag_error + 0.1 * (err - self.diag_error)
        grid = self.tracker.after_fit(grid, job.t, change, cut, forced)
        self._seq += 1
        return GridSnapshot(grid, self._seq, self.tracker.epoch, job.t,
                            time.perf_counter() - t0)

    def _cheap(self, grid: ColorGrid, comp: np.ndarray, mask: np.ndarray) -> tuple[ColorGrid, float]:
        if not self.allow_global:
            return diagonal_refit(grid, comp, mask)
        (diag, err_d), (glob, err_g) = cheap_refits(grid, comp, mask)
        gap = err_g - err_d
        self._gap = gap if self._gap is None else self._gap + 0.2 * (gap - self._gap)
        if self._global and self._gap > GLOBAL_LEAVE:
            self._global = False
        elif not self._global and self._gap < GLOBAL_ENTER:
            self._global = True
        self._cheap_fits += 1
        if self._global:
            self._global_fits += 1
            return glob, err_g
        return diag, err_d

    def reset(self) -> None:
        self.tracker.reset()
        self._gap, self._global = None, False


class SyncGrids:
    """Offline provider: fits jobs in the caller's loop. ``max_hz`` 0: every job, so each
    frame gets the grid fitted on itself; else at most ``max_hz`` fits per second of video
    time (the frames between keep the last fit, as live; a cut is always fitted at once).
    Errors propagate (a transcode fails rather than writing a wrong file)."""

    def __init__(self, fitter: GridFitter, max_hz: float = 0.0):
        self.fitter = fitter
        self.latest: GridSnapshot | None = None
        self._cut = False
        self.min_interval = 1.0 / max_hz if max_hz > 0 else 0.0
        self.fits = 0

    def submit(self, job: FitJob) -> None:
        last = self.latest
        if (last is not None and not (self._cut or job.cut)
                and 0.0 <= job.t - last.t < self.min_interval - 1e-4):
            return
        self.latest = self.fitter.fit(job, forced=self._cut)
        self.fits += 1
        self._cut = False

    def grid_at(self, t: float) -> ColorGrid | None:
        return self.latest.grid if self.latest is not None else None

    def force_cut(self) -> None:
        self._cut = True

    def reset(self) -> None:
        self.fitter.reset()
        self.latest = None

    def close(self) -> None:
        """The harmonizer belongs to whoever made it; nothing to free here."""
