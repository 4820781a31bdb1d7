"""The live engine behind ``vidharm run``: camera in, "PHNet Camera" out, in real time.

Three threads, none of which waits for another's slow work::

    capture thread     source frames --> [frame mailbox, latest wins] --+
                                          (a frame replaced unread = dropped)
    frame loop (main)  take the newest frame; the frame graph (vidharm.graph): segment,
                       refine, background, fused apply of the newest colour grid; send.
    harmonizer thread  the graph's low-res jobs -> fit -> smoothed grid (vidharm.live.worker)

It never lets the user down:

- no camera frames (unplugged, read errors): the last good OUTPUT frame keeps being sent at
  the frame rate, then after ``placeholder_s`` a placeholder (the background, dimmed, with a
  line of text); a camera source reconnects by itself.
- the harmonizer raises: the last good grid stays in use (see the worker).
- privacy: a mask that cannot be trusted gives the background alone (see the graph).
- nobody has the virtual camera open (a :class:`~vidharm.protocols.Watchable` sink says so):
  frames are taken and thrown away, no work; the last picture is re-sent once a second.
- :meth:`LiveEngine.stop` (Ctrl-C / SIGTERM in the CLI) ends the loop; :meth:`shutdown`
  stops the threads, releases the camera, closes the sink (the MP4 is finished), frees the
  segmenter and harmonizer.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..composite import BackgroundProvider, cover_crop, make_background
from ..config import Config
from ..errors import ConfigError, InputError, OutputError, VidharmError, describe
from ..graph import FrameGraph, FrameOut
from ..protocols import (Closable, Interactive, Noted, Openable, Reconnecting, Releasable,
                         SizedSource, Watchable)
from ..registry import registry
from ..telemetry import Telemetry
from ..temporal import SmoothingTuning
from ..video import parse_size
from .control import ControlFile, Controls
from .placeholder import Placeholder
from .worker import CPU_BUDGET, HarmonizerWorker, Mailbox

log = logging.getLogger("vidharm.live")

__all__ = ["LiveEngine", "backgrounds_in"]


class LiveEngine(Controls):
    """The live loop. Typical use (what ``vidharm run`` does)::

        eng = LiveEngine(cfg, source, sink, "beach.jpg")
        summary = eng.run(duration=None)     # until stop() / quit / the source ends

    - ``source``: a :class:`~vidharm.protocols.Source` (a camera, a file at real pace);
      ``resize_to`` = (W, H) resizes its frames (cover-crop) on the capture thread.
    - ``sink``: a :class:`~vidharm.protocols.Sink` and any of its optional capabilities;
      ``open_sink=False`` when the caller opened it already (``vidharm run`` does, to fail
      before the camera opens).
    - ``background``: a spec for :func:`make_background` or a provider (then not closed here).
    - ``backgrounds``: specs the "next background" command cycles through.
    - ``segmenter`` / ``harmonizer_factory(cfg)``: injectable (tests); defaults from ``cfg``.
    - ``grid_mode``: "auto" (on the CPU a cheap form of the colour grid: one global transform
      or per-channel grids; full affine on CUDA), "full" or "diagonal" (per-channel grids
      only; see :func:`vidharm.color.cheap_refits`).
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
                 watch_interval: float = 0.25, open_sink: bool = True,
                 profile: str | None = None, overrides: dict | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg, self.profile, self.overrides = cfg, profile, dict(overrides or {})
        self.source, self.sink, self.clock = source, sink, clock
        self.open_sink = open_sink
        src_fps = source.fps if isinstance(source, SizedSource) else 0
        self.fps = float(fps or src_fps or cfg.live.fps or 30)
        self.max_fps = float(max_fps) if max_fps else None
        if self.max_fps:
            self.fps = min(self.fps, self.max_fps)
        self.watch_interval = float(watch_interval)
        self.resize_to = tuple(resize_to) if resize_to else None
        self.telemetry = telemetry or Telemetry(clock=clock)
        self.tuning = tuning or SmoothingTuning()
        self.stall_s, self.placeholder_s = stall_s, placeholder_s
        self.sync_every = int(sync_every)
        self._worker_opts = dict(max_hz=max_refresh_hz, cpu_budget=harmonizer_budget,
                                 grid_mode=grid_mode)
        self._init_state()
        self._owns_background = not isinstance(background, BackgroundProvider)
        bg = make_background(background, cfg) if self._owns_background else background
        self.background_spec = str(background) if self._owns_background else bg.describe()
        self.backgrounds = [str(b) for b in backgrounds]
        # a provider passed in (as `vidharm run` does) is found in the list by its file, so
        # the first 'next background' goes to the one after it, not to itself
        self._bg_index = _index_of(str(getattr(bg, "path", self.background_spec)),
                                   self.backgrounds)
        self.worker = None
        try:
            if cfg.harmonizer.name != "none":
                self.worker = self._new_worker(cfg, harmonizer_factory)
            seg = segmenter or registry.segmenters.create(cfg.segmentation.segmenter,
                                                          cfg.segmentation)
        except BaseException:
            if self.worker is not None:
                self.worker.close()
            if self._owns_background:
                bg.close()
            raise
        self._owns_segmenter = segmenter is None
        self.placeholder = Placeholder(lambda: self.background, lambda: self._last_t_media or 0.0)
        self.graph = FrameGraph(cfg, bg, seg, grids=self.worker, video=True,
                                note=self.telemetry.note, placeholder=self._placeholder,
                                on_segmenter_failing=self._rebuild_segmenter)
        self.graph.harmonize_on = bool(harmonize) and self.worker is not None
        self.control = control if isinstance(control, ControlFile) or control is None \
            else ControlFile(control, clock=clock)
        self._frames = Mailbox(frame_queue)
        if isinstance(source, Reconnecting) and source.on_event is None:
            source.on_event = self._source_event

    def _init_state(self) -> None:
        self.idle = False                # nobody reads the sink (sink.watched() is False)
        self.idle_resend_s = 1.0         # ... then the last picture is sent this often
        self.paused = False
        self._resume = False
        self._next_due: float | None = None
        self._watch_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._capture_done = threading.Event()
        self._capture_thread: threading.Thread | None = None
        self._swaps: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._logged: set[str] = set()
        self._last_out: np.ndarray | None = None
        self._last_frame_time: float | None = None   # when the last new camera frame came
        self._last_send: float | None = None
        self._last_t_media: float | None = None
        self._t0: float | None = None
        self._n = 0
        self._sink_errors = 0
        self.sink_error: BaseException | None = None   # the sink could not finish (disk full)
        self.source_error: BaseException | None = None  # the source broke (a corrupt file)
        self._lat_ema = 0.0
        self._last_overlay = 0.0
        self._closed = False
        self.quit_reason = ""
        self._stage_cpu: dict[str, float] = {}
        self._cpu_mark: float | None = None

    def _new_worker(self, cfg: Config, factory=None) -> HarmonizerWorker:
        """The harmonizer thread (``sync_every`` > 0: fits on the frame loop, every N-th frame)."""
        return HarmonizerWorker(cfg, factory, self.tuning, self.telemetry,
                                threaded=self.sync_every <= 0, every=max(1, self.sync_every),
                                **self._worker_opts)

    # ------------------------------------------------------------------ the graph's state
    background = property(lambda self: self.graph.background,
                          lambda self, v: setattr(self.graph, "background", v))
    segmenter = property(lambda self: self.graph.segmenter,
                         lambda self, v: setattr(self.graph, "segmenter", v))
    harmonize_on = property(lambda self: self.graph.harmonize_on,
                            lambda self, v: setattr(self.graph, "harmonize_on", bool(v)))
    show_mask = property(lambda self: self.graph.show_mask,
                         lambda self, v: setattr(self.graph, "show_mask", bool(v)))
    last_mask = property(lambda self: self.graph.last_mask)
    last_bg = property(lambda self: self.graph.last_bg)

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

    # ------------------------------------------------------------------ capture thread
    def _source_event(self, kind: str, message: str) -> None:
        """From the capture thread: the camera was lost / came back."""
        self.telemetry.note(message)
        if kind == "reconnected":
            self._swaps.put(self.graph.cut)    # new light, new framing: start smoothing over

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
            self.telemetry.note(f"source error: {describe(exc)}")
        finally:
            self._capture_done.set()

    # ------------------------------------------------------------------ the loop
    def run(self, duration: float | None = None, max_frames: int | None = None) -> dict:
        """Run until ``duration`` seconds, ``max_frames`` frames, :meth:`stop`, a quit
        command or the end of a non-looping source; then shut down. Returns the telemetry
        summary (see :meth:`vidharm.telemetry.Telemetry.summary`)."""
        try:
            if self.open_sink and isinstance(self.sink, Openable):
                self.sink.open(self._out_size(), self.fps)
            for part in (self.sink, self.source):
                for note in (part.notes if isinstance(part, Noted) else []):
                    self.telemetry.note(note)
            size = self._work_size()
            if size:
                self.graph.warm_up(size)
            if self.worker is not None:
                self.worker.start()
            _freeze_gc()
            self._t0 = self.clock()
            self.telemetry.start()
            self._capture_thread = threading.Thread(target=self._capture, name="vidharm-capture",
                                                    daemon=True)
            self._capture_thread.start()
            if isinstance(self.sink, Watchable):
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
            raise OutputError(f"the output could not be finished ({describe(err)})",
                              "check free disk space and the output device") from err
        if self.source_error is not None:
            err = self.source_error
            if isinstance(err, VidharmError):
                raise err
            raise InputError(f"the source stopped after {self._n} frames ({describe(err)})",
                             "check the camera or the file") from err
        return self.telemetry.summary()

    def _out_size(self) -> tuple[int, int] | None:
        try:
            return parse_size(self.cfg.live.size)
        except ConfigError:
            return None

    def _work_size(self) -> tuple[int, int] | None:
        if self.resize_to:
            return self.resize_to
        size = self.source.size if isinstance(self.source, SizedSource) else None
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
                self.graph.cut()               # minutes may have passed: start over
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
                if isinstance(self.source, Reconnecting):   # a camera then grabs without decoding
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
                log.warning("the sink failed (%s); retrying", describe(exc))
                self.telemetry.note(f"sink error: {describe(exc)}")
            if self._sink_errors >= self.SINK_RETRIES:
                raise OutputError(f"the output stopped accepting frames ({describe(exc)})",
                                  "check the virtual camera device / output, then restart") from exc
        else:
            if self._sink_errors:
                log.warning("the sink works again after %d failed frames", self._sink_errors)
                self._sink_errors = 0
        self._last_send = self.clock()

    def _handle_sink_events(self) -> None:
        if not isinstance(self.sink, Interactive):
            return
        for cmd in self.sink.events():
            self.command(cmd)

    def _status(self, now: float, latency: float) -> None:
        self._lat_ema += 0.1 * (latency * 1000.0 - self._lat_ema)
        if now - self._last_overlay >= 0.5 and isinstance(self.sink, Interactive):
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
        pump = self.sink.pump if isinstance(self.sink, Interactive) else None
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

    def step(self, rgb: np.ndarray, t: float) -> np.ndarray:
        """Process one frame synchronously, without source, sink or threads (offline
        measurement, e.g. ``bench/flicker.py``; use ``sync_every`` > 0 so the harmonizer
        fits on this thread too). Returns the output frame."""
        out, _, _ = self.process(rgb, t)
        self._n += 1
        return out

    def process(self, rgb: np.ndarray, t: float) -> tuple[np.ndarray, dict, bool]:
        """One frame through the graph: (output, stage seconds, private?). ``private``: the
        frame is the background alone because the mask could not be trusted."""
        self._last_t_media = t
        res: FrameOut = self.graph.process(rgb, t)
        self._stage_cpu = res.cpu
        return res.out, res.stages, res.private

    def _placeholder(self, text: str = "camera unavailable - reconnecting") -> np.ndarray | None:
        size = self._work_size() or self._out_size()
        return self.placeholder(size, text) if size else None

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
                if isinstance(self.source, Releasable):
                    self.source.release()
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
                log.warning("shutdown: %s", describe(exc))
        self.telemetry.stop()

    def _close_source(self) -> None:
        if isinstance(self.source, Closable):
            self.source.close()

    def _close_sink(self) -> None:
        self.sink.close()

    def _close_worker(self) -> None:
        if self.worker is not None:
            self.worker.close()
            if self.worker.diag_error is not None:
                share = self.worker.fitter.global_share or 0.0
                self.telemetry.note(
                    f"colour grid: a cheaper form of {self.worker.name}'s transform for speed "
                    f"on the CPU (per-channel grid, or one global transform in "
                    f"{100 * share:.0f} % of fits), mean difference "
                    f"{self.worker.diag_error:.1f} grey levels on the person (--grid full keeps "
                    f"the full transform)")

    def _close_models(self) -> None:
        self._run_swaps()          # something loaded meanwhile: swap it in so it is closed too
        self.graph.close()
        if self._owns_segmenter:
            if isinstance(self.segmenter, Closable):
                self.segmenter.close()
        if self._owns_background:
            self.background.close()


def _freeze_gc() -> None:
    """Move everything allocated so far (models, libraries) out of the garbage collector's
    reach: later full collections only walk what the run itself allocates, so they stay short
    (a stall in the frame loop is a dropped frame)."""
    import gc
    gc.collect()
    gc.freeze()


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
