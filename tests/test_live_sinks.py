"""Live sinks: the virtual camera through pyvirtualcam's backend registration (a recording
backend), size/format fitting (scale + pad, never distort), the no-device message, and the
preview window's hotkeys driven headless (injected window functions)."""
from __future__ import annotations

import numpy as np
import pytest

GREEN, BLUE = (0, 255, 0), (0, 0, 255)


class RecordingBackend:
    """A pyvirtualcam backend that keeps what it is sent. Subclasses restrict what it accepts."""

    sizes = None            # accepted (w, h), None = any
    formats = None          # accepted fourcc strings, None = any
    instances: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        from pyvirtualcam.util import decode_fourcc
        fmt = decode_fourcc(fourcc)
        if self.sizes is not None and (width, height) not in self.sizes:
            raise RuntimeError(f"{width}x{height} not supported")
        if self.formats is not None and fmt not in self.formats:
            raise RuntimeError(f"format {fmt} not supported")
        self.width, self.height, self.fps, self.fmt = width, height, fps, fmt
        self._fourcc = fourcc
        self._device = device or "PHNet Camera"
        self.frames: list[np.ndarray] = []
        self.closed = False
        type(self).instances.append(self)

    def send(self, frame):
        self.frames.append(np.array(frame, copy=True))

    def close(self):
        self.closed = True

    def device(self):
        return self._device

    def native_fourcc(self):
        return self._fourcc


def _register(name, **restrict):
    import pyvirtualcam
    cls = type(f"Rec_{name}", (RecordingBackend,), {"instances": [], **restrict})
    pyvirtualcam.register_backend(name, cls)
    return cls


