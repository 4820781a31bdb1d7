"""Video files with PyAV: probe, read upright RGB frames, write H.264 MP4 atomically.

Three pieces, each a context manager in PyAV's style (resources explicit, timestamps explicit):

- :func:`probe` ``(path) -> VideoInfo``: size (upright, after rotation), frame rate, frame
  count, duration, rotation, codecs, audio. Every way a file can be unusable (missing,
  unreadable, empty, truncated, not a video, no video stream) raises
  :class:`~vidharm.errors.InputError` with one line saying what to do.
- :class:`VideoReader`: ``for rgb, t, index in VideoReader(path)``; ``rgb`` is ``(H, W, 3)``
  uint8 RGB, upright (the display matrix / ``rotate`` tag is applied), ``t`` the frame's
  presentation time in seconds (``pts * time_base``, not renumbered), ``index`` counts from 0.
- :class:`VideoWriter`: ``with VideoWriter(path, (w, h), time_base=tb) as w: w.write(rgb, t)``.
  H.264 (libx264; crf, preset and pixel format from :class:`~vidharm.config.OutputConfig`)
  in MP4 with every frame stamped at ``t`` (variable frame rate is kept; nothing assumes a
  constant rate), optional audio carried over from an input stream (stream copy when MP4 can
  hold the codec, otherwise re-encoded to AAC), written to a hidden temporary file beside the
  target, fsynced and renamed into place only when complete; on any error or Ctrl-C the
  temporary file is deleted and the target is left as it was.

Colour: decoded frames are converted with their tagged YUV matrix; untagged ones with the
matrix players assume (BT.709 above 576 lines, BT.601 otherwise). Output is BT.709,
limited range, and tagged so, which every player honours. HDR input is not tone-mapped.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import struct
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional

import numpy as np

from .config import OutputConfig
from .errors import InputError, OutputError

log = logging.getLogger(__name__)

#: Audio codecs MP4 holds and players play: these are stream-copied; others become AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "opus", "ac3", "eac3", "alac"})
#: Output file suffixes accepted for ``-o`` (the container is always MP4).
MP4_SUFFIXES = (".mp4", ".m4v")
#: Default time base for writers not given the input's (divides every common frame rate).
DEFAULT_TIME_BASE = Fraction(1, 90000)

_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)
_UNSPECIFIED_COLORSPACE = 2   # AVCOL_SPC_UNSPECIFIED
_BT709, _BT601 = 1, 5         # AVCOL_SPC_BT709, AVCOL_SPC_BT470BG (swscale's "ITU601")
_MPEG_RANGE = 1               # AVCOL_RANGE_MPEG (limited, 16-235)
# faststart: index at the front (plays while downloading); a fine movie timescale keeps the
# edit lists (start offsets, e.g. audio starting late) exact instead of rounded to 1 ms
_MUX_OPTIONS = {"movflags": "+faststart", "movie_timescale": "90000"}
_STILL_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe",
                        "tiff_pipe", "gif", "svg_pipe", "qoi_pipe", "pgm_pipe", "ppm_pipe")


def _av():
    import av  # deferred: keeps `import vidharm.video` cheap
    return av


# ----------------------------------------------------------------------------- info / probe
@dataclass
class VideoInfo:
    """What :func:`probe` learns about a video file. Sizes are upright (after rotation)."""

    path: str
    width: int
    height: int
    fps: Fraction                   # average frame rate (frames / duration)
    frames: int                     # frame count (exact when the container indexes it)
    frames_exact: bool
    duration: float                 # seconds, of the video stream
    start_time: float               # seconds: the first frame's presentation time
    time_base: Fraction             # the video stream's time base
    rotation: int                   # degrees counter-clockwise the player turns the picture
    flip: str                       # "", "h", "v": mirroring in the display matrix
    video_codec: str
    pixel_format: str
    coded_width: int
    coded_height: int
    container: str
    has_audio: bool
    audio_codec: Optional[str] = None
    audio_sample_rate: Optional[int] = None
    audio_channels: Optional[int] = None
    audio_duration: Optional[float] = None
    size_bytes: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the upright frames."""
        return self.width, self.height

    @property
    def audio_copyable(self) -> bool:
        """True when the audio can be stream-copied into MP4 unchanged."""
        return bool(self.has_audio and self.audio_codec in MP4_AUDIO_COPY)

    def summary(self) -> str:
        rot = f", rotated {self.rotation}" if self.rotation else ""
        audio = f", {self.audio_codec} audio" if self.has_audio else ", no audio"
        return (f"{self.width}x{self.height} {self.video_codec} {float(self.fps):.3g} fps, "
                f"{self.frames} frames, {self.duration:.2f} s{rot}{audio}")


def _display(path) -> str:
    return os.fspath(path)


