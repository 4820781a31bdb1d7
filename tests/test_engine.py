"""The live engine (``vidharm run``): real sample clip as the camera, real MediaPipe, short runs.

Covered: file sink -> valid MP4 (PyAV), null-sink summary, privacy fallback (segmenter raises /
NaN / all-ones / wrong shape: the sink never gets the raw frame), harmonizer thread exception
(loop continues with the last good grid, logged once), CUDA error -> CPU, camera reconnect
(fake capture and a real file through cv2.VideoCapture), keep-alive while the camera is away,
control file, adaptive smoothing, SIGTERM clean shutdown.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import run_cli, vidharm_exe

GREEN = (0, 255, 0)


# ----------------------------------------------------------------------------- helpers
def _cfg(**over):
    from vidharm.config import load_config
    return load_config("call-cpu", {"harmonizer.name": "stats", **over})


class RecordingSink:
    """Keeps copies of what it is sent."""

    def __init__(self, keep: int = 10_000):
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.keep = keep
        self.closed = False

    def send(self, rgb, t=None):
        if len(self.frames) < self.keep:
            self.frames.append(np.array(rgb, copy=True))
        self.times.append(t)

    def close(self):
        self.closed = True


class RecordingSource:
    """Wraps a source and keeps the frames it hands out (to compare outputs against)."""

    def __init__(self, src):
        self.src = src
        self.frames: list[np.ndarray] = []
        self.fps = src.fps
        self.size = src.size

    def __iter__(self):
        for rgb, t in self.src:
            self.frames.append(rgb.copy())
            yield rgb, t

    def close(self):
        self.src.close()


def _sample_source(asset, realtime=True, loop=True):
    from vidharm_plugins.sources import FileSource
    return FileSource(asset("sample-clip"), loop=loop, realtime=realtime)


def _engine(asset, sink, background="#00ff00", cfg=None, source=None, **kw):
    from vidharm.live import LiveEngine
    return LiveEngine(cfg or _cfg(), source or _sample_source(asset), sink, background, **kw)


# ----------------------------------------------------------------------------- CLI runs
def test_run_file_sink_writes_valid_mp4(asset, tmp_path):
    import av
    out = tmp_path / "rec.mp4"
    png = tmp_path / "telemetry.png"
    r = run_cli("run", "--background", asset("sample-background"), "--source", "sample",
                "--sink", "file", "--output", out, "--duration", "2.5", "--size", "640x360",
                "--telemetry", png)
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("vidharm run:")][0]
    for field in ("fps", "latency p50", "p95", "dropped", "harmonizer", "Hz"):
        assert field in line
    import torch
    if not torch.cuda.is_available():       # no --profile on a CPU: the light one, said so
        assert "profile call-cpu (no GPU" in r.stderr
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        dur = float(c.duration) / 1e6
    assert frames[0].shape == (360, 640, 3)
    assert 0.4 * 2.5 * 30 <= len(frames) <= 1.1 * 2.5 * 30       # ~75 at 30 fps
    assert 1.8 <= dur <= 3.0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_run_without_camera_or_virtualcam_is_one_line(tmp_path, monkeypatch):
    r = run_cli("run", "-b", "#123456", "--source", "camera", "--camera", "/nonexistent/video9",
                "--sink", "null")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "could not be opened" in r.stderr and "--source sample" in r.stderr
    r = run_cli("run", "-b", "#123456", "--source", "sample", "--sink", "file")
    assert r.returncode == 2 and "--output" in r.stderr


def test_sigterm_clean_shutdown_mp4_valid(asset, tmp_path):
    import av
    out = tmp_path / "rec.mp4"
    env = dict(os.environ)
    p = subprocess.Popen(vidharm_exe() + ["run", "-b", "#3366aa", "--source", "sample", "--sink",
                                          "file", "-o", str(out), "--size", "640x360",
                                          "--duration", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = p.stderr.readline()               # printed once everything is open
        assert "Ctrl-C to stop" in banner, banner
        time.sleep(2.0)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, stderr
    assert "vidharm run:" in stdout and "wrote" in stdout
    with av.open(str(out)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n >= 20
    assert not [f for f in os.listdir(tmp_path) if "partial" in f or f.endswith(".part")]


# ----------------------------------------------------------------------------- in-process runs
def test_null_sink_summary_fields(asset):
    from vidharm_plugins.sinks import NullSink
    from vidharm.telemetry import one_line
    sink = NullSink()
    eng = _engine(asset, sink, background=asset("sample-background"))
    s = eng.run(duration=2.0)
    for k in ("fps", "frames", "latency_p50_ms", "latency_p95_ms", "dropped", "dropped_pct",
              "refresh_hz", "stages_ms", "max_stall_ms"):
        assert k in s
    assert s["frames"] == sink.frames > 20
    assert s["fps"] > 10 and s["refresh_hz"] > 2
    assert 0 < s["latency_p50_ms"] <= s["latency_p95_ms"] < 1000
    assert set(s["stages_ms"]) >= {"segment", "refine", "background", "apply", "sink"}
    assert eng.worker.fits > 5 and eng.worker.errors == 0
    assert "fps" in one_line(s)


class BadSegmenter:
    """Raises / returns garbage on the frames in ``bad`` (by call index)."""

    def __init__(self, kind, bad=lambda i: True):
        from vidharm.registry import registry
        self.real = registry.segmenters.create("mediapipe", _cfg().segmentation)
        self.kind, self.bad, self.i = kind, bad, 0
        self.bad_calls = []

    def segment(self, rgb, t=None):
        i, self.i = self.i, self.i + 1
        m = self.real.segment(rgb, t)
        if not self.bad(i):
            return m
        self.bad_calls.append(i)
        if self.kind == "raises":
            raise RuntimeError("segmenter exploded")
        if self.kind == "nan":
            m[5:9, 5:9] = np.nan
            return m
        if self.kind == "ones":
            return np.ones_like(m)
        if self.kind == "shape":
            return m[:-3]
        raise AssertionError(self.kind)

    def close(self):
        self.real.close()


@pytest.mark.parametrize("kind", ["raises", "nan", "ones", "shape"])
def test_privacy_never_sends_raw_frame(asset, kind, caplog):
    sink = RecordingSink()
    src = RecordingSource(_sample_source(asset, realtime=False, loop=False))
    seg = BadSegmenter(kind)
    eng = _engine(asset, sink, source=src, segmenter=seg)
    with caplog.at_level(logging.WARNING, logger="vidharm.live"):
        s = eng.run(max_frames=12)
    seg.close()
    assert len(sink.frames) >= 10 and s["privacy_frames"] == s["frames"]
    for out in sink.frames:
        assert (out == np.array(GREEN, np.uint8)).all()          # the background, exactly
    raw = src.frames[0].astype(int)
    assert all(np.abs(out.astype(int) - raw).mean() > 30 for out in sink.frames)
    msgs = [r.getMessage() for r in caplog.records if "privacy" in r.getMessage()]
    assert len(msgs) == 1                                         # logged once


def test_privacy_blur_background_and_recovery(asset, caplog):
    """Intermittent failures: failed frames are a strong blur of the room (not the room), and
    the person comes back when segmentation recovers."""
    import cv2
    sink = RecordingSink()
    # paced like a camera: an unpaced source floods the 2-frame camera queue and frames drop
    src = RecordingSource(_sample_source(asset, realtime=True, loop=False))
    seg = BadSegmenter("raises", bad=lambda i: 4 <= i < 8)
    eng = _engine(asset, sink, background="blur", source=src, segmenter=seg)
    with caplog.at_level(logging.WARNING, logger="vidharm.live"):
        eng.run(max_frames=14)
    seg.close()
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "sending the background only" in text and "usable again after 4" in text
    # the unpaced source may outrun the loop (the camera queue drops the oldest frame), but
    # every segmented frame is sent, in order, and the run spans the failures and the recovery
    assert len(sink.frames) == seg.i and seg.i >= 10

    def detail(img):
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)   # band-pass energy
        return float(np.abs(cv2.Laplacian(cv2.GaussianBlur(g, (0, 0), 1.5), cv2.CV_32F)).mean())
    raw_detail = detail(src.frames[0])
    for i, out in enumerate(sink.frames):
        if 4 <= i < 8:
            assert detail(out) < 0.15 * raw_detail                # no recognisable room
        else:
            assert detail(out) > 0.35 * raw_detail                # the sharp person is there


def test_flaky_sink_is_retried_and_a_dead_one_ends_the_run(asset, caplog):
    from vidharm.errors import OutputError

    class Flaky(RecordingSink):
        calls = 0

        def send(self, rgb, t=None):
            self.calls += 1
            if self.always or 5 <= self.calls < 10:
                raise OSError("device busy")
            super().send(rgb, t)

    sink = Flaky()
    sink.always = False
    with caplog.at_level(logging.WARNING, logger="vidharm.live"):
        s = _engine(asset, sink).run(duration=1.2)
    assert len(sink.frames) >= 15 and sink.calls == len(sink.frames) + 5
    text = " ".join(r.getMessage() for r in caplog.records)
    assert text.count("the sink failed") == 1 and "works again after 5" in text
    dead = Flaky()
    dead.always = True
    eng = _engine(asset, dead)
    eng.SINK_RETRIES = 5
    with pytest.raises(OutputError, match="stopped accepting frames"):
        eng.run(duration=5)
    assert dead.closed and eng.stopped


class FlakyHarmonizer:
    """The first job (two fits, relative: the composite, then the camera frame): a strong
    darkening grid relative to the identity; then every fit raises."""

    name = "flaky"

    def __init__(self, cfg=None):
        self.calls = 0

    def fit(self, comp, mask):
        from vidharm.color import ColorGrid
        self.calls += 1
        if self.calls == 1:
            return ColorGrid(ColorGrid.identity(2, 2).coeffs * np.array([0.5, 0.5, 0.5, 0],
                                                                        np.float32)[None, None, None])
        if self.calls == 2:
            return ColorGrid.identity(2, 2)
        raise ValueError("model blew up")

    def reset(self):
        pass


def test_harmonizer_thread_exception_keeps_last_grid(asset, caplog):
    sink = RecordingSink()
    made = []

    def factory(cfg):
        made.append(FlakyHarmonizer())
        return made[-1]

    eng = _engine(asset, sink, harmonizer_factory=factory, max_refresh_hz=None)
    with caplog.at_level(logging.WARNING, logger="vidharm.live"):
        s = eng.run(duration=2.0)
    assert s["frames"] > 20 and s["fps"] > 10                      # the loop went on
    assert eng.worker.errors >= 3 and eng.worker.fits == 1
    warned = [r for r in caplog.records if "model blew up" in r.getMessage()]
    assert len(warned) == 1                                        # logged once
    # the frames still carry the one good (darkening) grid
    shown = eng.worker._easing.shown
    assert shown is not None and np.allclose(shown.coeffs[..., 0, 0], 0.5)


def test_cuda_error_moves_harmonizer_to_cpu():
    from vidharm.fitting import FitJob
    from vidharm.live import HarmonizerWorker
    from vidharm.registry import registry
    devices = []

    class GpuOnly:
        def __init__(self, cfg):
            self.device = cfg.harmonizer.device
            self.inner = registry.harmonizers.create("stats", cfg.harmonizer)
            devices.append(self.device)

        def fit(self, comp, mask):
            if self.device == "cuda":
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner.fit(comp, mask)

        def reset(self):
            pass

    worker = HarmonizerWorker(_cfg(**{"harmonizer.device": "cuda"}), GpuOnly, threaded=False)
    rgb = np.full((64, 96, 3), 120, np.uint8)
    bg = np.full((64, 96, 3), 60, np.uint8)
    mask = np.zeros((64, 96), np.float32)
    mask[10:50, 30:70] = 1
    with pytest.raises(RuntimeError):
        worker.fit(FitJob(rgb, bg, mask, 0.0, False))
    worker._on_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert worker.cfg.harmonizer.device == "cpu" and devices == ["cuda", "cpu"]
    snap = worker.fit(FitJob(rgb, bg, mask, 0.1, False))
    assert snap.grid is not None and worker.latest is snap


def test_harmonizer_pause_keeps_budget_and_refresh_floor():
    """On the CPU the harmonizer thread rests so it uses at most its budget of a core, but
    never so long that the refresh rate falls under CPU_MIN_HZ; the refresh cap still holds."""
    from vidharm.live.worker import CPU_MIN_HZ, HarmonizerWorker
    worker = HarmonizerWorker(_cfg(), threaded=False, max_hz=15.0, cpu_budget=0.4)
    assert worker.device == "cpu" and CPU_MIN_HZ == 5.0
    pause = lambda fit: worker._pause_after(100.0, 100.0 + fit)      # noqa: E731
    assert pause(0.005) == pytest.approx(1 / 15 - 0.005)    # fast fit: the 15 Hz cap
    assert pause(0.050) == pytest.approx(0.125 - 0.050)     # 50 ms at 0.4 of a core: 8 Hz
    assert pause(0.100) == pytest.approx(0.200 - 0.100)     # budget says 4 Hz: floor 5 Hz
    assert pause(0.300) == 0.0                               # slower than the floor: no rest
    worker.max_hz = None
    assert pause(0.010) == pytest.approx(0.025 - 0.010)     # no cap: the budget alone


# ----------------------------------------------------------------------------- camera
class FakeCapture:
    """A camera made of the sample clip's frames: plays ``good`` frames, then fails reads."""

    opened = 0

    def __init__(self, frames, good=10, offer=(640, 360)):
        self.frames, self.good, self.offer = frames, good, offer
        self.i = 0
        self.props = {}
        self.released = False
        FakeCapture.opened += 1

    def isOpened(self):
        return not self.released

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        import cv2
        return {cv2.CAP_PROP_FRAME_WIDTH: self.offer[0], cv2.CAP_PROP_FRAME_HEIGHT: self.offer[1],
                cv2.CAP_PROP_FPS: 30.0,
                cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"YUYV"))}.get(prop, 0.0)

    def read(self):
        if self.released:
            return False, None
        self.i += 1
        if self.i > self.good:
            return False, None                               # unplugged
        return True, self.frames[(self.i - 1) % len(self.frames)][:, :, ::-1].copy()  # BGR

    def release(self):
        self.released = True


