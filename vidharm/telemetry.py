"""Live telemetry: fps, per-stage ms, capture-to-sink latency, dropped frames, harmonizer refresh.

:class:`Telemetry` is fed by the live engine (:mod:`vidharm.live`) and costs a few
microseconds per frame; its memory is bounded for arbitrarily long runs (a soak test runs for
30 minutes):

- latencies go into a fixed histogram (0.25 ms bins up to 2 s, then an overflow maximum), so
  p50/p95 over the whole run are exact to 0.25 ms without keeping every sample;
- per-stage times are running sums;
- one row per second (fps, dropped, repeated, refreshes, latency p50/p95 of that second, stage
  means) is kept for the chart: 30 minutes are 1,800 small rows.

Thread safety: :meth:`frame`, :meth:`dropped` and :meth:`repeated` are called from the frame
loop, :meth:`refresh` from the harmonizer thread and :meth:`dropped` from the capture thread;
a lock guards the shared counters.

``summary()`` returns a dict; :func:`one_line` formats it; :meth:`save_chart` writes a PNG
(matplotlib, Agg backend, imported only then).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: stage names the engine reports, in pipeline order
LIVE_STAGES = ("segment", "refine", "background", "apply", "sink")

_BIN_MS = 0.25
_BINS = int(2000 / _BIN_MS)


class LatencyHistogram:
    """Fixed-size histogram of durations (seconds in, ms out) with exact-to-a-bin percentiles."""

    def __init__(self):
        self.counts = np.zeros(_BINS + 1, np.int64)   # last bin: overflow
        self.n = 0
        self.max_ms = 0.0

    def add(self, seconds: float) -> None:
        ms = seconds * 1000.0
        if not math.isfinite(ms) or ms < 0:
            return
        self.counts[min(int(ms / _BIN_MS), _BINS)] += 1
        self.n += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def percentile(self, q: float) -> float:
        """The q-th percentile in ms (upper edge of its bin; the max for the overflow bin)."""
        if self.n == 0:
            return float("nan")
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100.0 * self.n)))
        if k >= _BINS:
            return self.max_ms
        return min((k + 1) * _BIN_MS, self.max_ms)


@dataclass
class _Second:
    """Counters for the current one-second bucket."""

    start: float
    frames: int = 0
    dropped: int = 0
    repeated: int = 0
    refreshes: int = 0
    privacy: int = 0
    latencies: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)


class Telemetry:
    """Collects what the live engine measures; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, bucket_s: float = 1.0):
        self.clock = clock
        self.bucket_s = float(bucket_s)
        self._lock = threading.Lock()
        self.latency = LatencyHistogram()
        self.stage_sum: dict[str, float] = {s: 0.0 for s in LIVE_STAGES}
        self.stage_n: dict[str, int] = {s: 0 for s in LIVE_STAGES}
        self.frames = 0            # frames processed and sent
        self.repeats = 0           # keep-alive re-sends (source stalled, paused) and placeholders
        self.drops = 0             # camera frames replaced before the loop took them
        self.privacy_frames = 0    # frames sent as background only (segmentation failed/garbage)
        self.refreshes = 0         # harmonizer grids published
        self.skips: dict[str, int] = {}   # camera frames not processed on purpose (see skipped)
        self.fit_hist = LatencyHistogram()
        self.max_gap_s = 0.0       # the longest time between two sends (a stall)
        self.rows: list[tuple] = []   # per-second rows for the chart (see _close_bucket)
        self.t_start: float | None = None
        self.t_end: float | None = None
        self._last_send: float | None = None
        self._bucket: _Second | None = None
        self.notes: list[str] = []
        # CPU time: per stage of the frame loop (that thread's CPU), per helper thread
        # ("capture", "harmonizer"), and the whole process between start() and stop()
        self.cpu_sum: dict[str, float] = {}
        self.cpu_start: float | None = None
        self.cpu_end: float | None = None
        self.cpu_clock: Callable[[], float] = time.process_time
        self._native_start: float | None = None
        self._native_s: float | None = None

    # ------------------------------------------------------------------ feeding
    def start(self) -> None:
        with self._lock:
            self.t_start = self.clock()
            self.cpu_start = self.cpu_clock()
            self._native_start = native_threads_cpu()
            self._bucket = _Second(self.t_start)

    def _tick(self, now: float) -> _Second | None:
        """The bucket for ``now``; None after :meth:`stop` (late events are ignored)."""
        if self.t_end is not None:
            return None
        b = self._bucket
        if b is None:
            if self.t_start is None:
                self.t_start = now
            b = self._bucket = _Second(now)
        while now - b.start >= self.bucket_s:
            self._close_bucket(b)
            b = self._bucket = _Second(b.start + self.bucket_s)
        return b

    def _close_bucket(self, b: _Second) -> None:
        lat = np.asarray(b.latencies, np.float64) * 1000.0
        p50 = float(np.percentile(lat, 50)) if lat.size else float("nan")
        p95 = float(np.percentile(lat, 95)) if lat.size else float("nan")
        stages = {s: 1000.0 * v[0] / v[1] for s, v in b.stages.items() if v[1]}
        self.rows.append((b.start - (self.t_start or b.start), b.frames / self.bucket_s,
                          b.dropped, b.repeated, b.refreshes / self.bucket_s, p50, p95, stages,
                          b.privacy))

    def _sent(self, now: float) -> None:
        if self._last_send is not None:
            gap = now - self._last_send
            if gap > self.max_gap_s:
                self.max_gap_s = gap
        self._last_send = now

    def frame(self, latency_s: float, stages: dict[str, float] | None = None,
              privacy: bool = False, now: float | None = None,
              cpu: dict[str, float] | None = None) -> None:
        """A processed frame was sent; ``stages`` in seconds (wall), ``cpu`` the frame
        loop's CPU seconds per stage."""
        now = self.clock() if now is None else now
        with self._lock:
            b = self._tick(now)
            if b is None:
                return
            for s, v in (cpu or {}).items():
                self.cpu_sum[s] = self.cpu_sum.get(s, 0.0) + v
            self.frames += 1
            b.frames += 1
            self.latency.add(latency_s)
            b.latencies.append(latency_s)
            if privacy:
                self.privacy_frames += 1
                b.privacy += 1
            for s, v in (stages or {}).items():
                self.stage_sum[s] = self.stage_sum.get(s, 0.0) + v
                self.stage_n[s] = self.stage_n.get(s, 0) + 1
                acc = b.stages.setdefault(s, [0.0, 0])
                acc[0] += v
                acc[1] += 1
            self._sent(now)

    def repeated(self, now: float | None = None) -> None:
        """A keep-alive frame (last good frame or placeholder) was sent."""
        now = self.clock() if now is None else now
        with self._lock:
            b = self._tick(now)
            if b is None:
                return
            self.repeats += 1
            b.repeated += 1
            self._sent(now)

    def skipped(self, why: str) -> None:
        """A camera frame left out on purpose: ``capped`` (over the --fps cap) or ``idle``
        (nobody reads the virtual camera)."""
        with self._lock:
            self.skips[why] = self.skips.get(why, 0) + 1

    def dropped(self, n: int = 1) -> None:
        with self._lock:
            b = self._tick(self.clock())
            if b is None:
                return
            self.drops += n
            b.dropped += n

    def refresh(self, fit_s: float) -> None:
        """The harmonizer published a new colour transform after ``fit_s`` seconds of work."""
        with self._lock:
            b = self._tick(self.clock())
            if b is None:
                return
            self.refreshes += 1
            b.refreshes += 1
            self.fit_hist.add(fit_s)

    def cpu(self, part: str, seconds: float) -> None:
        """CPU seconds spent by a helper thread (``capture``: decoding and resizing camera
        frames; ``harmonizer``: fits), counted while the run is on."""
        with self._lock:
            if self.t_start is None or self.t_end is not None:
                return
            self.cpu_sum[part] = self.cpu_sum.get(part, 0.0) + seconds

    def note(self, text: str) -> None:
        """Something worth saying in the summary (camera fallback, CUDA fallback...)."""
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)

    def stop(self) -> None:
        """End of the run (idempotent: the first call counts)."""
        with self._lock:
            if self.t_end is not None:
                return
            self.t_end = self.clock()
            self.cpu_end = self.cpu_clock()
            native = native_threads_cpu()
            if native is not None and self._native_start is not None:
                self._native_s = max(0.0, native - self._native_start)
            if self._bucket is not None and self._bucket.frames + self._bucket.repeated:
                self._close_bucket(self._bucket)
            self._bucket = None

    # ------------------------------------------------------------------ reading
    def summary(self) -> dict:
        with self._lock:
            end = self.t_end if self.t_end is not None else self.clock()
            secs = max(1e-9, end - (self.t_start if self.t_start is not None else end))
            offered = self.frames + self.drops
            cpu_end = self.cpu_end if self.cpu_end is not None else self.cpu_clock()
            cpu_s = cpu_end - self.cpu_start if self.cpu_start is not None else float("nan")
            per = 1000.0 / max(self.frames, 1)
            cpu_ms = {k: v * per for k, v in self.cpu_sum.items()}
            if cpu_ms and self._native_s is not None:
                cpu_ms["native"] = self._native_s * per
            if cpu_ms and math.isfinite(cpu_s):
                # MediaPipe's and OpenCV's own worker threads, GIL hand-overs, the control
                # file, telemetry: whatever the counted parts do not cover
                cpu_ms["other"] = max(0.0, cpu_s * per - sum(cpu_ms.values()))
            return {
                "seconds": secs,
                "frames": self.frames,
                "fps": self.frames / secs,
                "latency_p50_ms": self.latency.percentile(50),
                "latency_p95_ms": self.latency.percentile(95),
                "latency_max_ms": self.latency.max_ms,
                "dropped": self.drops,
                "dropped_pct": 100.0 * self.drops / offered if offered else 0.0,
                "repeated": self.repeats,
                "privacy_frames": self.privacy_frames,
                "refresh_hz": self.refreshes / secs,
                "refreshes": self.refreshes,
                "fit_ms_p50": self.fit_hist.percentile(50),
                "max_stall_ms": 1000.0 * self.max_gap_s,
                "stages_ms": {s: 1000.0 * self.stage_sum[s] / self.stage_n[s]
                              for s in self.stage_sum if self.stage_n.get(s)},
                "notes": list(self.notes),
                "capped": self.skips.get("capped", 0),
                "idle": self.skips.get("idle", 0),
                "cpu_s": cpu_s,
                "cores": cpu_s / secs,
                "cpu_ms": cpu_ms,
            }

    def save_chart(self, path, title: str = "vidharm run") -> str:
        """Write a PNG: fps and drops, latency p50/p95, stage ms (stacked) and refresh Hz,
        one point per second."""
        import matplotlib
        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
        with self._lock:
            rows = list(self.rows)
            if self._bucket is not None and self._bucket.frames:
                b = self._bucket
                self._close_bucket(b)
                rows = list(self.rows)
                self.rows.pop()
        s = self.summary()
        fig = Figure(figsize=(10, 8), dpi=100)
        axes = fig.subplots(3, 1, sharex=True)
        t = np.array([r[0] for r in rows]) if rows else np.zeros(0)
        tc = t + 0.5 * self.bucket_s          # lines at bucket centres, bars span the bucket
        ax = axes[0]
        ax.plot(tc, [r[1] for r in rows], label="fps sent", color="tab:blue")
        ax.bar(t, [r[2] for r in rows], width=0.8 * self.bucket_s, color="tab:red", alpha=0.5,
               label="dropped / s", align="edge")
        ax.plot(tc, [r[4] for r in rows], label="harmonizer refresh Hz", color="tab:green")
        ax.set_ylabel("per second")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{title}: {one_line(s)}", fontsize=8, loc="left", wrap=True)
        ax = axes[1]
        ax.plot(tc, [r[5] for r in rows], label="latency p50", color="tab:blue")
        ax.plot(tc, [r[6] for r in rows], label="latency p95", color="tab:orange")
        ax.set_ylabel("capture -> sink, ms")
        ax.legend(loc="upper right", fontsize=8)
        ax = axes[2]
        bottom = np.zeros(len(rows))
        names = [n for n in LIVE_STAGES if any(n in r[7] for r in rows)]
        names += sorted({k for r in rows for k in r[7]} - set(names))
        for n in names:
            v = np.array([r[7].get(n, 0.0) for r in rows])
            ax.bar(t, v, bottom=bottom, width=0.8 * self.bucket_s, label=n, align="edge")
            bottom += v
        ax.set_ylabel("ms per frame")
        ax.set_xlabel("seconds")
        ax.legend(loc="upper right", fontsize=8, ncol=len(names) or 1)
        fig.tight_layout()
        fig.savefig(str(path))
        return str(path)