def check_input_file(path: str | os.PathLike) -> int:
    """Filesystem checks before FFmpeg sees the file. Returns its size in bytes."""
    from ._fs import regular_file_stat
    p = _display(path)
    if os.path.isdir(p):
        raise InputError(f"input '{p}' is a folder, not a video file",
                         f"give the video files in it, e.g. '{os.path.join(p, '*.mp4')}'")
    st = regular_file_stat(p)       # missing, unreadable, a FIFO or /dev/zero: one line, unopened
    try:
        with open(p, "rb") as f:
            f.read(1)
    except PermissionError:
        raise InputError(f"cannot read input '{p}' (permission denied)",
                         f"make it readable (e.g. 'chmod +r {p}') or copy it somewhere you can read") from None
    except OSError as exc:
        raise InputError(f"cannot read input '{p}' ({exc.strerror or exc})",
                         "check the file and the disk it is on") from None
    if st.st_size == 0:
        raise InputError(f"input '{p}' is empty (0 bytes)",
                         "the file was not fully written or copied; get a complete copy")
    return st.st_size


def _sniff(path: str) -> str:
    """'video' if the header looks like a video container, 'text', or 'other'."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return "other"
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "video"
    if head.startswith((b"\x1a\x45\xdf\xa3", b"FLV", b"OggS", b"\x00\x00\x01\xba",
                        b"\x00\x00\x01\xb3", b"\x30\x26\xb2\x75")):
        return "video"
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"AVIX"):
        return "video"
    if head[:1] == b"\x47" and len(head) > 188 and head[188:189] == b"\x47":
        return "video"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "other"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text"
    return "other"


def _av_open_lenient(av, path: str):
    """Open for reading with metadata that is not valid UTF-8 tolerated. PyAV < 19 needs
    ``metadata_errors="replace"`` for that; PyAV 19 dropped the argument (TypeError) and
    decodes metadata leniently itself."""
    try:
        return av.open(path, mode="r", metadata_errors="replace")
    except TypeError:
        return av.open(path, mode="r")


def open_input(path: str | os.PathLike):
    """Open ``path`` with PyAV for reading; every failure is a one-line :class:`InputError`."""
    av = _av()
    p = _display(path)
    size = check_input_file(p)
    try:
        container = _av_open_lenient(av, p)
    except PermissionError:
        raise InputError(f"cannot read input '{p}' (permission denied)",
                         "check the file's permissions") from None
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        kind = _sniff(p)
        if kind == "video":
            raise InputError(f"input '{p}' is damaged or incomplete (truncated?); FFmpeg cannot "
                             f"open it ({_ffmpeg_reason(exc)})",
                             "re-copy or re-download the complete file") from None
        what = "it is a text file" if kind == "text" else "FFmpeg does not recognise its format"
        raise InputError(f"input '{p}' is not a video file ({what})",
                         "give a video such as .mp4, .mov, .mkv or .webm") from None
    try:
        _check_not_truncated(container, p, size)
        if container.format.name in _STILL_IMAGE_FORMATS:
            raise InputError(f"input '{p}' is a still image, not a video",
                             "give a video file (a still picture can be used as a background)")
        video_stream(container, p)
    except BaseException:
        container.close()
        raise
    return container


def _ffmpeg_reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(msg).split()).rstrip(".")


def _check_not_truncated(container, p: str, size: int) -> None:
    """MP4/MOV index every sample's byte range; one past the end of the file = truncated."""
    end = 0
    for s in container.streams:
        try:
            entries = s.index_entries
            n = len(entries)
            if n:
                last = entries[n - 1]
                end = max(end, last.pos + last.size)
        except Exception:  # index not available for this format: nothing to check
            continue
    if end > size:
        raise InputError(f"input '{p}' is truncated ({size} of {end}+ bytes present)",
                         "the copy or download stopped early; get the complete file")


def video_stream(container, p: str = ""):
    """The main video stream (cover-art pictures do not count) or InputError."""
    av = _av()
    cover = av.stream.Disposition.attached_pic
    vids = [s for s in container.streams.video if not (s.disposition & cover)]
    if not vids:
        what = "only audio" if container.streams.audio else "no audio or video"
        raise InputError(f"input '{p or container.name}' has no video stream ({what})",
                         "give a video file; audio-only files cannot be processed")
    return vids[0]


