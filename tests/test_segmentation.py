"""Segmentation (real MediaPipe models on real clips), mask refinement and temporal smoothing."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

import vidharm.assets as assets
from vidharm.config import Config, MaskConfig, SegmentationConfig
from vidharm.errors import InputError, VidharmError
from vidharm.imageio import load_image, save_image
from vidharm.mask import GuidedFilter, MaskRefiner, MaskSmoother, refine_mask
from vidharm.registry import registry


def _frames(name: str, n: int, step: int = 1) -> list[np.ndarray]:
    out = []
    with av.open(str(assets.path(name))) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
                if len(out) >= n:
                    break
    return out


@pytest.fixture(scope="module")
def person_frames():
    return _frames("sample-clip", 6, step=12)


@pytest.fixture(scope="module")
def general():
    with registry.segmenters.create("mediapipe", SegmentationConfig(model="general")) as seg:
        yield seg


@pytest.fixture(scope="module")
def landscape():
    with registry.segmenters.create("mediapipe", Config()) as _:
        pass                                      # a whole Config is accepted too
    with registry.segmenters.create("mediapipe", SegmentationConfig(model="landscape")) as seg:
        yield seg


def _iou(a, b):
    a, b = a > 0.5, b > 0.5
    return (a & b).sum() / max(1, (a | b).sum())


def _check_person(m, shape):
    assert m.dtype == np.float32 and m.shape == shape[:2]
    assert m.min() >= 0.0 and m.max() <= 1.0
    area = (m > 0.5).mean()
    assert 0.10 < area < 0.60, area
    ys, xs = np.nonzero(m > 0.5)
    assert 0.3 < xs.mean() / m.shape[1] < 0.7          # centred left-right
    assert m[-m.shape[0] // 10:].mean() > 0.3          # shoulders reach the bottom edge
    assert m[: m.shape[0] // 20].mean() < 0.05         # nothing glued to the top edge
    assert ((m > 0.05) & (m < 0.95)).any()             # a soft matte, not a hard cut


# ---------------------------------------------------------------------------------- segmenter
def test_registered():
    assert "mediapipe" in registry.segmenters.names()


def test_general_model_finds_the_person(general, person_frames):
    for i, f in enumerate(person_frames):
        _check_person(general.segment(f, i * 0.4), f.shape)


def test_landscape_model_agrees(general, landscape, person_frames):
    for i, f in enumerate(person_frames[:3]):
        ml = landscape.segment(f, i * 0.4)
        _check_person(ml, f.shape)
        assert _iou(ml, general.segment(f, None)) > 0.85


def test_no_person_gives_near_empty_mask(general, landscape):
    for i, f in enumerate(_frames("clip-noface", 5, step=15)):
        for seg in (general, landscape):
            m = seg.segment(f, 100.0 + i)
            assert (m > 0.5).mean() < 0.01 and m.mean() < 0.02


def test_image_mode_on_a_still(general, person_frames, tmp_path):
    p = save_image(tmp_path / "still.png", person_frames[2])
    still = load_image(p)
    m = general.segment(still, None)
    _check_person(m, still.shape)
    again = general.segment(still, None)                  # IMAGE mode has no timestamps
    np.testing.assert_allclose(m, again, atol=1e-5)
    assert _iou(m, general.segment(still, 200.0)) > 0.9   # same as VIDEO mode


def test_timestamps_that_repeat_or_go_back_are_accepted(person_frames):
    with registry.segmenters.create("mediapipe", "general") as seg:
        stamps = []
        for t in (0.0, 0.033, 0.033, 0.066, 0.0, 0.033, -5.0, 1e-4):   # repeat + loop + reset
            seg.segment(person_frames[0], t)
            stamps.append(seg._last_ms)
        assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps
        assert stamps[4] - stamps[3] == 33     # a loop keeps the frame spacing


def test_small_clip_and_odd_inputs(general):
    f = _frames("clip-carphone", 1)[0]
    assert f.shape == (144, 176, 3)
    m = general.segment(f, 300.0)
    assert m.shape == (144, 176) and (m > 0.5).mean() > 0.1
    grey = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
    assert general.segment(grey, 300.1).shape == (144, 176)
    rgba = np.dstack([f, np.full(f.shape[:2], 255, np.uint8)])
    assert general.segment(rgba, 300.2).shape == (144, 176)
    assert general.segment(f[:, ::2], 300.3).shape == (144, 88)     # non-contiguous view
    with pytest.raises(InputError):
        general.segment(np.zeros((10, 10, 2), np.uint8), 300.4)


def test_bad_model_files(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_text("this is not a flatbuffer")
    with pytest.raises(InputError) as e:
        registry.segmenters.create("mediapipe", str(bad))
    assert "tflite" in e.value.one_line() and "\n" not in e.value.one_line()
    with pytest.raises(VidharmError):
        registry.segmenters.create("mediapipe", str(tmp_path / "missing.tflite"))
    seg = registry.segmenters.create("mediapipe", "landscape")
    seg.close()
    seg.close()                                            # idempotent
    with pytest.raises(RuntimeError):
        seg.segment(np.zeros((8, 8, 3), np.uint8), 0.0)


# ---------------------------------------------------------------------------------- refinement
def _synthetic_head(seed=1, H=360, W=640):
    """A dark head with hair strands on a light textured background, its exact matte, and a
    matte degraded like a segmenter's (256x256 model resolution, upsampled, slightly wide)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    cx, cy, rx, ry = W / 2, H * 0.6, W * 0.2, H * 0.42
    truth = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1).astype(np.float32)
    strands = np.zeros((H, W), np.uint8)
    for _ in range(30):
        a = rng.uniform(-2.6, -0.55)
        x0, y0 = cx + rx * 0.97 * np.cos(a), cy + ry * 0.97 * np.sin(a)
        cv2.line(strands, (int(x0), int(y0)), (int(x0 + 15 * np.cos(a)), int(y0 + 15 * np.sin(a))),
                 255, 1, cv2.LINE_AA)
    truth = np.maximum(truth, strands / 255.0).astype(np.float32)
    bg = np.stack([200 + 30 * np.sin(xx / 20.0), 190 + 20 * np.cos(yy / 27.0), 180 + 0 * xx], -1)
    fg = np.stack([40 + 0 * xx, 35 + 10 * np.sin(yy / 11.0), 30 + 0 * xx], -1)
    img = fg * truth[..., None] + bg * (1 - truth[..., None]) + rng.normal(0, 3, (H, W, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    wide = (((xx - cx) / (rx + 2)) ** 2 + ((yy - cy) / (ry + 2)) ** 2 < 1).astype(np.float32)
    low = cv2.resize(wide, (256, 256), interpolation=cv2.INTER_AREA)
    degraded = cv2.GaussianBlur(cv2.resize(low, (W, H)), (0, 0), 1.0)
    band = (cv2.dilate(truth, np.ones((15, 15))) - cv2.erode(truth, np.ones((15, 15)))) > 0
    return img, truth, degraded, low, band, strands > 128


def test_refinement_aligns_the_matte_with_real_edges():
    img, truth, degraded, low, band, strand_px = _synthetic_head(H=720, W=1280)
    err_raw = np.abs(degraded - truth)[band].mean()
    q = refine_mask(degraded, img)                          # default radius/eps (720p)
    assert q.dtype == np.float32 and q.shape == truth.shape and 0 <= q.min() and q.max() <= 1
    err_ref = np.abs(q - truth)[band].mean()
    assert err_ref < 0.7 * err_raw, (err_raw, err_ref)     # measured: 0.133 -> 0.063
    # thin strands the segmenter could not see come back from the image
    hair_only = strand_px & (degraded < 0.1)
    assert hair_only.sum() > 50
    assert q[hair_only].mean() > degraded[hair_only].mean() + 0.3
    # the mask may come at the model's own resolution: same quality
    q_low = refine_mask(low, img)
    assert np.abs(q_low - truth)[band].mean() < 0.7 * err_raw
    # the streaming refiner does the same on its first frame
    r = MaskRefiner(MaskConfig())
    np.testing.assert_allclose(r(degraded, img), q, atol=1e-5)
    # smaller frames: the radius scales with the frame; a larger radius corrects more
    img, truth, degraded, low, band, strand_px = _synthetic_head(H=360, W=640)
    err_raw = np.abs(degraded - truth)[band].mean()
    err6 = np.abs(refine_mask(degraded, img, radius=6) - truth)[band].mean()
    err12 = np.abs(refine_mask(degraded, img, radius=12) - truth)[band].mean()
    assert err12 < err6 < 0.9 * err_raw, (err_raw, err6, err12)


def test_guided_filter_matches_the_reference_implementation():
    rng = np.random.default_rng(0)
    guide = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (5, 5), 1)
    src = rng.random((90, 120)).astype(np.float32)
    ours = GuidedFilter()(guide, src, 4, 1e-2, work=(120, 90))       # full resolution
    ref = np.clip(cv2.ximgproc.guidedFilter(guide, src, 4, 1e-2 * 255 * 255), 0, 1)
    np.testing.assert_allclose(ours[6:-6, 6:-6], ref[6:-6, 6:-6], atol=1e-4)


def test_refiner_on_real_frames(general, person_frames):
    r = MaskRefiner(Config())
    for i, f in enumerate(person_frames[:3]):
        raw = general.segment(f, 400.0 + i)
        q = r(raw, f)
        assert q.dtype == np.float32 and q.shape == raw.shape
        assert q.min() >= 0 and q.max() <= 1
        assert _iou(q, raw) > 0.9
    for size in ((177, 145), (7, 5), (1920, 1080)):
        f = cv2.resize(person_frames[0], size)
        out = MaskRefiner(MaskConfig())(np.full(f.shape[:2], 0.5, np.float32), f)
        assert out.shape == f.shape[:2]
    plain = MaskRefiner(MaskConfig(refine="none"))
    assert plain(cv2.resize(raw, (64, 36)), person_frames[0]).shape == raw.shape


# ---------------------------------------------------------------------------------- smoothing
def _flicker(masks):
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(masks[1:], masks[:-1])]))


