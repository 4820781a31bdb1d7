import numpy as np
import pytest

from vidharm.color import ColorGrid, apply_grid, fit_grid


def _img(h=90, w=160, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, (h // 10 + 1, w // 10 + 1, 3)).astype(np.uint8)
    import cv2
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


def test_identity_is_exact_and_background_untouched():
    img = _img()
    mask = np.zeros(img.shape[:2], np.float32)
    mask[20:70, 40:120] = 1.0
    assert np.array_equal(apply_grid(img, mask, ColorGrid.identity(4, 4)), img)
    strong = ColorGrid(ColorGrid.identity(3, 3).coeffs * 1.5)
    out = apply_grid(img, mask, strong)
    assert np.array_equal(out[mask == 0], img[mask == 0])
    assert np.abs(out[mask == 1].astype(int) - img[mask == 1]).mean() > 20


def test_global_fit_recovers_known_affine():
    img = _img()
    a = np.array([[1.1, 0.05, 0.0, 0.02], [0.0, 0.9, 0.0, 0.05], [0.0, 0.1, 0.8, -0.03]], np.float32)
    truth = ColorGrid(a[None, None])
    full = np.ones(img.shape[:2], np.float32)
    dst = apply_grid(img, full, truth)
    fit = fit_grid(img, dst, full, (1, 1), ridge=1e-5)
    assert np.abs(fit.coeffs[0, 0] - a).max() < 0.02


def test_grid_fit_follows_spatially_varying_change():
    img = _img(120, 200)
    full = np.ones(img.shape[:2], np.float32)
    # left half darkened, right half brightened: a global transform cannot express this
    dst = img.astype(np.float32)
    dst[:, :100] *= 0.7
    dst[:, 100:] = dst[:, 100:] * 1.2 + 10
    dst = np.clip(dst, 0, 255).astype(np.uint8)
    err = {}
    for g in (1, 4):
        fit = fit_grid(img, dst, full, (g, g), ridge=1e-4)
        err[g] = np.abs(apply_grid(img, full, fit).astype(int) - dst).mean()
    assert err[4] < 0.6 * err[1]


def test_grid_interpolation_has_no_seams():
    img = np.full((100, 100, 3), 128, np.uint8)
    full = np.ones((100, 100), np.float32)
    c = ColorGrid.identity(2, 2).coeffs.copy()
    c[:, 1, :, 3] = 0.2  # right column brighter
    out = apply_grid(img, full, ColorGrid(c)).astype(int)[50, :, 0]
    assert np.abs(np.diff(out)).max() <= 2      # smooth ramp, no step
    assert out[-1] - out[0] > 40


def test_soft_mask_blends_linearly():
    img = _img()
    mask = np.full(img.shape[:2], 0.5, np.float32)
    g = ColorGrid(np.array([[[[1, 0, 0, 0.2], [0, 1, 0, 0.2], [0, 0, 1, 0.2]]]], np.float32))
    out = apply_grid(img, mask, g).astype(int)
    # the transformed person saturates first, then blends with the base half and half
    expect = 0.5 * np.clip(img.astype(float) + 0.2 * 255, 0, 255) + 0.5 * img
    assert np.abs(out - expect).max() <= 1


def test_fused_apply_equals_composite_for_identity_and_keeps_background():
    from vidharm.color import apply_grid_fused
    from vidharm.composite import composite
    rng = np.random.default_rng(1)
    fg = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    mask = np.zeros((72, 128), np.float32)
    mask[10:60, 30:90] = np.linspace(0, 1, 60, dtype=np.float32)[None, :]
    ident = apply_grid_fused(fg, bg, mask, ColorGrid.identity(3, 3))
    assert np.abs(ident.astype(int) - composite(fg, bg, mask)).max() <= 1
    c = ColorGrid.identity(3, 3).coeffs.copy()
    c[..., 0, 0] = 1.3
    out = apply_grid_fused(fg, bg, mask, ColorGrid(c))
    assert np.array_equal(out[mask == 0], bg[mask == 0])
    full = mask == 1
    expect_r = np.clip(fg[..., 0].astype(float) * 1.3, 0, 255)
    assert np.abs(out[..., 0][full] - expect_r[full]).max() <= 1


def test_a_one_pixel_person_does_not_break_the_blend():
    """A faint one-pixel matte (a person entering at a cut) once made cv2.blendLinear fail, and
    the live engine showed the background alone for that frame."""
    from vidharm.color import ColorGrid, apply_grid_fused
    from vidharm.composite import composite
    rgb = np.full((54, 96, 3), 100, np.uint8)
    bg = np.zeros_like(rgb)
    m = np.zeros((54, 96), np.float32)
    m[10, 20] = 0.5
    for g in (ColorGrid.identity(1, 1), ColorGrid.identity(4, 4).scaled(0.5),
              ColorGrid((np.eye(3, 4)[None, None] * np.full((4, 4, 1, 1), 1.2)).astype(np.float32))):
        out = apply_grid_fused(rgb, bg, m, g)
        assert out[10, 20].min() > 0 and out.sum() == out[10, 20].sum()
    small = composite(rgb[:1, :1], bg[:1, :1], m[10:11, 20:21])
    assert small.shape == (1, 1, 3) and small[0, 0, 0] == 50


def test_large_frames_take_the_quarter_resolution_fields_to_within_rounding(monkeypatch):
    """At 720p the coefficient fields are made at a quarter of the resolution and upsampled;
    the result must equal the exact fields' (the full 3x4 and the per-channel paths)."""
    import vidharm.color as color
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    mask = np.zeros((720, 1280), np.float32)
    mask[60:700, 200:1100] = 1.0
    full = (np.eye(3, 4)[None, None] + rng.normal(0, 0.08, (4, 4, 3, 4))).astype(np.float32)
    diag = np.zeros_like(full)
    for c in range(3):
        diag[..., c, c] = full[..., c, c]
        diag[..., c, 3] = full[..., c, 3]
    for coeffs in (full, diag):
        fast = apply_grid(img, mask, ColorGrid(coeffs)).astype(int)
        monkeypatch.setattr(color, "QUARTER_MIN_CELL", 10_000)
        exact = apply_grid(img, mask, ColorGrid(coeffs)).astype(int)
        monkeypatch.setattr(color, "QUARTER_MIN_CELL", 96)
        d = np.abs(fast - exact)
        assert d.max() <= 2 and d.mean() < 0.01 and (d > 0).mean() < 0.02
