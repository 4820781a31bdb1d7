"""Frame sources: where frames come from.

Interface (tiny on purpose)::

    src = registry.sources.create(name, **opts)   # e.g. "file", path=..., loop=True
    with src:
        for rgb, t in src:          # rgb: (H, W, 3) uint8 RGB; t: seconds, increasing
            ...

A source has ``size`` (``(width, height)``) and ``fps`` once created, and ``close()``.
Built-in: ``file`` (a video file, optionally looping, optionally at real pace). The webcam
source comes later.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import numpy as np

from vidharm.registry import registry
from vidharm.video import VideoReader, probe


class FileSource:
    """Frames of a video file, optionally looping and paced in real time.

    ``loop=True`` starts over at the end, with timestamps that keep increasing (each pass is
    offset by the clip's duration). ``realtime=True`` sleeps so frames come no faster than the
    clip's own pace (frames are never dropped: a slow consumer slows the clip down).
    Timestamps start at 0.
    """

    def __init__(self, path: str | os.PathLike, loop: bool = False, realtime: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.path = os.fspath(path)
        self.info = probe(self.path)          # InputError for bad files, right away
        self.loop = loop
        self.realtime = realtime
        self._clock, self._sleep = clock, sleep
        self._reader: VideoReader | None = None
        self._closed = False

    @property
    def size(self) -> tuple[int, int]:
        return self.info.size

    @property
    def fps(self) -> float:
        return float(self.info.fps)

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        offset = 0.0
        start_wall = None
        while not self._closed:
            self._reader = VideoReader(self.path, info=self.info)
            t0 = None
            try:
                for rgb, t, _ in self._reader:
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
                end = self._reader.end_time
            finally:
                self._reader.close()
            if not self.loop or t0 is None:
                return
            offset += max((end if end is not None else t0) - t0, 1 / max(self.fps, 1.0))

    def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


registry.sources.add("file", FileSource,
                     help="a video file as a frame source (loop=True, realtime=True for live use)")