def test_smoother_removes_flicker_on_a_still_scene():
    img, truth, degraded, *_ = _synthetic_head(seed=3)
    rng = np.random.default_rng(5)
    sm = MaskSmoother(MaskConfig())
    raw, out = [], []
    for _ in range(20):
        frame = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        jitter = np.clip(degraded + rng.normal(0, 0.08, degraded.shape).astype(np.float32)
                         * (degraded * (1 - degraded) * 4), 0, 1)        # edge flicker
        shift = np.float32([[1, 0, rng.uniform(-1.5, 1.5)], [0, 1, rng.uniform(-1.5, 1.5)]])
        m = cv2.warpAffine(jitter, shift, jitter.shape[::-1])
        raw.append(m)
        out.append(sm(m, frame))
    assert _flicker(out[5:]) < 0.5 * _flicker(raw[5:]), (_flicker(raw), _flicker(out))
    with pytest.raises(ValueError):
        out[-1][0, 0] = 1.0                       # the result is the (read-only) state


def test_refiner_removes_flicker_on_real_frames(general, person_frames):
    """A still webcam frame with camera noise: the segmenter's mask and the guided filter's
    copy of the noise both flicker; the smoothing removes most of it."""
    rng = np.random.default_rng(0)
    f0 = person_frames[0]
    seq = [np.clip(f0 + rng.normal(0, 4, f0.shape), 0, 255).astype(np.uint8) for _ in range(12)]
    raws = [general.segment(f, 500.0 + i / 30) for i, f in enumerate(seq)]
    plain = MaskRefiner(MaskConfig(), smooth=False)
    smooth = MaskRefiner(MaskConfig())
    f_plain = _flicker([plain(m, f) for m, f in zip(raws, seq)][2:])
    f_smooth = _flicker([smooth(m, f) for m, f in zip(raws, seq)][2:])
    assert f_smooth < 0.6 * f_plain, (f_plain, f_smooth)