@pytest.fixture(scope="module")
def clip_frames(asset):
    import av
    with av.open(asset("sample-clip")) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:20]


def test_camera_source_reconnects_with_fake_capture(clip_frames, caplog):
    from vidharm_plugins.sources import CameraSource
    attempts = []

    def factory(dev):
        attempts.append(dev)
        if 2 <= len(attempts) <= 3:                           # unplugged: opening fails twice
            return None
        return FakeCapture(clip_frames, good=5)

    events = []
    with caplog.at_level(logging.WARNING, logger="vidharm.camera"):
        src = CameraSource(0, size=(1280, 720), fps=30, capture_factory=factory, fail_after=3,
                           sleep=lambda s: None, on_event=lambda k, m: events.append(k))
        got = []
        for rgb, t in src:
            got.append(rgb)
            if len(got) == 12:
                break
        src.close()
    assert np.array_equal(got[0], clip_frames[0])             # BGR -> RGB
    assert src.reconnects >= 2 and events[:2] == ["lost", "reconnected"]
    assert any("offers 640x360, not 1280x720" in n for n in src.notes)
    assert any("format YUYV, not MJPG" in n for n in src.notes)
    assert any("lost" in r.getMessage() for r in caplog.records)
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def test_camera_source_first_open_fails_clearly():
    from vidharm.errors import InputError
    from vidharm_plugins.sources import CameraSource
    with pytest.raises(InputError, match="camera 3 could not be opened"):
        CameraSource(3, capture_factory=lambda d: None)


