"""Reading a video: :class:`VideoReader` yields upright RGB frames with their presentation
times (see :mod:`vidharm.video`)."""
from __future__ import annotations

import os
from typing import Callable, Iterator, NamedTuple

import numpy as np

from ..errors import InputError
from .frames import Orientation, _to_rgb
from .inputs import _av, _display, _ffmpeg_reason, open_input, video_stream
from .metadata import VideoInfo, _describe


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
    ``allow_images=True`` also opens formats FFmpeg reads as pictures (an animated GIF).
    Not thread-safe; iterate once, or again after :meth:`seek`.
    """

    def __init__(self, path: str | os.PathLike, *, select_streams: Callable | None = None,
                 on_packet: Callable | None = None, threads: bool = True,
                 info: VideoInfo | None = None, allow_images: bool = False):
        self.path = _display(path)
        self.container = open_input(self.path, allow_images=allow_images)
        try:
            # describe on a separate open: decoding a first frame then seeking back is not
            # reliable for every format
            if info is None:
                with open_input(self.path, allow_images=allow_images) as c2:
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

    def seek(self, t: float) -> None:
        """Move to the keyframe at or before ``t`` (seconds, the frames' own times): the next
        iteration (a new ``iter(reader)``) starts there. FFmpeg's errors pass through."""
        if self.container is None:
            raise ValueError("VideoReader is closed")
        self.container.seek(int(t / self.time_base), stream=self.stream, backward=True,
                            any_frame=False)

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
