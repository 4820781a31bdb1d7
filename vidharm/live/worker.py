"""The live harmonizer thread: a grid provider that never blocks the frame loop.

    frame loop ──FitJob──▶ [mailbox, 1 slot, latest wins] ──▶ harmonizer thread
    frame loop ◀── grid_at(t): eased toward the newest ◀── GridSnapshot (immutable)

:class:`HarmonizerWorker` runs a :class:`vidharm.fitting.GridFitter` (harmonizer + the one
temporal smoother) on its own thread, at a refresh rate and CPU budget that leave the frame
loop its cores; the frame loop reads the newest snapshot (one attribute read) and eases the
grid it shows toward it, so a 10 Hz harmonizer does not step visibly at 30 fps.

It never lets the frame loop down: the harmonizer raising keeps the last good grid (the plain
composite before the first), logged once per kind, retried with a growing pause, rebuilt after
20 failures in a row; a CUDA error or out-of-memory moves it to the CPU.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable

from ..color import ColorGrid
from ..config import Config
from ..errors import VidharmError, first_line
from ..fitting import FitJob, GridFitter, GridSnapshot, cheap_form
from ..registry import registry
from ..telemetry import Telemetry
from ..temporal import Easing, SmoothingTuning

log = logging.getLogger("vidharm.live")

__all__ = ["Mailbox", "HarmonizerWorker", "CPU_REFRESH_HZ", "CPU_STEADY_HZ", "CPU_BUDGET",
           "CPU_MIN_HZ", "CHANGE_HOLD_S"]


class Mailbox:
    """A small latest-wins hand-over between threads (``capacity`` items, default one).

    ``put(item)`` never blocks: when full, the OLDEST item is discarded and True is returned
    (a dropped frame). ``get(timeout)`` waits for an item and takes the oldest one kept (None
    on timeout or after :meth:`close`). With capacity 2 a single slow frame in the consumer
    costs one frame of latency instead of a dropped frame; the consumer then catches up."""

    def __init__(self, capacity: int = 1):
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


def _is_cuda_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc)
    low = text.lower()
    return ("OutOfMemory" in name or "CUDA" in text or "CUBLAS" in text or "cuDNN" in text
            or ("cuda" in low and ("memory" in low or "device" in low)))


def _with_device(cfg: Config, device: str) -> Config:
    return dataclasses.replace(cfg, harmonizer=dataclasses.replace(cfg.harmonizer, device=device))


def default_harmonizer_factory(cfg: Config):
    return registry.harmonizers.create(cfg.harmonizer.name, cfg.harmonizer)


class HarmonizerWorker:
    """The live grid provider (:class:`vidharm.fitting.GridProvider`).

    - ``factory(cfg)`` builds the harmonizer (default: the registry's, by ``cfg``'s name);
      ``tuning``: the temporal smoothing; ``telemetry``: fit times and CPU.
    - ``max_hz``: refresh cap ("auto": :data:`CPU_REFRESH_HZ` on the CPU, adapting between
      :data:`CPU_STEADY_HZ` and the cap with the scene's change; none on CUDA).
    - ``threaded=False``: :meth:`submit` fits at once on the caller's thread (benchmarks,
      tests); ``every`` then fits only every N-th job.
    - ``cpu_budget``: fraction of one core the thread may use on the CPU (see
      :meth:`_pause_after`).
    - ``grid_mode``: "auto" (a cheap form when the model runs on the CPU: one global transform
      or per-channel grids, whichever is about as close; full affine on CUDA), "full" or
      "diagonal" (per-channel grids only; see :func:`vidharm.color.cheap_refits`).
    """

    def __init__(self, cfg: Config, factory: Callable[[Config], Any] | None = None,
                 tuning: SmoothingTuning | None = None, telemetry: Telemetry | None = None,
                 max_hz: float | str | None = "auto", threaded: bool = True,
                 cpu_budget: float | None = CPU_BUDGET,
                 grid_mode: str = "auto", every: int = 1):
        cheap_form(grid_mode, "cpu")              # refuses an unknown mode before any model loads
        self.cfg = cfg
        self._factory = factory or default_harmonizer_factory
        self.tuning = tuning or SmoothingTuning()
        self.telemetry = telemetry
        self.max_hz = max_hz
        self.cpu_budget = cpu_budget
        self.grid_mode = grid_mode
        self.threaded = threaded
        self.every = max(1, int(every))
        self.fitter = GridFitter(self._build(cfg), self.tuning, relative=cfg.harmonizer.relative)
        self.fitter.set_grid_mode(grid_mode, self.device)
        self._auto_hz = max_hz == "auto"
        self._set_auto_hz()
        self.latest: GridSnapshot | None = None
        self.errors = 0
        self.fits = 0
        self.refresh_interval = 0.1          # EMA of video time between publishes
        self.recent_change = 1.0             # the largest recent change (decays, see fit)
        self._cut_requests = 0               # incremented by other threads; compared, never reset
        self._cuts_seen = 0
        self._submitted = 0
        self._box = Mailbox()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_cfg: Config | None = None
        self._logged: set[str] = set()
        self._streak = 0
        self._last_t: float | None = None
        self._easing = Easing()

    # ------------------------------------------------------------------ building
    def _build(self, cfg: Config):
        try:
            h = self._factory(cfg)
        except VidharmError:
            raise
        except Exception as exc:
            if cfg.harmonizer.device == "cpu" or not _is_cuda_error(exc):
                raise
            log.warning("harmonizer '%s' could not start on %s (%s); using the CPU",
                        cfg.harmonizer.name, cfg.harmonizer.device, first_line(exc))
            cfg = self.cfg = _with_device(cfg, "cpu")
            h = self._factory(cfg)
        return h

    def _device_of(self, h) -> str:
        dev = getattr(h, "device", None)
        if dev in ("cpu", "cuda"):
            return dev
        dev = self.cfg.harmonizer.device
        return dev if dev in ("cpu", "cuda") else "cpu"

    @property
    def harmonizer(self):
        return self.fitter.harmonizer

    @property
    def diag_error(self) -> float | None:
        return self.fitter.diag_error

    @property
    def name(self) -> str:
        return self.cfg.harmonizer.name

    @property
    def device(self) -> str:
        """Where the model really runs ("cpu" for harmonizers without a device)."""
        return self._device_of(self.harmonizer)

    @property
    def diagonal(self) -> bool:
        """Whether published grids are a cheap form (per-channel, or with "auto" also one
        global transform): ``grid_mode`` "diagonal", or "auto" with the model on the CPU."""
        return cheap_form(self.grid_mode, self.device)

    def _set_auto_hz(self) -> None:
        if self._auto_hz:      # leave the CPU to the frame loop; on a GPU fit every frame
            self.max_hz = None if self.device == "cuda" else CPU_REFRESH_HZ

    # ------------------------------------------------------------------ provider
    def start(self) -> "HarmonizerWorker":
        if self.threaded and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vidharm-harmonizer",
                                            daemon=True)
            self._thread.start()
        return self

    def submit(self, job: FitJob) -> None:
        if self.threaded:
            self._box.put(job)
            return
        n, self._submitted = self._submitted, self._submitted + 1
        if n % self.every == 0:
            try:
                self.fit(job)
            except Exception as exc:
                self._on_error(exc)

    def grid_at(self, t: float) -> ColorGrid | None:
        """The grid for the frame at ``t``: eased toward the newest fit over about half a
        refresh interval (``tuning.display_tau`` if set); a cut jumps."""
        snap = self.latest
        if snap is None:
            return None
        tau = self.tuning.display_tau
        if tau is None:
            tau = min(0.15, 0.5 * self.refresh_interval)
        if self.tuning.mode == "off":
            tau = 0.0
        return self._easing.toward(snap.grid, snap.epoch, t, tau)

    def force_cut(self) -> None:
        """The next fit starts over (background switched, harmonization turned back on...)."""
        self._cut_requests += 1

    def close(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._box.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("harmonizer thread did not stop within %.0f s", timeout)
        self._close_harmonizer(self.harmonizer)

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
                        cfg.harmonizer.name, first_line(exc), self.cfg.harmonizer.name)
            return
        old, self.fitter.harmonizer = self.harmonizer, h
        self.cfg = cfg
        self.fitter.relative = cfg.harmonizer.relative
        self.fitter.set_grid_mode(self.grid_mode, self.device)
        self._close_harmonizer(old)
        self._set_auto_hz()
        self.force_cut()

    @staticmethod
    def _close_harmonizer(h) -> None:
        try:
            h.close()
        except Exception:  # pragma: no cover
            pass

    # ------------------------------------------------------------------ work
    def fit(self, job: FitJob) -> GridSnapshot:
        """One fit on ``job``; publishes and returns the snapshot."""
        c0 = time.thread_time()
        requests = self._cut_requests
        forced = requests != self._cuts_seen
        self._cuts_seen = requests
        snap = self.fitter.fit(job, forced=forced)
        t = job.t
        held = self.recent_change
        if self._last_t is not None and t > self._last_t:
            held *= math.exp(-(t - self._last_t) / CHANGE_HOLD_S)
            self.refresh_interval += 0.2 * (min(t - self._last_t, 1.0) - self.refresh_interval)
        self.recent_change = max(self.fitter.last_change, held)
        self._last_t = t
        self.fits += 1
        self.latest = snap                        # one reference assignment: atomic
        if self.telemetry is not None:
            if self.threaded:                     # (not threaded: inside the frame's "apply")
                self.telemetry.cpu("harmonizer", time.thread_time() - c0)
            self.telemetry.refresh(snap.fit_s)
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
                self.fit(job)
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
                   f"({first_line(exc)}); moving it to the CPU")
            log.warning(msg)
            if self.telemetry:
                self.telemetry.note(msg)
            self._try_cuda_cleanup()
            self._apply_cfg(_with_device(self.cfg, "cpu"))
            return
        key = f"{type(exc).__name__}: {first_line(exc)}"
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
