"""Built-in frame sinks: where processed frames go (the interface: :mod:`vidharm.protocols`).

``mp4`` (H.264 MP4 file, written atomically: a partial file never appears under the final
name; :class:`~vidharm.protocols.Sink`, :class:`~vidharm.protocols.Openable`) and ``null``
(counts frames; benchmarks). Live sinks (used by ``vidharm run``): ``virtualcam``
(pyvirtualcam: the "PHNet Camera"; also :class:`~vidharm.protocols.Watchable` and
:class:`~vidharm.protocols.Noted`), ``preview`` (an OpenCV window with hotkeys,
:class:`~vidharm.protocols.Interactive`; in :mod:`vidharm_plugins.preview`) and ``file``
(records what the camera would show, MP4 encoded on its own thread).
"""
from __future__ import annotations

import logging
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vidharm.config import OutputConfig
from vidharm.registry import registry
from vidharm.video import MP4_SUFFIXES, ThreadedWriter, VideoWriter, ensure_output_dir, parse_size

from .preview import PREVIEW_HELP, PREVIEW_KEYS, PreviewSink, display_problem, have_display

__all__ = ["Mp4Sink", "NullSink", "VirtualCamSink", "PreviewSink", "LiveFileSink", "fit_frame",
           "v4l2_devices", "device_readers", "no_camera_hint", "CAMERA_NAME", "MODPROBE_LINE",
           "PREVIEW_KEYS", "PREVIEW_HELP", "display_problem", "have_display"]

log = logging.getLogger("vidharm.sinks")