def test_camera_source_through_cv2_file_reconnects_at_eof(asset):
    """A real cv2.VideoCapture on a file: at the end of the file reads fail, the source
    reopens it and frames keep coming."""
    from vidharm_plugins.sources import CameraSource
    src = CameraSource(asset("sample-clip"), size=None, fps=None, pace=False, fail_after=2,
                       backoff=(0.0, 0.0))
    n = 0
    for rgb, t in src:
        assert rgb.shape == (360, 640, 3)
        n += 1
        if n == 100:                                           # the clip has 72 frames
            break
    src.close()
    assert src.reconnects >= 1


def test_engine_keeps_streaming_while_camera_is_away(asset, clip_frames):
    """Camera lost after 8 frames and back 1.2 s later: the sink keeps getting frames (last
    good output, then a placeholder), never a raw frame, and the person is back afterwards."""
    from vidharm_plugins.sources import CameraSource
    state = {"n": 0, "t_lost": None}

    def factory(dev):
        state["n"] += 1
        if state["n"] > 1 and time.monotonic() - state["t_lost"] < 1.2:
            return None
        return FakeCapture(clip_frames, good=8 if state["n"] == 1 else 10_000)

    src = CameraSource(0, size=(640, 360), fps=30, capture_factory=factory, fail_after=2,
                       backoff=(0.1, 0.1), pace=True)
    orig_drop = src._drop

    def drop(reason):
        state["t_lost"] = time.monotonic()
        orig_drop(reason)
    src._drop = drop
    sink = RecordingSink()
    eng = _engine(asset, sink, source=src, stall_s=0.2, placeholder_s=0.6)
    s = eng.run(duration=2.6)
    assert s["repeated"] >= 10                       # kept streaming during the outage
    assert src.reconnects == 1
    assert any("reconnected" in n for n in s["notes"])
    corners = [tuple(int(v) for v in f[2, -3]) for f in sink.frames]
    placeholder = (0, int(255 * 0.45), 0)            # the background, dimmed, with a text line
    assert corners.count(placeholder) >= 3
    assert set(corners) <= {GREEN, placeholder}      # never the raw camera image (the room)
    assert corners[-1] == GREEN                      # the person on the background again


