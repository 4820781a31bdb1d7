import numpy as np

from vidharm.config import HarmonizerConfig
from vidharm.harmonize.stats import StatsHarmonizer, stats_grid


def _scene(fg_color, bg_color, h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = bg_color
    mask = np.zeros((h, w), np.float32)
    mask[30:110, 50:110] = 1.0
    img[mask > 0] = fg_color
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def test_moves_person_toward_background_statistics():
    comp, mask = _scene((200, 170, 150), (40, 60, 120))   # bright warm person, dark blue room
    out = StatsHarmonizer(HarmonizerConfig(strength=1.0))(comp, mask)
    fg_before = comp[mask > 0].mean(0)
    fg_after = out[mask > 0].mean(0)
    bg = comp[mask == 0].mean(0)
    assert np.abs(fg_after - bg).sum() < 0.5 * np.abs(fg_before - bg).sum()
    assert np.array_equal(out[mask == 0], comp[mask == 0])   # background unchanged


def test_strength_zero_is_plain_composite_and_deterministic():
    comp, mask = _scene((200, 170, 150), (40, 60, 120))
    assert np.array_equal(StatsHarmonizer(HarmonizerConfig(strength=0.0))(comp, mask), comp)
    a = StatsHarmonizer()(comp, mask)
    b = StatsHarmonizer()(comp, mask)
    assert np.array_equal(a, b)


def test_empty_or_full_mask_is_identity():
    comp, _ = _scene((200, 170, 150), (40, 60, 120))
    for m in (np.zeros(comp.shape[:2], np.float32), np.ones(comp.shape[:2], np.float32)):
        g = stats_grid(comp, m, 4)
        assert np.allclose(g.coeffs, g.identity(4, 4).coeffs)
        assert np.array_equal(StatsHarmonizer()(comp, m), comp)


def test_local_statistics_follow_uneven_light():
    # background lit from the left: the left part of the person should end up brighter
    h, w = 120, 200
    ramp = np.linspace(220, 30, w, dtype=np.float32)
    comp = np.repeat(np.repeat(ramp[None, :, None], h, 0), 3, 2)
    mask = np.zeros((h, w), np.float32)
    mask[20:120, 40:160] = 1
    comp[mask > 0] = 128
    comp = comp.astype(np.uint8)
    out = StatsHarmonizer(HarmonizerConfig(strength=1.0, local_weight=1.0, grid=4))(comp, mask)
    left = out[60:100, 45:70].mean()
    right = out[60:100, 130:155].mean()
    assert left - right > 15
    glob = StatsHarmonizer(HarmonizerConfig(strength=1.0, local_weight=0.0, grid=4))(comp, mask)
    assert abs(glob[60:100, 45:70].mean() - glob[60:100, 130:155].mean()) < 3


def test_stream_smoothing_and_cut_reset():
    comp, mask = _scene((200, 170, 150), (40, 60, 120))
    h = StatsHarmonizer(smoothing=0.8)
    h(comp, mask)
    brighter = np.clip(comp.astype(int) + np.where(mask[..., None] == 0, 12, 0), 0, 255).astype(np.uint8)
    smoothed = h(brighter, mask)[mask > 0].mean()
    fresh = StatsHarmonizer()(brighter, mask)[mask > 0].mean()
    first = StatsHarmonizer()(comp, mask)[mask > 0].mean()
    assert abs(smoothed - first) < abs(fresh - first)       # the change is eased in
    h.reset()
    assert np.array_equal(h(brighter, mask), StatsHarmonizer()(brighter, mask))


def test_real_frame_720p(sample_frame):
    import cv2
    frame = cv2.resize(sample_frame, (1280, 720))
    mask = np.zeros(frame.shape[:2], np.float32)
    mask[100:720, 400:900] = 1
    bg = np.zeros_like(frame)
    bg[:] = (30, 40, 90)
    comp = np.where(mask[..., None] > 0, frame, bg).astype(np.uint8)
    out = StatsHarmonizer()(comp, mask)
    assert out.shape == comp.shape and out.dtype == np.uint8
    # the person got bluer relative to red, toward the room
    before = comp[mask > 0].mean(0)
    after = out[mask > 0].mean(0)
    assert (after[2] - after[0]) > (before[2] - before[0]) + 5
