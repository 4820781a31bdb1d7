"""What a video file is: :func:`probe` -> :class:`VideoInfo` (upright size, rate, frame count,
duration, rotation, codecs, audio), the pixel limit, and ``WIDTHxHEIGHT`` sizes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from ..errors import ConfigError, InputError
from .frames import _frame_orientation
from .inputs import _av, _codec_name, _display, _ffmpeg_reason, audio_stream, open_input, video_stream

#: Audio codecs MP4 holds and players play: these are stream-copied; others become AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "opus", "ac3", "eac3", "alac"})


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


def parse_size(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"1280x720"`` -> (1280, 720); a tuple or None is returned as given. A bad size (not
    WIDTHxHEIGHT, or a side outside 1..8192) is a :class:`ConfigError`."""
    if text is None or isinstance(text, tuple):
        return text
    try:
        w, h = (int(v) for v in str(text).lower().replace("*", "x").split("x"))
        if w <= 0 or h <= 0 or w > 8192 or h > 8192:
            raise ValueError
    except ValueError:
        raise ConfigError(f"bad size '{text}'", "give WIDTHxHEIGHT, e.g. 1280x720") from None
    return w, h
