"""Colour transforms fitted at low resolution, applied at full resolution.

Harmonization models run at 256-512 px; frames are 720p-4K. Resizing a model's output back
up would blur the person, so instead we describe the model's effect as a smooth field of
colour transforms and apply that field to the full-resolution pixels: every hair keeps its
detail and the cost is a few ms.

The field is a grid of affine colour transforms, ``coeffs`` of shape (gh, gw, 3, 4): for the
cell (i, j), ``out_rgb = coeffs[i, j, :, :3] @ in_rgb + coeffs[i, j, :, 3]`` with RGB in
[0, 1]. Between cell centres the coefficients are interpolated bilinearly, so there are no
seams. A 1x1 grid is one global transform. Only the person changes:
``result = composite + mask * (T(composite) - composite)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .composite import blend

IDENTITY = np.concatenate([np.eye(3, dtype=np.float32), np.zeros((3, 1), np.float32)], 1)
#: Rec. 709 luma weights (RGB in display values)
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
#: :func:`bounded_by_scene`: a new scene this much darker (brighter) on average than the
#: person's own frame, in display luma 0..1, starts to (fully does) forbid brightening
#: (darkening) the person
SCENE_BOUND = (0.15, 0.25)


@dataclass(frozen=True)
class ColorGrid:
    """A grid of affine colour transforms; immutable so threads can share it freely."""

    coeffs: np.ndarray  # (gh, gw, 3, 4) float32

    @staticmethod
    def identity(gh: int = 1, gw: int = 1) -> "ColorGrid":
        return ColorGrid(np.broadcast_to(IDENTITY, (gh, gw, 3, 4)).astype(np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return self.coeffs.shape[:2]

    def lerp(self, other: "ColorGrid", alpha: float) -> "ColorGrid":
        """(1 - alpha) * self + alpha * other (grids of equal shape)."""
        return ColorGrid(((1.0 - alpha) * self.coeffs + alpha * other.coeffs).astype(np.float32))

    def scaled(self, strength: float) -> "ColorGrid":
        """Move toward identity: strength 0 = no change, 1 = full transform."""
        if strength == 1.0:
            return self
        return ColorGrid.identity(*self.shape).lerp(self, strength)

    @property
    def is_diagonal(self) -> bool:
        """Per-channel gain and offset only (no channel mixing): cheaper to apply."""
        return not np.any(self.coeffs.reshape(*self.shape, 12)[..., _OFF_DIAGONAL])

    def relative_to(self, base: "ColorGrid", max_cond: float = 1e3) -> "ColorGrid":
        """This transform after undoing ``base``, cell by cell: ``x -> self(base^-1(x))``.

        Grids of equal shape, or either one 1x1 (broadcast). A cell whose ``base`` cannot be
        inverted safely (condition number of its 3x3 part above ``max_cond``, or not finite)
        keeps ``self``'s transform there."""
        a, b = self.coeffs, base.coeffs
        if a.shape != b.shape and (1, 1) not in (a.shape[:2], b.shape[:2]):
            raise ValueError(f"grids of {a.shape[:2]} and {b.shape[:2]} cells cannot be combined")
        shape = np.broadcast_shapes(a.shape, b.shape)
        a, b = np.broadcast_to(a, shape).astype(np.float64), np.broadcast_to(b, shape).astype(np.float64)
        lin = b[..., :3]
        ok = np.isfinite(b).all(axis=(-2, -1))
        ok[ok] = np.linalg.cond(lin[ok]) < max_cond
        inv_lin = np.broadcast_to(np.eye(3), lin.shape).copy()
        inv_lin[ok] = np.linalg.inv(lin[ok])
        inv_off = -(inv_lin @ b[..., 3:]) * ok[..., None, None]
        out = np.concatenate([a[..., :3] @ inv_lin, a[..., :3] @ inv_off + a[..., 3:]], -1)
        return ColorGrid(np.ascontiguousarray(out, np.float32))

    def distance(self, other: "ColorGrid") -> float:
        """Mean absolute change of a mid-grey pixel's colour between the two transforms (0..1)."""
        grey = np.array([0.5, 0.5, 0.5, 1.0], np.float32)
        return float(np.abs((self.coeffs - other.coeffs) @ grey).mean())


