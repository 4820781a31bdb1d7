"""``light``: a learning-free harmonizer that estimates the *light*, not the colours.

Matching the person's colour statistics to the room's (what ``stats`` used to do) turns people
the colour of the room: green on grass, teal underwater. A person on grass is not green; only
the light on them may differ. So this harmonizer estimates the illuminant on the person and on
the scene and adapts the person from one to the other, cautiously:

1. In linear light (sRGB ~ gamma 2.2), per region (person, scene; the pixels next to the
   mask's edge are left out of both), two classic illuminant estimates: **grey-edge** (the
   mean absolute gradient per channel: edges are achromatic on average) and **bright pixels**
   (the mean colour of the region's brightest 5 %). Their geometric mean, normalised to unit
   luminance, is the region's illuminant colour ``e``.
2. **Von Kries adaptation**: per-channel gains ``e_scene / e_person``, in log space, with a
   dead zone (differences a natural photo shows between a person and their own scene, read off
   unedited photos, are left alone), a strength below one and bounded gains.
3. **Exposure** matched on luminance percentiles: the log2 ratio of the 90th percentiles of the
   scene and the person, through the same dead zone / strength / bound.

The result is one diagonal transform (per-channel gains) for the whole person, as a
:class:`ColorGrid`. It never turns a person the scene's colour: the gains only express a change
of light, they are bounded, and small mismatches are left as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..color import ColorGrid, subsample
from .base import BaseHarmonizer

LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
GAMMA = 2.2


@dataclass(frozen=True)
class LightParams:
    """Dead zones, strengths and bounds (tuned on the training sources' pairs, see
    ``scripts/tune_light.py``)."""
    chroma_dead: float = 0.2       # log-gain per channel left alone
    chroma_strength: float = 1.0
    chroma_max: float = 0.35       # |log gain| bound (~ x0.70 .. x1.42 in linear light)
    exposure_dead: float = 9.0     # stops left alone: off (tuning found every exposure
    exposure_strength: float = 0.0 # estimate tried cost PSNR on the FFHQH recipe)
    exposure_max: float = 1.0      # stops


def _shrink(x: np.ndarray | float, dead: float, strength: float, bound: float):
    """Soft threshold: 0 inside the dead zone, then ``strength`` times the excess, bounded."""
    x = np.asarray(x, np.float32)
    return np.clip(np.sign(x) * np.maximum(np.abs(x) - dead, 0.0) * strength, -bound, bound)


def region_light(lin: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Illuminant colour (3,) at unit luminance and the 90th-percentile luminance of the
    region ``w`` (bool (h, w)) of the linear image ``lin`` (h, w, 3); None if too small."""
    if w.sum() < 50:
        return None
    gx = np.abs(np.diff(lin, axis=1))[:-1]
    gy = np.abs(np.diff(lin, axis=0))[:, :-1]
    we = w[:-1, :-1] & w[1:, :-1] & w[:-1, 1:]
    grad = (gx + gy)[we]
    px = lin[w]
    luma = px @ LUMA
    bright = px[luma >= np.quantile(luma, 0.95)].mean(0)
    edge = grad.mean(0) if len(grad) else bright
    e = np.sqrt(np.maximum(edge, 1e-6) * np.maximum(bright, 1e-6))
    return e / max(float(e @ LUMA), 1e-6), float(np.quantile(luma, 0.9))


def light_gains(composite: np.ndarray, mask: np.ndarray, p: LightParams = LightParams()) -> np.ndarray:
    """Per-channel display-value gains (3,) for the person in ``composite`` (uint8 or [0, 1]
    float, (h, w, 3)) under ``mask`` ((h, w) in [0, 1]); ones when there is nothing to go on."""
    img = composite.astype(np.float32) / 255.0 if composite.dtype == np.uint8 else composite
    lin = np.power(np.clip(img, 0, 1), GAMMA)
    fg, bg = mask > 0.9, mask < 0.1              # the soft edge belongs to neither
    a, b = region_light(lin, fg), region_light(lin, bg)
    if a is None or b is None:
        return np.ones(3, np.float32)
    (e_fg, y_fg), (e_bg, y_bg) = a, b
    d = np.log(e_bg) - np.log(e_fg)
    d -= float(d @ LUMA)                         # colour only: exposure is handled below
    chroma = _shrink(d, p.chroma_dead, p.chroma_strength, p.chroma_max)
    stops = _shrink(np.log2(max(y_bg, 1e-4) / max(y_fg, 1e-4)), p.exposure_dead,
                    p.exposure_strength, p.exposure_max)
    lin_gain = np.exp(chroma) * np.float32(2.0) ** stops
    return np.power(lin_gain, 1.0 / GAMMA).astype(np.float32)


def light_grid(composite: np.ndarray, mask: np.ndarray, p: LightParams = LightParams()) -> ColorGrid:
    """:func:`light_gains` as a 1x1 diagonal :class:`ColorGrid`."""
    coeffs = np.zeros((1, 1, 3, 4), np.float32)
    coeffs[0, 0, [0, 1, 2], [0, 1, 2]] = light_gains(composite, mask, p)
    return ColorGrid(coeffs)


class LightHarmonizer(BaseHarmonizer):
    """Learning-free: bounded von Kries adaptation between person and scene illuminants.

    Illuminant estimates (grey-edge, bright pixels) of person and scene, dead zone, bounded
    gains; never turns a person the scene's colour."""

    name = "light"

    def __init__(self, cfg=None, params: LightParams = LightParams()):
        from ..config import HarmonizerConfig
        self.cfg = cfg or HarmonizerConfig()
        self.params = params

    def fit(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        """This frame's transform, estimated on a strided subsample."""
        small = np.ascontiguousarray(subsample(composite, self.cfg.work_size // 2))
        m = np.ascontiguousarray(subsample(mask, self.cfg.work_size // 2))
        return light_grid(small, m, self.params)
