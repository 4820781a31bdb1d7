"""``light``: a learning-free harmonizer that estimates the *light*, not the colours.

Matching the person's colour statistics to the room's (what ``stats`` used to do) turns people
the colour of the room: green on grass, teal underwater. A person on grass is not green; only
the light on them may differ. So this harmonizer estimates the illuminant on the person and on
the scene and adapts the person from one to the other, cautiously:

1. In linear light (sRGB ~ gamma 2.2), per region (person, scene; the pixels next to the
   mask's edge are left out of both), two classic illuminant estimates: **grey-edge** (the
   mean absolute gradient per channel: edges are achromatic on average) and **bright pixels**
   (the mean colour of the region's brightest 5 %). Their geometric mean, normalised to unit
   luminance, is the region's illuminant colour ``e``. Pixels with a clipped channel (display
   value 249 or more) are left out of both: they show the top of the range, not the light's
   colour, and would pull the bright-pixel estimate toward white whenever a scene is bright.
2. **Von Kries adaptation**: per-channel gains ``e_scene / e_person``, in log space, with a
   dead zone (differences a natural photo shows between a person and their own scene, read off
   unedited photos, are left alone), a strength below one and bounded gains.
3. **Exposure** matched on luminance percentiles, as levels in display values: the person's
   white point (99th percentile of luma) is moved towards the scene's by ``white_strength``
   of the difference beyond ``white_dead``, the person's black point (2nd percentile) held.

The result is one transform for the whole person (per-channel gains times the levels gain,
one offset), as a :class:`ColorGrid`. It never turns a person the scene's colour: the gains
only express a change of light, they are bounded.

**Two settings.** On the composite alone (:meth:`LightHarmonizer.fit`, :data:`ABSOLUTE`) the
white point is off: a person's whites say little about the light without their own room (in
portraits the subject is often lit brighter than the background, and a person in dark
clothes has no whites), and matching them darkened real portraits by up to 0.5x. Relative to
the person's own frame (:meth:`LightHarmonizer.fit_relative`, what vidharm applies:
:data:`RELATIVE`) the person's own colours cancel, and what is left compares the new
background's white point and illuminant with the room's. There the white point is on, with
no dead zone: tuned on training-source pairs whose source frame shows other content
(``scripts/tune_light.py --relative``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..color import LUMA, ColorGrid, fit_relative, subsample
from .base import BaseHarmonizer

GAMMA = 2.2
CLIPPED = (249 / 255) ** GAMMA       # linear value from which a channel counts as clipped


@dataclass(frozen=True)
class LightParams:
    """Dead zones, strengths and bounds (tuned on the training sources' pairs, see
    ``scripts/tune_light.py``)."""
    chroma_dead: float = 0.2       # log-gain per channel left alone
    chroma_strength: float = 1.0
    chroma_max: float = 0.35       # |log gain| bound (~ x0.70 .. x1.42 in linear light)
    exposure_dead: float = 9.0     # stops left alone: off (every setting of this multiplicative
    exposure_strength: float = 0.0 # estimate tried cost PSNR on the FFHQH recipe)
    exposure_max: float = 1.0      # stops
    white_dead: float = 0.0        # display-value difference of the white points left alone
    white_strength: float = 0.0    # share of the rest moved (0: off)
    white_q: float = 0.99          # luma quantile read as the white point
    black_q: float = 0.02          # luma quantile held (the pivot)
    levels_max: float = 2.0        # levels gain bound (and 1 / bound)


#: on the composite alone: the colour part only (see the module docstring)
ABSOLUTE = LightParams()
#: relative to the person's own frame: the white point on as well
RELATIVE = LightParams(white_dead=0.0, white_strength=0.8)


def _shrink(x: np.ndarray | float, dead: float, strength: float, bound: float):
    """Soft threshold: 0 inside the dead zone, then ``strength`` times the excess, bounded."""
    x = np.asarray(x, np.float32)
    return np.clip(np.sign(x) * np.maximum(np.abs(x) - dead, 0.0) * strength, -bound, bound)


def region_light(lin: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Illuminant colour (3,) at unit luminance and the 90th-percentile luminance of the
    region ``w`` (bool (h, w)) of the linear image ``lin`` (h, w, 3), its clipped pixels left
    out (unless fewer than 50 others remain); None if too small."""
    if w.sum() < 50:
        return None
    unclipped = w & (lin.max(axis=-1) < CLIPPED)
    if unclipped.sum() >= 50:
        w = unclipped
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