# ----------------------------------------------------------------------------- control file
def test_control_file_switches_background(asset, tmp_path):
    from vidharm.live import ControlFile
    ctl = tmp_path / "live.json"
    ctl.write_text(json.dumps({"quit": True}))      # stale content: not applied
    sink = RecordingSink()
    eng = _engine(asset, sink, control=ControlFile(ctl, interval=0.2))

    def later():
        time.sleep(0.8)
        ctl.write_text(json.dumps({"background": "#0000ff", "strength": 0.5}))
    th = threading.Thread(target=later)
    th.start()
    eng.run(duration=2.2)
    th.join()
    corner = [tuple(int(v) for v in f[2, -3]) for f in sink.frames]
    assert corner[0] == GREEN and corner[-1] == (0, 0, 255)
    assert eng.cfg.harmonizer.strength == 0.5


def test_next_background_after_a_provider_goes_to_the_next_file(asset, tmp_path):
    """`vidharm run` hands the engine a ready provider: 'n' must go to the file after it
    (it used to reload the same one first)."""
    from PIL import Image
    from vidharm.composite import make_background
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (64, 48), GREEN).save(a)
    Image.new("RGB", (64, 48), (0, 0, 255)).save(b)
    sink = RecordingSink()
    with make_background(str(a)) as bg:
        eng = _engine(asset, sink, background=bg, backgrounds=[str(a), str(b)])
        threading.Timer(0.6, eng.command, args=("next_background",)).start()
        eng.run(duration=1.8)
    corner = [tuple(int(v) for v in f[2, -3]) for f in sink.frames]
    assert corner[0] == GREEN and corner[-1] == (0, 0, 255)