def _moving_square_sequence(same_colour=False, n=12, step=8, H=180, W=320, side=48):
    rng = np.random.default_rng(2)
    bg = cv2.GaussianBlur(rng.integers(60, 200, (H, W, 3), dtype=np.uint8), (0, 0), 2)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (side, side, 3), dtype=np.uint8), (0, 0), 1)
    frames, masks, xs = [], [], []
    for i in range(n):
        x = 20 + i * step
        f = bg.copy()
        if not same_colour:
            f[60:60 + side, x:x + side] = tex
        m = np.zeros((H, W), np.float32)
        m[60:60 + side, x:x + side] = 1.0
        frames.append(f)
        masks.append(m)
        xs.append(x)
    return frames, masks, xs, side


def test_no_ghost_trail_behind_a_moving_object():
    frames, masks, xs, side = _moving_square_sequence()
    sm = MaskSmoother(MaskConfig())
    outs = [sm(m, f) for m, f in zip(masks, frames)]
    last = outs[-1]
    # where the square was 3 frames ago and is no more
    was = np.zeros_like(last, bool)
    was[60:60 + side, xs[-4]:xs[-1]] = True
    assert last[was].max() < 0.1 and last[was].mean() < 0.03, last[was].max()
    # and the square itself is fully there, no lag at its leading edge
    assert last[60:60 + side, xs[-1]:xs[-1] + side].min() > 0.9
    # a plain EMA with the 'still' strength would leave a trail (the check is meaningful)
    ema = masks[0].copy()
    for m in masks[1:]:
        ema = 0.6 * ema + 0.4 * m
    assert ema[was].max() > 0.3


def test_no_ghost_when_the_frame_does_not_show_the_motion():
    """The mask moves but the pixels do not (a person in front of a same-coloured wall): the
    large mask change alone counts as motion."""
    frames, masks, xs, side = _moving_square_sequence(same_colour=True)
    sm = MaskSmoother(MaskConfig())
    outs = [sm(m, f) for m, f in zip(masks, frames)]
    was = np.zeros_like(outs[-1], bool)
    was[60:60 + side, xs[-3]:xs[-1]] = True
    assert outs[-1][was].max() < 0.15


def test_reset_and_size_change():
    sm = MaskSmoother(MaskConfig())
    f = np.full((40, 60, 3), 100, np.uint8)
    sm(np.full((40, 60), 0.5, np.float32), f)
    out = sm(np.full((40, 60), 0.6, np.float32), f)
    np.testing.assert_allclose(out, 0.6 + 0.6 * (0.5 - 0.6), atol=1e-5)   # still: smooth_still
    out = sm(np.zeros((40, 60), np.float32), f)
    assert out.max() < 0.1                         # a jump of the mask itself counts as motion
    sm.reset()
    np.testing.assert_array_equal(sm(np.zeros((40, 60), np.float32), f), 0)
    g = np.full((30, 50, 3), 100, np.uint8)
    assert sm(np.ones((30, 50), np.uint8) * 255, g).min() == 1.0   # new size: starts over