def _as_float(composite: np.ndarray) -> np.ndarray:
    return composite.astype(np.float32) / 255.0 if composite.dtype == np.uint8 else composite


def light_gains(composite: np.ndarray, mask: np.ndarray, p: LightParams = LightParams()) -> np.ndarray:
    """Per-channel display-value gains (3,) for the person in ``composite`` (uint8 or [0, 1]
    float, (h, w, 3)) under ``mask`` ((h, w) in [0, 1]); ones when there is nothing to go on.
    The colour part (and the multiplicative exposure, off by default); see :func:`levels`."""
    lin = np.power(np.clip(_as_float(composite), 0, 1), GAMMA)
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


def levels(composite: np.ndarray, mask: np.ndarray, p: LightParams = LightParams()
           ) -> tuple[float, float]:
    """(gain, offset) on display values [0, 1] for the person: the white point moved towards
    the scene's (see the module docstring), the black point held; (1, 0) when there is nothing
    to go on."""
    y = _as_float(composite) @ LUMA
    fg, bg = y[mask > 0.9], y[mask < 0.1]
    if p.white_strength <= 0 or len(fg) < 50 or len(bg) < 50:
        return 1.0, 0.0
    black, white = np.quantile(fg, [p.black_q, p.white_q])
    diff = float(white - np.quantile(bg, p.white_q))
    if white - black < 0.05:                     # a flat region: no range to rescale
        return 1.0, 0.0
    target = white - float(_shrink(diff, p.white_dead, p.white_strength, 1.0))
    gain = float(np.clip((target - black) / (white - black), 1.0 / p.levels_max, p.levels_max))
    return gain, float(black) * (1.0 - gain)


def light_grid(composite: np.ndarray, mask: np.ndarray, p: LightParams = LightParams()) -> ColorGrid:
    """:func:`light_gains` and :func:`levels` as one 1x1 :class:`ColorGrid`: per channel
    ``gain * g_c * x + offset``."""
    gain, offset = levels(composite, mask, p)
    coeffs = np.zeros((1, 1, 3, 4), np.float32)
    coeffs[0, 0, [0, 1, 2], [0, 1, 2]] = gain * light_gains(composite, mask, p)
    coeffs[0, 0, :, 3] = offset
    return ColorGrid(coeffs)


class LightHarmonizer(BaseHarmonizer):
    """Learning-free: bounded von Kries adaptation between person and scene illuminants.

    Illuminant estimates (grey-edge, bright pixels) of person and scene, dead zone, bounded
    gains, and the person's white point moved towards the scene's; never turns a person the
    scene's colour."""

    name = "light"

    def __init__(self, cfg=None, params: LightParams = ABSOLUTE,
                 relative_params: LightParams = RELATIVE):
        from ..config import HarmonizerConfig
        self.cfg = cfg or HarmonizerConfig()
        self.params = params
        self.relative_params = relative_params

    def fit(self, composite: np.ndarray, mask: np.ndarray, params: LightParams | None = None
            ) -> ColorGrid:
        """This frame's transform on the composite alone (:data:`ABSOLUTE` unless ``params``),
        estimated on a strided subsample."""
        small = np.ascontiguousarray(subsample(composite, self.cfg.work_size // 2))
        m = np.ascontiguousarray(subsample(mask, self.cfg.work_size // 2))
        return light_grid(small, m, params or self.params)

    def fit_relative(self, composite: np.ndarray, mask: np.ndarray,
                     source: np.ndarray | None) -> ColorGrid:
        """Relative to the person's own frame, with the :data:`RELATIVE` setting (the white
        point on); ``source`` None: :meth:`fit`."""
        if source is None:
            return self.fit(composite, mask)
        return fit_relative(lambda c, m: self.fit(c, m, self.relative_params), composite, mask,
                            source)
