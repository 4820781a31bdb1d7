"""Opening a video file for reading: filesystem checks, format sniffing, the main video and
audio streams. Every way a file can be unusable raises a one-line :class:`InputError`."""
from __future__ import annotations

import os

from ..errors import InputError

#: Formats FFmpeg reads as pictures, refused as videos unless ``allow_images`` is given.
_STILL_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe",
                        "tiff_pipe", "gif", "svg_pipe", "qoi_pipe", "pgm_pipe", "ppm_pipe")


def _av():
    import av  # deferred: keeps `import vidharm.video` cheap
    return av


def _display(path) -> str:
    return os.fspath(path)


def check_input_file(path: str | os.PathLike) -> int:
    """Filesystem checks before FFmpeg sees the file. Returns its size in bytes."""
    from .._fs import regular_file_stat
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


def open_input(path: str | os.PathLike, *, allow_images: bool = False):
    """Open ``path`` with PyAV for reading; every failure is a one-line :class:`InputError`.
    Formats FFmpeg reads as pictures are refused unless ``allow_images`` (an animated GIF
    as a background)."""
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
        if not allow_images and container.format.name in _STILL_IMAGE_FORMATS:
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