def audio_stream(container):
    """The audio stream to carry over (the default one, else the first), or None."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    av = _av()
    default = [s for s in streams if s.disposition & av.stream.Disposition.default]
    return (default or streams)[0]


def _codec_name(stream) -> str:
    try:
        return stream.codec_context.codec.canonical_name
    except Exception:
        return stream.codec_context.name


# --------------------------------------------------------------------------- orientation
class Orientation(NamedTuple):
    """How to turn a decoded frame upright (what FFmpeg's autorotate does)."""

    rotation: int = 0     # counter-clockwise degrees the player turns it: 0, 90, 180, 270
    flip: str = ""        # "", "h", "v": mirror applied after the rotation

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, C)`` decoded -> upright ``(H', W', C)`` (contiguous)."""
        out = rgb
        if self.rotation:
            out = np.rot90(out, k=self.rotation // 90)
        if self.flip == "h":
            out = out[:, ::-1]
        elif self.flip == "v":
            out = out[::-1]
        return np.ascontiguousarray(out) if out is not rgb else rgb

    def upright_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.rotation in (90, 270) else (width, height)


def orientation_from_matrix(m: tuple[int, ...] | None) -> Orientation:
    """FFmpeg's display matrix (9 ints, 16.16 fixed point) -> :class:`Orientation`.

    Same decisions as ``ffmpeg``'s autorotate: ``theta = -av_display_rotation_get``.
    Non-right angles are ignored (they are vanishingly rare and need resampling).
    """
    if not m:
        return Orientation()
    a, b, c, d = m[0] / 65536.0, m[1] / 65536.0, m[3] / 65536.0, m[4] / 65536.0
    sx, sy = np.hypot(a, c), np.hypot(b, d)
    if sx == 0 or sy == 0:
        return Orientation()
    ccw = -np.degrees(np.arctan2(b / sy, a / sx))       # av_display_rotation_get
    theta = -round(ccw)
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)    # clockwise, in [0, 360)
    # (rotation, flip) pairs: transpose == (270, "h"), anti-transpose == (90, "h")
    if abs(theta - 90) < 1:        # turn clockwise ("clock"), or transpose ("cclock_flip")
        return Orientation(270, "") if m[3] <= 0 else Orientation(270, "h")
    if abs(theta - 180) < 1:
        h, v = m[0] < 0, m[4] < 0
        if h and v:
            return Orientation(180, "")
        return Orientation(0, "h" if h else ("v" if v else ""))
    if abs(theta - 270) < 1:       # turn counter-clockwise ("cclock"), or anti-transpose
        return Orientation(90, "") if m[3] >= 0 else Orientation(90, "h")
    if abs(theta) < 1 or abs(theta - 360) < 1:
        return Orientation(0, "v" if m[4] < 0 else "")
    log.warning("display rotation of %.0f degrees is not a multiple of 90; ignored", theta)
    return Orientation()


def _frame_orientation(frame, stream) -> Orientation:
    av = _av()
    try:
        # a Mapping keyed by type (iterating it gives SideData up to PyAV 18, types from 19)
        sd = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        if sd is not None:
            return orientation_from_matrix(struct.unpack("<9i", bytes(sd)[:36]))
    except Exception:  # pragma: no cover - side data API differences
        pass
    tag = (stream.metadata or {}).get("rotate")  # legacy tag: degrees clockwise
    if tag:
        try:
            cw = int(float(tag)) % 360
        except ValueError:
            return Orientation()
        if cw in (90, 180, 270):
            return Orientation((360 - cw) % 360, "")
    return Orientation()


def _to_rgb(frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded frame -> ``(H, W, 3)`` uint8 RGB with the right YUV matrix.

    ``size`` = ``(width, height)`` scales frames whose size changed mid-stream back to it.
    """
    kwargs = {}
    if size is not None and (frame.width, frame.height) != tuple(size):
        kwargs["width"], kwargs["height"] = size
    if frame.colorspace == _UNSPECIFIED_COLORSPACE and not frame.format.name.startswith(("rgb", "bgr", "gbr")):
        kwargs["src_colorspace"] = _BT709 if frame.height > 576 else _BT601
    return frame.to_ndarray(format="rgb24", **kwargs)


# ---------------------------------------------------------------------------------- probe
def probe(path: str | os.PathLike) -> VideoInfo:
    """Open ``path``, decode its first frame, and describe it. Raises :class:`InputError`."""
    p = _display(path)
    with open_input(p) as container:
        info, _ = _describe(container, p)
    return info


#: The largest frame accepted (pixels), as for images: 8K UHD (33 Mpx) fits; an 8000x8000
#: clip (64 Mpx, 5.7 GB in flight) does not.
MAX_VIDEO_PIXELS = 50_000_000


def check_video_pixels(width: int, height: int, p: str, what: str = "input") -> None:
    """InputError when a video's frame size (from its header) is over the pixel limit."""
    if width * height > MAX_VIDEO_PIXELS:
        raise InputError(f"{what} '{p}' has {width}x{height} frames = {width * height:,} pixels, "
                         f"over the limit of {MAX_VIDEO_PIXELS:,}",
                         "scale the video down first (e.g. to 3840x2160)")


def _indexed_frames(vs) -> int | None:
    """Frames the container's index promises (samples an edit list drops not counted)."""
    try:
        entries = vs.index_entries
        n = len(entries)
    except Exception:
        n = 0
    if n and vs.frames and n == vs.frames:
        dropped = 0
        for i in range(min(n, 64)):          # edit lists drop leading samples only
            if entries[i].is_discard:
                dropped += 1
        return n - dropped
    return int(vs.frames) or None


