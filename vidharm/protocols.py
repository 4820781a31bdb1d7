"""What a Source, a Segmenter and a Sink must do, and what they may do.

Each kind is one small required protocol plus optional capabilities, each its own
``runtime_checkable`` protocol, so a driver asks ``isinstance(sink, Watchable)`` instead of
probing attributes by name. Built-ins live in ``plugins/`` (``vidharm_plugins``); third parties
register theirs through the ``vidharm.plugins`` entry-point group (:mod:`vidharm.registry`).

Frames are uint8 RGB ``(H, W, 3)``; times are seconds (float); sizes are ``(width, height)``.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np


# ------------------------------------------------------------------------------ source
@runtime_checkable
class Source(Protocol):
    """Frames in order: iterating yields ``(rgb, t)``; the iteration ends when the source
    does (a file's end). A camera iterates until closed."""

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]: ...


@runtime_checkable
class SizedSource(Protocol):
    """Optional: the frame size and rate the source delivers (known before the first frame)."""

    size: tuple[int, int]
    fps: float


@runtime_checkable
class Closable(Protocol):
    """Optional for sources and segmenters: free what it holds. Called once, at the end."""

    def close(self) -> None: ...


@runtime_checkable
class Releasable(Protocol):
    """Optional for sources: let go of the device from another thread (unblocks a read that
    hangs; the engine calls it only when the capture thread does not stop by itself)."""

    def release(self) -> None: ...


@runtime_checkable
class Reconnecting(Protocol):
    """Optional for sources: reports "lost" / "reconnected" through ``on_event(kind, message)``
    (the engine sets it when it is None) and grabs without decoding while ``idle`` is True."""

    on_event: Callable[[str, str], None] | None
    idle: bool


# ------------------------------------------------------------------------------ segmenter
@runtime_checkable
class Segmenter(Protocol):
    """``segment(rgb, t)`` -> the person's soft matte, float32 ``(h, w)`` in [0, 1] at the size
    of the ``rgb`` given (``t`` None for stills, else increasing seconds of a stream)."""

    def segment(self, rgb: np.ndarray, t_seconds: float | None = None) -> np.ndarray: ...


@runtime_checkable
class SizedSegmenter(Protocol):
    """Optional: the model's own input size ``(w, h)``: the graph then hands it frames at that
    size (and builds the refiner's guide on the way) instead of the full frame."""

    @property
    def input_size(self) -> tuple[int, int] | None: ...


# ------------------------------------------------------------------------------ sink
@runtime_checkable
class Sink(Protocol):
    """``send(rgb, t)`` one frame; ``close()`` finishes (an MP4 is complete only then; a failure
    to finish raises). ``close`` is called exactly once."""

    def send(self, rgb: np.ndarray, t: float | None = None) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Openable(Protocol):
    """Optional: told the output size and rate before the first frame (else it opens itself
    from the first frame)."""

    def open(self, size: tuple[int, int] | None = None, fps: float | None = None): ...


@runtime_checkable
class Watchable(Protocol):
    """Optional: whether anyone reads the output (False pauses the processing; None: cannot
    tell)."""

    def watched(self) -> bool | None: ...


@runtime_checkable
class Interactive(Protocol):
    """Optional (a window): user commands since the last call (``"quit"``,
    ``"toggle_harmonize"`` ...), a status line to draw, and ``pump()`` to stay responsive while
    no new frame comes."""

    def events(self) -> list[str]: ...

    def set_overlay(self, text: str) -> None: ...

    def pump(self) -> None: ...


@runtime_checkable
class Noted(Protocol):
    """Optional for sources and sinks: lines for the run's summary (what was chosen, why)."""

    notes: list[str]


__all__ = ["Source", "SizedSource", "Closable", "Releasable", "Reconnecting", "Segmenter",
           "SizedSegmenter", "Sink", "Openable", "Watchable", "Interactive", "Noted"]