class Mp4Sink:
    """Write frames to an H.264 MP4 file (see :class:`vidharm.video.VideoWriter`).

    Timestamps are kept as given, measured from the first frame's ``t`` (so a live clock
    reading of 1234.5 s becomes 0). ``overwrite=False`` refuses an existing file.
    Protocols (:mod:`vidharm.protocols`): Sink, Openable.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, overwrite: bool = False,
                 crf: int | None = None, preset: str | None = None,
                 pixel_format: str | None = None, output_cfg: OutputConfig | None = None):
        self.path = os.fspath(path)
        cfg = output_cfg or OutputConfig()
        self.cfg = OutputConfig(crf=cfg.crf if crf is None else int(crf),
                                preset=cfg.preset if preset is None else preset,
                                pixel_format=cfg.pixel_format if pixel_format is None else pixel_format)
        self.fps = fps
        self.overwrite = overwrite
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._writer: VideoWriter | None = None
        self._t0: float | None = None

    def open(self, size: tuple[int, int] | None = None, fps: float | None = None) -> "Mp4Sink":
        """Start the file for frames of ``size`` = ``(width, height)`` (None: at the first
        frame, from its size)."""
        if self._writer is not None:
            raise RuntimeError("Mp4Sink is already open")
        if fps:
            self.fps = fps
        if size is None:
            return self
        self.size = (int(size[0]), int(size[1]))
        self._writer = VideoWriter(self.path, self.size, fps=Fraction(self.fps).limit_denominator(1001),
                                   output_cfg=self.cfg, overwrite=self.overwrite)
        return self

    def send(self, rgb: np.ndarray, t: float | None = None) -> None:
        """Append a frame; ``t`` in seconds (default: frame count / fps)."""
        if self._writer is None:
            self.open((rgb.shape[1], rgb.shape[0]))
        if t is None:
            t = self.frames / self.fps
        if self._t0 is None:
            self._t0 = t
        self._writer.write(rgb, t - self._t0)
        self.frames += 1

    def close(self) -> None:
        """Finish and move the file into place (nothing is written if no frame was sent)."""
        if self._writer is not None:
            w, self._writer = self._writer, None
            if self.frames:
                w.close()
            else:
                w.abort()

    def abort(self) -> None:
        """Discard the file being written."""
        if self._writer is not None:
            w, self._writer = self._writer, None
            w.abort()

    def __enter__(self) -> "Mp4Sink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class NullSink:
    """Discard frames, counting them (for benchmarks and tests). Protocols: Sink, Openable."""

    def __init__(self, **_ignored):
        self.frames = 0
        self.last_t: float | None = None
        self.size: tuple[int, int] | None = None

    def open(self, size: tuple[int, int] | None = None, fps: float | None = None) -> "NullSink":
        if size is not None:
            self.size = (int(size[0]), int(size[1]))
        return self

    def send(self, rgb: np.ndarray, t: float | None = None) -> None:
        if self.size is None:
            self.size = (rgb.shape[1], rgb.shape[0])
        self.frames += 1
        self.last_t = t

    def close(self) -> None:
        pass

    def __enter__(self) -> "NullSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


registry.sinks.add("mp4", Mp4Sink, help="H.264 MP4 file (path=..., written atomically)")
registry.sinks.add("null", NullSink, help="discard frames, counting them")


# ------------------------------------------------------------------------------ live sinks
def fit_frame(rgb: np.ndarray, size: tuple[int, int], pad_value: int = 0) -> np.ndarray:
    """``rgb`` scaled to fit inside ``size`` = (W, H) keeping its aspect ratio, centred, the
    rest padded with ``pad_value`` (letterbox/pillarbox). Never distorts; a frame already of
    that size is returned as is."""
    import cv2
    W, H = int(size[0]), int(size[1])
    h, w = rgb.shape[:2]
    if (w, h) == (W, H):
        return rgb
    s = min(W / w, H / h)
    nw, nh = max(1, min(W, int(round(w * s)))), max(1, min(H, int(round(h * s))))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(rgb, (nw, nh), interpolation=interp)
    out = np.full((H, W, 3), pad_value, np.uint8)
    y, x = (H - nh) // 2, (W - nw) // 2
    out[y:y + nh, x:x + nw] = small
    return out


#: the name the virtual camera gets where the backend lets us choose it
CAMERA_NAME = "PHNet Camera"
MODPROBE_LINE = ('sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="PHNet Camera" '
                 'exclusive_caps=1')


def v4l2_devices(sysfs: str = "/sys/class/video4linux") -> list[tuple[str, str]]:
    """(``/dev/videoN``, card name) of every V4L2 device (Linux), sorted by number."""
    root = Path(sysfs)
    out = []
    if not root.is_dir():
        return out
    for d in root.glob("video*"):
        try:
            name = (d / "name").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        out.append((f"/dev/{d.name}", name))
    return sorted(out, key=lambda x: int("".join(c for c in x[0] if c.isdigit()) or 0))


def no_camera_hint() -> str:
    if sys.platform.startswith("linux"):
        return (f"create one with: {MODPROBE_LINE} (package v4l2loopback-dkms), then pick "
                f"'{CAMERA_NAME}' in Zoom/Meet; or use --sink preview / --sink file")
    return ("install OBS Studio (28+) and start its Virtual Camera once ('OBS Virtual Camera' "
            "is the name apps show; OBS does not let other programs rename it); or use "
            "--sink preview / --sink file")


def device_readers(device: str, proc_root: str = "/proc", exclude_pid: int | None = None,
                   pids=None) -> list[int] | None:
    """Process ids that have ``device`` (e.g. ``/dev/video10``) open, from ``proc_root``'s
    ``PID/fd/*`` links (Linux), leaving out ``exclude_pid`` (default: this process, which
    holds the device open to write to it); only among ``pids`` when given. Processes whose
    descriptors cannot be read (other users' without root) are left out. None when
    ``proc_root`` cannot be listed. (A scan of every process costs about 3 ms per 75
    processes.)"""
    if exclude_pid is None:
        exclude_pid = os.getpid()
    targets = {device}
    try:
        targets.add(os.path.realpath(device))
    except OSError:  # pragma: no cover
        pass
    if pids is None:
        try:
            pids = [int(p) for p in os.listdir(proc_root) if p.isdigit()]
        except OSError:
            return None
    readers = []
    for pid in pids:
        if pid == exclude_pid:
            continue
        fd_dir = os.path.join(proc_root, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue                      # gone meanwhile, or not ours to read
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in targets:
                    readers.append(pid)
                    break
            except OSError:
                continue
    return readers


class VirtualCamSink:
    """Frames to a virtual camera through pyvirtualcam, named "PHNet Camera" where possible.

    - Linux (v4l2loopback): the device whose card label is ``name`` is used (create it with
      :data:`MODPROBE_LINE`); without one, the first v4l2loopback device pyvirtualcam finds
      (its name is whatever the module was loaded with; logged). No device at all: one
      :class:`~vidharm.errors.OutputError` with the modprobe line.
    - Windows/macOS: OBS Studio's virtual camera (shown to apps as "OBS Virtual Camera"; OBS
      fixes that name), or Unity Capture on Windows.
    - Size and pixel format: ``size`` (W, H) and RGB are asked for first; when the backend
      refuses, the next of ``fallback_sizes`` and then BGR / I420 / NV12 are tried. Frames of
      another size are scaled to fit and padded (:func:`fit_frame`), never distorted.
    - ``backend``/``device``: passed to ``pyvirtualcam.Camera`` (tests register a recording
      backend with ``pyvirtualcam.register_backend`` and name it here).
    - :meth:`watched`: on Linux, whether any other process has the device open (an app
      showing the camera); the live engine pauses its processing while nobody does.

    Protocols (:mod:`vidharm.protocols`): Sink, Openable, Watchable, Noted.
    """

    FALLBACK_SIZES = ((1280, 720), (640, 480), (1920, 1080), (640, 360))
    FORMATS = ("RGB", "BGR", "I420", "NV12")

    def __init__(self, size: Any = (1280, 720), fps: float = 30.0, device: str | None = None,
                 backend: str | None = None, name: str = CAMERA_NAME,
                 fallback_sizes=FALLBACK_SIZES, formats=FORMATS, **backend_kw):
        self.size = parse_size(size) or (1280, 720)
        self.fps = float(fps or 30.0)
        self.device = device
        self.backend = backend
        self.name = name
        self.fallback_sizes = tuple(fallback_sizes)
        self.formats = tuple(formats)
        self.backend_kw = backend_kw
        self.frames = 0
        self.notes: list[str] = []
        self.cam = None
        self.fmt: str | None = None
        self.out_size: tuple[int, int] | None = None
        self._device_in_use: str | None = None
        self.proc_root = "/proc"
        self._readers: list[int] = []

    def watched(self) -> bool | None:
        """Whether another process has the loopback device open (Linux, from /proc); None
        where that cannot be told (another platform or backend, no /proc). While an app
        reads, only that app's descriptors are looked at; the whole scan runs otherwise."""
        dev = self._device_in_use
        if not dev or not dev.startswith("/dev/") or not sys.platform.startswith("linux"):
            return None
        if self._readers:
            self._readers = device_readers(dev, self.proc_root, pids=self._readers) or []
            if self._readers:
                return True
        readers = device_readers(dev, self.proc_root)
        if readers is None:
            return None
        self._readers = readers
        return bool(readers)

    def _pick_device(self) -> str | None:
        if self.device or self.backend or not sys.platform.startswith("linux"):
            return self.device
        devs = v4l2_devices()
        for dev, card in devs:
            if card == self.name:
                return dev
        loop = [d for d in devs if "loopback" in d[1].lower() or "dummy" in d[1].lower()]
        if not devs:
            from vidharm.errors import OutputError
            raise OutputError("no virtual camera device (no /dev/video* at all)", no_camera_hint())
        if loop:
            note = (f"no device named '{self.name}'; using {loop[0][0]} ('{loop[0][1]}'). To get "
                    f"the name: sudo modprobe -r v4l2loopback && {MODPROBE_LINE}")
            self.notes.append(note)
            log.warning(note)
            return loop[0][0]
        return None                      # let pyvirtualcam look for a loopback device

    def open(self, size: tuple[int, int] | None = None, fps: float | None = None) -> "VirtualCamSink":
        if self.cam is not None:
            return self
        try:
            import pyvirtualcam
        except ImportError:  # pragma: no cover - a dependency
            from vidharm.errors import OutputError
            raise OutputError("pyvirtualcam is not installed", "pip install pyvirtualcam") from None
        if fps:
            self.fps = float(fps)
        device = self._pick_device()
        sizes = [self.size] + [s for s in self.fallback_sizes if s != self.size]
        errors = []
        for fmt_name in self.formats:
            fmt = getattr(pyvirtualcam.PixelFormat, fmt_name)
            for w, h in sizes:
                try:
                    self.cam = pyvirtualcam.Camera(w, h, self.fps, fmt=fmt, device=device,
                                                   backend=self.backend, **self.backend_kw)
                except Exception as exc:   # RuntimeError listing each backend's complaint
                    errors.append(" ".join(str(exc).split()))
                    continue
                self.fmt, self.out_size = fmt_name, (w, h)
                self._device_in_use = self.cam.device
                if (w, h) != self.size or fmt_name != "RGB":
                    note = (f"virtual camera accepts {w}x{h} {fmt_name} (asked for "
                            f"{self.size[0]}x{self.size[1]} RGB): frames are fitted, not stretched")
                    self.notes.append(note)
                    log.warning(note)
                log.info("virtual camera: %s (%s backend), %dx%d %s", self.cam.device,
                         self.cam.backend, w, h, fmt_name)
                return self
        from vidharm.errors import OutputError
        first = errors[0] if errors else "no backend available"
        raise OutputError(f"no virtual camera could be opened ({first[:200]})", no_camera_hint())

    @property
    def device_name(self) -> str | None:
        """The device in use (kept after close, for the summary)."""
        return self._device_in_use

    def _convert(self, rgb: np.ndarray) -> np.ndarray:
        import cv2
        if self.fmt == "RGB":
            return np.ascontiguousarray(rgb)
        if self.fmt == "BGR":
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
        if self.fmt == "I420":
            return i420
        w, h = self.out_size
        ysz, csz = w * h, (w // 2) * (h // 2)
        nv12 = np.empty_like(i420)
        nv12[:ysz] = i420[:ysz]
        nv12[ysz::2] = i420[ysz:ysz + csz]
        nv12[ysz + 1::2] = i420[ysz + csz:]
        return nv12

    def send(self, rgb: np.ndarray, t: float | None = None) -> None:
        if self.cam is None:
            self.open()
        frame = fit_frame(rgb, self.out_size)
        self.cam.send(self._convert(frame))
        self.frames += 1

    def close(self) -> None:
        cam, self.cam = self.cam, None
        if cam is not None:
            cam.close()

    def __enter__(self) -> "VirtualCamSink":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


class LiveFileSink:
    """Records what the virtual camera would show: frames fitted to ``size`` (scale + pad, as
    the camera sink does), H.264 MP4 through :class:`~vidharm.video.ThreadedWriter`, encoded
    on its own thread so the frame loop never waits for x264 (a bounded queue; it blocks only
    when the encoder falls ``depth`` frames behind). Timestamps are the live ones, so the file plays at the pace it
    was recorded (variable frame rate if frames were dropped). ``close()`` finishes a valid
    file (also on Ctrl-C/SIGTERM through the engine's clean shutdown); a run with no frame
    leaves no file. Protocols (:mod:`vidharm.protocols`): Sink, Openable."""

    def __init__(self, path: str | os.PathLike, size: Any = None, fps: float = 30.0,
                 overwrite: bool = True, depth: int = 8, output_cfg: OutputConfig | None = None):
        self.path = os.fspath(path)
        self.size = parse_size(size)
        self.fps = float(fps or 30.0)
        self.overwrite = overwrite
        self.depth = depth
        self.output_cfg = output_cfg
        self.frames = 0
        self._writer = None
        self._t0: float | None = None
        self._last_t: float | None = None
        if Path(self.path).suffix.lower() not in MP4_SUFFIXES:
            from vidharm.errors import OutputError
            raise OutputError(f"recording '{self.path}' must end in .mp4",
                              "the recording is always an H.264 MP4 file; name it accordingly")
        ensure_output_dir(Path(self.path).expanduser().resolve().parent)   # fail before work
        if Path(self.path).exists() and not overwrite:
            from vidharm.errors import OutputError
            raise OutputError(f"output '{self.path}' already exists", "choose another name")

    def open(self, size: tuple[int, int] | None = None, fps: float | None = None) -> "LiveFileSink":
        if fps:
            self.fps = float(fps)
        if size and self.size is None:
            self.size = (int(size[0]), int(size[1]))
        return self

    def _start(self, size: tuple[int, int]) -> None:
        cfg = self.output_cfg or OutputConfig(preset="veryfast")
        w = VideoWriter(self.path, size, fps=Fraction(self.fps).limit_denominator(1001),
                        output_cfg=cfg, overwrite=self.overwrite)
        self._writer = ThreadedWriter(w, depth=self.depth)

    def send(self, rgb: np.ndarray, t: float | None = None) -> None:
        if self.size is None:
            self.size = (rgb.shape[1], rgb.shape[0])
        if self._writer is None:
            self._start(self.size)
        frame = fit_frame(rgb, self.size)
        if frame is rgb:
            frame = rgb.copy()                 # the caller may reuse its buffer
        if t is None:
            t = self.frames / self.fps
        if self._t0 is None:
            self._t0 = t
        self._last_t = t - self._t0
        self._writer.write(frame, self._last_t)
        self.frames += 1

    def close(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.close(end_time=(self._last_t or 0.0) + 1.0 / self.fps)

    def abort(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.abort()

    def __enter__(self) -> "LiveFileSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # a live recording is worth keeping even when the run ended with an error
        self.close()


registry.sinks.add("virtualcam", VirtualCamSink,
                   help=f"virtual camera '{CAMERA_NAME}' via pyvirtualcam (v4l2loopback / OBS)")
registry.sinks.add("preview", PreviewSink, help="OpenCV window with hotkeys (h n m space q)")
registry.sinks.add("file", LiveFileSink,
                   help="record what the camera would show to an MP4 (path=...)")