def _frame(w=1280, h=720):
    import cv2
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40, 90, 160)
    cv2.circle(img, (w // 2, h // 2), min(w, h) // 3, (250, 200, 30), -1)   # a circle stays round
    cv2.rectangle(img, (10, 10), (w // 4, h // 4), (200, 30, 30), -1)
    return img


# ----------------------------------------------------------------------------- fitting
def test_fit_frame_pads_never_distorts():
    import cv2
    from vidharm_plugins.sinks import fit_frame
    img = _frame(1280, 720)
    out = fit_frame(img, (640, 480))                 # 16:9 into 4:3: letterbox
    assert out.shape == (480, 640, 3)
    assert not out[:60].any() and not out[-60:].any()
    assert np.array_equal(out[60:420], cv2.resize(img, (640, 360), interpolation=cv2.INTER_AREA))
    tall = fit_frame(_frame(640, 480), (1280, 720))  # 4:3 into 16:9: pillarbox
    assert not tall[:, :160].any() and not tall[:, -160:].any() and tall[:, 160:1120].any()
    assert fit_frame(img, (1280, 720)) is img


# ----------------------------------------------------------------------------- virtualcam
def test_virtualcam_through_recording_backend_in_engine(asset):
    from vidharm.config import load_config
    from vidharm.live import LiveEngine
    from vidharm_plugins.sinks import VirtualCamSink
    from vidharm_plugins.sources import FileSource
    rec = _register("vidharm-rec")
    sink = VirtualCamSink(size=(640, 480), fps=30, backend="vidharm-rec", device="PHNet Camera")
    cfg = load_config("call-cpu", {"harmonizer.name": "stats"})
    eng = LiveEngine(cfg, FileSource(asset("sample-clip"), loop=True, realtime=True), sink,
                     "#00ff00", resize_to=(640, 360))
    s = eng.run(duration=1.5)
    cam = rec.instances[-1]
    assert sink.device_name == "PHNet Camera" and cam.fmt == "raw "       # RGB
    assert cam.closed                                                    # released at shutdown
    assert len(cam.frames) == s["frames"] > 15
    f = cam.frames[-1].reshape(480, 640, 3)
    assert not f[:60].any() and not f[-60:].any()                        # padded, not stretched
    assert tuple(f[62, -3]) == GREEN                                     # the background


def test_virtualcam_falls_back_to_what_the_device_accepts():
    import cv2
    from vidharm_plugins.sinks import VirtualCamSink, fit_frame
    rec = _register("vidharm-i420", sizes={(640, 480)}, formats={"I420"})
    sink = VirtualCamSink(size=(1280, 720), fps=30, backend="vidharm-i420")
    sink.open()
    assert (sink.out_size, sink.fmt) == ((640, 480), "I420")
    assert any("fitted" in n for n in sink.notes)
    img = _frame(1280, 720)
    sink.send(img)
    sink.close()
    cam = rec.instances[-1]
    assert cam.frames[0].size == 640 * 480 * 3 // 2
    back = cv2.cvtColor(cam.frames[0].reshape(480 * 3 // 2, 640), cv2.COLOR_YUV2RGB_I420)
    assert np.abs(back.astype(int) - fit_frame(img, (640, 480)).astype(int)).mean() < 4

    rec = _register("vidharm-nv12", formats={"NV12"})
    sink = VirtualCamSink(size=(640, 360), backend="vidharm-nv12")
    sink.send(_frame(640, 360))
    sink.close()
    nv = rec.instances[-1].frames[0].reshape(360 * 3 // 2, 640)
    back = cv2.cvtColor(nv, cv2.COLOR_YUV2RGB_NV12)
    assert np.abs(back.astype(int) - _frame(640, 360).astype(int)).mean() < 4


def test_virtualcam_no_device_names_the_modprobe_line(monkeypatch):
    import sys
    from vidharm.errors import OutputError
    from vidharm_plugins import sinks
    monkeypatch.setattr(sinks.sys, "platform", "linux")
    monkeypatch.setattr(sinks, "v4l2_devices", lambda: [])
    with pytest.raises(OutputError) as e:
        sinks.VirtualCamSink(size=(1280, 720)).open()
    line = e.value.one_line()
    assert "\n" not in line
    assert 'modprobe v4l2loopback devices=1 video_nr=10 card_label="PHNet Camera" exclusive_caps=1' in line


def test_virtualcam_picks_the_labelled_device(monkeypatch, tmp_path):
    from vidharm_plugins import sinks
    for n, name in ((0, "Integrated Camera"), (10, "PHNet Camera"), (4, "Dummy video device")):
        d = tmp_path / f"video{n}"
        d.mkdir()
        (d / "name").write_text(name + "\n")
    devs = sinks.v4l2_devices(str(tmp_path))
    assert devs == [("/dev/video0", "Integrated Camera"), ("/dev/video4", "Dummy video device"),
                    ("/dev/video10", "PHNet Camera")]
    monkeypatch.setattr(sinks.sys, "platform", "linux")
    monkeypatch.setattr(sinks, "v4l2_devices", lambda: devs)
    assert sinks.VirtualCamSink()._pick_device() == "/dev/video10"
    monkeypatch.setattr(sinks, "v4l2_devices", lambda: devs[:2])
    s = sinks.VirtualCamSink()
    assert s._pick_device() == "/dev/video4" and "PHNet Camera" in s.notes[0]


# ----------------------------------------------------------------------------- preview
class FakeWindow:
    """imshow/waitKey stand-ins: keys are pressed when the n-th frame has been shown."""

    def __init__(self, script, probe=None):
        self.script = dict(script)        # imshow count -> key
        self.shown: list = []
        self.probe = probe
        self.states: list = []
        self.visible = True
        self.destroyed = False

    def imshow(self, title, bgr):
        self.shown.append(bgr.copy())
        self.states.append(self.probe() if self.probe else None)

    def wait_key(self, ms):
        return self.script.pop(len(self.shown), -1) if self.shown else -1

    def destroy(self, title):
        self.destroyed = True

    def window_visible(self, title):
        return self.visible


def test_preview_hotkeys_headless(asset):
    from vidharm.config import load_config
    from vidharm.live import LiveEngine
    from vidharm_plugins.sinks import PreviewSink
    from vidharm_plugins.sources import FileSource
    keys = {8: ord("m"), 14: ord("m"), 18: ord("h"), 22: ord("n"), 32: ord(" "), 42: ord(" "),
            52: ord("h"), 56: ord("q")}
    eng = None
    win = FakeWindow(keys, probe=lambda: (eng.harmonize_on, eng.show_mask, eng.paused))
    sink = PreviewSink(imshow=win.imshow, wait_key=win.wait_key, destroy=win.destroy,
                       window_visible=win.window_visible)
    cfg = load_config("call-cpu", {"harmonizer.name": "stats"})
    eng = LiveEngine(cfg, FileSource(asset("sample-clip"), loop=True, realtime=True), sink,
                     "#00ff00", backgrounds=["#00ff00", "#0000ff"], stall_s=10.0)
    s = eng.run(duration=20)
    assert eng.quit_reason == "quit" and s["seconds"] < 15 and win.destroyed
    shown, states = win.shown, win.states
    assert len(shown) == 56
    # m: the mask view (grey) from the frame after the key until the second m
    for i in range(9, 14):
        assert states[i][1]
        b, g, r = (shown[i][:, :, c].astype(int) for c in range(3))
        assert (b == g).all() and (g == r).all()
    assert not states[15][1] and not (shown[16][:, :, 0] == shown[16][:, :, 1]).all()
    # h: harmonization off (A/B) after frame 18, back on after 52
    assert states[17][0] and not states[19][0] and not states[50][0] and states[53][0]
    # n: the next background (blue) shows a few frames later
    mid = [tuple(int(v) for v in f[180, -3][::-1]) for f in shown]      # BGR -> RGB
    assert mid[20] == GREEN and mid[31] == BLUE
    # space: paused from 32 to 42: the same frame again and again
    assert all(states[i][2] for i in range(33, 42)) and not states[43][2]
    assert all(np.array_equal(shown[33], shown[i]) for i in range(34, 42))
    assert not np.array_equal(shown[44], shown[50])
    # the overlay: fps and latency are drawn (white/black pixels at the top left)
    assert "fps" in sink.overlay and "latency" in sink.overlay


def test_preview_keys_escape_window_close_and_no_display(monkeypatch):
    from vidharm.errors import OutputError
    from vidharm_plugins.sinks import PREVIEW_KEYS, PreviewSink
    assert PREVIEW_KEYS[27] == "quit" and PREVIEW_KEYS[ord("q")] == "quit"
    win = FakeWindow({1: 27})
    sink = PreviewSink(imshow=win.imshow, wait_key=win.wait_key, destroy=win.destroy,
                       window_visible=win.window_visible)
    sink.send(np.zeros((90, 160, 3), np.uint8))
    assert sink.events() == ["quit"] and sink.events() == []
    win.visible = False                       # the user closed the window
    sink.send(np.zeros((90, 160, 3), np.uint8))
    assert sink.events() == ["quit"]
    sink.close()
    assert win.destroyed
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(OutputError, match="no display"):
        PreviewSink().open()


def test_device_readers_from_a_faked_proc_tree(tmp_path):
    """Readers of the loopback device are found from PID/fd links; this process (the writer)
    is left out; unreadable or vanished processes are skipped; VirtualCamSink.watched()
    follows them and looks only at the known readers while they read."""
    import os
    import sys

    from vidharm_plugins.sinks import VirtualCamSink, device_readers
    proc = tmp_path / "proc"

    def proc_fd(pid, fd, target):
        d = proc / str(pid) / "fd"
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(target, d / str(fd))

    proc_fd(os.getpid(), 5, "/dev/video10")          # vidharm itself, writing
    proc_fd(200, 0, "/dev/null")
    proc_fd(200, 1, "socket:[1234]")
    (proc / "300").mkdir()                            # no fd folder readable
    (proc / "self").mkdir()
    assert device_readers("/dev/video10", str(proc)) == []
    assert device_readers("/dev/video10", str(tmp_path / "nothing")) is None
    proc_fd(400, 7, "/dev/video10")                   # an app opens the camera
    proc_fd(400, 8, "/dev/video10")
    assert device_readers("/dev/video10", str(proc)) == [400]
    assert set(device_readers("/dev/video10", str(proc), exclude_pid=-1)) == {os.getpid(), 400}
    sink = VirtualCamSink()
    assert sink.watched() is None                     # not open: cannot tell
    sink._device_in_use = "/dev/video10"
    sink.proc_root = str(proc)
    if sys.platform.startswith("linux"):
        assert sink.watched() is True and sink._readers == [400]
        for fd in (7, 8):
            os.unlink(proc / "400" / "fd" / str(fd))  # the app closes it
        assert sink.watched() is False and sink._readers == []
        proc_fd(500, 3, "/dev/video10")
        assert sink.watched() is True