def _describe(container, p: str):
    av = _av()
    vs = video_stream(container, p)
    cc = vs.codec_context
    tb = vs.time_base or Fraction(1, 90000)
    check_video_pixels(cc.width or 0, cc.height or 0, p)     # from the header, before decoding
    first = None
    try:
        vs.thread_type = "AUTO"
        for frame in container.decode(vs):
            first = frame
            break
    except (av.error.FFmpegError, ValueError) as exc:
        raise InputError(f"input '{p}': the {_codec_name(vs)} video cannot be decoded "
                         f"({_ffmpeg_reason(exc)})",
                         "the file is damaged, or re-encode it to H.264") from None
    if first is None:
        raise InputError(f"input '{p}' has a video stream but no decodable frames",
                         "the file is damaged or empty; get a complete copy")
    orient = _frame_orientation(first, vs)
    width, height = orient.upright_size(first.width, first.height)
    fps = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(30)
    fps = Fraction(fps)
    if vs.duration:
        duration = float(vs.duration * tb)
    elif container.duration:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
    frames = _indexed_frames(vs)
    frames_exact = frames is not None
    if frames is None:
        frames = max(1, round(duration * float(fps)))
    aud = audio_stream(container)
    info = VideoInfo(
        path=p, width=width, height=height, fps=fps, frames=frames, frames_exact=frames_exact,
        duration=duration, start_time=start, time_base=Fraction(tb), rotation=orient.rotation,
        flip=orient.flip, video_codec=_codec_name(vs), pixel_format=cc.pix_fmt or first.format.name,
        coded_width=first.width, coded_height=first.height, container=container.format.name,
        has_audio=aud is not None, size_bytes=os.path.getsize(p))
    if aud is not None:
        ac = aud.codec_context
        info.audio_codec = _codec_name(aud)
        info.audio_sample_rate = ac.sample_rate
        info.audio_channels = ac.channels
        if aud.duration and aud.time_base:
            info.audio_duration = float(aud.duration * aud.time_base)
    return info, orient


# --------------------------------------------------------------------------------- reader
class Frame(NamedTuple):
    rgb: np.ndarray      # (H, W, 3) uint8 RGB, upright
    t: float             # presentation time, seconds
    index: int           # 0, 1, 2, ... in presentation order


class VideoReader:
    """Decoded, upright RGB frames of a file: ``for rgb, t, index in VideoReader(path)``.

    ``select_streams(container)``, if given, picks more streams to demux in the same pass;
    their packets (including the demuxer's empty end-of-stream packet) go to
    ``on_packet(packet)``. The transcoder uses this to carry audio without a second read.
    After iteration, :attr:`end_time` is the last frame's time plus its duration.
    Not thread-safe; iterate once.
    """

    def __init__(self, path: str | os.PathLike, *, select_streams: Callable | None = None,
                 on_packet: Callable | None = None, threads: bool = True,
                 info: VideoInfo | None = None):
        self.path = _display(path)
        self.container = open_input(self.path)
        try:
            # describe on a separate open: decoding a first frame then seeking back is not
            # reliable for every format
            if info is None:
                with open_input(self.path) as c2:
                    info, _ = _describe(c2, self.path)
            self.info = info
            self.orientation = Orientation(info.rotation, info.flip)
            self.stream = video_stream(self.container, self.path)
            if threads:
                self.stream.thread_type = "AUTO"
            self.other_streams = list(select_streams(self.container)) if select_streams else []
        except BaseException:
            self.container.close()
            raise
        self.time_base = self.info.time_base
        self._on_packet = on_packet
        self.frames_read = 0
        self.end_time: float | None = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def _corrupt(self, exc: BaseException) -> InputError:
        av = _av()
        if isinstance(exc, OSError) and not isinstance(exc, av.error.InvalidDataError):
            return InputError(f"error reading input '{self.path}' after frame {self.frames_read} "
                              f"({_ffmpeg_reason(exc)})", "check the file and the disk it is on")
        return InputError(f"input '{self.path}' is corrupt: decoding failed after frame "
                          f"{self.frames_read} ({_ffmpeg_reason(exc)})",
                          "re-copy the file, or re-encode it to repair it")

    def __iter__(self) -> Iterator[Frame]:
        if self.container is None:
            raise ValueError("VideoReader is closed")
        av = _av()
        errors = (av.error.FFmpegError, ValueError)
        tb = self.time_base
        step = 1 / float(self.info.fps) if self.info.fps else 1 / 30
        coded = (self.info.coded_width, self.info.coded_height)
        last_t: float | None = None
        demux = self.container.demux([self.stream, *self.other_streams])
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except errors as exc:
                raise self._corrupt(exc) from None
            if packet.stream is not self.stream:
                if self._on_packet is not None:
                    self._on_packet(packet)     # its errors are the caller's, not the input's
                continue
            try:
                frames = packet.decode()
            except errors as exc:
                raise self._corrupt(exc) from None
            for frame in frames:
                if frame.pts is not None:
                    t = float(frame.pts * tb)
                else:
                    t = last_t + step if last_t is not None else 0.0
                if frame.duration:
                    step = float(frame.duration * tb)
                elif last_t is not None and t > last_t:
                    step = t - last_t
                try:
                    rgb = self.orientation.apply(_to_rgb(frame, coded))
                except errors as exc:
                    raise self._corrupt(exc) from None
                last_t = t
                idx = self.frames_read
                self.frames_read += 1
                yield Frame(rgb, t, idx)
        if last_t is not None:
            self.end_time = last_t + step
            # an edit list may cut the last frame short: the stream's own duration says so
            vs = self.stream
            if vs.duration and vs.start_time is not None:
                stream_end = float((vs.start_time + vs.duration) * tb)
                if last_t < stream_end < self.end_time:
                    self.end_time = stream_end


