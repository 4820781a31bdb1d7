"""Built-in frame sources: where frames come from (the interface: :mod:`vidharm.protocols`).

``file`` (a video file, optionally looping, optionally at real pace; see :class:`FileSource`)
and ``camera`` (a webcam through OpenCV, reconnecting by itself; see :class:`CameraSource`),
created as ``registry.sources.create(name, **opts)``.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from vidharm.registry import registry
from vidharm.video import VideoReader, probe

log = logging.getLogger("vidharm.camera")


class _PrimedPass:
    """One pass over a file, opened and its first frame decoded ahead of time (on a thread
    with :meth:`start`, or here with :meth:`run`); :meth:`frames` then yields every frame."""

    def __init__(self, path: str, info, threads: bool = True):
        self.path, self.info, self.threads = path, info, threads
        self.reader: VideoReader | None = None
        self.error: BaseException | None = None
        self._it = None
        self._first = None
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        try:
            self.reader = VideoReader(self.path, info=self.info, threads=self.threads)
            self._it = iter(self.reader)
            self._first = next(self._it, None)
        except Exception as exc:      # raised by the consumer, on its own thread
            self.error = exc

    def start(self) -> "_PrimedPass":
        self._thread = threading.Thread(target=self.run, name="vidharm-source-prime", daemon=True)
        self._thread.start()
        return self

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def frames(self):
        if self._first is None:
            return
        first, self._first = self._first, None
        yield first
        yield from self._it

    def close(self) -> None:
        self.join()
        self._it = None
        if self.reader is not None:
            self.reader.close()


class FileSource:
    """Frames of a video file, optionally looping and paced in real time.

    ``loop=True`` starts over at the end, with timestamps that keep increasing (each pass is
    offset by the clip's duration). ``realtime=True`` sleeps so frames come no faster than the
    clip's own pace (frames are never dropped: a slow consumer slows the clip down).
    Timestamps start at 0.

    A looping source stands in for a camera, and a camera does not pause at a loop point:
    while one pass plays, the next one is opened and its first frame decoded on a helper
    thread, so the restart costs no more than any other frame. (Opening a file and filling a
    frame-threaded H.264 decoder took about 100 ms at 720p on a 2-core machine: a stall, then
    a burst of late frames that overran the live engine's frame queue.)

    Played in real time, a clip up to 1080p is decoded on one thread: at the clip's own pace
    one thread keeps up, and FFmpeg's frame threads cost more CPU for the same frames (720p
    H.264 decoded flat out: 1.75-1.99 ms of process CPU per frame on one thread, 1.76-2.46
    with frame threads; in the live benchmark, capture + other 2.55 -> 2.41 ms per frame).

    Protocols (:mod:`vidharm.protocols`): Source, SizedSource, Closable.
    """

    #: real-time playback of clips up to this many pixels decodes on one thread
    SINGLE_THREAD_MAX_PIXELS = 1920 * 1080

    def __init__(self, path: str | os.PathLike, loop: bool = False, realtime: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.path = os.fspath(path)
        self.info = probe(self.path)          # InputError for bad files, right away
        self.loop = loop
        self.realtime = realtime
        self._clock, self._sleep = clock, sleep
        self._reader: VideoReader | None = None
        self._primed: _PrimedPass | None = None
        self._closed = False
        w, h = self.info.size
        self._threads = not (realtime and w * h <= self.SINGLE_THREAD_MAX_PIXELS)

    @property
    def size(self) -> tuple[int, int]:
        return self.info.size

    @property
    def fps(self) -> float:
        return float(self.info.fps)

    def _next_pass(self) -> "_PrimedPass":
        primed, self._primed = self._primed, None
        if primed is None:
            primed = _PrimedPass(self.path, self.info, self._threads)
            primed.run()
        else:
            primed.join()
        if self.loop and not self._closed:       # the pass after this one, in the background
            self._primed = _PrimedPass(self.path, self.info, self._threads).start()
        return primed

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        try:
            yield from self._passes()
        finally:
            if self._closed:          # close() raced with the start of a primed pass
                self._drop_primed()

    def _drop_primed(self) -> None:
        primed, self._primed = self._primed, None
        if primed is not None:
            primed.close()

    def _passes(self) -> Iterator[tuple[np.ndarray, float]]:
        offset = 0.0
        start_wall = None
        while not self._closed:
            p = self._next_pass()
            if p.error is not None:
                p.close()
                raise p.error
            self._reader = p.reader
            t0 = None
            try:
                for rgb, t, _ in p.frames():
                    if t0 is None:
                        t0 = t
                    tt = offset + (t - t0)
                    if self.realtime:
                        if start_wall is None:
                            start_wall = self._clock() - tt
                        wait = start_wall + tt - self._clock()
                        if wait > 0:
                            self._sleep(wait)
                    yield rgb, tt
                    if self._closed:
                        return
                end = p.reader.end_time
            finally:
                p.close()
            if not self.loop or t0 is None:
                return
            offset += max((end if end is not None else t0) - t0, 1 / max(self.fps, 1.0))

    def close(self) -> None:
        self._closed = True
        self._drop_primed()
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


registry.sources.add("file", FileSource,
                     help="a video file as a frame source (loop=True, realtime=True for live use)")


# ---------------------------------------------------------------------------------- camera
def parse_device(device: Any) -> int | str:
    """``0`` / ``"0"`` -> 0 (an index); anything else is a path or URL (``/dev/video2``)."""
    if isinstance(device, int):
        return device
    text = str(device).strip()
    return int(text) if text.isdigit() else text


def _default_capture(device: int | str):
    import cv2
    linux = sys.platform.startswith("linux")
    if linux and (isinstance(device, int) or str(device).startswith("/dev/video")):
        return cv2.VideoCapture(device, cv2.CAP_V4L2)
    if isinstance(device, int) and sys.platform == "win32":
        return cv2.VideoCapture(device, cv2.CAP_DSHOW)      # sizes/MJPG honoured, fast to open
    return cv2.VideoCapture(device)


def _fourcc_text(value: float) -> str:
    v = int(value)
    text = "".join(chr((v >> 8 * i) & 0xFF) for i in range(4))
    return text if text.isprintable() and text.strip() else "?"


class CameraSource:
    """A webcam (or any OpenCV capture: a device index, ``/dev/videoN``, a URL or a file).

    - Asks for ``size`` = (width, height), ``fps`` and, with ``mjpg=True``, the MJPG format
      (USB webcams deliver 720p/1080p at 30 fps only compressed); whatever the camera offers
      instead is used, logged and kept in :attr:`notes` ("camera 0 offers 640x480 at 30 fps,
      not 1280x720: using that").
    - Never gives up while open: ``fail_after`` failed reads in a row (an unplugged camera,
      a driver error, the end of a file) release the device and reopen it with a growing
      pause (``backoff`` = (first, max) seconds); each loss and each recovery is logged once
      and reported to ``on_event(kind, message)`` ("lost" / "reconnected") if set. The
      iterator blocks (yields nothing) while the camera is away: the live engine keeps the
      virtual camera streaming meanwhile.
    - Frames are RGB uint8; timestamps are seconds since the first frame (monotonic clock).
    - ``capture_factory(device) -> capture`` (anything with ``isOpened/read/set/get/release``,
      like ``cv2.VideoCapture``) lets tests use a fake camera; a regular file opened this way
      is paced at its own frame rate, like a camera (``pace`` overrides: True/False).

    The first open must succeed (otherwise :class:`~vidharm.errors.InputError` names the
    device); later losses are survived. Protocols (:mod:`vidharm.protocols`): Source,
    SizedSource, Closable, Releasable, Reconnecting, Noted.
    """

    def __init__(self, device: Any = 0, size: tuple[int, int] | None = (1280, 720),
                 fps: float | None = 30.0, mjpg: bool = True,
                 capture_factory: Callable[[Any], Any] | None = None,
                 fail_after: int = 5, backoff: tuple[float, float] = (0.25, 4.0),
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 on_event: Callable[[str, str], None] | None = None,
                 pace: bool | None = None):
        from vidharm.errors import InputError
        self.device = parse_device(device)
        self.requested_size = tuple(int(v) for v in size) if size else None
        self.requested_fps = float(fps) if fps else None
        self.mjpg = bool(mjpg)
        self._factory = capture_factory or _default_capture
        self.fail_after = max(1, int(fail_after))
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self._clock, self._sleep = clock, sleep
        self.on_event = on_event
        self.notes: list[str] = []
        self.reconnects = 0
        self.read_failures = 0
        self.idle = False                 # set by the live engine while nobody watches
        self._closed = False
        self._iterating = False
        self._lock = threading.Lock()
        self._cap = None
        self._size: tuple[int, int] | None = None
        self._fps: float | None = None
        self._pace = (isinstance(self.device, str) and os.path.isfile(self.device)) \
            if pace is None else bool(pace)
        if not self._open(first=True):
            what = f"camera {self.device}" if isinstance(self.device, int) else f"'{self.device}'"
            raise InputError(f"{what} could not be opened",
                             "check that a camera is connected and not used by another app; "
                             "pick another one with --camera INDEX|PATH, or use --source sample")

    # ------------------------------------------------------------------ device handling
    @property
    def name(self) -> str:
        return f"camera {self.device}" if isinstance(self.device, int) else str(self.device)

    @property
    def size(self) -> tuple[int, int]:
        return self._size or self.requested_size or (0, 0)

    @property
    def fps(self) -> float:
        return float(self._fps or self.requested_fps or 30.0)

    def _open(self, first: bool = False) -> bool:
        import cv2
        try:
            cap = self._factory(self.device)
        except Exception as exc:  # a broken driver may raise instead of failing to open
            log.debug("%s: open raised %s", self.name, exc)
            return False
        if cap is None or not cap.isOpened():
            if cap is not None:
                _release(cap)
            return False
        try:
            if self.mjpg:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            if self.requested_size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested_size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested_size[1])
            if self.requested_fps:
                cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
            f = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            fourcc = _fourcc_text(cap.get(cv2.CAP_PROP_FOURCC) or 0)
        except Exception as exc:   # pragma: no cover - properties are best effort
            log.debug("%s: property negotiation failed: %s", self.name, exc)
            w = h = 0
            f = 0.0
            fourcc = "?"
        with self._lock:
            if self._closed:
                _release(cap)
                return False
            self._cap = cap
        if w > 0 and h > 0:
            self._size = (w, h)
        if 0 < f < 1000:
            self._fps = f
        if first:
            self._describe_offer(w, h, f, fourcc)
        return True

    def _describe_offer(self, w: int, h: int, f: float, fourcc: str) -> None:
        parts = []
        if self.requested_size and w > 0 and (w, h) != self.requested_size:
            parts.append(f"{w}x{h}, not {self.requested_size[0]}x{self.requested_size[1]}")
        if self.requested_fps and 0 < f < 1000 and abs(f - self.requested_fps) > 0.5:
            parts.append(f"{f:g} fps, not {self.requested_fps:g}")
        if self.mjpg and fourcc not in ("MJPG", "?") and not self._pace:
            parts.append(f"format {fourcc}, not MJPG")
        if parts:
            note = f"{self.name} offers {', '.join(parts)}: using what it offers"
            self.notes.append(note)
            log.warning(note)

    def _drop(self, reason: str) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            _release(cap)
        msg = f"{self.name} lost ({reason}); reconnecting"
        log.warning(msg)
        if self.on_event:
            self.on_event("lost", msg)

    def _reconnect(self) -> bool:
        """Reopen with backoff until it works or the source is closed."""
        t_lost = self._clock()
        delay = self.backoff[0]
        while not self._closed:
            self._sleep(delay)
            if self._closed:
                return False
            if self._open():
                self.reconnects += 1
                msg = f"{self.name} reconnected after {self._clock() - t_lost:.1f} s"
                log.warning(msg)
                if self.on_event:
                    self.on_event("reconnected", msg)
                return True
            delay = min(self.backoff[1], delay * 2)
        return False

    # ------------------------------------------------------------------ frames
    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        import cv2
        t0 = None
        fails = 0
        next_due = None
        self._iterating = True
        try:
            while not self._closed:
                cap = self._cap
                if cap is None:
                    if not self._reconnect():
                        return
                    next_due = None
                    continue
                if self.idle and not self._pace:   # nobody watches (LiveEngine): keep the
                    try:                           # camera streaming, decode nothing
                        if cap.grab():
                            fails = 0
                            continue
                    except Exception:
                        pass
                try:
                    ok, frame = cap.read()
                except Exception as exc:     # some backends raise on unplug
                    ok, frame = False, None
                    log.debug("%s: read raised %s", self.name, exc)
                if self._closed:
                    return
                if not ok or frame is None or getattr(frame, "size", 0) == 0:
                    fails += 1
                    self.read_failures += 1
                    if fails >= self.fail_after:
                        fails = 0
                        self._drop(f"{self.fail_after} failed reads in a row")
                    else:
                        self._sleep(0.01)
                    continue
                fails = 0
                rgb = _to_rgb(frame, cv2)
                if self._size != (rgb.shape[1], rgb.shape[0]):
                    self._size = (rgb.shape[1], rgb.shape[0])
                now = self._clock()
                if self._pace:                     # a file through OpenCV: at its own pace
                    step = 1.0 / self.fps
                    next_due = now if next_due is None else next_due + step
                    if next_due > now:
                        self._sleep(next_due - now)
                        now = self._clock()
                    elif now - next_due > 4 * step:
                        next_due = now
                if t0 is None:
                    t0 = now
                yield rgb, now - t0
        finally:
            self._iterating = False
            if self._closed:
                self._release_now()

    def _release_now(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            _release(cap)

    def close(self) -> None:
        """Stop iterating and release the device. Safe from another thread: while a thread is
        iterating, that thread releases the device after its read in progress returns (call
        :meth:`release` to force it when that read hangs)."""
        self._closed = True
        if not self._iterating:
            self._release_now()

    def release(self) -> None:
        """Release the device now (even while another thread may be inside ``read``)."""
        self._closed = True
        self._release_now()

    def __enter__(self) -> "CameraSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _release(cap) -> None:
    try:
        cap.release()
    except Exception:  # pragma: no cover - best effort
        pass


def _to_rgb(frame: np.ndarray, cv2) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


registry.sources.add("camera", CameraSource,
                     help="a webcam through OpenCV (device=INDEX|PATH, size, fps, mjpg); "
                          "reconnects by itself")