def native_threads_cpu(task_dir: str = "/proc/self/task") -> float | None:
    """CPU seconds so far of this process's threads that Python did not start (Linux: the
    threads whose name is not "python..."): MediaPipe's inference threads ("drishti..."),
    FFmpeg's decoder threads, OpenCV's pool. None where /proc is not there."""
    import os
    try:
        tids = os.listdir(task_dir)
        tick = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    total = 0
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue                      # the thread ended meanwhile
        comm = st[st.find("(") + 1: st.rfind(")")]
        if comm.startswith(("python", "vidharm")):
            continue
        fields = st[st.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])        # utime + stime
    return total / tick


def _f(v: float, fmt: str = "{:.0f}") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def one_line(s: dict) -> str:
    """The end-of-run summary as one line."""
    stages = " ".join(f"{k} {v:.1f}" for k, v in s.get("stages_ms", {}).items())
    text = (f"{s['fps']:.1f} fps ({s['frames']} frames in {s['seconds']:.1f} s), "
            f"latency p50 {_f(s['latency_p50_ms'])} ms / p95 {_f(s['latency_p95_ms'])} ms, "
            f"dropped {s['dropped']} ({s['dropped_pct']:.1f} %), "
            f"harmonizer {s['refresh_hz']:.1f} Hz"
            + (f" (fit p50 {_f(s['fit_ms_p50'])} ms)" if s.get("refreshes") else ""))
    if s.get("cores") is not None and math.isfinite(s["cores"]):
        text += f", CPU {s['cores']:.2f} cores"
    if s.get("repeated"):
        text += f", repeated {s['repeated']}"
    if s.get("capped"):
        text += f", over the fps cap {s['capped']}"
    if s.get("idle"):
        text += f", unwatched (paused) {s['idle']}"
    if s.get("privacy_frames"):
        text += f", background-only {s['privacy_frames']}"
    if stages:
        text += f"; ms/frame: {stages}"
    return text
