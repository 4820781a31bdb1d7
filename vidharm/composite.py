"""Backgrounds and the alpha composite.

A background *provider* gives the background for each output frame::

    bg = provider.frame((W, H), t, current=rgb, mask=matte)    # uint8 RGB (H, W, 3)

- :class:`ImageBackground` -- a still, scaled to COVER the frame and centre-cropped (the aspect
  ratio is never changed); the result is cached per size.
- :class:`VideoBackground` -- a looping video (:mod:`vidharm.video`), also cover-cropped; the frame shown is the
  one for time ``t`` (seconds, modulo the clip's length), so it plays at its own speed
  whatever the output frame rate; ``t=None`` simply steps one frame per call.
- :class:`BlurBackground` -- the REAL frame (``current``), blurred. Given the person's
  ``mask`` it blurs the background only (normalised convolution), so the person does not
  leave a blurry halo of themselves behind them.
- :class:`ColorBackground` -- a solid colour.

Providers ignore the arguments they do not need; ``provider.needs_current`` says whether
``current`` is required. Returned arrays may be shared caches and are READ-ONLY: copy before
modifying. :func:`make_background` builds one from a command-line spec, :func:`composite` does
the alpha blend ``fg * mask + bg * (1 - mask)``.
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import InputError
from .imageio import DEFAULT_MAX_PIXELS, VIDEO_EXTENSIONS, load_image, probe_image

__all__ = ["BackgroundProvider", "ImageBackground", "VideoBackground", "BlurBackground",
           "ColorBackground", "make_background", "composite", "cover_crop"]

Size = tuple[int, int]   # (width, height)


def _check_size(size: Size) -> tuple[int, int]:
    try:
        W, H = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise InputError(f"output size must be (width, height), got {size!r}") from None
    if W <= 0 or H <= 0:
        raise InputError(f"output size must be positive, got {W}x{H}")
    return W, H


def cover_crop(img: np.ndarray, size: Size, interpolation: int | None = None) -> np.ndarray:
    """Scale ``img`` uniformly so it COVERS ``size`` = (W, H), centre-cropping the overflow.

    The crop is taken in the source (so only the needed pixels are resampled) with the target's
    aspect ratio, rounded to whole source pixels: the aspect error is below one source pixel.
    Downscaling uses area averaging (no aliasing), upscaling bilinear (or ``interpolation``).
    """
    W, H = _check_size(size)
    h, w = img.shape[:2]
    if (w, h) == (W, H):
        return img
    scale = max(W / w, H / h)
    cw = min(w, max(1, int(round(W / scale))))
    ch = min(h, max(1, int(round(H / scale))))
    x0 = (w - cw) // 2
    y0 = (h - ch) // 2
    crop = img[y0:y0 + ch, x0:x0 + cw]
    if interpolation is None:
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    if (cw, ch) == (W, H):
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (W, H), interpolation=interpolation)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class BackgroundProvider:
    """Common interface of background providers."""

    #: True when :meth:`frame` needs the current video frame (``current=``)
    needs_current = False
    kind = "background"

    def frame(self, size: Size, t: float | None = 0.0, current: np.ndarray | None = None,
              mask: np.ndarray | None = None) -> np.ndarray:
        """The background for an output frame of ``size`` = (W, H) at time ``t`` seconds:
        uint8 RGB (H, W, 3), read-only."""
        raise NotImplementedError

    def reset(self) -> None:
        """Start over (a new clip)."""

    def close(self) -> None:
        """Release files and decoders."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return self.kind


class ColorBackground(BackgroundProvider):
    """A solid colour (R, G, B)."""

    kind = "colour"

    def __init__(self, rgb: tuple[int, int, int]):
        self.rgb = tuple(int(np.clip(c, 0, 255)) for c in rgb)
        self._cache: dict[Size, np.ndarray] = {}

    def frame(self, size, t=0.0, current=None, mask=None):
        W, H = _check_size(size)
        a = self._cache.get((W, H))
        if a is None:
            a = np.empty((H, W, 3), np.uint8)
            a[:] = self.rgb
            self._cache = {(W, H): _readonly(a)}
        return a

    def describe(self) -> str:
        return "colour #%02x%02x%02x" % self.rgb