def fit_relative(fit, composite: np.ndarray, mask: np.ndarray,
                 source: np.ndarray | None) -> ColorGrid:
    """``fit(composite, mask)`` relative to ``fit(source, mask)`` (:meth:`ColorGrid.relative_to`),
    ``source`` being the frame the person was cut from, at the composite's size (see
    :mod:`vidharm.harmonize.base`), within :func:`bounded_by_scene`. ``source`` None: ``fit``
    alone; equal to the composite: no change (the identity, without fitting)."""
    if source is None:
        return fit(composite, mask)
    if source.shape != composite.shape:
        from .errors import InputError
        raise InputError(f"the source frame is {source.shape[1]}x{source.shape[0]} but the "
                         f"composite is {composite.shape[1]}x{composite.shape[0]}",
                         "give the frame the person was cut from, at the composite's size")
    if np.array_equal(source, composite):
        return ColorGrid.identity()
    return bounded_by_scene(fit(composite, mask).relative_to(fit(source, mask)), composite,
                            mask, source)


def bounded_by_scene(grid: ColorGrid, composite: np.ndarray, mask: np.ndarray,
                     source: np.ndarray, bound: tuple[float, float] = SCENE_BOUND) -> ColorGrid:
    """``grid`` (a relative transform: ``composite`` against ``source``, the person's own frame,
    same size and matte) with a change of the person's brightness *against* the scene's taken
    out where the scenes differ clearly: on a new background much darker on average than the
    person's room the person is not brightened, on a much brighter one not darkened.

    A learned fit reads a few bright things in a dark scene (a white starfish under water) as
    bright light, and can as well darken a person on a scene far brighter than their room. Where the mean display luma of the scene (outside the matte, in both frames) differs
    by ``d``, the person's mean luma change under ``grid`` has the opposite sign, and ``|d|``
    is at least ``bound[1]``, ``grid`` is scaled by the one gain that leaves the person's mean
    luma as it was (its hue change kept); between ``bound[0]`` and ``bound[1]`` by that gain to
    a power rising from 0 to 1, so that the result moves smoothly as the scene does. Means at
    about 64 px. Scenes that differ less are left to the harmonizer: there a brighter scene is
    as often brighter things as brighter light."""
    c, s, m = (subsample(x, 64) for x in (composite, source, mask))
    m = np.clip(m.astype(np.float32), 0.0, 1.0)
    bg = 1.0 - m
    if float(m.sum()) < 1.0 or float(bg.sum()) < 1.0:
        return grid
    luma_c, luma_s = _as_unit(c) @ LUMA, _as_unit(s) @ LUMA
    d = float((luma_c * bg).sum() - (luma_s * bg).sum()) / float(bg.sum())
    weight = float(np.clip((abs(d) - bound[0]) / max(bound[1] - bound[0], 1e-6), 0.0, 1.0))
    if weight == 0.0:
        return grid
    before = float((luma_c * m).sum()) / float(m.sum())
    after = float((_as_unit(apply_grid(c, m, grid)) @ LUMA * m).sum()) / float(m.sum())
    if (after - before) * d >= 0.0:
        return grid
    gain = (before / max(after, 1e-3)) ** weight
    return ColorGrid(np.ascontiguousarray(grid.coeffs * np.float32(gain)))


def relative_fit_of(harmonizer):
    """``fit_relative(composite, mask, source) -> ColorGrid`` of ``harmonizer``: its own
    ``fit_relative`` when it has one (a harmonizer may use another setting relative to the
    person's frame, as ``light`` does, or look at both frames together, as phnet-grid's joint
    head does), else :func:`fit_relative` over its ``fit``."""
    own = getattr(harmonizer, "fit_relative", None)
    return own if callable(own) else functools.partial(fit_relative, harmonizer.fit)


