"""Frame sinks: where processed frames go.

Interface (tiny on purpose)::

    sink = registry.sinks.create(name, **opts)   # e.g. "mp4", path="out.mp4"
    with sink:                                   # close() on success; discard on error
        sink.send(rgb, t)                        # rgb: (H, W, 3) uint8 RGB; t: seconds

``open(size, fps)`` is optional: a sink opens itself from the first frame's size when not
told. ``close()`` finishes. Built-ins: ``mp4`` (H.264 MP4 file, written atomically: a
partial file never appears under the final name) and ``null`` (counts frames; benchmarks).
Live sinks (virtual camera, preview window) come later.
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from vidharm.config import OutputConfig
from vidharm.registry import registry
from vidharm.video import VideoWriter


class Mp4Sink:
    """Write frames to an H.264 MP4 file (see :class:`vidharm.video.VideoWriter`).

    Timestamps are kept as given, measured from the first frame's ``t`` (so a live clock
    reading of 1234.5 s becomes 0). ``overwrite=False`` refuses an existing file.
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

    def open(self, size: tuple[int, int], fps: float | None = None) -> "Mp4Sink":
        """Start the file for frames of ``size`` = ``(width, height)``."""
        if self._writer is not None:
            raise RuntimeError("Mp4Sink is already open")
        if fps:
            self.fps = fps
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
    """Discard frames, counting them (for benchmarks and tests)."""

    def __init__(self, **_ignored):
        self.frames = 0
        self.last_t: float | None = None
        self.size: tuple[int, int] | None = None

    def open(self, size: tuple[int, int], fps: float | None = None) -> "NullSink":
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