class ImageBackground(BackgroundProvider):
    """A still image, cover-scaled and centre-cropped; the resized result is cached per size
    (the last few sizes). The file is read (and checked) when the provider is created."""

    kind = "image"
    _CACHE_SIZES = 4

    def __init__(self, path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.path = Path(path)
        self.image = _readonly(load_image(path, max_pixels=max_pixels, what="background"))
        self._cache: OrderedDict[Size, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def frame(self, size, t=0.0, current=None, mask=None):
        key = _check_size(size)
        with self._lock:
            a = self._cache.get(key)
            if a is not None:
                self._cache.move_to_end(key)
                return a
        h, w = self.image.shape[:2]
        up = max(key[0] / w, key[1] / h) > 1.0
        a = cover_crop(self.image, key, cv2.INTER_CUBIC if up else None)
        if a is not self.image:
            a = _readonly(a)
        with self._lock:
            self._cache[key] = a
            while len(self._cache) > self._CACHE_SIZES:
                self._cache.popitem(last=False)
        return a

    def describe(self) -> str:
        h, w = self.image.shape[:2]
        return f"image {self.path.name} ({w}x{h})"


class VideoBackground(BackgroundProvider):
    """A looping video background read with :class:`~vidharm.video.VideoReader` (upright, and
    with the transcoder's colour handling), cover-cropped to the output size.

    ``frame(size, t)`` shows the clip's frame for time ``t`` seconds counted from the first
    ``t`` it was asked for, modulo the clip's length (the last frame's time plus one frame,
    learnt when the end is first reached) -- the background plays at its own speed whatever
    the output frame rate, and the same ``t`` always gives the same frame. ``t`` going back
    rewinds; a jump far ahead seeks. ``t=None`` steps one frame per call instead. The file's
    display rotation (phone videos) is applied; an animated GIF plays too. The clip is opened
    and its first frame decoded when the provider is created, so a bad file fails early.
    """

    kind = "video"
    _SEEK_AHEAD_S = 3.0

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._reader = None
        self._info = None                    # the clip's VideoInfo, from the first open
        self._t0: float | None = None        # the first frame's time
        self.period: float | None = None     # loop length in seconds, known after one pass
        self._origin: float | None = None
        self._serial = 0                     # changes whenever the current frame does
        self._out_key = None
        self._out: np.ndarray | None = None
        self._lock = threading.Lock()
        self._rewind()

    # ------------------------------------------------------------------ decoding
    def _open(self) -> None:
        from .video import VideoReader
        self.close()
        try:
            # probed on the first open (the pixel limit is checked from the header there)
            self._reader = VideoReader(self.path, info=self._info, allow_images=True)
        except InputError as exc:
            raise InputError(f"background video: {exc.what}", exc.hint) from None
        self._info = self._reader.info
        fps = self._info.fps
        self.frame_duration = float(1 / fps) if fps and fps > 0 else 1 / 30.0
        self._frames = iter(self._reader)
        self._eof = False

    def _read(self) -> tuple[float, np.ndarray] | None:
        """Next (seconds since the clip's first frame, rgb), or None at the end."""
        if self._eof:
            return None
        try:
            rgb, ts, _ = next(self._frames)
        except StopIteration:
            self._eof = True
            return None
        except (InputError, OSError):    # a broken packet: treat as the end
            self._eof = True
            return None
        if self._t0 is None:
            self._t0 = ts
        return ts - self._t0, rgb

    def _rewind(self) -> None:
        self._t0 = None
        self._open()
        self._cur = self._read()
        if self._cur is None:
            self.close()
            raise InputError(f"background video '{self.path}' has no decodable frame",
                             "check that the file plays, or use an image background")
        self._next = self._read()
        self._serial += 1
        if self._next is None and self.period is None:   # a one-frame clip
            self.period = self.frame_duration

    def _advance(self) -> bool:
        """Step to the next frame; False (and the loop length learnt) at the end."""
        if self._next is None:
            if self.period is None:
                self.period = max(self._cur[0] + self.frame_duration, 1e-3)
            return False
        self._cur = self._next
        self._next = self._read()
        self._serial += 1
        return True

    def _seek(self, local: float) -> None:
        """Jump to the keyframe before ``local`` seconds; rewinds if seeking does not work."""
        try:
            self._reader.seek(local + (self._t0 or 0.0))
            self._frames = iter(self._reader)
            self._eof = False
            cur = self._read()
            if cur is None or cur[0] > local + 1e-6:
                raise ValueError("seek landed after the target")
            self._cur, self._next = cur, self._read()
            self._serial += 1
        except Exception:
            self._rewind()

    def _goto(self, t: float) -> None:
        eps = 1e-6
        if self._origin is None or t < self._origin:
            self._origin = t
        local = t - self._origin
        if self.period:
            local = math.fmod(local, self.period)
        if local < self._cur[0] - eps:
            self._rewind()
        if local - self._cur[0] > self._SEEK_AHEAD_S and self._next is not None:
            self._seek(local)
        while self._next is not None and self._next[0] <= local + eps:
            self._advance()
        if self._next is None and local >= self._cur[0] + self.frame_duration - eps:
            self._advance()                   # at the end: learns the loop length
            local = math.fmod(local, self.period)
            if local < self._cur[0] - eps:
                self._rewind()
            while self._next is not None and self._next[0] <= local + eps:
                self._advance()

    # ------------------------------------------------------------------ API
    def frame(self, size, t=0.0, current=None, mask=None):
        key = _check_size(size)
        with self._lock:
            if self._reader is None:         # closed: open again from the start
                self._rewind()
            if t is None:
                if not self._advance():
                    self._rewind()
            else:
                self._goto(float(t))
            out_key = (self._serial, key)
            if out_key != self._out_key:
                self._out = _readonly(cover_crop(self._cur[1], key))
                self._out_key = out_key
            return self._out

    def reset(self) -> None:
        with self._lock:
            self._origin = None
            self._rewind()

    def close(self) -> None:
        r, self._reader = self._reader, None
        if r is not None:
            try:
                r.close()
            except Exception:  # pragma: no cover
                pass

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass

    def describe(self) -> str:
        return f"video {self.path.name}"


class BlurBackground(BackgroundProvider):
    """The current frame, Gaussian-blurred with ``sigma`` (given for 720p, scaled with the frame
    size). With ``mask`` the person is left out of the blur (normalised convolution: blur of
    frame*(1-mask) over blur of (1-mask)), so no blurred copy of them shows around them.
    Fast: the blur runs at a size reduced by an integer factor (sigma about 2.5-5 px there),
    then is upsampled (a Gaussian that wide has nothing left that upsampling could lose)."""

    kind = "blur"
    needs_current = True

    def __init__(self, sigma: float = 12.0):
        if not sigma > 0:
            raise InputError(f"blur sigma must be positive, got {sigma}")
        self.sigma = float(sigma)

    def frame(self, size, t=0.0, current=None, mask=None):
        W, H = _check_size(size)
        if current is None:
            raise ValueError("BlurBackground.frame needs the current frame: "
                             "frame(size, t, current=rgb)")
        img = np.asarray(current)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"blur background needs the uint8 RGB frame, got {img.dtype} "
                             f"{img.shape}")
        if img.shape[:2] != (H, W):
            img = cover_crop(img, (W, H))
            mask = None if mask is None else cv2.resize(np.asarray(mask, np.float32), (W, H))
        sigma = self.sigma * min(W, H) / 720.0
        k = max(1, int(sigma / 2.5))           # integer factor: OpenCV's fast area path
        sw, sh = max(1, -(-W // k)), max(1, -(-H // k))
        small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA) if k > 1 else img
        s_sigma = max(0.5, sigma * sw / W)
        if mask is None:
            blurred = cv2.GaussianBlur(small, (0, 0), s_sigma)
        else:
            m = np.asarray(mask)
            m = m.astype(np.float32) / 255.0 if m.dtype == np.uint8 else m.astype(np.float32)
            if m.ndim == 3:
                m = m[:, :, 0]
            if m.shape != (sh, sw):
                m = cv2.resize(m, (sw, sh), interpolation=cv2.INTER_AREA)
            bgw = 1.0 - np.clip(m, 0.0, 1.0)
            small_f = small.astype(np.float32)
            weighted = small_f * bgw[:, :, None]
            num = cv2.GaussianBlur(weighted, (0, 0), s_sigma)
            den = cv2.GaussianBlur(bgw, (0, 0), s_sigma)
            # deep inside the person (no background within ~2 sigma; hidden by the person
            # anyway) fall back to the mean background colour
            total = float(bgw.sum())
            fill = weighted.reshape(-1, 3).sum(0) / total if total > 1e-3 \
                else small_f.reshape(-1, 3).mean(0)
            wgt = np.clip(den * 20.0, 0.0, 1.0)[:, :, None]
            est = num / np.maximum(den, 1e-4)[:, :, None]
            est -= fill
            est *= wgt
            est += fill + 0.5
            blurred = np.clip(est, 0, 255).astype(np.uint8)
        if blurred.shape[:2] != (H, W):
            blurred = cv2.resize(blurred, (W, H), interpolation=cv2.INTER_LINEAR)
        return _readonly(blurred)

    def describe(self) -> str:
        return f"blur (sigma {self.sigma:g} at 720p)"


_NAMED_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "green": (0, 177, 64),
                  "blue": (0, 71, 187), "grey": (128, 128, 128), "gray": (128, 128, 128)}


def _parse_colour(spec: str) -> tuple[int, int, int] | None:
    s = spec.strip().lower()
    if s in _NAMED_COLOURS:
        return _NAMED_COLOURS[s]
    if s.startswith("#") and len(s) in (4, 7):
        h = s[1:]
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        try:
            return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        except ValueError:
            return None
    return None


def _probe_video(p: Path) -> bool:
    try:
        import av
        with av.open(str(p)) as c:
            if not c.streams.video:
                return False
            cc = c.streams.video[0].codec_context
            from .video import MAX_VIDEO_PIXELS
            if (cc.width or 0) * (cc.height or 0) > MAX_VIDEO_PIXELS:
                return True                 # VideoBackground refuses it by its header
            for _ in c.decode(video=0):    # a stream FFmpeg cannot decode (a text file
                return True                 # named .jpg, an SVG) is not a video background
            return False
    except Exception:
        return False


def make_background(spec: str | os.PathLike, cfg: Any = None) -> BackgroundProvider:
    """A provider from a command-line spec:

    - ``blur`` (sigma from ``cfg.background.blur_sigma``) or ``blur:SIGMA``;
    - a colour: ``#RRGGBB``, ``#RGB``, or black/white/green/blue/grey;
    - a path to an image (anything Pillow reads; an animated GIF plays as a video);
    - a path to a video (anything FFmpeg decodes: MP4, MOV, MKV, WebM...).

    What the file is gets decided by reading it, not by its extension. Anything else is an
    :class:`InputError`.
    """
    text = str(spec).strip()
    bcfg = getattr(cfg, "background", cfg)
    low = text.lower()
    if low == "blur" or low.startswith("blur:"):
        sigma = getattr(bcfg, "blur_sigma", 12.0) if bcfg is not None else 12.0
        if low.startswith("blur:"):
            try:
                sigma = float(text[5:])
            except ValueError:
                raise InputError(f"bad blur strength in '{text}'",
                                 "use 'blur' or 'blur:SIGMA', e.g. blur:8") from None
            from .config import check_value
            check_value("background.blur_sigma", sigma, f"--background '{text}'")
        return BlurBackground(sigma)
    colour = _parse_colour(text)
    if colour is not None and not Path(text).exists():
        return ColorBackground(colour)
    if not text:
        raise InputError("empty background", "give an image or video path, 'blur' or a colour")
    p = Path(text).expanduser()
    if not p.exists():
        raise InputError(f"background '{p}' does not exist",
                         "give an image or video path, 'blur', or a colour like #00b140")
    if p.is_dir():
        raise InputError(f"background '{p}' is a directory",
                         "give an image or video file, 'blur', or a colour")
    from ._fs import regular_file_stat
    if regular_file_stat(p, "background").st_size == 0:
        raise InputError(f"background '{p}' is empty (0 bytes)", "give a complete image or video file")
    size = probe_image(p)
    if size is not None and not _is_animated(p):
        return ImageBackground(p)
    if _probe_video(p):
        return VideoBackground(p)
    if size is not None:   # pragma: no cover - animated image FFmpeg cannot read: first frame
        return ImageBackground(p)
    kind = "a video" if p.suffix.lower() in VIDEO_EXTENSIONS else "an image or a video"
    raise InputError(f"background '{p}' is not {kind} that can be read",
                     "give a PNG/JPEG/WebP image, an MP4/MOV/MKV/WebM video, 'blur', "
                     "or a colour like #00b140")


def _is_animated(p: Path) -> bool:
    try:
        from PIL import Image
        with Image.open(p) as im:
            return bool(getattr(im, "is_animated", False)) and im.format in ("GIF", "PNG", "WEBP")
    except Exception:
        return False


# ---------------------------------------------------------------------------------- composite
def blend(fg: np.ndarray, bg: np.ndarray, m: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """``fg * m + bg * (1 - m)`` for uint8 (h, w, 3) images (views allowed) and a float32
    (h, w) weight in [0, 1] (outside: clamped), as uint8, into ``dst`` if given.

    The weight is taken in 1/255 steps (``a = round(255 m)``) and the sum ``fg a + bg (255 -
    a)`` made in 16-bit integers by OpenCV's uint8 kernels, then divided by 255 and rounded:
    exactly ``bg`` where ``m`` is 0 and ``fg`` where it is 1, within one grey level of the
    float blend elsewhere (0.06 on average), in about half the time of ``cv2.blendLinear``
    (0.9 against 1.7 ms for a 690x912 box on one core), whose division per pixel is what
    costs."""
    if m.size < 16:           # OpenCV would read a tiny array as a scalar: numpy, same sums
        a = np.rint(np.clip(m, 0.0, 1.0) * 255.0).astype(np.uint16)[:, :, None]
        acc = np.asarray(fg, np.uint16) * a + np.asarray(bg, np.uint16) * (255 - a)
        res = np.rint(acc / 255.0).astype(np.uint8)
        if dst is None:
            return res
        dst[...] = res
        return dst
    a = cv2.multiply(m, 255.0, dtype=cv2.CV_8U)            # rounded, saturated to 0..255
    a3 = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    acc = cv2.multiply(fg, a3, dtype=cv2.CV_16U)
    cv2.bitwise_not(a3, dst=a3)                              # 255 - a
    cv2.add(acc, cv2.multiply(bg, a3, dtype=cv2.CV_16U), dst=acc)
    if dst is None:
        return cv2.convertScaleAbs(acc, alpha=1.0 / 255.0)
    cv2.convertScaleAbs(acc, dst=dst, alpha=1.0 / 255.0)
    return dst


def composite(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """Alpha blend ``fg * mask + bg * (1 - mask)``, rounded, as uint8 RGB (H, W, 3).

    ``fg``, ``bg``: uint8 (H, W, 3); ``mask``: float32 (H, W) in [0, 1] (uint8 0..255 and
    (H, W, 1) accepted). ``out``: optional uint8 (H, W, 3) array to write into.
    See :func:`blend` (within one grey level of the float blend; exact where the mask is 0
    or 1).
    """
    fg = np.asarray(fg)
    bg = np.asarray(bg)
    if fg.ndim != 3 or fg.shape[2] != 3 or fg.dtype != np.uint8:
        raise InputError(f"foreground must be uint8 (H, W, 3), got {fg.dtype} {fg.shape}")
    if bg.shape != fg.shape or bg.dtype != np.uint8:
        raise InputError(f"background is {bg.dtype} {bg.shape} but the frame is uint8 "
                         f"{fg.shape}", "make the background with provider.frame((W, H), t)")
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.shape != fg.shape[:2]:
        raise InputError(f"mask is {m.shape[1] if m.ndim > 1 else '?'}x{m.shape[0]} but the "
                         f"frame is {fg.shape[1]}x{fg.shape[0]}",
                         "refine/resize the mask to the frame size first")
    if m.dtype == np.uint8:
        m = m.astype(np.float32) * np.float32(1.0 / 255.0)
    elif m.dtype != np.float32:
        m = m.astype(np.float32)
    return blend(np.ascontiguousarray(fg), np.ascontiguousarray(bg), np.ascontiguousarray(m), out)