def test_control_file_parse_json_and_toml(tmp_path):
    from vidharm.live import ControlFile
    assert ControlFile.parse('{"pause": true}') == {"pause": True}
    assert ControlFile.parse('background = "blur"\nharmonize = false\n') == \
        {"background": "blur", "harmonize": False}
    ctl = tmp_path / "c.toml"
    now = [0.0]
    cf = ControlFile(ctl, interval=1.0, clock=lambda: now[0])
    assert cf.poll() is None
    ctl.write_text("pause = true\nbogus = 1\n")
    now[0] = 0.5
    assert cf.poll() is None                          # not yet: once a second
    now[0] = 1.1
    assert cf.poll() == {"pause": True}
    now[0] = 2.2
    assert cf.poll() is None                          # unchanged
    ctl.write_text("not [valid")
    now[0] = 3.3
    assert cf.poll() is None                          # bad syntax: ignored, logged


# ----------------------------------------------------------------------------- smoothing
def _grid(gain):
    from vidharm.color import ColorGrid
    c = ColorGrid.identity(2, 2).coeffs.copy()
    for k in range(3):
        c[..., k, k] = gain
    return ColorGrid(c)


def test_grid_smoother_adaptive_vs_fixed():
    from vidharm.temporal import GridSmoother, SmoothingTuning
    rng = np.random.default_rng(0)
    noisy = [1.0 + 0.01 * rng.standard_normal() for _ in range(60)]
    res = {}
    for mode in ("off", "fixed", "adaptive"):
        sm = GridSmoother(SmoothingTuning(mode=mode))
        out = [sm.update(_grid(g), i / 30, change=0.0).coeffs[0, 0, 0, 0] for i, g in enumerate(noisy)]
        res[mode] = np.abs(np.diff(out[20:])).mean()
    assert res["adaptive"] < 0.25 * res["off"] and res["fixed"] < 0.25 * res["off"]
    # a real change (change=1 from the scene detector): adaptive follows within 0.2 s
    settle = {}
    for mode in ("fixed", "adaptive"):
        sm = GridSmoother(SmoothingTuning(mode=mode))
        for i in range(30):
            sm.update(_grid(1.0), i / 30)
        for i in range(30, 60):
            v = sm.update(_grid(1.3), i / 30, change=1.0).coeffs[0, 0, 0, 0]
            if abs(v - 1.3) < 0.03:
                settle[mode] = (i - 30) / 30
                break
        else:
            settle[mode] = 1.0
    assert settle["adaptive"] <= 0.2 < settle["fixed"]
    # a cut snaps at once
    sm = GridSmoother(SmoothingTuning())
    sm.update(_grid(1.0), 0.0)
    assert sm.update(_grid(0.6), 0.033, cut=True).coeffs[0, 0, 0, 0] == pytest.approx(0.6)


def test_change_detector():
    from vidharm.temporal import ChangeDetector, SceneStats, SmoothingTuning
    det = ChangeDetector(SmoothingTuning())
    s = lambda fg, bg=100.0, cov=0.3: SceneStats(np.full(3, fg, np.float32),
                                                 np.full(3, bg, np.float32), cov)
    assert det.update(s(120), 0.0) == (1.0, True)                  # the first is a cut
    for i in range(1, 10):
        c, cut = det.update(s(120 + (i % 2)), i / 30)
        assert c < 0.05 and not cut                                # steady
    c, cut = det.update(s(156), 10 / 30)                           # light x1.3 on the person
    assert c == 1.0 and not cut
    c, cut = det.update(s(156, bg=200), 11 / 30)                   # background switched
    assert cut
    c, cut = det.update(s(156, bg=200, cov=0.0), 12 / 30)          # person left
    assert cut


def test_check_mask():
    from vidharm.graph import check_mask
    m = np.zeros((40, 60), np.float32)
    m[10:30, 20:40] = 1
    assert check_mask(m, (40, 60)) is None
    assert check_mask(np.zeros((40, 60), np.float32), (40, 60)) is None    # nobody: fine
    assert "shape" in check_mask(m, (41, 60))
    bad = m.copy()
    bad[0, 0] = np.nan
    assert "NaN" in check_mask(bad, (40, 60))
    assert "whole frame" in check_mask(np.ones((40, 60), np.float32), (40, 60))
    assert "outside" in check_mask(m * 3, (40, 60))
    assert "not an array" in check_mask(None, (40, 60))