# ----------------------------------------------------------------------------- applying
def apply_grid(composite: np.ndarray, mask: np.ndarray, grid: ColorGrid) -> np.ndarray:
    """Apply ``grid`` to the person in ``composite`` at full resolution.

    composite: uint8 (H, W, 3) RGB; mask: float32 (H, W) in [0, 1]; returns uint8 (H, W, 3)
    ``composite + mask * (T(composite) - composite)``. Background pixels (mask == 0) are
    returned unchanged, bit for bit.
    """
    return _apply(composite, composite, mask, grid)


def apply_grid_fused(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray, grid: ColorGrid) -> np.ndarray:
    """Composite and harmonize in one pass: ``bg + mask * (T(fg) - bg)``.

    fg: the camera frame, bg: the new background, both uint8 (H, W, 3); mask float32 (H, W).
    Transforming the person's own pixels (not the already-mixed edge pixels) is also the more
    faithful choice at soft edges. Equals ``composite(fg, bg, mask)`` for the identity grid.
    """
    return _apply(fg, bg, mask, grid)


_DIAGONAL = [0, 3, 5, 7, 10, 11]        # gain/offset entries of the flattened (3, 4) matrices
_OFF_DIAGONAL = [1, 2, 4, 6, 8, 9]


def _apply(src: np.ndarray, base: np.ndarray, mask: np.ndarray, grid: ColorGrid) -> np.ndarray:
    """``base + m * (T(src) - base)`` on the mask's bounding box; ``base`` elsewhere."""
    out = base.copy()
    ys, xs = _mask_bbox(mask)
    if ys is None:
        return out
    h, w = mask.shape
    gh, gw = grid.shape
    coeffs = grid.coeffs.reshape(gh, gw, 12).astype(np.float32)
    coeffs[..., 3::4] *= 255.0                                         # offsets on the 0..255 scale
    diagonal = grid.is_diagonal
    if gh * gw == 1:
        t_src = _apply_global(src[ys, xs], coeffs[0, 0])
    elif diagonal:
        t_src = _apply_diagonal(src[ys, xs], coeffs, h, w, ys, xs)
    else:
        t_src = _apply_affine(src[ys, xs], coeffs, h, w, ys, xs)
    m = mask[ys, xs]                      # views: OpenCV reads row-strided arrays as they are
    if m.dtype != np.float32:
        m = m.astype(np.float32)
    # exact base where m == 0; written straight into the output's box
    blend(t_src, base[ys, xs], m, dst=out[ys, xs])
    return out


def _apply_global(crop: np.ndarray, c: np.ndarray) -> np.ndarray:
    """One 3x4 transform for every pixel (a 1x1 grid): OpenCV's per-pixel matrix transform,
    uint8 in and out, in one pass (rounded and saturated)."""
    return cv2.transform(crop, c.reshape(3, 4).astype(np.float64))


def _apply_diagonal(crop: np.ndarray, coeffs: np.ndarray, h: int, w: int, ys: slice,
                    xs: slice) -> np.ndarray:
    """Per-channel gain/offset grids (``light``, and the live engine's diagonal refit):
    T(x) = g(p) * x + o(p).

    The gain and offset fields come from :func:`_fields` (a quarter of the resolution,
    upsampled, where cells are large); the arithmetic runs in OpenCV's mixed-depth kernels
    straight from and to uint8: two field products fewer than :func:`_apply_affine`.
    """
    hh, ww = crop.shape[:2]
    fields = _fields(crop.shape, np.ascontiguousarray(coeffs[..., _DIAGONAL]), h, w, ys, xs)
    gain = _full(fields[..., 0::2], ww, hh)
    offset = _full(fields[..., 1::2], ww, hh)
    scaled = cv2.multiply(crop, gain, dtype=cv2.CV_32F)
    return cv2.add(scaled, offset, dtype=cv2.CV_8U)                     # rounded, saturated


# OpenCV mixChannels pairs (source channel, destination channel): the pixel's channels
# rotated by one and by two, so that output channel c meets input channel (c + r) % 3
_ROTATE = {1: [1, 0, 2, 1, 0, 2], 2: [2, 0, 0, 1, 1, 2]}