def read_frames(path: str | os.PathLike) -> Iterator[Frame]:
    """Generator form of :class:`VideoReader` (closes the file when exhausted or closed)."""
    with VideoReader(path) as reader:
        yield from reader


# --------------------------------------------------------------------------------- output
def temp_path_for(final: str | os.PathLike) -> Path:
    """The hidden temporary name beside ``final`` that a job writes to: ``.NAME.partial.mp4``.

    One name per output, so the temporary itself is the job's claim on the output (see
    :class:`OutputClaim`) and a leftover from a killed run is found and removed by the next.
    """
    final = Path(final)
    return final.with_name(f".{final.name}.partial.mp4")


def _try_lock(fd: int) -> bool:
    """An exclusive, non-blocking lock on an open file; the kernel drops it when the process
    dies (SIGKILL included), which is how a live job is told from a dead one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: exclusive creation is the only guard
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class OutputClaim:
    """One exclusive, atomic output path per job.

    ``claim = OutputClaim(final)`` creates ``.NAME.partial.mp4`` beside ``final`` and holds an
    exclusive lock on it for the job's life. The temporary appears under its name only
    already locked (it is made under a random name, locked, then hard-linked into place,
    which fails if the name exists), so:

    - a second job for the same output finds the temporary locked and stops with one line
      (instead of both writing and one silently replacing the other);
    - a temporary that is not locked belongs to a run that was killed (SIGKILL, power loss):
      it is removed and the output claimed, so leftovers never accumulate; older random-named
      ``.NAME.<hex>.partial.mp4`` files are removed then too;
    - :meth:`commit` moves the finished file onto ``final``: ``os.replace`` when overwriting
      is allowed, otherwise ``os.link``, which refuses a file that appeared meanwhile;
      :meth:`release` (on any error, Ctrl-C, SIGTERM) deletes the temporary.
    """

    def __init__(self, final: str | os.PathLike):
        self.final = Path(final)
        self.path = temp_path_for(self.final)
        self.fd: int | None = None
        self.removed_stale: list[str] = []
        self._claim()

    def _claim(self) -> None:
        d = self.path.parent
        mine = d / f".{self.final.name}.{secrets.token_hex(6)}.claim"
        try:
            fd = os.open(mine, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        except OSError as exc:
            raise OutputError(f"cannot create output '{self.final}' ({exc.strerror or exc})",
                              "check the output folder's permissions and free space") from None
        try:
            _try_lock(fd)
            for _ in range(20):
                try:
                    os.link(mine, self.path)
                    break
                except FileExistsError:
                    self._remove_if_stale()
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise OutputError(f"cannot create output '{self.final}' "
                                          f"({exc.strerror or exc})",
                                          "check the output folder's permissions") from None
                    try:                       # no hard links here: exclusive creation
                        fd2 = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
                    except FileExistsError:
                        self._remove_if_stale()
                        continue
                    os.close(fd)
                    fd = fd2
                    _try_lock(fd)
                    break
            else:
                raise OutputError(f"cannot claim output '{self.final}'", "try again")
        except BaseException:
            os.close(fd)
            mine.unlink(missing_ok=True)
            raise
        mine.unlink(missing_ok=True)
        self.fd = fd
        self._remove_old_partials()

    def _remove_if_stale(self) -> None:
        """The temporary exists: another live job's (locked: refuse) or a dead one's."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return                             # gone meanwhile: try again
        try:
            if not _try_lock(fd):
                raise OutputError(f"another vidharm job is writing '{self.final}' right now",
                                  "wait for it to finish, or choose another output name")
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:                           # unlocked: its writer was killed
                os.unlink(self.path)
                self.removed_stale.append(str(self.path))
                log.info("removed %s, left by a run that was killed", self.path)
        finally:
            os.close(fd)

    def _remove_old_partials(self) -> None:
        for old in self.path.parent.glob(f".{_glob_escape(self.final.name)}.*"):
            if old == self.path or not old.name.endswith((".partial.mp4", ".claim")):
                continue
            try:
                fd = os.open(old, os.O_RDWR)
            except OSError:
                continue
            try:
                if _try_lock(fd):              # nobody's: a killed run's leftover
                    old.unlink(missing_ok=True)
                    self.removed_stale.append(str(old))
            finally:
                os.close(fd)

    def commit(self, overwrite: bool) -> Path:
        """Move the finished temporary onto the final name (fsync'd by the caller)."""
        if overwrite:
            os.replace(self.path, self.final)
        else:
            try:
                os.link(self.path, self.final)
            except FileExistsError:
                raise OutputError(f"output '{self.final}' appeared while this job was writing it",
                                  "another program wrote it meanwhile; use --overwrite to "
                                  "replace it, or choose another name") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                if self.final.exists():
                    raise OutputError(f"output '{self.final}' appeared while this job was "
                                      f"writing it", "use --overwrite or another name") from None
                os.replace(self.path, self.final)
            else:
                os.unlink(self.path)
        _fsync_dir(self.final.parent)
        self._close()
        return self.final

    def release(self) -> None:
        """Give the output up: delete the temporary (if still ours) and unlock."""
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover
            log.warning("could not remove temporary file %s: %s", self.path, exc)
        self._close()

    def _close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


