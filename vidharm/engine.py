"""The live engine behind ``vidharm run``: camera in, "PHNet Camera" out, in real time.

Three threads, none of which waits for another's slow work::

    capture thread     source frames --> [frame mailbox, 1 slot, latest wins] --+
                                          (a frame replaced unread = dropped)   |
    frame loop (main)  take newest frame; segment; refine + smooth mask;  <-----+
                       background; apply the LATEST published colour grid at full
                       resolution with apply_grid_fused; send to the sink.
                       Posts a low-res (frame, background, mask) job --+
    harmonizer thread  [job mailbox, 1 slot, latest wins] <-----------+
                       composite at low res; fit a ColorGrid (any harmonizer: grid
                       harmonizers directly, others by fitting a grid to their output);
                       smooth it over time ADAPTIVELY; publish an immutable snapshot.

The frame loop never waits for the model: it reads the latest snapshot (an attribute read of
an immutable object) and eases the grid it shows toward it over about half a refresh interval,
so a 10 Hz harmonizer does not step visibly at 30 fps.

Temporal smoothing (:class:`ChangeDetector`, :class:`GridSmoother`): cheap scene statistics
of each job (the person's mean colour as the camera sees it, the background's mean colour, the
mask's coverage) are compared with a slowly following reference. Steady light and pose ->
strong smoothing (time constant ``tau_steady``); a real change (light switched on, person
enters, background switched) -> fast response (``tau_fast``), the two blended smoothly by how
big the change is; a huge change or an explicit cut (background switched, camera reconnected,
harmonization turned on) -> the state is reset and the new fit is used at once. Learned
harmonizers that carry PN/PFE statistics across frames (``set_streaming(s)`` /
``reset_stream()``) get their EMA strength set the same way before each fit.

It never lets the user down:

- no camera frames (unplugged, read errors): the last good OUTPUT frame keeps being sent at
  the frame rate, then after ``placeholder_s`` a placeholder (the background, dimmed, with a
  line of text); the camera source reconnects by itself (:class:`vidharm_plugins.sources.
  CameraSource`).
- the harmonizer raises: the last good grid stays in use (or the plain composite before the
  first one); logged once per kind of error; retried with a growing pause; a CUDA error or
  out-of-memory moves the harmonizer to the CPU and goes on.
- privacy: if segmentation raises or its mask is garbage (wrong shape, NaN/inf, values out
  of range, covering the whole frame), or anything after it fails, the frame sent is the
  background alone (a strong blur of the room for ``--background blur``), never the raw
  camera frame. An empty mask (nobody there) naturally gives the background.
- :meth:`LiveEngine.stop` (Ctrl-C / SIGTERM in the CLI) ends the loop; :meth:`shutdown`
  stops the threads, releases the camera, closes the sink (the MP4 is finished), frees the
  segmenter and harmonizer.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from .color import ColorGrid, apply_grid_fused, fit_grid
from .composite import BackgroundProvider, BlurBackground, composite, cover_crop, make_background
from .config import Config, load_config
from .errors import ConfigError, VidharmError
from .mask import segmentation_input
from .telemetry import Telemetry

log = logging.getLogger("vidharm.live")

__all__ = ["Mailbox", "SmoothingTuning", "ChangeDetector", "GridSmoother", "GridSnapshot",
           "HarmonizerWorker", "LiveEngine", "ControlFile", "check_mask", "scene_stats"]


# ------------------------------------------------------------------------------ mailbox
class Mailbox:
    """A small latest-wins hand-over between threads (``capacity`` items, default one).

    ``put(item)`` never blocks: when full, the OLDEST item is discarded and True is returned
    (a dropped frame). ``get(timeout)`` waits for an item and takes the oldest one kept (None
    on timeout or after :meth:`close`). With capacity 2 a single slow frame in the consumer
    costs one frame of latency instead of a dropped frame; the consumer then catches up."""

    def __init__(self, capacity: int = 1):
        from collections import deque
        self._cv = threading.Condition()
        self._items: "deque" = deque()
        self.capacity = max(1, int(capacity))
        self._closed = False
        self.replaced = 0

    def put(self, item) -> bool:
        with self._cv:
            dropped = len(self._items) >= self.capacity
            if dropped:
                self._items.popleft()
                self.replaced += 1
            self._items.append(item)
            self._cv.notify()
            return dropped

    def get(self, timeout: float | None = None):
        with self._cv:
            if not self._items and not self._closed:
                self._cv.wait(timeout)
            if not self._items:
                return None
            return self._items.popleft()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __bool__(self) -> bool:
        return bool(self._items)


# ------------------------------------------------------------------------------ smoothing
def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


def _ramp(value: float, lo: float, hi: float) -> float:
    return _smoothstep((value - lo) / max(hi - lo, 1e-9))


@dataclass
class SmoothingTuning:
    """How the harmonizer's output is smoothed over time.

    ``mode``: ``adaptive`` (default), ``fixed`` (one EMA time constant, ``tau_steady``; resets
    only on explicit cuts) or ``off`` (every fit used as is). Time constants are seconds of
    video time, so smoothing does not depend on the harmonizer's refresh rate. Thresholds are
    grey levels (0..255) of the change of a mean colour, or a fraction of the frame for the
    mask's coverage: below ``*_lo`` is steady, above ``*_hi`` is a real change, above
    ``cut_*`` is a cut, and so is a person appearing in or leaving an empty frame.
    """

    mode: str = "adaptive"
    tau_steady: float = 0.5
    tau_fast: float = 0.04
    tau_ref: float = 0.2          # how fast the change detector's reference follows the scene
    fg_lo: float = 3.0
    fg_hi: float = 10.0
    bg_lo: float = 3.0
    bg_hi: float = 10.0
    cov_lo: float = 0.03
    cov_hi: float = 0.12
    grid_lo: float = 2.5          # grey levels of ColorGrid.distance between fit and state
    grid_hi: float = 10.0
    cut_fg: float = 70.0
    cut_bg: float = 45.0
    cut_cov: float = 0.25
    pn_steady: float = 0.8        # PN/PFE statistics EMA per fit while steady (learned models)
    display_tau: float | None = None   # frame-loop easing; None = half the refresh interval

    def __post_init__(self):
        if self.mode not in ("adaptive", "fixed", "off"):
            raise ConfigError(f"unknown smoothing mode '{self.mode}'", "use adaptive, fixed or off")

    def pn_smoothing(self, change: float) -> float:
        if self.mode == "off":
            return 0.0
        if self.mode == "fixed":
            return self.pn_steady
        return self.pn_steady * (1.0 - change)


@dataclass(frozen=True)
class SceneStats:
    fg: np.ndarray      # (3,) mean colour of the person as the camera sees it, 0..255
    bg: np.ndarray      # (3,) mean colour of the new background, 0..255
    coverage: float     # mask mean, 0..1


def scene_stats(rgb: np.ndarray, bg: np.ndarray, mask: np.ndarray, step: int = 2) -> SceneStats:
    """Cheap statistics of a low-res job (subsampled by ``step``)."""
    m = np.ascontiguousarray(mask[::step, ::step], np.float32).reshape(-1)
    x = rgb[::step, ::step].reshape(-1, 3).astype(np.float32)
    # the background's mean with OpenCV's (SIMD, float64) sum: 0.18 ms instead of numpy's
    # float32 mean(0) 0.84 ms for a 720p job
    b = np.asarray(cv2.mean(np.ascontiguousarray(bg[::step, ::step]))[:3], np.float32)
    n = float(m.sum())
    fg = (m @ x) / n if n > 1.0 else np.zeros(3, np.float32)
    return SceneStats(fg, b, n / max(m.size, 1))


class ChangeDetector:
    """How much the scene changed (0 = steady .. 1 = a real change) and whether it was a cut,
    compared with a reference that follows the scene with time constant ``tau_ref``."""

    def __init__(self, tuning: SmoothingTuning):
        self.tuning = tuning
        self.ref: SceneStats | None = None
        self._t: float | None = None
        self.last_change = 0.0

    def reset(self) -> None:
        self.ref = None
        self._t = None

    def update(self, s: SceneStats, t: float, force_cut: bool = False) -> tuple[float, bool]:
        k = self.tuning
        if self.ref is None or force_cut:
            self.ref, self._t = s, t
            self.last_change = 1.0
            return 1.0, True
        ref = self.ref
        both = s.coverage > 0.01 and ref.coverage > 0.01
        d_fg = float(np.abs(s.fg - ref.fg).max()) if both else 0.0
        d_bg = float(np.abs(s.bg - ref.bg).max())
        d_cov = abs(s.coverage - ref.coverage)
        appeared = (s.coverage > 0.03) != (ref.coverage > 0.03) and d_cov > 0.02
        cut = d_fg > k.cut_fg or d_bg > k.cut_bg or d_cov > k.cut_cov or appeared
        change = max(_ramp(d_fg, k.fg_lo, k.fg_hi), _ramp(d_bg, k.bg_lo, k.bg_hi),
                     _ramp(d_cov, k.cov_lo, k.cov_hi))
        dt = max(0.0, t - self._t) if self._t is not None else 0.0
        self._t = t
        if cut:
            self.ref = s
        else:
            a = 1.0 - math.exp(-dt / max(k.tau_ref, 1e-6)) if dt > 0 else 0.0
            self.ref = SceneStats(ref.fg + a * (s.fg - ref.fg), ref.bg + a * (s.bg - ref.bg),
                                  ref.coverage + a * (s.coverage - ref.coverage))
        self.last_change = 1.0 if cut else change
        return self.last_change, cut


class GridSmoother:
    """EMA of colour grids in video time: ``state += (1 - exp(-dt / tau)) * (new - state)``,
    with ``tau`` from ``tau_steady`` (change 0) to ``tau_fast`` (change 1), log-interpolated;
    the change is the larger of the scene's and the grid's own (``ColorGrid.distance``)."""

    def __init__(self, tuning: SmoothingTuning):
        self.tuning = tuning
        self.state: ColorGrid | None = None
        self._t: float | None = None
        self.last_tau = 0.0

    def reset(self) -> None:
        self.state = None
        self._t = None

    def update(self, new: ColorGrid, t: float, change: float = 0.0, cut: bool = False,
               forced: bool = False) -> ColorGrid:
        k = self.tuning
        prev_t, self._t = self._t, t
        if k.mode == "off":
            self.state = new
            return new
        snap = (self.state is None or self.state.shape != new.shape or forced
                or (cut and k.mode == "adaptive"))
        if snap:
            self.state = new
            return new
        dt = t - prev_t if prev_t is not None else 0.0
        if dt <= 0:
            dt = 1.0 / 30.0
        if k.mode == "fixed":
            tau = k.tau_steady
        else:
            d_grid = 255.0 * self.state.distance(new)
            c = max(change, _ramp(d_grid, k.grid_lo, k.grid_hi))
            tau = math.exp(math.log(k.tau_steady) + c * (math.log(k.tau_fast) - math.log(k.tau_steady)))
        self.last_tau = tau
        a = 1.0 - math.exp(-dt / max(tau, 1e-6))
        self.state = self.state.lerp(new, a)
        return self.state


# ------------------------------------------------------------------------------ harmonizer
@dataclass(frozen=True)
class GridSnapshot:
    """What the harmonizer thread publishes (immutable: the frame loop just reads it)."""

    grid: ColorGrid
    seq: int
    epoch: int          # changes on a cut: the frame loop jumps instead of easing
    t: float            # video time of the frame it was fitted on
    fit_s: float


def _is_cuda_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc)
    low = text.lower()
    return ("OutOfMemory" in name or "CUDA" in text or "CUBLAS" in text or "cuDNN" in text
            or ("cuda" in low and ("memory" in low or "device" in low)))


def default_harmonizer_factory(cfg: Config):
    from .registry import registry
    return registry.harmonizers.create(cfg.harmonizer.name, cfg.harmonizer)


def _device_of(h, cfg: Config) -> str:
    for obj in (h, getattr(h, "net", None)):
        dev = getattr(obj, "device", None)
        if isinstance(dev, str) and dev in ("cpu", "cuda"):
            return dev
    dev = cfg.harmonizer.device
    return dev if dev in ("cpu", "cuda") else "cpu"


def is_diagonal(grid: ColorGrid) -> bool:
    c = grid.coeffs
    off = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    return not any(np.any(c[..., i, j]) for i, j in off)


def diagonal_refit(grid: ColorGrid, comp: np.ndarray, mask: np.ndarray, short_side: int = 64,
                   ridge: float = 1e-2) -> tuple[ColorGrid, float]:
    """The per-channel (gain, offset) grid closest to the full affine ``grid`` on this frame.

    A full 3x4 grid costs about twice as much to apply at full resolution as a diagonal one
    (12 coefficient planes and 9 products per pixel instead of 6 and 3: ~12 vs ~5 ms at 720p
    on one core), which on a 2-core CPU decides between 30 fps and dropped frames. The diagonal
    grid is fitted to what the full grid does to this frame's person: per cell (the same soft
    cell weights as :func:`vidharm.color.fit_grid`) and per channel, ``T(x)_c ~ a x_c + b``,
    least squares over the mask at ``short_side`` px (64: 0.8 ms a fit; 96 took 2.0 ms for
    coefficients within 0.001 and the same error), with a ridge toward the full grid's own
    diagonal where there is little evidence. Returns the grid and the mean absolute error of
    the approximation over the person, in grey levels (0..255).
    """
    from .color import cell_weights
    step = max(1, min(mask.shape) // short_side)
    x = np.ascontiguousarray(comp[::step, ::step], np.float32).reshape(-1, 3) / 255.0
    m = np.ascontiguousarray(mask[::step, ::step], np.float32)
    h, w = m.shape
    gh, gw = grid.shape
    wc = cell_weights(h, w, gh, gw)                                   # (K, N) rows per cell
    # the full transform at every sample: coefficients interpolated as the apply does
    per_px = np.tensordot(wc.T, grid.coeffs.reshape(gh * gw, 12), axes=1).reshape(-1, 3, 4)
    y = np.einsum("nij,nj->ni", per_px[:, :, :3], x) + per_px[:, :, 3]
    wk = wc * m.reshape(1, -1)                                        # (K, N)
    n = wk.sum(1)[:, None]                                            # (K, 1)
    sx, sy = wk @ x, wk @ y                                           # (K, 3)
    sxx, sxy = wk @ (x * x), wk @ (x * y)
    c = grid.coeffs.reshape(gh * gw, 3, 4)
    a0, b0 = c[:, [0, 1, 2], [0, 1, 2]], c[:, :, 3]                   # (K, 3) priors
    lam = ridge * np.maximum(n, 1.0)
    lam_b = 0.1 * lam
    # minimise sum w (a x + b - y)^2 + lam (a - a0)^2 + lam_b (b - b0)^2  (2x2 per cell, channel)
    m11, m12, m22 = sxx + lam, sx, n + lam_b
    r1, r2 = sxy + lam * a0, sy + lam_b * b0
    det = m11 * m22 - m12 * m12
    a = (r1 * m22 - m12 * r2) / det
    b = (m11 * r2 - m12 * r1) / det
    out = np.zeros_like(c)
    out[:, [0, 1, 2], [0, 1, 2]] = a
    out[:, :, 3] = b
    diag = ColorGrid(out.reshape(gh, gw, 3, 4).astype(np.float32))
    per_px_d = np.tensordot(wc.T, out.reshape(gh * gw, 12), axes=1).reshape(-1, 3, 4)
    yd = per_px_d[:, [0, 1, 2], [0, 1, 2]] * x + per_px_d[:, :, 3]
    mw = m.reshape(-1)
    err = float((np.abs(yd - y).mean(1) * mw).sum() / max(mw.sum(), 1e-6)) * 255.0
    return diag, err


#: default cap on harmonizer refreshes per second when the model runs on the CPU (the frame
#: loop needs the rest of a 2-core machine); on CUDA there is no cap
CPU_REFRESH_HZ = 15.0
#: with the automatic cap on the CPU, the refresh rate while the scene is steady: the grid is
#: smoothed over ``tau_steady`` (0.5 s) then anyway, so more fits change nothing visible; it
#: rises to the cap with the change detector's measure of change (light switched on, person
#: moving in), and stays up for :data:`CHANGE_HOLD_S` after one (11: the target is >= 10 Hz
#: and a fit waits up to a frame for its job)
CPU_STEADY_HZ = 11.0
CHANGE_HOLD_S = 0.5
#: on the CPU the harmonizer thread uses at most this fraction of one core (see
#: :meth:`HarmonizerWorker._pause_after`)
CPU_BUDGET = 0.4
#: ... except that the refresh rate is kept at this floor when the budget alone would go
#: below it (a fit slowed by a busy machine: 80 ms fits at 0.4 are exactly 5 Hz)
CPU_MIN_HZ = 5.0


class HarmonizerWorker:
    """Fits colour grids beside the frame loop and publishes smoothed snapshots.

    ``submit(job)`` hands over the newest low-res job (latest wins); :attr:`latest` is the
    newest :class:`GridSnapshot` (None before the first). ``threaded=False`` runs nothing by
    itself: call :meth:`step` (deterministic use in benchmarks and tests). ``max_hz`` caps
    the refresh rate (None = as fast as jobs come; "auto" = :data:`CPU_REFRESH_HZ` on the
    CPU, no cap on CUDA).
    """

    def __init__(self, cfg: Config, factory: Callable[[Config], Any] | None = None,
                 tuning: SmoothingTuning | None = None, telemetry: Telemetry | None = None,
                 max_hz: float | str | None = "auto", threaded: bool = True,
                 model_threads: int = 1, cpu_budget: float | None = CPU_BUDGET,
                 grid_mode: str = "auto"):
        self.cfg = cfg
        self._factory = factory or default_harmonizer_factory
        self.tuning = tuning or SmoothingTuning()
        self.telemetry = telemetry
        self.max_hz = max_hz
        self.cpu_budget = cpu_budget
        if grid_mode not in ("auto", "full", "diagonal"):
            raise ConfigError(f"unknown grid mode '{grid_mode}'", "use auto, full or diagonal")
        self.grid_mode = grid_mode
        self.diag_error: float | None = None     # EMA of the diagonal approximation, grey levels
        self.threaded = threaded
        self.model_threads = model_threads
        self.detector = ChangeDetector(self.tuning)
        self.smoother = GridSmoother(self.tuning)
        self.harmonizer = self._build(cfg)
        self._auto_hz = max_hz == "auto"
        self._set_auto_hz()
        self.latest: GridSnapshot | None = None
        self.errors = 0
        self.fits = 0
        self.refresh_interval = 0.1          # EMA of video time between publishes
        self.recent_change = 1.0             # the largest recent change (decays, see step)
        self._seq = 0
        self._epoch = 0
        self._cut_requests = 0       # incremented by other threads; compared, never reset
        self._cuts_seen = 0
        self._box = Mailbox()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_cfg: Config | None = None
        self._logged: set[str] = set()
        self._streak = 0
        self._last_t: float | None = None

    # ------------------------------------------------------------------ building
    def _build(self, cfg: Config):
        try:
            h = self._factory(cfg)
        except VidharmError:
            raise
        except Exception as exc:
            if cfg.harmonizer.device != "cpu" and _is_cuda_error(exc):
                log.warning("harmonizer '%s' could not start on %s (%s); using the CPU",
                            cfg.harmonizer.name, cfg.harmonizer.device, _first_line(exc))
                cfg = _with_device(cfg, "cpu")
                self.cfg = cfg
                h = self._factory(cfg)
            else:
                raise
        if hasattr(h, "smoothing"):
            try:
                # the engine smooths the grid (adaptively) and sets the network's statistics
                # EMA itself before each fit: the harmonizer's own fixed EMA would double it
                h.smoothing = 0.0
            except Exception:
                pass
        self._limit_torch_threads(cfg)
        return h

    def _limit_torch_threads(self, cfg: Config) -> None:
        import sys
        torch = sys.modules.get("torch")
        if torch is not None and self.model_threads and cfg.harmonizer.device != "cuda":
            try:
                if torch.get_num_threads() != self.model_threads:
                    torch.set_num_threads(self.model_threads)
            except Exception:  # pragma: no cover
                pass

    @property
    def name(self) -> str:
        return self.cfg.harmonizer.name

    @property
    def diagonal(self) -> bool:
        """Whether published grids are diagonal (per-channel gain/offset): ``grid_mode``
        "diagonal", or "auto" with the model on the CPU (see :func:`diagonal_refit`)."""
        if self.grid_mode == "auto":
            return self.device != "cuda"
        return self.grid_mode == "diagonal"

    def _set_auto_hz(self) -> None:
        if self._auto_hz:      # leave the CPU to the frame loop; on a GPU fit every frame
            self.max_hz = None if self.device == "cuda" else CPU_REFRESH_HZ

    @property
    def device(self) -> str:
        """Where the model really runs: the harmonizer's (or its network's) ``device``,
        else the configured one ("cpu" for harmonizers without a device)."""
        return _device_of(self.harmonizer, self.cfg)

    # ------------------------------------------------------------------ control
    def start(self) -> "HarmonizerWorker":
        if self.threaded and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vidharm-harmonizer",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._box.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("harmonizer thread did not stop within %.0f s", timeout)
        self._close_harmonizer(self.harmonizer)

    def submit(self, job) -> None:
        self._box.put(job)

    def force_cut(self) -> None:
        """The next fit starts over (background switched, harmonization turned back on...)."""
        self._cut_requests += 1

    def reconfigure(self, cfg: Config) -> None:
        """Use a new harmonizer configuration from the next job on (built on this thread)."""
        if self.threaded:
            self._pending_cfg = cfg
        else:
            self._apply_cfg(cfg)

    def _apply_cfg(self, cfg: Config) -> None:
        try:
            h = self._build(cfg)
        except Exception as exc:
            log.warning("could not switch to harmonizer '%s' (%s); keeping '%s'",
                        cfg.harmonizer.name, _first_line(exc), self.cfg.harmonizer.name)
            return
        old, self.harmonizer = self.harmonizer, h
        self.cfg = cfg
        self._close_harmonizer(old)
        self._set_auto_hz()
        self.force_cut()

    @staticmethod
    def _close_harmonizer(h) -> None:
        close = getattr(h, "close", None)
        if close:
            try:
                close()
            except Exception:  # pragma: no cover
                pass

    # ------------------------------------------------------------------ work
    def step(self, job) -> GridSnapshot:
        """One fit on ``job`` = (rgb, background, mask, t, cut) at low resolution."""
        rgb, bg, mask, t, cut_flag = job
        t0 = time.perf_counter()
        c0 = time.thread_time()
        rgb, bg = np.ascontiguousarray(rgb), np.ascontiguousarray(bg)
        mask = np.ascontiguousarray(mask, dtype=np.float32)
        requests = self._cut_requests
        forced = bool(cut_flag) or requests != self._cuts_seen
        self._cuts_seen = requests
        comp = composite(rgb, bg, mask)
        stats = scene_stats(rgb, bg, mask)
        change, cut = self.detector.update(stats, t, force_cut=forced)
        held = self.recent_change
        if self._last_t is not None and t > self._last_t:
            held *= math.exp(-(t - self._last_t) / CHANGE_HOLD_S)
        self.recent_change = max(change, held)
        h = self.harmonizer
        if cut:
            h.reset()
            reset_stream = _streaming_hook(h, "reset_stream")
            if reset_stream:
                reset_stream()
        set_streaming = _streaming_hook(h)
        if set_streaming:
            set_streaming(self.tuning.pn_smoothing(change))
        grid = h.fit(comp, mask)
        if grid is None:                         # not a grid harmonizer: fit a grid to it
            out = h(comp, mask)
            g = int(getattr(self.cfg.harmonizer, "grid", 4) or 4)
            s = max(1, min(mask.shape) // 128)
            grid = fit_grid(comp[::s, ::s], out[::s, ::s], mask[::s, ::s], (g, g))
        if not np.isfinite(grid.coeffs).all():
            raise FloatingPointError("the harmonizer produced a non-finite colour transform")
        if self.diagonal and not is_diagonal(grid):
            grid, err = diagonal_refit(grid, comp, mask)
            self.diag_error = err if self.diag_error is None else \
                self.diag_error + 0.1 * (err - self.diag_error)
        grid = self.smoother.update(grid, t, change, cut, forced=forced)
        fit_s = time.perf_counter() - t0
        if self.telemetry is not None and self.threaded:   # (sync: inside "apply")
            self.telemetry.cpu("harmonizer", time.thread_time() - c0)
        if cut or forced:
            self._epoch += 1
        if self._last_t is not None and t > self._last_t:
            self.refresh_interval += 0.2 * (min(t - self._last_t, 1.0) - self.refresh_interval)
        self._last_t = t
        self._seq += 1
        self.fits += 1
        snap = GridSnapshot(grid, self._seq, self._epoch, t, fit_s)
        self.latest = snap                        # one reference assignment: atomic
        if self.telemetry is not None:
            self.telemetry.refresh(fit_s)
        return snap

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._box.get(timeout=0.2)
            if job is None:
                continue
            if self._pending_cfg is not None:
                cfg, self._pending_cfg = self._pending_cfg, None
                self._apply_cfg(cfg)
            started = time.monotonic()
            try:
                self.step(job)
                self._streak = 0
            except Exception as exc:  # never let the thread die: keep the last good grid
                self._on_error(exc)
            self._stop.wait(self._pause_after(started, time.monotonic()))

    def _pause_after(self, started: float, now: float) -> float:
        """Seconds to wait before the next fit: the refresh cap, and on the CPU the budget
        (a fit of f seconds is followed by a pause so the thread uses at most ``cpu_budget``
        of a core: a 50 ms model refreshes at about 8 Hz with 0.4, a 5 ms one at the cap),
        but never a longer pause than keeps :data:`CPU_MIN_HZ` (a 100 ms fit then takes half
        a core, a fit slower than 200 ms runs back to back). With the automatic cap the rate
        follows the scene: :data:`CPU_STEADY_HZ` while it is steady, up to the cap while it
        changes (:attr:`recent_change`)."""
        period = 1.0 / self.max_hz if self.max_hz else 0.0
        if self._auto_hz and self.max_hz and CPU_STEADY_HZ < self.max_hz:
            # the refresh the scene needs: CPU_STEADY_HZ while steady, the cap on a change
            hz = CPU_STEADY_HZ + (self.max_hz - CPU_STEADY_HZ) * min(1.0, self.recent_change)
            period = 1.0 / hz
        if self.cpu_budget and self.device != "cuda":
            budget_period = (now - started) / self.cpu_budget
            floor_period = 1.0 / CPU_MIN_HZ if CPU_MIN_HZ else budget_period
            period = max(period, min(budget_period, floor_period))
        return max(0.0, started + period - now)

    def _on_error(self, exc: BaseException) -> None:
        self.errors += 1
        self._streak += 1
        if self.cfg.harmonizer.device != "cpu" and _is_cuda_error(exc):
            msg = (f"harmonizer '{self.name}' failed on {self.cfg.harmonizer.device} "
                   f"({_first_line(exc)}); moving it to the CPU")
            log.warning(msg)
            if self.telemetry:
                self.telemetry.note(msg)
            self._try_cuda_cleanup()
            self._apply_cfg(_with_device(self.cfg, "cpu"))
            return
        key = f"{type(exc).__name__}: {_first_line(exc)}"
        if key not in self._logged:
            self._logged.add(key)
            log.warning("harmonizer '%s' failed (%s); keeping the last good colour transform "
                        "and retrying", self.name, key)
            if self.telemetry:
                self.telemetry.note(f"harmonizer error: {key}")
        if self._streak % 20 == 0:              # a stuck model: start a fresh instance
            self._apply_cfg(self.cfg)
        if self.threaded:                       # never sleep on the frame loop (sync mode)
            self._stop.wait(min(2.0, 0.05 * 2 ** min(self._streak, 6)))

    @staticmethod
    def _try_cuda_cleanup() -> None:
        import sys
        torch = sys.modules.get("torch")
        try:
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover
            pass


def _streaming_hook(h, name: str = "set_streaming"):
    """The PN/PFE statistics streaming control of a harmonizer: on the harmonizer itself, or
    on its network (``h.net.model`` for :class:`vidharm.harmonize.learned.LearnedHarmonizer`,
    ``h.model``); None for harmonizers without one."""
    net = getattr(h, "net", None)
    for obj in (h, net, getattr(net, "model", None), getattr(h, "model", None)):
        fn = getattr(obj, name, None) if obj is not None else None
        if callable(fn):
            return fn
    return None


def _with_device(cfg: Config, device: str) -> Config:
    return dataclasses.replace(cfg, harmonizer=dataclasses.replace(cfg.harmonizer, device=device))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split())[:160] if text else type(exc).__name__


# ------------------------------------------------------------------------------ privacy
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
        if not math.isfinite(float(m.sum(dtype=np.float64))):
            return "the mask has NaN/inf values"
    else:
        return f"the mask has type {m.dtype}"
    sub = m[::8, ::8]
    if float(sub.min()) < -0.01 * hi or float(sub.max()) > 1.01 * hi:
        return "the mask has values outside [0, 1]"
    if float((sub > half).mean()) > 0.98:
        return "the mask covers the whole frame"
    return None


# ------------------------------------------------------------------------------ control file
class ControlFile:
    """Commands from a file the user (or a script) edits while ``vidharm run`` runs.

    JSON (``{"background": "beach.jpg"}``) or TOML (``background = "beach.jpg"``); checked once
    a second; applied when the file's modification time or size changes (what it said when the
    run started is not applied, so a stale ``quit = true`` does not end the next run). Keys:
    ``background`` (image/video/blur/colour), ``profile``, ``harmonizer``, ``strength``,
    ``harmonize`` (true/false), ``show_mask``, ``pause``, ``quit``, ``next_background``.
    """

    KEYS = ("background", "profile", "harmonizer", "strength", "harmonize", "show_mask",
            "pause", "quit", "next_background")

    def __init__(self, path: str | os.PathLike, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path).expanduser()
        self.interval = interval
        self.clock = clock
        self._sig = self._signature()
        self._next = clock() + interval

    def _signature(self):
        try:
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def poll(self, now: float | None = None) -> dict | None:
        now = self.clock() if now is None else now
        if now < self._next:
            return None
        self._next = now + self.interval
        sig = self._signature()
        if sig is None or sig == self._sig:
            return None
        self._sig = sig
        try:
            text = self.path.read_text(encoding="utf-8")
            data = self.parse(text)
        except Exception as exc:
            log.warning("control file %s ignored: %s", self.path, _first_line(exc))
            return None
        unknown = sorted(set(data) - set(self.KEYS))
        if unknown:
            log.warning("control file %s: unknown keys %s (known: %s)", self.path,
                        ", ".join(unknown), ", ".join(self.KEYS))
        return {k: v for k, v in data.items() if k in self.KEYS}

    @staticmethod
    def parse(text: str) -> dict:
        s = text.strip()
        if not s:
            return {}
        if s.startswith("{"):
            data = json.loads(s)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover
                import tomli as tomllib  # type: ignore
            data = tomllib.loads(s)
        if not isinstance(data, dict):
            raise ValueError("expected an object / table of settings")
        return data


# ------------------------------------------------------------------------------ engine
class LiveEngine:
    """The live loop. Typical use (what ``vidharm run`` does)::

        eng = LiveEngine(cfg, source, sink, "beach.jpg")
        summary = eng.run(duration=None)     # until stop() / quit / the source ends

    - ``source``: iterable of ``(rgb, t)`` with ``fps``/``size`` (a camera, a file at real
      pace); ``resize_to`` = (W, H) resizes its frames (cover-crop) on the capture thread.
    - ``sink``: ``send(rgb, t)``, ``close()``; optional ``open(size, fps)``, ``events()``,
      ``set_overlay(text)``, ``pump()``.
    - ``background``: a spec for :func:`make_background` or a provider (then not closed here).
    - ``backgrounds``: specs the "next background" command cycles through.
    - ``segmenter`` / ``harmonizer_factory(cfg)``: injectable (tests); defaults from ``cfg``.
    - ``grid_mode``: "auto" (diagonal colour grids when the model runs on the CPU, full
      affine on CUDA), "full" or "diagonal" (see :func:`diagonal_refit`).
    - ``frame_queue``: camera frames kept for the loop (latest win; 2 absorbs one slow frame
      without a drop, 1 = lowest latency).
    - ``sync_every``: 0 = harmonizer on its own thread (live); N > 0 = fit synchronously on
      every N-th frame (deterministic benchmarks).
    """

    #: consecutive failed sends (about 3 s at 30 fps) before the run gives up on the sink
    SINK_RETRIES = 90

    def __init__(self, cfg: Config, source, sink, background, *,
                 fps: float | None = None, resize_to: tuple[int, int] | None = None,
                 harmonize: bool = True, backgrounds: Iterable[str] = (),
                 control: str | os.PathLike | None = None, telemetry: Telemetry | None = None,
                 segmenter=None, harmonizer_factory: Callable[[Config], Any] | None = None,
                 tuning: SmoothingTuning | None = None,
                 max_refresh_hz: float | str | None = "auto",
                 harmonizer_budget: float | None = CPU_BUDGET, grid_mode: str = "auto",
                 sync_every: int = 0, stall_s: float = 0.5, placeholder_s: float = 2.0,
                 frame_queue: int = 2, max_fps: float | None = None,
                 watch_interval: float = 0.25,
                 profile: str | None = None, overrides: dict | None = None,
                 clock: Callable[[], float] = time.monotonic):
        from .mask import MaskRefiner
        from .registry import registry
        self.cfg = cfg
        self.profile = profile
        self.overrides = dict(overrides or {})
        self.source = source
        self.sink = sink
        self.clock = clock
        self.fps = float(fps or getattr(source, "fps", 0) or cfg.live.fps or 30)
        self.max_fps = float(max_fps) if max_fps else None
        if self.max_fps:
            self.fps = min(self.fps, self.max_fps)
        self.watch_interval = float(watch_interval)
        self.idle = False                # nobody reads the sink (sink.watched() is False)
        self.idle_resend_s = 1.0         # ... then the last picture is sent this often
        self._resume = False
        self._next_due: float | None = None
        self._watch_thread: threading.Thread | None = None
        self.resize_to = tuple(resize_to) if resize_to else None
        self.telemetry = telemetry or Telemetry(clock=clock)
        self.tuning = tuning or SmoothingTuning()
        self.stall_s = stall_s
        self.placeholder_s = placeholder_s
        self.sync_every = int(sync_every)
        self.harmonize_on = bool(harmonize) and cfg.harmonizer.name != "none"
        self.show_mask = False
        self.paused = False
        self._owns_background = not isinstance(background, BackgroundProvider)
        self.background = make_background(background, cfg) if self._owns_background else background
        self.background_spec = str(background) if self._owns_background else background.describe()
        self.backgrounds = [str(b) for b in backgrounds]
        # a provider passed in (as `vidharm run` does) is found in the list by its file, so
        # the first 'next background' goes to the one after it, not to itself
        self._bg_index = _index_of(str(getattr(self.background, "path", self.background_spec)),
                                   self.backgrounds)
        self.refiner = MaskRefiner(cfg.mask, smooth=True)
        self.worker = None
        try:
            if cfg.harmonizer.name != "none":
                self.worker = HarmonizerWorker(cfg, harmonizer_factory, self.tuning,
                                               self.telemetry, max_hz=max_refresh_hz,
                                               threaded=self.sync_every <= 0,
                                               cpu_budget=harmonizer_budget,
                                               grid_mode=grid_mode)
            self.segmenter = segmenter or registry.segmenters.create(cfg.segmentation.segmenter,
                                                                     cfg.segmentation)
        except BaseException:
            if self.worker is not None:
                self.worker.stop()
            if self._owns_background:
                self.background.close()
            raise
        self._owns_segmenter = segmenter is None
        self.control = control if isinstance(control, ControlFile) or control is None \
            else ControlFile(control, clock=clock)
        self._frames = Mailbox(frame_queue)
        self._stop = threading.Event()
        self._capture_done = threading.Event()
        self._capture_thread: threading.Thread | None = None
        self._swaps: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._logged: set[str] = set()
        self._cut_pending = True
        self._shown: ColorGrid | None = None
        self._shown_epoch = -1
        self._shown_t = 0.0
        self._last_out: np.ndarray | None = None
        self._last_frame_time: float | None = None   # when the last new camera frame came
        self._last_send: float | None = None
        self._last_t_media: float | None = None
        self._t0: float | None = None
        self._n = 0
        self._seg_streak = 0
        self._privacy_since: float | None = None
        self._privacy_frames = 0
        self._sink_errors = 0
        self.sink_error: BaseException | None = None   # the sink could not finish (disk full)
        self.source_error: BaseException | None = None  # the source broke (a corrupt file)
        self._placeholders: dict = {}
        self._privacy_blur = BlurBackground(max(36.0, 3.0 * cfg.background.blur_sigma))
        self._lat_ema = 0.0
        self._last_overlay = 0.0
        self._closed = False
        self.quit_reason = ""
        self.last_mask: np.ndarray | None = None
        self.last_bg: np.ndarray | None = None
        self._stage_cpu: dict[str, float] = {}
        self._cpu_mark: float | None = None
        if hasattr(source, "on_event") and getattr(source, "on_event", None) is None:
            source.on_event = self._source_event

    # ------------------------------------------------------------------ public control
    def stop(self, reason: str = "stopped") -> None:
        """End the loop (thread- and signal-safe); :meth:`run` then shuts down cleanly."""
        if not self._stop.is_set():
            self.quit_reason = reason
        self._stop.set()
        self._frames.close()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def command(self, cmd: str) -> None:
        """A user command (preview hotkeys, control file): toggle_harmonize, next_background,
        toggle_mask, toggle_pause, quit."""
        if cmd == "toggle_harmonize":
            self.set_harmonize(not self.harmonize_on)
        elif cmd == "next_background":
            self.next_background()
        elif cmd == "toggle_mask":
            self.show_mask = not self.show_mask
            log.info("mask view %s", "on" if self.show_mask else "off")
        elif cmd == "toggle_pause":
            self.paused = not self.paused
            log.info("%s", "paused" if self.paused else "resumed")
        elif cmd == "quit":
            self.stop("quit")
        else:
            log.warning("unknown command %r", cmd)

    def set_harmonize(self, on: bool) -> None:
        if on and self.worker is None:
            log.warning("harmonizer 'none': nothing to turn on")
            return
        if on and not self.harmonize_on and self.worker is not None:
            self.worker.force_cut()
        self.harmonize_on = bool(on)
        log.info("harmonization %s", "on" if on else "off (plain composite)")

    def next_background(self) -> None:
        if not self.backgrounds:
            log.warning("no other backgrounds to switch to (give --backgrounds DIR)")
            return
        self._bg_index = (self._bg_index + 1) % len(self.backgrounds)
        self.set_background(self.backgrounds[self._bg_index])

    def set_background(self, spec: str) -> None:
        """Switch to ``spec`` (loaded on a helper thread; the loop keeps running meanwhile)."""
        size = self._work_size()

        def load():
            try:
                bg = make_background(spec, self.cfg)
                if size and not bg.needs_current:
                    bg.frame(size, 0.0)            # pre-scale now, not in the frame loop
            except Exception as exc:
                log.warning("background '%s' not used: %s", spec, _one_line(exc))
                return
            self._swaps.put(lambda: self._swap_background(bg, spec))

        threading.Thread(target=load, name="vidharm-bg-load", daemon=True).start()

    def _swap_background(self, bg: BackgroundProvider, spec: str) -> None:
        old, owned = self.background, self._owns_background
        self.background, self._owns_background, self.background_spec = bg, True, spec
        if self.worker is not None:
            self.worker.force_cut()
        self._placeholders.clear()
        log.info("background: %s", bg.describe())
        if owned:
            try:
                old.close()
            except Exception:  # pragma: no cover
                pass

    def set_profile(self, profile: str | None = None, **overrides) -> None:
        """Apply a profile (and/or ``section.key`` overrides) without restarting."""
        given = {k: v for k, v in overrides.items() if v is not None}
        new_over = {**self.overrides, **given}
        try:
            if given:     # checked on their own first, so an error names where they came from
                Config().apply(given, "the control file")
            cfg = load_config(profile or self.profile, new_over)
            from .registry import registry
            registry.harmonizers.get(cfg.harmonizer.name)
        except Exception as exc:
            log.warning("settings change ignored: %s", _one_line(exc))
            return
        old = self.cfg
        self.cfg, self.overrides = cfg, new_over
        if profile:
            self.profile = profile
        if cfg.segmentation != old.segmentation:
            def build():
                from .registry import registry
                try:
                    seg = registry.segmenters.create(cfg.segmentation.segmenter, cfg.segmentation)
                except Exception as exc:
                    log.warning("segmentation settings not applied: %s", _one_line(exc))
                    return
                self._swaps.put(lambda: self._swap_segmenter(seg))
            threading.Thread(target=build, name="vidharm-seg-load", daemon=True).start()
        if cfg.mask != old.mask:
            from .mask import MaskRefiner
            self.refiner = MaskRefiner(cfg.mask, smooth=True)
        if cfg.harmonizer != old.harmonizer:
            if cfg.harmonizer.name == "none":
                self.harmonize_on = False
            elif self.worker is None:
                self.worker = HarmonizerWorker(cfg, None, self.tuning, self.telemetry,
                                               threaded=self.sync_every <= 0).start()
                self.harmonize_on = True
            else:
                self.worker.reconfigure(cfg)
                self.harmonize_on = True
        if cfg.background != old.background:
            self._privacy_blur = BlurBackground(max(36.0, 3.0 * cfg.background.blur_sigma))
            if isinstance(self.background, BlurBackground) and self._owns_background:
                self.background = BlurBackground(cfg.background.blur_sigma)
        if (cfg.live.size, cfg.live.fps) != (old.live.size, old.live.fps):
            log.warning("live.size / live.fps changes take effect at the next start")
        log.info("settings: %s", cfg.source)

    def _swap_segmenter(self, seg) -> None:
        old, self.segmenter = self.segmenter, seg
        owned, self._owns_segmenter = self._owns_segmenter, True
        self.refiner.reset()
        if owned:
            try:
                old.close()
            except Exception:  # pragma: no cover
                pass

    # ------------------------------------------------------------------ capture thread
    def _source_event(self, kind: str, message: str) -> None:
        """From the capture thread: the camera was lost / came back."""
        self.telemetry.note(message)
        if kind == "reconnected":
            self._cut_pending = True           # new light, new framing: start smoothing over
            self._swaps.put(self.refiner.reset)

    def _capture(self) -> None:
        cpu = time.thread_time
        c0 = cpu()
        try:
            for rgb, t in self.source:
                if self._stop.is_set():
                    break
                now = self.clock()
                if self.resize_to and (rgb.shape[1], rgb.shape[0]) != self.resize_to:
                    rgb = cover_crop(rgb, self.resize_to)
                if self._frames.put((rgb, float(t), now)):
                    self.telemetry.dropped()
                c1 = cpu()
                self.telemetry.cpu("capture", c1 - c0)
                c0 = c1
        except Exception as exc:
            # the run ends and reports it (exit code): a source that broke is not a success
            self.source_error = exc
            self.telemetry.note(f"source error: {_one_line(exc)}")
        finally:
            self._capture_done.set()

    # ------------------------------------------------------------------ the loop
    def run(self, duration: float | None = None, max_frames: int | None = None) -> dict:
        """Run until ``duration`` seconds, ``max_frames`` frames, :meth:`stop`, a quit
        command or the end of a non-looping source; then shut down. Returns the telemetry
        summary (see :meth:`vidharm.telemetry.Telemetry.summary`)."""
        self._pin_blas()
        from ._threads import tune_allocator
        tune_allocator()         # as the CLI does: per-frame buffers reused, not re-faulted
        try:
            opener = getattr(self.sink, "open", None)
            if opener is not None:
                opener(self._out_size(), self.fps)
            for note in getattr(self.sink, "notes", []) + getattr(self.source, "notes", []):
                self.telemetry.note(note)
            self._warm_up()
            if self.worker is not None:
                self.worker.start()
            _freeze_gc()
            self._t0 = self.clock()
            self.telemetry.start()
            self._capture_thread = threading.Thread(target=self._capture, name="vidharm-capture",
                                                    daemon=True)
            self._capture_thread.start()
            if callable(getattr(self.sink, "watched", None)):
                self._watch_thread = threading.Thread(target=self._watch, name="vidharm-watch",
                                                      daemon=True)
                self._watch_thread.start()
            self._loop(duration, max_frames)
            self.telemetry.stop()                    # the run's length, not the shutdown's
        finally:
            self.shutdown()
        if self.sink_error is not None:              # a recording that could not be finished
            err = self.sink_error                    # is a failed run, not a success
            if isinstance(err, VidharmError):
                raise err
            from .errors import OutputError
            raise OutputError(f"the output could not be finished ({_one_line(err)})",
                              "check free disk space and the output device") from err
        if self.source_error is not None:
            err = self.source_error
            if isinstance(err, VidharmError):
                raise err
            from .errors import InputError
            raise InputError(f"the source stopped after {self._n} frames ({_one_line(err)})",
                             "check the camera or the file") from err
        return self.telemetry.summary()

    def _warm_up(self) -> None:
        """Run the per-frame stages after segmentation once on a blank frame of the working
        size before the camera starts, so first-call costs (OpenCV kernel set-up, buffer
        allocation: the first refine took 40-50 ms at 720p, against 8 ms after) do not fall
        on the first camera frames and overrun the frame queue. Failures are left to the
        real frames to report."""
        size = self._work_size()
        if not size:
            return
        w, h = size
        try:
            frame = np.zeros((h, w, 3), np.uint8)
            raw = np.zeros((h, w), np.float32)
            raw[h // 4:, w // 4: 3 * w // 4] = 1.0
            mask = self.refiner(raw, frame)
            bg = self.background.frame((w, h), 0.0, current=frame, mask=mask)
            apply_grid_fused(frame, np.asarray(bg), mask, ColorGrid.identity(4, 4))
        except Exception as exc:
            log.debug("warm-up skipped: %s", _one_line(exc))
        finally:
            self.refiner.reset()

    def _pin_blas(self) -> None:
        """BLAS on one thread for the process (see :func:`vidharm._threads.pin_blas_single_thread`:
        per-call limits from the frame loop and the harmonizer thread raced), and OpenCV's
        own thread pool off: the engine already runs three threads, and splitting each
        resize and blend over the cores cost more CPU than it saved time (phnet-grid at
        720p: 23.2 -> 20.6 ms CPU per frame, 0.67 -> 0.61 cores; latency p50 +3 ms)."""
        from ._threads import pin_blas_single_thread
        pin_blas_single_thread()
        try:
            import cv2
            cv2.setNumThreads(1)
        except Exception:  # pragma: no cover
            pass

    def _out_size(self) -> tuple[int, int] | None:
        from vidharm_plugins.sinks import parse_size
        try:
            return parse_size(self.cfg.live.size)
        except ConfigError:
            return None

    def _work_size(self) -> tuple[int, int] | None:
        if self.resize_to:
            return self.resize_to
        size = getattr(self.source, "size", None)
        return tuple(size) if size and size[0] > 0 else None

    def _loop(self, duration: float | None, max_frames: int | None) -> None:
        interval = 1.0 / max(self.fps, 1.0)
        deadline = self._t0 + duration if duration else None
        while not self._stop.is_set():
            now = self.clock()
            if deadline is not None and now >= deadline:
                self.quit_reason = self.quit_reason or "duration reached"
                break
            if max_frames is not None and self._n >= max_frames:
                break
            self._run_swaps()
            self._poll_control(now)
            wait = interval if deadline is None else max(0.0, min(interval, deadline - now))
            item = self._frames.get(timeout=wait)
            if item is None:
                if self._capture_done.is_set() and not self._frames:
                    self.quit_reason = self.quit_reason or "the source ended"
                    break
                if self.idle:
                    self._idle_tick()
                else:
                    self._keep_alive(interval)
                continue
            rgb, t_media, t_cap = item
            self._last_frame_time = self.clock()
            if self.idle and self._last_out is not None:   # nobody watches: no work
                self.telemetry.skipped("idle")
                self._idle_tick()
                continue
            if self._resume:
                self._resume = False
                self._cut_pending = True       # minutes may have passed: start over
                self.refiner.reset()
                self._next_due = None
            if self.paused:
                self._keep_alive(interval, paused=True)
                continue
            if self.max_fps and self._over_cap(t_media):
                self.telemetry.skipped("capped")
                continue
            self._frame(rgb, t_media, t_cap)

    def _idle_tick(self) -> None:
        """While nobody watches: the last picture once a second, nothing else (v4l2loopback
        with exclusive_caps=1 lists the device to apps as a camera only while it is fed)."""
        if self._last_out is None:
            return
        now = self.clock()
        if self._last_send is None or now - self._last_send >= self.idle_resend_s:
            self._send(self._last_out, now)
            self.telemetry.repeated(now=self.clock())

    def _over_cap(self, t: float) -> bool:
        """Whether the frame at media time ``t`` comes too soon for ``max_fps`` (a camera
        giving 60 fps with --fps 30: every other frame is skipped, not processed)."""
        iv = 1.0 / self.max_fps
        due = self._next_due
        if due is not None and due - 2.0 * iv <= t < due - 0.25 * iv:
            return True
        self._next_due = due + iv if due is not None and abs(t - due) < iv else t + iv
        return False

    def _watch(self) -> None:
        """Polls ``sink.watched()`` every ``watch_interval`` s: while it says False (no app
        has the virtual camera open) the loop takes frames and throws them away, so the
        segmenter, refiner and harmonizer cost nothing; as soon as it says True again the
        loop resumes with a fresh start of the temporal smoothing. None (cannot tell) and
        errors count as watched."""
        watched = self.sink.watched
        while not self._stop.is_set():
            try:
                idle = watched() is False
            except Exception:
                idle = False
            if idle != self.idle:
                if idle:
                    log.info("nobody has the virtual camera open: processing paused")
                    self.telemetry.note("paused while no app had the virtual camera open")
                else:
                    log.info("an app opened the virtual camera: processing resumed")
                    self._last_frame_time = self.clock()   # no stall: frames come at once
                    self._resume = True
                self.idle = idle
                if hasattr(self.source, "idle"):     # a camera then grabs without decoding
                    self.source.idle = idle
            self._stop.wait(self.watch_interval)

    def _frame(self, rgb: np.ndarray, t_media: float, t_cap: float) -> None:
        out, stages, private = self.process(rgb, t_media)
        cpu = self._stage_cpu
        t_s = self.clock()
        c_s = time.thread_time()
        self._send(out, t_cap)
        done = self.clock()
        cpu["sink"] = time.thread_time() - c_s
        stages["sink"] = done - t_s
        c_end = time.thread_time()
        if self._cpu_mark is not None:   # the loop's own work since the last frame
            cpu["loop"] = max(0.0, c_end - self._cpu_mark - sum(cpu.values()))
        self._cpu_mark = c_end
        self.telemetry.frame(done - t_cap, stages, privacy=private, now=done, cpu=cpu)
        self._last_out = out
        self._n += 1
        self._status(done, done - t_cap)
        self._handle_sink_events()

    def _send(self, out: np.ndarray, t_cap: float) -> None:
        """Send; a failing sink (a virtual camera hiccup) is logged once and retried on the
        next frames; after ``SINK_RETRIES`` failures in a row the run ends with the error.
        :class:`VidharmError` (a recording's disk is full) ends it at once."""
        try:
            self.sink.send(out, t_cap - (self._t0 or 0.0))
        except VidharmError:
            raise
        except Exception as exc:
            self._sink_errors += 1
            if self._sink_errors == 1:
                log.warning("the sink failed (%s); retrying", _one_line(exc))
                self.telemetry.note(f"sink error: {_one_line(exc)}")
            if self._sink_errors >= self.SINK_RETRIES:
                from .errors import OutputError
                raise OutputError(f"the output stopped accepting frames ({_one_line(exc)})",
                                  "check the virtual camera device / output, then restart") from exc
        else:
            if self._sink_errors:
                log.warning("the sink works again after %d failed frames", self._sink_errors)
                self._sink_errors = 0
        self._last_send = self.clock()

    def _handle_sink_events(self) -> None:
        events = getattr(self.sink, "events", None)
        if events is None:
            return
        for cmd in events():
            self.command(cmd)

    def _status(self, now: float, latency: float) -> None:
        self._lat_ema += 0.1 * (latency * 1000.0 - self._lat_ema)
        if now - self._last_overlay >= 0.5 and hasattr(self.sink, "set_overlay"):
            self._last_overlay = now
            s = self.telemetry.summary()
            rows = self.telemetry.rows
            fps = rows[-1][1] if rows else s["fps"]
            text = (f"{fps:.0f} fps  latency {self._lat_ema:.0f} ms  "
                    f"harmonize {'ON' if self.harmonize_on else 'OFF'}"
                    f"{' (' + self.cfg.harmonizer.name + ')' if self.harmonize_on else ''}"
                    f"{'  MASK' if self.show_mask else ''}{'  PAUSED' if self.paused else ''}")
            self.sink.set_overlay(text)

    def _keep_alive(self, interval: float, paused: bool = False) -> None:
        """No new frame to process: keep the sink fed (last good frame, then a placeholder)
        when the source has stalled or the user paused; pump the preview's keys."""
        now = self.clock()
        pump = getattr(self.sink, "pump", None)
        since_frame = now - (self._last_frame_time if self._last_frame_time is not None
                             else (self._t0 or now))
        stalled = since_frame >= self.stall_s
        if not (paused or self.paused or stalled):
            if pump:
                pump()
                self._handle_sink_events()
            return
        if self._last_send is not None and now - self._last_send < interval * 0.9:
            if pump:
                pump()
                self._handle_sink_events()
            return
        if (paused or self.paused) and self._last_out is not None:
            frame = self._last_out
        elif since_frame < self.placeholder_s and self._last_out is not None:
            frame = self._last_out
        else:
            if "placeholder" not in self._logged:
                self._logged.add("placeholder")
                log.warning("no camera frames for %.1f s: sending a placeholder", since_frame)
            frame = self._placeholder()
        if frame is None:
            return
        self._send(frame, now)
        self.telemetry.repeated(now=self.clock())
        self._handle_sink_events()

    def _placeholder(self, text: str = "camera unavailable - reconnecting") -> np.ndarray | None:
        import cv2
        size = self._work_size() or self._out_size()
        if not size:
            return None
        key = (size, text)
        img = self._placeholders.get(key)
        if img is None:
            W, H = size
            img = None
            if not self.background.needs_current:
                try:
                    img = (np.asarray(self.background.frame((W, H), self._last_t_media or 0.0))
                           .astype(np.float32) * 0.45).astype(np.uint8)
                except Exception:
                    img = None
            if img is None:
                img = np.full((H, W, 3), (32, 32, 36), np.uint8)
            scale = max(0.5, H / 720)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
            cv2.putText(img, text, ((W - tw) // 2, (H + th) // 2), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, (235, 235, 235), max(1, int(2 * scale)), cv2.LINE_AA)
            self._placeholders = {key: img}
        return img

    # ------------------------------------------------------------------ one frame
    def step(self, rgb: np.ndarray, t: float) -> np.ndarray:
        """Process one frame synchronously, without source, sink or threads (offline
        measurement, e.g. ``bench/flicker.py``; use ``sync_every`` > 0 so the harmonizer
        fits on this thread too). Returns the output frame."""
        out, _, _ = self.process(rgb, t)
        self._n += 1
        return out

    def process(self, rgb: np.ndarray, t: float) -> tuple[np.ndarray, dict, bool]:
        """Segment, refine, background, colour transform: (output, stage seconds, private?).

        ``private`` is True when the frame is the background alone because the mask could not
        be trusted. The raw camera frame is never returned."""
        clock = time.perf_counter
        cpu_clock = time.thread_time
        stages: dict[str, float] = {}
        cpu: dict[str, float] = {}
        self._stage_cpu = cpu           # this thread's CPU seconds per stage (telemetry)
        h, w = rgb.shape[:2]
        self._last_t_media = t
        c0 = cpu_clock()
        t0 = clock()
        reason = None
        raw = None
        small = None
        try:
            # the model's own input size: the mask comes back at that size (the refiner
            # works at a reduced size anyway); the refiner's guide is made on the way
            seg_in, small = segmentation_input(rgb, getattr(self.segmenter, "input_size", None)
                                               if self.refiner.guided else None)
            raw = self.segmenter.segment(seg_in, t)
            reason = check_mask(raw, seg_in.shape[:2])
            self._seg_streak = 0
        except Exception as exc:
            reason = f"segmentation failed ({type(exc).__name__}: {_first_line(exc)})"
            self._seg_streak += 1
            if self._seg_streak == 30:
                self._rebuild_segmenter()
        if reason is None and self._privacy_since is not None:
            log.warning("segmentation usable again after %d background-only frames",
                        self._privacy_frames)
            self._privacy_since = None
            self._logged = {k for k in self._logged if not k.startswith("privacy:")}
        t1 = clock()
        c1 = cpu_clock()
        stages["segment"] = t1 - t0
        cpu["segment"] = c1 - c0
        mask = None
        if reason is None:
            try:
                mask = self.refiner(raw, rgb, small=small)
                if not math.isfinite(float(mask.sum(dtype=np.float64))):
                    reason = "the refined mask has NaN/inf values"
            except Exception as exc:
                reason = f"mask refinement failed ({type(exc).__name__}: {_first_line(exc)})"
        t2 = clock()
        c2 = cpu_clock()
        stages["refine"] = t2 - t1
        cpu["refine"] = c2 - c1
        if reason is not None:
            out = self._background_only(rgb, t, reason)
            stages["background"] = clock() - t2
            cpu["background"] = cpu_clock() - c2
            return out, stages, True
        try:
            bg = self.background.frame((w, h), t, current=rgb, mask=mask)
            t3 = clock()
            c3 = cpu_clock()
            stages["background"] = t3 - t2
            cpu["background"] = c3 - c2
            if self.show_mask:
                m8 = (mask * 255.0 + 0.5).astype(np.uint8)
                out = np.repeat(m8[:, :, None], 3, axis=2)
            else:
                grid = self._current_grid(t) if self.harmonize_on else None
                out = apply_grid_fused(rgb, bg, mask, grid) if grid is not None \
                    else composite(rgb, bg, mask)
            if self.harmonize_on and self.worker is not None:
                self._post_job(rgb, bg, mask, t)
            stages["apply"] = clock() - t3
            cpu["apply"] = cpu_clock() - c3
            self.last_mask, self.last_bg = mask, bg       # for previews and measurements
            return out, stages, False
        except Exception as exc:
            out = self._background_only(rgb, t, f"compositing failed ({type(exc).__name__}: "
                                                 f"{_first_line(exc)})")
            stages["background"] = clock() - t2
            cpu["background"] = cpu_clock() - c2
            return out, stages, True

    def _post_job(self, rgb, bg, mask, t) -> None:
        h, w = rgb.shape[:2]
        step = max(1, min(h, w) // max(16, int(self.cfg.harmonizer.work_size)))
        # strided views, copied by the worker only for the jobs it takes (about one in
        # three at 11 Hz): the frame, background and mask are never written after this
        # (new arrays every frame, or read-only ones)
        job = (rgb[::step, ::step], bg[::step, ::step], mask[::step, ::step], t,
               self._cut_pending)
        self._cut_pending = False
        if self.sync_every > 0:
            if self._n % self.sync_every == 0:
                try:
                    self.worker.step(job)
                except Exception as exc:
                    self.worker._on_error(exc)
        else:
            self.worker.submit(job)

    def _current_grid(self, t: float) -> ColorGrid | None:
        snap = self.worker.latest if self.worker is not None else None
        if snap is None:
            return None
        shown = self._shown
        if (shown is None or snap.epoch != self._shown_epoch or shown.shape != snap.grid.shape
                or self.tuning.mode == "off"):
            self._shown, self._shown_epoch = snap.grid, snap.epoch
            self._shown_t = t
            return snap.grid
        dt = t - self._shown_t
        self._shown_t = t
        tau = self.tuning.display_tau
        if tau is None:
            tau = min(0.15, 0.5 * self.worker.refresh_interval)
        if tau <= 0:
            a = 1.0
        elif dt <= 0:
            a = 0.0
        else:
            a = 1.0 - math.exp(-dt / tau)
        if a >= 0.999:
            self._shown = snap.grid
        elif a > 0:
            self._shown = shown.lerp(snap.grid, a)
        return self._shown

    def _background_only(self, rgb: np.ndarray, t: float, reason: str) -> np.ndarray:
        """PRIVACY: the frame to send when the mask cannot be trusted: the background alone
        (for a blur background: a much stronger blur of the room), never the camera frame."""
        key = "privacy:" + reason.split(" (")[0]
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s: sending the background only (privacy) until it recovers", reason)
            self.telemetry.note(f"privacy fallback: {reason}")
        if self._privacy_since is None:
            self._privacy_since, self._privacy_frames = t, 0
        self._privacy_frames += 1
        self.refiner.reset()
        self._cut_pending = True
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
        ph = self._placeholder("background unavailable")
        if ph is not None and ph.shape == rgb.shape:
            return ph
        return np.full_like(rgb, 32)

    def _rebuild_segmenter(self) -> None:
        def build():
            from .registry import registry
            try:
                seg = registry.segmenters.create(self.cfg.segmentation.segmenter,
                                                 self.cfg.segmentation)
            except Exception as exc:
                log.warning("could not restart the segmenter: %s", _one_line(exc))
                return
            self._swaps.put(lambda: self._swap_segmenter(seg))
        log.warning("segmentation keeps failing: starting a fresh segmenter")
        threading.Thread(target=build, name="vidharm-seg-load", daemon=True).start()

    # ------------------------------------------------------------------ swaps, control
    def _run_swaps(self) -> None:
        while True:
            try:
                fn = self._swaps.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception as exc:  # pragma: no cover
                log.warning("could not apply a change: %s", _one_line(exc))

    def _poll_control(self, now: float) -> None:
        if self.control is None:
            return
        data = self.control.poll(now)
        if not data:
            return
        self.apply_control(data)

    def apply_control(self, data: dict) -> None:
        """Apply a control-file dict (see :class:`ControlFile`)."""
        if "background" in data:
            self.set_background(str(data["background"]))
        if data.get("next_background"):
            self.next_background()
        over = {}
        if "harmonizer" in data:
            over["harmonizer.name"] = str(data["harmonizer"])
        if "strength" in data:
            over["harmonizer.strength"] = data["strength"]
        if "profile" in data or over:
            self.set_profile(str(data["profile"]) if "profile" in data else None, **over)
        if "harmonize" in data:
            self.set_harmonize(bool(data["harmonize"]))
        if "show_mask" in data:
            self.show_mask = bool(data["show_mask"])
        if "pause" in data:
            self.paused = bool(data["pause"])
        if data.get("quit"):
            self.stop("quit (control file)")

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop threads, release the camera, close the sink and the models (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._frames.close()
        th = self._capture_thread
        if th is not None:
            th.join(3.0)
            if th.is_alive():
                rel = getattr(self.source, "release", None)
                if rel:
                    rel()
                th.join(1.0)
        if self._watch_thread is not None:       # before the sink it asks is closed
            self._watch_thread.join(2.0)
        for step in (self._close_source, self._close_sink, self._close_worker,
                     self._close_models):
            try:
                step()
            except Exception as exc:
                if step == self._close_sink:         # reported by run(): reaches the exit code
                    self.sink_error = exc
                    continue
                log.warning("shutdown: %s", _one_line(exc))
        self.telemetry.stop()

    def _close_source(self) -> None:
        close = getattr(self.source, "close", None)
        if close:
            close()

    def _close_sink(self) -> None:
        self.sink.close()

    def _close_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            if self.worker.diag_error is not None:
                self.telemetry.note(
                    f"colour grid: per-channel (diagonal) fit of {self.worker.name}'s transform "
                    f"for speed on the CPU, mean difference {self.worker.diag_error:.1f} grey "
                    f"levels on the person (--grid full keeps the full transform)")

    def _close_models(self) -> None:
        self._run_swaps()          # something loaded meanwhile: swap it in so it is closed too
        if self._owns_segmenter:
            close = getattr(self.segmenter, "close", None)
            if close:
                close()
        if self._owns_background:
            self.background.close()


def _freeze_gc() -> None:
    """Move everything allocated so far (models, libraries) out of the garbage collector's
    reach: later full collections only walk what the run itself allocates, so they stay short
    (a stall in the frame loop is a dropped frame)."""
    import gc
    gc.collect()
    gc.freeze()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, VidharmError):
        return exc.one_line()
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _index_of(spec: str, items: list[str]) -> int:
    """Position of ``spec`` in ``items`` (same file counts), -1 if absent."""
    def key(x: str):
        try:
            p = Path(x).expanduser()
            return str(p.resolve()) if p.exists() else x
        except OSError:
            return x
    keys = [key(i) for i in items]
    k = key(spec)
    return keys.index(k) if k in keys else -1


def backgrounds_in(folder: str | os.PathLike) -> list[str]:
    """Image and video files in ``folder`` (sorted), for the next-background command."""
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".mp4", ".mov", ".mkv", ".webm"}
    p = Path(folder).expanduser()
    if not p.is_dir():
        return []
    return [str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in exts and f.is_file()]
