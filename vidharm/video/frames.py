"""Decoded frames to upright RGB: the display matrix / ``rotate`` tag (what FFmpeg's autorotate
does) and the YUV matrix (tagged, else the one players assume)."""
from __future__ import annotations

import logging
import struct
from typing import NamedTuple

import numpy as np

from .inputs import _av

log = logging.getLogger("vidharm.video")

_UNSPECIFIED_COLORSPACE = 2   # AVCOL_SPC_UNSPECIFIED
_BT709, _BT601 = 1, 5         # AVCOL_SPC_BT709, AVCOL_SPC_BT470BG (swscale's "ITU601")
_MPEG_RANGE = 1               # AVCOL_RANGE_MPEG (limited, 16-235)


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