def _glob_escape(name: str) -> str:
    import glob
    return glob.escape(name)


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it is writable, or raise :class:`OutputError`."""
    d = Path(folder) if str(folder) else Path(".")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"output folder '{d}' cannot be created: a file is in the way",
                          "choose another output location") from None
    except PermissionError:
        raise OutputError(f"output folder '{d}' cannot be created (permission denied)",
                          "choose a folder you can write to") from None
    except OSError as exc:
        raise OutputError(f"output folder '{d}' cannot be created ({exc.strerror or exc})",
                          "choose another output location") from None
    if not d.is_dir():
        raise OutputError(f"output location '{d}' is not a folder", "choose a folder")
    probe_file = d / f".vidharm-write-test-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe_file)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        raise OutputError(f"cannot write to output folder '{d}' ({reason})",
                          "choose a folder you can write to, or fix its permissions") from None
    return d


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (following links; b may not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_config(cfg: OutputConfig | None) -> None:
    """Open a tiny libx264 encoder with ``cfg``; :class:`OutputError` if x264 refuses it."""
    av = _av()
    cfg = cfg or OutputConfig()
    try:
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = 64, 64, cfg.pixel_format
        cc.time_base = Fraction(1, 30)
        cc.options = {"crf": str(cfg.crf), "preset": str(cfg.preset)}
        cc.open()
    except (av.error.FFmpegError, ValueError) as exc:
        raise OutputError(f"the H.264 encoder refuses the output settings (crf={cfg.crf}, "
                          f"preset='{cfg.preset}', pixel_format='{cfg.pixel_format}': "
                          f"{_ffmpeg_reason(exc)})",
                          "presets: ultrafast, superfast, veryfast, faster, fast, medium, slow, "
                          "slower, veryslow; crf 0-51; pixel_format yuv420p (most compatible), "
                          "yuv422p or yuv444p") from None


def _aac_rate(rate: int) -> int:
    return rate if rate in _AAC_RATES else 48000


class VideoWriter:
    """H.264 MP4 writer with exact timestamps, optional audio, and atomic output.

    ``VideoWriter(path, (width, height), time_base=tb, fps=rate)``; ``write(rgb, t)`` per
    frame with ``t`` in seconds (stored as ``round(t / time_base)``; give the input's time base
    to keep its timestamps exactly); ``close(end_time=...)`` finishes the file (``end_time`` is
    when the last frame stops showing; default: the previous frame interval). Used as a
    context manager it closes on success and :meth:`abort`\\ s on any exception.

    ``audio_from``: an input audio stream to carry over; feed its packets to
    :meth:`write_audio_packet` as they are demuxed (copied when MP4 holds the codec,
    otherwise decoded and re-encoded to AAC). :attr:`audio_mode` is ``"copy"``, ``"aac"`` or
    ``None``.

    Odd sizes are padded by one edge-replicated pixel for 4:2:0/4:2:2 output (x264 needs
    even dimensions there).
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], *,
                 time_base: Fraction | None = None, fps: Fraction | float | None = None,
                 output_cfg: OutputConfig | None = None, audio_from=None,
                 overwrite: bool = False, input_path: str | os.PathLike | None = None):
        av = _av()
        self.path = Path(path)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"bad frame size {size}")
        self.cfg = output_cfg or OutputConfig()
        self.time_base = Fraction(time_base) if time_base else DEFAULT_TIME_BASE
        self.fps = Fraction(fps).limit_denominator(1_000_000) if fps else Fraction(30)
        if input_path is not None and same_file(input_path, self.path):
            raise OutputError(f"output '{self.path}' is the input file",
                              "choose another output name; the input is never overwritten")
        if self.path.exists() and not overwrite:
            raise OutputError(f"output '{self.path}' already exists",
                              "choose another name or allow overwriting")
        if self.path.is_dir():
            raise OutputError(f"output '{self.path}' is a folder", "give a file name ending in .mp4")
        ensure_output_dir(self.path.parent)
        self.overwrite = overwrite
        self.claim = OutputClaim(self.path)      # this job's exclusive temporary
        self.tmp_path = self.claim.path
        self.frames_written = 0
        self.audio_mode: str | None = None
        self.encode_seconds = 0.0
        self.audio_seconds = 0.0
        self._closed = False
        self._pending = None          # (VideoFrame, pts): one frame held back for its duration
        self._last_pts: int | None = None
        self._last_step: int = 0
        self._durations: dict[int, int] = {}
        self._held = None                       # newest encoded video packet, not yet muxed
        self._first_dts: int | None = None
        self._first_pts: int | None = None
        self._audio_in = None
        self._audio_out = None
        pad = "444" not in self.cfg.pixel_format and not self.cfg.pixel_format.startswith(("rgb", "gbr", "bgr"))
        self._enc_w = self.width + (self.width % 2 if pad else 0)
        self._enc_h = self.height + (self.height % 2 if pad else 0)
        try:
            self.container = av.open(str(self.tmp_path), mode="w", format="mp4",
                                     options=_MUX_OPTIONS)
        except OSError as exc:
            self._remove_tmp()
            raise OutputError(f"cannot create output '{self.path}' ({_ffmpeg_reason(exc)})",
                              "check the output folder's permissions and free space") from None
        try:
            self._setup_video()
            if audio_from is not None:
                self._setup_audio(audio_from)
        except OutputError:
            self.abort()
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            self.abort()
            detail = str(exc).rsplit("[error]:", 1)[-1] if "[error]:" in str(exc) else _ffmpeg_reason(exc)
            c = self.cfg
            raise OutputError(f"cannot set up the H.264 encoder (crf={c.crf}, preset='{c.preset}', "
                              f"pixel_format='{c.pixel_format}'): {' '.join(detail.split())}",
                              "check the [output] settings in your profile or flags") from None
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ setup
    def _setup_video(self) -> None:
        av = _av()
        cfg = self.cfg
        try:
            av.codec.Codec("libx264", "w")
        except Exception:
            raise OutputError("this PyAV build has no libx264 encoder",
                              "install the PyAV wheel from PyPI ('pip install av'), which includes it") from None
        opts = {"crf": str(cfg.crf), "preset": str(cfg.preset)}
        vs = self.container.add_stream("libx264", rate=self.fps, options=opts)
        vs.width, vs.height = self._enc_w, self._enc_h
        vs.pix_fmt = cfg.pixel_format
        cc = vs.codec_context
        cc.time_base = self.time_base
        cc.framerate = self.fps
        vs.time_base = self.time_base
        cc.colorspace = _BT709
        cc.color_primaries = 1
        cc.color_trc = 1
        cc.color_range = _MPEG_RANGE
        self.vstream = vs
        cc.open()   # now, so bad settings fail before any decoding (PyAV would open lazily)

    def _setup_audio(self, stream) -> None:
        name = _codec_name(stream)
        self._audio_in = stream
        if name in MP4_AUDIO_COPY:
            # the template's codec tag is cleared, so the MP4 muxer picks its own
            self._audio_out = self.container.add_stream_from_template(stream)
            self.audio_mode = "copy"
        else:
            ic = stream.codec_context
            channels = ic.channels or 2
            # layouts the AAC encoder takes; PyAV resamples/remixes the decoded audio to it
            layout = {1: "mono", 6: "5.1", 8: "7.1"}.get(channels, "stereo")
            rate = _aac_rate(ic.sample_rate or 48000)
            out = self.container.add_stream("aac", rate=rate, layout=layout)
            out.codec_context.bit_rate = min(64000 * max(1, min(channels, 8)), 384000)
            self._audio_out = out
            self.audio_mode = "aac"

    # ------------------------------------------------------------------ frames
    def write(self, rgb: np.ndarray, t: float) -> None:
        """Queue frame ``rgb`` (``(H, W, 3)`` uint8 RGB, the writer's size) shown at ``t`` s."""
        if self._closed:
            raise ValueError("write() on a closed VideoWriter")
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8, got "
                             f"{rgb.shape} {rgb.dtype}")
        pts = int(round(t / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1   # H.264 needs strictly increasing timestamps
        self._last_pts = pts
        t0 = time.perf_counter()
        try:
            if self._pending is not None:   # its duration is known now
                prev, prev_pts = self._pending
                self._pending = None
                self._last_step = pts - prev_pts
                self._encode(prev, prev_pts, self._last_step)
            self._pending = (self._convert(rgb), pts)   # a copy: the caller may reuse rgb
        except OSError as exc:
            raise OutputError(f"could not write '{self.path}' ({_ffmpeg_reason(exc)})",
                              "check free disk space and the output folder") from None
        finally:
            self.encode_seconds += time.perf_counter() - t0

    def _convert(self, rgb: np.ndarray):
        av = _av()
        if (self._enc_w, self._enc_h) != (self.width, self.height):
            rgb = np.pad(rgb, ((0, self._enc_h - self.height), (0, self._enc_w - self.width), (0, 0)),
                         mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        return frame.reformat(format=self.cfg.pixel_format, dst_colorspace=_BT709,
                              dst_color_range=_MPEG_RANGE)

    def _encode(self, frame, pts: int, duration: int) -> None:
        frame.pts = pts
        frame.time_base = self.time_base
        if self._first_pts is None:
            self._first_pts = pts
        self._durations[pts] = max(1, duration)
        self._mux_video(self.vstream.encode(frame))
        self.frames_written += 1

    def _mux_video(self, packets) -> None:
        # Each packet gets its frame's duration (the encoder leaves it 0). The newest packet
        # is held back so that close() can fix the last one: see _finish_video().
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, 0)
            if self._first_dts is None:
                self._first_dts = packet.dts
            if self._held is not None:
                self.container.mux(self._held)
            self._held = packet

    def _finish_video(self, end_pts: int) -> None:
        """Mux the last packet so the track ends exactly at ``end_pts``.

        MP4 sample durations are decode-time deltas; with B-frames the decode times lag the
        presentation times by the reorder delay, and when frames are unevenly spaced (VFR) the
        last frame's own duration would make the track end early or late. The last sample's
        duration is chosen so the decode-time span equals the presentation span.
        """
        last, self._held = self._held, None
        if last is None:
            return
        if last.dts is not None and self._first_dts is not None and self._first_pts is not None:
            d = (end_pts - self._first_pts) - (last.dts - self._first_dts)
            if d > 0:
                last.duration = d
        self.container.mux(last)

    # ------------------------------------------------------------------ audio
    def write_audio_packet(self, packet) -> None:
        """Carry one demuxed packet of ``audio_from`` into the output."""
        if self._audio_out is None or packet.stream is not self._audio_in:
            return
        av = _av()
        t0 = time.perf_counter()
        try:
            if self.audio_mode == "copy":
                if packet.size == 0 or (packet.dts is None and packet.pts is None):
                    return   # demuxer's end-of-stream marker
                packet.stream = self._audio_out
                self.container.mux(packet)
            else:
                try:
                    frames = packet.decode()
                except (av.error.FFmpegError, ValueError) as exc:
                    raise InputError(f"the audio of '{self._audio_in.container.name}' cannot be "
                                     f"decoded ({_ffmpeg_reason(exc)})",
                                     "the file is damaged; repair or re-encode its audio") from None
                for frame in frames:
                    for out in self._audio_out.encode(frame):
                        self.container.mux(out)
        except OSError as exc:
            raise OutputError(f"could not write '{self.path}' ({_ffmpeg_reason(exc)})",
                              "check free disk space and the output folder") from None
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"could not write the audio of '{self.path}' ({_ffmpeg_reason(exc)})",
                              "the audio could not be carried over; re-encode the input's audio") from None
        finally:
            self.audio_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ finish
    def close(self, end_time: float | None = None) -> Path:
        """Encode the held-back frame, flush, fsync and move into place. Returns the path."""
        if self._closed:
            return self.path
        av = _av()
        t0 = time.perf_counter()
        try:
            if self._pending is None:
                raise InputError(f"no frames were written to '{self.path}'",
                                 "the input had no decodable video frames")
            frame, pts = self._pending
            self._pending = None
            dur = int(round(end_time / self.time_base)) - pts if end_time is not None else 0
            if dur <= 0:
                dur = self._last_step or self._nominal_step()
            self._encode(frame, pts, dur)
            self._mux_video(self.vstream.encode(None))
            self._finish_video(pts + dur)
            if self.audio_mode == "aac":
                for out in self._audio_out.encode(None):
                    self.container.mux(out)
            self.container.close()
            self._closed = True
            with open(self.tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            self.claim.commit(self.overwrite)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, (av.error.FFmpegError, OSError)) and not isinstance(exc, InputError):
                raise OutputError(f"could not finish writing '{self.path}' ({_ffmpeg_reason(exc)})",
                                  "check free disk space and the output folder") from None
            raise
        finally:
            self.encode_seconds += time.perf_counter() - t0
        return self.path

    def _nominal_step(self) -> int:
        return max(1, int(round(1 / (self.fps * self.time_base))))

    def abort(self) -> None:
        """Discard everything: close the container, delete the temporary file."""
        if not self._closed:
            self._closed = True
            self._pending = None
            try:
                self.container.close()
            except Exception:
                pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        claim = getattr(self, "claim", None)
        if claim is not None:
            claim.release()

    def __del__(self):  # a writer dropped without close(): leave no temporary file behind
        try:
            if not self._closed or getattr(self, "claim", None) is not None:
                self.abort()
        except Exception:
            pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