def test_diagonal_refit_exact_for_diagonal_and_close_for_full():
    from vidharm.color import ColorGrid
    from vidharm.color import diagonal_refit
    rng = np.random.default_rng(0)
    comp = rng.integers(30, 220, (120, 200, 3), dtype=np.uint8)
    mask = np.zeros((120, 200), np.float32)
    mask[20:, 60:140] = 1
    c = ColorGrid.identity(3, 3).coeffs.copy()
    for i in range(3):
        c[..., i, i] = 0.9 + 0.1 * i
    c[..., :, 3] = 0.03
    d, err = diagonal_refit(ColorGrid(c), comp, mask)
    assert err < 0.01 and np.allclose(d.coeffs, c, atol=1e-4)
    c[..., 0, 1], c[..., 2, 0] = 0.08, -0.05             # cross-channel terms
    d, err = diagonal_refit(ColorGrid(c), comp, mask)
    assert d.is_diagonal and 0.1 < err < 5.0


def test_the_fitter_publishes_one_global_transform_only_while_it_is_as_close(sample_frame):
    """On the CPU the fitter publishes a cheap form of a full grid: one global 3x4 transform
    while that is about as close as the per-channel grid (a uniform grid with cross-channel
    terms: exactly so), the per-channel grid when the cells differ (warm on the left, cool
    on the right: a global transform cannot do that); with hysteresis, so a single frame
    does not flip it."""
    from vidharm.color import ColorGrid, cheap_refits
    from vidharm.fitting import GLOBAL_LEAVE, FitJob, GridFitter

    class Fixed:
        def __init__(self, grid):
            self.grid = grid

        def fit(self, comp, mask):
            return self.grid

    h, w = sample_frame.shape[:2]
    mask = np.zeros((h, w), np.float32)
    mask[h // 6:, w // 5: 4 * w // 5] = 1.0
    bg = np.ascontiguousarray(sample_frame[::-1])
    uniform = ColorGrid.identity(4, 4).coeffs.copy()
    uniform[..., 0, 1], uniform[..., 2, 0], uniform[..., 1, 3] = 0.08, -0.05, 0.02
    split = ColorGrid.identity(4, 4).coeffs.copy()
    split[:, :2, 0, 0], split[:, :2, 2, 2] = 1.25, 0.8           # warm on the left
    split[:, 2:, 0, 0], split[:, 2:, 2, 2] = 0.8, 1.25           # cool on the right
    split[..., 0, 1] = 0.03
    (_, err_d), (g, err_g) = cheap_refits(ColorGrid(uniform), sample_frame, mask)
    assert g.shape == (1, 1) and err_g < 0.05 and np.allclose(g.coeffs[0, 0], uniform[0, 0], atol=1e-3)
    (_, err_d), (_, err_g) = cheap_refits(ColorGrid(split), sample_frame, mask)
    assert err_g > err_d + 10.0 and err_d < 0.5
    mild = ColorGrid.identity(4, 4).coeffs.copy()                  # the same, 2 % either way:
    mild[:, :2, 0, 0], mild[:, :2, 2, 2] = 1.02, 0.98              # the global form ~1.5 grey
    mild[:, 2:, 0, 0], mild[:, 2:, 2, 2] = 0.98, 1.02              # levels further off
    mild[..., 0, 1] = 0.03
    (_, err_d), (_, err_g) = cheap_refits(ColorGrid(mild), sample_frame, mask)
    assert 2 * GLOBAL_LEAVE < err_g - err_d < 5 * GLOBAL_LEAVE

    fitter = GridFitter(Fixed(ColorGrid(uniform)), diagonal=True)
    shapes = [fitter.fit(FitJob(sample_frame, bg, mask, i / 10, False, 4)).grid.shape
              for i in range(5)]
    assert shapes == [(1, 1)] * 5 and fitter.global_share == 1.0
    fitter.harmonizer = Fixed(ColorGrid(mild))
    shapes = [fitter.fit(FitJob(sample_frame, bg, mask, 1 + i / 10, False, 4)).grid.shape
              for i in range(5)]
    assert shapes[0] == (1, 1) and shapes[-1] == (4, 4)         # not flipped by one fit
    assert all(fitter.fit(FitJob(sample_frame, bg, mask, 2, False, 4)).grid.is_diagonal
               for _ in range(2))
    only = GridFitter(Fixed(ColorGrid(uniform)), diagonal=True)      # --grid diagonal
    only.allow_global = False
    assert only.fit(FitJob(sample_frame, bg, mask, 0, False, 4)).grid.shape == (4, 4)


def test_telemetry_percentiles_late_events_and_chart(tmp_path):
    from vidharm.telemetry import Telemetry, one_line
    now = [0.0]
    tel = Telemetry(clock=lambda: now[0])
    tel.start()
    for i in range(90):                                  # 3 s at 30 fps, latency 10..19 ms
        now[0] = i / 30
        tel.frame(0.010 + (i % 10) / 1000, {"segment": 0.004, "apply": 0.006})
        if i % 3 == 0:
            tel.refresh(0.05)
    tel.dropped(2)
    now[0] = 3.0
    tel.stop()
    now[0] = 9.0
    tel.frame(1.0)                                       # after the end: ignored
    tel.refresh(0.05)
    s = tel.summary()
    assert s["seconds"] == 3.0 and s["frames"] == 90 and s["fps"] == 30.0
    assert 14.0 <= s["latency_p50_ms"] <= 15.25 and 18.0 <= s["latency_p95_ms"] <= 19.25
    assert s["dropped"] == 2 and s["refresh_hz"] == 10.0
    assert s["stages_ms"]["apply"] == pytest.approx(6.0)
    assert "30.0 fps" in one_line(s) and "dropped 2" in one_line(s)
    png = tel.save_chart(tmp_path / "t.png")
    assert open(png, "rb").read(4) == b"\x89PNG"


def test_mailbox_latest_wins():
    from vidharm.live import Mailbox
    box = Mailbox(capacity=2)
    assert box.put(1) is False and box.put(2) is False
    assert box.put(3) is True and box.replaced == 1          # the oldest (1) is dropped
    assert box.get(0) == 2 and box.get(0) == 3 and box.get(0.01) is None
    one = Mailbox()
    one.put("a")
    assert one.put("b") is True and one.get(0) == "b"
    one.close()
    assert one.get(5) is None                                # closed: no waiting


def test_telemetry_cpu_accounting(tmp_path):
    """Cores = process CPU / wall; CPU ms per frame per stage, per helper thread, native
    threads from /proc (a faked task folder), and the rest as 'other'."""
    from vidharm.telemetry import Telemetry, native_threads_cpu, one_line
    task = tmp_path / "task"
    tick = os.sysconf("SC_CLK_TCK")

    def thread(tid, name, ticks):
        (task / tid).mkdir(parents=True, exist_ok=True)
        rest = " ".join(["S"] + ["0"] * 10 + [str(ticks), "0"] + ["0"] * 30)
        (task / tid / "stat").write_text(f"{tid} ({name}) {rest}\n")

    thread("1", "python", 5 * tick)
    thread("2", "drishti_main", tick)
    thread("3", "av:h264:df0", tick)
    assert native_threads_cpu(str(task)) == pytest.approx(2.0)
    assert native_threads_cpu(str(tmp_path / "none")) is None
    now, cpu = [0.0], [10.0]
    tel = Telemetry(clock=lambda: now[0])
    tel.cpu_clock = lambda: cpu[0]
    import vidharm.telemetry as T
    native = iter([1.0, 1.3])
    orig = T.native_threads_cpu
    T.native_threads_cpu = lambda: next(native)
    try:
        tel.start()
        for i in range(30):
            now[0] = (i + 1) / 30
            tel.frame(0.01, {"segment": 0.004}, cpu={"segment": 0.002, "refine": 0.003})
            tel.cpu("capture", 0.001)
        tel.cpu("harmonizer", 0.06)
        cpu[0] = 10.6                      # 0.6 s of CPU over 1 s
        tel.stop()
    finally:
        T.native_threads_cpu = orig
    tel.cpu("capture", 5.0)                # after stop: ignored
    s = tel.summary()
    assert s["cores"] == pytest.approx(0.6)
    ms = s["cpu_ms"]
    assert ms["segment"] == pytest.approx(2.0) and ms["refine"] == pytest.approx(3.0)
    assert ms["capture"] == pytest.approx(1.0) and ms["harmonizer"] == pytest.approx(2.0)
    assert ms["native"] == pytest.approx(10.0)
    assert ms["other"] == pytest.approx(2.0)            # 20 ms per frame in all
    assert sum(ms.values()) == pytest.approx(20.0)
    assert "CPU 0.60 cores" in one_line(s)


def test_harmonizer_refresh_follows_the_change():
    """Automatic cap on the CPU: CPU_STEADY_HZ while the scene is steady, the cap right after
    a change, back down within about a second."""
    from vidharm.fitting import FitJob
    from vidharm.live.worker import CPU_REFRESH_HZ, CPU_STEADY_HZ, HarmonizerWorker
    worker = HarmonizerWorker(_cfg(), threaded=False, cpu_budget=0.4)
    assert worker.max_hz == CPU_REFRESH_HZ and CPU_STEADY_HZ < CPU_REFRESH_HZ
    pause = lambda: worker._pause_after(100.0, 100.005)               # noqa: E731
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 200, (90, 160, 3), dtype=np.uint8)
    bg = np.full_like(rgb, 120)
    mask = np.zeros((90, 160), np.float32)
    mask[20:, 50:110] = 1.0
    worker.fit(FitJob(rgb, bg, mask, 0.0, True))                            # a cut: fast
    assert pause() == pytest.approx(1 / CPU_REFRESH_HZ - 0.005)
    for i in range(1, 40):                                             # 2 s steady
        worker.fit(FitJob(rgb, bg, mask, i / 20, False))
    assert worker.recent_change < 0.05
    assert pause() == pytest.approx(1 / CPU_STEADY_HZ - 0.005, rel=0.05)
    brighter = np.clip(rgb.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    worker.fit(FitJob(brighter, bg, mask, 2.0, False))                      # the light goes up
    assert pause() == pytest.approx(1 / CPU_REFRESH_HZ - 0.005, rel=0.05)
    worker.max_hz = 15.0
    worker._auto_hz = False                                            # a cap given: kept
    worker.recent_change = 0.0
    assert pause() == pytest.approx(1 / 15 - 0.005)


class _ListSource:
    """Frames at given media times, as fast as the loop takes them (one at a time)."""

    def __init__(self, frame, times, fps):
        self.frame, self.times, self.fps = frame, times, fps
        self.size = (frame.shape[1], frame.shape[0])

    def __iter__(self):
        for t in self.times:
            yield self.frame, t
            time.sleep(0.004)

    def close(self):
        pass


def test_fps_cap_skips_extra_camera_frames(asset):
    """--fps is a cap: a 60 fps camera with max_fps 30 gets every other frame processed."""
    from vidharm.live import LiveEngine
    frame = np.full((90, 160, 3), 128, np.uint8)
    src = _ListSource(frame, [i / 60 for i in range(60)], fps=60.0)
    sink = RecordingSink()
    eng = LiveEngine(_cfg(), src, sink, "#00ff00", max_fps=30, frame_queue=64,
                     harmonize=False, segmenter=_Seg())
    assert eng.fps == 30.0
    s = eng.run(duration=10.0)
    assert s["capped"] == 30 and s["frames"] == 30 and s["dropped"] == 0
    assert "over the fps cap 30" in __import__("vidharm.telemetry").telemetry.one_line(s)
    eng2 = LiveEngine(_cfg(), _ListSource(frame, [i / 50 for i in range(50)], fps=50.0),
                      RecordingSink(), "#00ff00", max_fps=30, frame_queue=64, harmonize=False,
                      segmenter=_Seg())
    s2 = eng2.run(duration=10.0)
    assert s2["frames"] == 30 and s2["capped"] == 20                    # 50 -> 30 per second


class _Seg:
    input_size = None

    def segment(self, rgb, t=None):
        m = np.zeros(rgb.shape[:2], np.float32)
        m[rgb.shape[0] // 4:, rgb.shape[1] // 4: 3 * rgb.shape[1] // 4] = 1.0
        return m

    def close(self):
        pass


class _WatchedSink(RecordingSink):
    """A sink whose watched() answer follows a schedule of media times."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.now = 0.0
        self.calls = 0

    def watched(self):
        self.calls += 1
        return self.schedule(self.now)

    def send(self, rgb, t=None):
        super().send(rgb, t)


def test_processing_pauses_while_nobody_watches(asset):
    """sink.watched() False: frames are taken and thrown away (no segmentation, nothing
    sent); True again: processing resumes at once, smoothing started over."""
    from vidharm.live import LiveEngine
    frame = np.full((90, 160, 3), 100, np.uint8)
    state = {"watched": True}

    class Src(_ListSource):
        def __iter__(self):
            for i in range(150):
                if i == 30:
                    state["watched"] = False
                    time.sleep(0.15)           # the watcher (every 0.02 s) notices
                if i == 90:
                    state["watched"] = True
                    time.sleep(0.15)
                yield self.frame, i / 30
                time.sleep(0.004)

    class CountingSeg(_Seg):
        calls = 0

        def segment(self, rgb, t=None):
            CountingSeg.calls += 1
            return super().segment(rgb, t)

    sink = _WatchedSink(lambda now: state["watched"])
    eng = LiveEngine(_cfg(), Src(frame, [], 30.0), sink, "#00ff00", frame_queue=200,
                     watch_interval=0.02, segmenter=CountingSeg())
    eng.idle_resend_s = 0.05
    s = eng.run(duration=20.0)
    assert sink.calls >= 10
    assert 55 <= s["idle"] <= 62                    # frames 30..89 were not processed
    assert s["frames"] + s["idle"] == 150
    assert CountingSeg.calls == s["frames"]
    # while unwatched the last picture is still sent once a second (keeps the device listed)
    assert len(sink.times) == s["frames"] + s["repeated"] and 1 <= s["repeated"] <= 20
    assert "paused while no app had the virtual camera open" in s["notes"]


def test_idle_camera_grabs_without_decoding(clip_frames):
    """While the engine says nobody watches, the camera keeps streaming (grab) but nothing
    is decoded or handed out; frames come again as soon as it is not idle."""
    from vidharm_plugins.sources import CameraSource

    class GrabCapture(FakeCapture):
        grabs = 0

        def grab(self):
            GrabCapture.grabs += 1
            if GrabCapture.grabs >= 20:
                src.idle = False                      # an app opened the virtual camera
            return True

    src = CameraSource(0, size=(640, 360), fps=30,
                       capture_factory=lambda d: GrabCapture(clip_frames, good=100))
    src.idle = True
    it = iter(src)
    rgb, t = next(it)
    assert GrabCapture.grabs == 20 and rgb.shape == (360, 640, 3)
    src.close()