#: cells at least this many pixels on their short side get their coefficient fields at a
#: quarter of the resolution, upsampled bilinearly: the fields are bilinear between cell
#: centres, so that differs from the exact field only next to the centres' kinks (at 720p
#: with a 4x4 grid: T(x) within 1.4 grey levels at the worst pixel, 0.005 on average); smaller
#: cells (small frames, where the cost does not matter) get the exact field.
QUARTER_MIN_CELL = 96


def _fields(crop_shape: tuple[int, ...], coeffs: np.ndarray, h: int, w: int, ys: slice,
            xs: slice) -> np.ndarray:
    """The coefficient fields (hq, wq, k) of the crop ``[ys, xs]`` of an (h, w) frame, at a
    quarter of the crop's resolution (see :data:`QUARTER_MIN_CELL`) or at full resolution;
    :func:`_full` brings one to the crop's size."""
    hh, ww = crop_shape[:2]
    f = 4 if min(h / coeffs.shape[0], w / coeffs.shape[1]) >= QUARTER_MIN_CELL else 1
    hq, wq = max(1, -(-hh // f)), max(1, -(-ww // f))
    # crop pixel u that lands exactly on quarter sample j under cv2.resize's mapping
    uy = (np.arange(hq, dtype=np.float32) + 0.5) * hh / hq - 0.5 + ys.start
    ux = (np.arange(wq, dtype=np.float32) + 0.5) * ww / wq - 0.5 + xs.start
    wy = _interp_weights(uy, h, coeffs.shape[0])                        # (hq, gh)
    wx = _interp_weights(ux, w, coeffs.shape[1])                        # (wq, gw)
    return np.matmul(wx[None], np.einsum("hg,gwk->hwk", wy, coeffs))   # (hq, wq, k)


def _full(field: np.ndarray, ww: int, hh: int) -> np.ndarray:
    """A field from :func:`_fields` at the crop's size (bilinear; as it is when already so)."""
    field = np.ascontiguousarray(field)
    if field.shape[:2] == (hh, ww):
        return field
    return cv2.resize(field, (ww, hh), interpolation=cv2.INTER_LINEAR)


def _apply_affine(crop: np.ndarray, coeffs: np.ndarray, h: int, w: int, ys: slice,
                  xs: slice) -> np.ndarray:
    """General 3x4 affine per pixel (learned harmonizers): uint8 in, uint8 T(x) out.

    ``T(x)_c = sum_r D_r,c * x_(c+r)%3 + o_c``: three products of the pixel (rotated by r
    channels) with a 3-channel coefficient field ``D_r`` and the offset field, each field
    from :func:`_fields`; OpenCV's mixed-depth kernels read uint8 and round and saturate the
    result (at 720p 1.4x faster than float arithmetic per plane on full-resolution maps)."""
    hh, ww = crop.shape[:2]
    f = _fields(crop.shape, coeffs, h, w, ys, xs)
    f = f.reshape(f.shape[0], f.shape[1], 3, 4)                        # [output c, input j | offset]
    c = np.arange(3)
    acc = None
    for r in range(3):
        field = _full(f[:, :, c, (c + r) % 3], ww, hh)
        x = crop
        if r:
            x = np.empty_like(crop)
            cv2.mixChannels([crop], [x], _ROTATE[r])
        if acc is None:
            acc = cv2.multiply(x, field, dtype=cv2.CV_32F)
        else:
            cv2.add(acc, cv2.multiply(x, field, dtype=cv2.CV_32F), dst=acc)
    offset = _full(f[:, :, :, 3], ww, hh)
    return cv2.add(acc, offset, dtype=cv2.CV_8U)                       # rounded, saturated


def _interp_weights(u: np.ndarray, size: int, cells: int) -> np.ndarray:
    """(len(u), cells) bilinear weights from cell centres to pixel positions ``u`` (pixel
    index, may be fractional), clamped at the outer cell centres."""
    g = np.clip((u.astype(np.float32) + 0.5) * cells / size - 0.5, 0.0, cells - 1)
    i0 = np.floor(g).astype(np.int64)
    i1 = np.minimum(i0 + 1, cells - 1)
    f = g - i0
    wts = np.zeros((len(u), cells), np.float32)
    rows = np.arange(len(u))
    np.add.at(wts, (rows, i0), 1.0 - f)
    np.add.at(wts, (rows, i1), f)
    return wts


def _mask_bbox(mask: np.ndarray, thresh: float = 1e-3):
    """(rows, cols) slices of the box where ``mask`` exceeds ``thresh``; (None, None) if
    nowhere. OpenCV's compare and bounding box: 0.2 ms for a 720p matte, numpy's row and
    column maxima 0.4 ms."""
    if mask.size >= 16 and mask.dtype in (np.float32, np.float64, np.uint8):
        x, y, w, h = cv2.boundingRect(cv2.compare(mask, thresh, cv2.CMP_GT))
        if w == 0:
            return None, None
        return slice(y, y + h), slice(x, x + w)
    rows = np.flatnonzero(mask.max(axis=1) > thresh)
    if rows.size == 0:
        return None, None
    cols = np.flatnonzero(mask.max(axis=0) > thresh)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


# ----------------------------------------------------------------------------- fitting
@functools.lru_cache(maxsize=16)
def cell_weights(h: int, w: int, gh: int, gw: int, sharpness: float = 1.0) -> np.ndarray:
    """Soft assignment of pixels to cells, (gh*gw, h*w), rows sum over cells to 1.

    Gaussian in grid units around each cell centre, so neighbouring cells share pixels and
    the fitted field is smooth.
    """
    gy = (np.arange(h, dtype=np.float32) + 0.5) * gh / h - 0.5
    gx = (np.arange(w, dtype=np.float32) + 0.5) * gw / w - 0.5
    cy = np.arange(gh, dtype=np.float32)
    cx = np.arange(gw, dtype=np.float32)
    wy = np.exp(-0.5 * ((gy[None, :] - cy[:, None]) * sharpness) ** 2)    # (gh, h)
    wx = np.exp(-0.5 * ((gx[None, :] - cx[:, None]) * sharpness) ** 2)    # (gw, w)
    wgt = (wy[:, None, :, None] * wx[None, :, None, :]).reshape(gh * gw, h * w)
    wgt /= wgt.sum(0, keepdims=True)
    wgt.flags.writeable = False          # cached and shared: callers must not modify it
    return wgt


def fit_grid(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, grid: tuple[int, int] = (4, 4),
             ridge: float = 1e-2) -> ColorGrid:
    """Fit a :class:`ColorGrid` mapping ``src`` colours to ``dst`` colours over the mask.

    src, dst: (h, w, 3) float32 in [0, 1] or uint8 (low resolution: the composite and the
    model's harmonized output); mask: (h, w) float in [0, 1]. Each cell solves a weighted
    ridge regression ``dst ≈ A @ src + b``; cells with little foreground lean on the global
    fit (the ridge pulls toward it), so the field never goes wild where there is no evidence.
    """
    src = _as_unit(src)
    dst = _as_unit(dst)
    h, w = mask.shape
    gh, gw = grid
    x = np.concatenate([src.reshape(-1, 3), np.ones((h * w, 1), np.float32)], 1)   # (N, 4)
    y = dst.reshape(-1, 3)                                                           # (N, 3)
    m = mask.reshape(-1).astype(np.float32)
    glob = _solve(x, y, m[None, :], IDENTITY[None], ridge)[0]                        # (3, 4)
    if gh * gw == 1:
        return ColorGrid(glob[None, None])
    wgt = cell_weights(h, w, gh, gw) * m[None, :]                                    # (K, N)
    prior = np.broadcast_to(glob, (gh * gw, 3, 4))
    coeffs = _solve(x, y, wgt, prior, ridge)
    return ColorGrid(coeffs.reshape(gh, gw, 3, 4).astype(np.float32))


def _solve(x, y, wgt, prior, ridge):
    """Weighted ridge regression toward ``prior`` for K weightings at once -> (K, 3, 4)."""
    n = wgt.sum(1)                                                    # (K,)
    # the K weighted Gram matrices as ONE matrix product (K, N) @ (N, 16|12): BLAS instead of
    # einsum's naive loop (measured 6 ms vs 53 ms for K=9, N=256*256 on one core)
    N, k = x.shape[0], wgt.shape[0]
    xtx = (wgt @ (x[:, :, None] * x[:, None, :]).reshape(N, 16)).reshape(k, 4, 4)
    xty = (wgt @ (x[:, :, None] * y[:, None, :]).reshape(N, 12)).reshape(k, 4, 3)
    lam = ridge * np.maximum(n, 1.0)[:, None, None] * np.eye(4, dtype=np.float32)[None]
    lam[:, 3, 3] *= 0.1                                               # offsets are cheap
    a = xtx + lam + 1e-6 * np.eye(4, dtype=np.float32)[None]
    b = xty + lam @ np.transpose(prior, (0, 2, 1))
    sol = np.linalg.solve(a, b)                                       # (K, 4, 3)
    return np.transpose(sol, (0, 2, 1)).astype(np.float32)            # (K, 3, 4)


def _as_unit(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) * (1.0 / 255.0)
    return img.astype(np.float32, copy=False)


def subsample(img: np.ndarray, short_side: int) -> np.ndarray:
    """Strided view with the shorter side at most about ``short_side`` (no copy, no
    filtering): the smallest step that brings it there (a 240-row job at 128: step 2).

    For statistics (means, variances) a regular subsample is as good as a filtered resize and
    costs nothing."""
    step = max(1, -(-min(img.shape[:2]) // max(1, short_side)))
    return img[::step, ::step]


def diagonal_refit(grid: ColorGrid, comp: np.ndarray, mask: np.ndarray, short_side: int = 64,
                   ridge: float = 1e-2) -> tuple[ColorGrid, float]:
    """The per-channel (gain, offset) grid closest to the full affine ``grid`` on this frame.

    A full 3x4 grid costs about 1.7 times as much to apply at full resolution as a diagonal
    one (four 3-channel coefficient fields and three products per pixel instead of two and
    one: 8.0 vs 4.6 ms CPU per 720p frame, ``bench/bench_live.py --stages``), which on a
    2-core CPU is much of the margin between 30 fps and dropped frames. The diagonal
    grid is fitted to what the full grid, interpolated as the apply interpolates it, does to
    this frame's person: per channel ``T(x)_c ~ a(p) x_c + b(p)`` with ``a``, ``b`` blended
    bilinearly between the cells as applied, all cells at once, least squares over the mask
    at ``short_side`` px, with a ridge toward the full grid's own diagonal where there is
    little evidence. Returns the grid and the mean absolute error of the approximation over
    the person, in grey levels (0..255): on frames of the sample clip with phnet-grid-local's
    grid 0.81, and the picture 0.79 grey levels from the full grid's.
    """
    s = _RefitSamples(grid, comp, mask, short_side)
    return s.diagonal(ridge)


def cheap_refits(grid: ColorGrid, comp: np.ndarray, mask: np.ndarray, short_side: int = 64,
                 ridge: float = 1e-2) -> tuple[tuple[ColorGrid, float], tuple[ColorGrid, float]]:
    """Both cheap forms of the full affine ``grid`` on this frame, each with its mean error
    over the person in grey levels: the per-channel grid (:func:`diagonal_refit`) and one
    global 3x4 transform (a 1x1 grid: one ``cv2.transform`` at full resolution, 0.4 ms per
    720p frame where the per-channel 4x4 grid takes 2.7)."""
    s = _RefitSamples(grid, comp, mask, short_side)
    return s.diagonal(ridge), s.global_affine(ridge)


def global_refit(grid: ColorGrid, comp: np.ndarray, mask: np.ndarray, short_side: int = 64,
                 ridge: float = 1e-2) -> tuple[ColorGrid, float]:
    """The one 3x4 transform (a 1x1 grid) closest to what ``grid`` does to this frame's
    person (weighted least squares over the mask at ``short_side`` px), and the mean
    difference over the person, grey levels."""
    return _RefitSamples(grid, comp, mask, short_side).global_affine(ridge)


class _RefitSamples:
    """What the full ``grid`` does to this frame's person, at ``short_side`` px: the
    samples ``x`` (N, 3) in [0, 1] and their mask weights ``m`` (N,), on the person only;
    ``bil`` (K, N): each cell's weight at each sample under the apply's own bilinear
    interpolation (:func:`_interp_weights`); ``y`` (N, 3): the full transform's output there,
    as :func:`apply_grid` makes it."""

    def __init__(self, grid: ColorGrid, comp: np.ndarray, mask: np.ndarray, short_side: int):
        step = max(1, min(mask.shape) // short_side)
        h, w = mask.shape
        m = np.ascontiguousarray(mask[::step, ::step], np.float32)
        # only the samples on the person: the others weigh nothing in any sum below (the
        # person is often a third of the frame: a third of the work, same results)
        on = np.flatnonzero(m.reshape(-1) > 0.0)
        self.x = comp[::step, ::step].reshape(-1, 3)[on].astype(np.float32) / 255.0
        self.grid = grid
        gh, gw = grid.shape
        wy = _interp_weights(np.arange(0, h, step, dtype=np.float32)[:m.shape[0]], h, gh)
        wx = _interp_weights(np.arange(0, w, step, dtype=np.float32)[:m.shape[1]], w, gw)
        self.bil = np.ascontiguousarray(
            np.einsum("yg,xk->gkyx", wy, wx).reshape(gh * gw, -1)[:, on])       # (K, N)
        per_px = (self.bil.T @ grid.coeffs.reshape(gh * gw, 12)).reshape(-1, 3, 4)
        self.y = np.einsum("nij,nj->ni", per_px[:, :, :3], self.x) + per_px[:, :, 3]
        self.m = m.reshape(-1)[on]

    def _err(self, approx: np.ndarray) -> float:
        mw = self.m
        return float((np.abs(approx - self.y).mean(1) * mw).sum() / max(mw.sum(), 1e-6)) * 255.0

    def diagonal(self, ridge: float) -> tuple[ColorGrid, float]:
        """Per channel, the gains and offsets of all cells at once, so that their bilinear
        blend (as applied) is closest to the full transform over the person (weighted least
        squares), with a ridge toward the full grid's own diagonal per cell, scaled by the
        cell's share of the person (cells with little of the person keep it)."""
        x, y, bil, m = self.x, self.y, self.bil, self.m
        gh, gw = self.grid.shape
        k = gh * gw
        c = self.grid.coeffs.reshape(k, 3, 4).astype(np.float64)
        evidence = bil @ m                                                # (K,)
        lam = ridge * np.maximum(evidence, 1.0)
        reg = np.concatenate([lam, 0.1 * lam])
        bw = (bil * m).astype(np.float64)                                 # (K, N)
        out = np.zeros_like(c)
        for ch in range(3):
            xc = x[:, ch].astype(np.float64)
            design = np.concatenate([bil * xc, bil], 0)                   # (2K, N)
            weighted = np.concatenate([bw * xc, bw], 0)                   # design * m
            prior = np.concatenate([c[:, ch, ch], c[:, ch, 3]])
            gram = weighted @ design.T                                    # (2K, 2K)
            rhs = weighted @ y[:, ch] + reg * prior
            sol = np.linalg.solve(gram + np.diag(reg + 1e-9), rhs)
            out[:, ch, ch], out[:, ch, 3] = sol[:k], sol[k:]
        per_px = (bil.T @ out.reshape(k, 12)).reshape(-1, 3, 4)
        yd = per_px[:, [0, 1, 2], [0, 1, 2]] * x + per_px[:, :, 3]
        return ColorGrid(out.reshape(gh, gw, 3, 4).astype(np.float32)), self._err(yd)

    def global_affine(self, ridge: float) -> tuple[ColorGrid, float]:
        """One 3x4 transform, weighted least squares over the person, with a ridge toward
        the mean of the grid's cells."""
        x4 = np.concatenate([self.x, np.ones((len(self.x), 1), np.float32)], 1)   # (N, 4)
        prior = self.grid.coeffs.reshape(-1, 3, 4).mean(0)                      # (3, 4)
        sol = _solve(x4, self.y, self.m[None, :], prior[None], ridge)[0]       # (3, 4)
        return ColorGrid(sol[None, None].astype(np.float32)), self._err(x4 @ sol.T)
