"""Backgrounds (image cover-crop, looping video, blur) and the alpha composite."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

import vidharm.assets as assets
from vidharm.composite import (BlurBackground, ColorBackground, ImageBackground, VideoBackground,
                               composite, cover_crop, make_background)
from vidharm.config import BackgroundConfig, Config
from vidharm.errors import InputError
from vidharm.imageio import save_image


def _circle_pattern(w, h, radius):
    """A grey canvas with a grid and a filled red circle in the centre (nothing black)."""
    img = np.full((h, w, 3), 90, np.uint8)
    img[::40, :] = 160
    img[:, ::40] = 160
    cv2.circle(img, (w // 2, h // 2), radius, (255, 0, 0), -1, cv2.LINE_AA)
    return img


def _blob_aspect(img):
    red = (img[:, :, 0] > 200) & (img[:, :, 1] < 80)
    ys, xs = np.nonzero(red)
    return (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1), xs.max() - xs.min() + 1


@pytest.mark.parametrize("src,dst", [((1920, 2880), (1280, 720)), ((1920, 2880), (300, 900)),
                                     ((640, 360), (1280, 720)), ((400, 300), (1000, 250)),
                                     ((300, 400), (720, 1280)), ((1280, 720), (1280, 720))])
def test_cover_crop_never_distorts(src, dst):
    scale = max(dst[0] / src[0], dst[1] / src[1])         # scaled to COVER: the larger factor
    r = int(min(dst) / scale / 3)                          # fits inside the visible crop
    img = _circle_pattern(*src, radius=r)
    out = cover_crop(img, dst)
    assert out.shape == (dst[1], dst[0], 3) and out.dtype == np.uint8
    aspect, width = _blob_aspect(out)
    assert abs(aspect - 1.0) < 0.03, aspect              # a circle stays a circle
    assert abs(width - 2 * r * scale) <= 2 + 0.02 * 2 * r * scale
    edges = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert edges.min() >= 80                               # no black bars: fully covered
    red = (out[:, :, 0] > 200) & (out[:, :, 1] < 80)
    ys, xs = np.nonzero(red)                               # and centred
    tol = 1.5 + 0.6 * scale                                # half a source pixel, scaled
    assert abs(xs.mean() - dst[0] / 2) < tol and abs(ys.mean() - dst[1] / 2) < tol


def test_image_background_is_cached_and_read_only(tmp_path):
    p = save_image(tmp_path / "bg.png", _circle_pattern(900, 1200, 200))
    bg = make_background(str(p))
    assert isinstance(bg, ImageBackground) and not bg.needs_current
    a = bg.frame((640, 360), 0.0)
    assert a.shape == (360, 640, 3)
    assert bg.frame((640, 360), 5.0) is a                  # same size: the cached array
    assert abs(_blob_aspect(a)[0] - 1) < 0.03
    with pytest.raises(ValueError):
        a[0, 0] = 0                                        # shared cache is read-only
    b = bg.frame((360, 640), 0.0)
    assert b.shape == (640, 360, 3) and abs(_blob_aspect(b)[0] - 1) < 0.03


def test_sample_background():
    bg = make_background(str(assets.path("sample-background")))
    h, w = bg.image.shape[:2]
    assert h > w                                           # portrait-orientation photo
    out = bg.frame((1280, 720), 0.0)
    assert out.shape == (720, 1280, 3) and out.std() > 10
    # it is the centre band of the photo, scaled by width: compare with a direct crop
    s = 1280 / w
    ch = int(round(720 / s))
    ref = cv2.resize(bg.image[(h - ch) // 2:(h - ch) // 2 + ch], (1280, 720),
                     interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - ref).mean() < 2


def _write_counter_video(path, n=10, fps=10, size=(64, 48)):
    """Frame k is uniformly grey level 20 * k + 10 (lossless FFV1)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv444p"
        for k in range(n):
            img = np.full((size[1], size[0], 3), 20 * k + 10, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, "rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _level(frame):
    return int(round((float(frame.mean()) - 10) / 20))


def test_video_background_follows_time_and_loops(tmp_path):
    p = _write_counter_video(tmp_path / "count.mkv")
    bg = make_background(str(p))
    assert isinstance(bg, VideoBackground)
    size = (160, 90)
    # 30 fps output from a 10 fps clip: each clip frame shown 3 times; loops after 1 s
    got = [_level(bg.frame(size, i / 30)) for i in range(75)]
    assert got == [(i // 3) % 10 for i in range(75)], got
    assert bg.period == pytest.approx(1.0, abs=1e-6)
    f = bg.frame(size, 2.55)
    assert f.shape == (90, 160, 3) and _level(f) == 5
    assert _level(bg.frame(size, 0.31)) == 3               # back in time: rewinds
    assert _level(bg.frame(size, 7.72)) == 7               # far ahead: wraps
    bg.reset()
    assert _level(bg.frame(size, 100.0)) == 0              # origin restarts at the next t
    assert [_level(bg.frame(size, None)) for _ in range(12)] == [1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                  0, 1, 2]
    bg.close()
    assert _level(bg.frame(size, 0.0)) in range(10)        # reopens after close


def test_real_video_background_loops():
    bg = make_background(str(assets.path("clip-carphone")))    # 176x144, ~4 s
    a = bg.frame((1280, 720), 0.5).copy()
    assert a.shape == (720, 1280, 3)
    bg.frame((1280, 720), 3.9)
    period = None
    for i in range(200):                                      # run past the end
        bg.frame((1280, 720), 3.9 + i / 30)
        if bg.period:
            period = bg.period
            break
    assert period == pytest.approx(4.0, abs=0.1)
    b = bg.frame((1280, 720), 0.5 + period)
    np.testing.assert_array_equal(a, b)                      # the same frame one loop later


def test_video_background_frames_are_the_readers_frames():
    """The same decode as the transcoder (vidharm.video.VideoReader): same colour matrix, same
    frame for the same time, on the real sample clip."""
    from vidharm.video import VideoReader
    path = assets.path("sample-clip")                              # 640x360, 30 fps
    with VideoReader(path) as r:
        frames = [rgb for rgb, _, _ in r]
    bg = make_background(str(path))
    assert isinstance(bg, VideoBackground)
    for k in (0, 1, 10, 45, 71):
        np.testing.assert_array_equal(bg.frame((640, 360), k / 30), frames[k])
    np.testing.assert_array_equal(bg.frame((640, 360), 72 / 30), frames[0])     # looped
    bg.close()


@pytest.mark.parametrize("deg", [90, -90, 180])
def test_video_background_is_upright(tmp_path, deg):
    """A clip with a display matrix (a phone held upright) plays upright, as it does in the
    transcoder."""
    w, h = 64, 32
    src = np.zeros((h, w, 3), np.uint8)
    src[: h // 2, : w // 2] = 255
    src[: h // 2, w // 2:] = (255, 0, 0)
    src[h // 2:, : w // 2] = (0, 255, 0)
    path = tmp_path / f"rot{deg}.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
        vs.set_display_rotation(deg)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(src, format="rgb24")
            f.pts = i
            for pk in vs.encode(f):
                c.mux(pk)
        for pk in vs.encode():
            c.mux(pk)
    expected = np.rot90(src, k=(deg // 90) % 4)
    bg = make_background(str(path))
    assert isinstance(bg, VideoBackground)
    out = bg.frame((expected.shape[1], expected.shape[0]), 0.0)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).mean() < 12
    assert np.abs(out.astype(int) - np.rot90(expected, 2)).mean() > 60


def test_blur_background(tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    bb = make_background("blur", Config())
    assert isinstance(bb, BlurBackground) and bb.needs_current
    assert bb.sigma == Config().background.blur_sigma
    with pytest.raises(ValueError):
        bb.frame((640, 360), 0.0)
    out = bb.frame((640, 360), 0.0, current=frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert out.std() < 0.2 * frame.std()                     # heavily smoothed
    assert abs(float(out.mean()) - float(frame.mean())) < 3   # same overall colour
    assert make_background("blur:4", BackgroundConfig()).sigma == 4.0
    # mask-aware: a bright person on a dark room leaves no bright halo around them
    scene = np.full((360, 640, 3), 30, np.uint8)
    mask = np.zeros((360, 640), np.float32)
    mask[60:, 240:400] = 1.0
    scene[mask > 0] = 240
    plain = bb.frame((640, 360), 0.0, current=scene)
    aware = bb.frame((640, 360), 0.0, current=scene, mask=mask)
    ring = np.zeros_like(mask, bool)
    ring[100:, 228:238] = True                               # just left of the person
    assert plain[ring].mean() > 60
    assert aware[ring].mean() < 35
    assert abs(float(aware[:, :200].mean()) - 30) < 2       # the room keeps its colour


def test_make_background_specs_and_errors(tmp_path):
    assert isinstance(make_background("#00ff00"), ColorBackground)
    g = make_background("#00ff00").frame((8, 4), 0)
    assert g.shape == (4, 8, 3) and tuple(g[0, 0]) == (0, 255, 0)
    assert isinstance(make_background(str(assets.path("sample-clip"))), VideoBackground)
    with pytest.raises(InputError) as e:
        make_background(str(tmp_path / "missing.jpg"))
    assert "does not exist" in e.value.one_line()
    with pytest.raises(InputError) as e:
        make_background(str(tmp_path))
    assert "directory" in e.value.one_line()
    txt = tmp_path / "notes.mp4"
    txt.write_text("not a video at all\n" * 100)
    with pytest.raises(InputError) as e:
        make_background(str(txt))
    assert "not a video" in e.value.one_line() and "\n" not in e.value.one_line()
    txt2 = tmp_path / "notes.txt"
    txt2.write_text("hello")
    with pytest.raises(InputError) as e:
        make_background(str(txt2))
    assert "not an image or a video" in e.value.one_line()
    with pytest.raises(InputError):
        make_background("blur:lots")
    # an animated GIF plays as a video
    from PIL import Image
    frames = [Image.new("RGB", (20, 10), (40 * k, 0, 0)) for k in range(4)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100,
                   loop=0)
    assert isinstance(make_background(str(tmp_path / "anim.gif")), VideoBackground)


def test_composite_values_and_errors():
    fg = np.full((4, 5, 3), 200, np.uint8)
    bg = np.full((4, 5, 3), 100, np.uint8)
    m = np.zeros((4, 5), np.float32)
    m[0] = 1.0
    m[1] = 0.5
    m[2] = 0.25
    out = composite(fg, bg, m)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert (out[0] == 200).all() and (out[3] == 100).all()
    assert (np.abs(out[1].astype(int) - 150) <= 1).all()
    assert (np.abs(out[2].astype(int) - 125) <= 1).all()
    np.testing.assert_array_equal(composite(fg, bg, (m * 255).astype(np.uint8)[..., None]), out)
    buf = np.empty_like(fg)
    assert composite(fg, bg, m, out=buf) is buf and (buf == out).all()
    with pytest.raises(InputError):
        composite(fg, bg[:3], m)
    with pytest.raises(InputError):
        composite(fg, bg, m[:3])


def test_composite_matches_float_reference_at_720p():
    rng = np.random.default_rng(0)
    fg = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    m = rng.random((720, 1280)).astype(np.float32)
    ref = fg * m[..., None].astype(np.float64) + bg * (1 - m[..., None])
    assert np.abs(composite(fg, bg, m) - ref).max() <= 1.0


def test_blend_is_exact_where_the_mask_is_0_or_1_and_writes_into_views(sample_frame):
    """The integer blend (weights in 1/255 steps) keeps the background bit for bit where the
    mask is 0 and the person where it is 1, stays within one grey level of the float blend,
    writes into a box of a bigger frame, and gives the same as its numpy path for tiny boxes."""
    from vidharm.composite import blend
    fg = sample_frame
    bg = np.ascontiguousarray(fg[::-1, ::-1])
    h, w = fg.shape[:2]
    m = np.zeros((h, w), np.float32)
    m[:, w // 3: 2 * w // 3] = np.linspace(-0.2, 1.2, h, dtype=np.float32)[:, None]
    m[:, 2 * w // 3:] = 1.0
    out = np.zeros((h + 10, w + 10, 3), np.uint8)
    box = out[5:5 + h, 5:5 + w]
    assert blend(fg, bg, m, dst=box) is box
    assert (out[:5] == 0).all() and (out[:, :5] == 0).all()
    zero, one = m <= 0, m >= 1
    assert np.array_equal(box[zero], bg[zero]) and np.array_equal(box[one], fg[one])
    mc = np.clip(m, 0, 1)[..., None]
    ref = fg * mc.astype(np.float64) + bg * (1 - mc)
    assert np.abs(box - ref).max() <= 1.0
    for y, x in ((0, 0), (h // 2, w // 2 - 1), (h - 2, w // 3)):
        tiny = blend(fg[y:y + 2, x:x + 2], bg[y:y + 2, x:x + 2], m[y:y + 2, x:x + 2])
        assert np.array_equal(tiny, box[y:y + 2, x:x + 2])
