"""vidharm.imageio: every kind of still becomes uint8 RGB; every bad file is a one-line InputError."""
from __future__ import annotations

import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from vidharm.errors import InputError, OutputError, VidharmError
from vidharm.imageio import load_image, load_mask, probe_image, save_image


def _one_line(exc: VidharmError) -> str:
    text = exc.one_line()
    assert "\n" not in text
    return text


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png_header_only(path, width, height):
    """A syntactically valid PNG whose header claims width x height (almost no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------------------- modes
def test_rgb_png_roundtrip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    p = save_image(tmp_path / "a.png", rgb)
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_greyscale_and_bilevel(tmp_path):
    g = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (5, 1))
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (5, 25, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)
    Image.fromarray(g > 100).save(tmp_path / "b.png")          # mode "1"
    assert Image.open(tmp_path / "b.png").mode == "1"
    out = load_image(tmp_path / "b.png")
    assert set(np.unique(out)) == {0, 255}
    np.testing.assert_array_equal(out[:, :, 0] == 255, g > 100)


def test_rgba_is_composited_over_black(tmp_path):
    a = np.zeros((2, 3, 4), np.uint8)
    a[..., 0] = 200                  # red stored everywhere
    a[0, 0, 3] = 0                   # fully transparent -> black, not red
    a[0, 1, 3] = 255                 # opaque -> red
    a[0, 2, 3] = 128                 # half -> half red
    a[1, :, 3] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.shape == (2, 3, 3)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == (200, 0, 0)
    assert abs(int(out[0, 2, 0]) - 100) <= 1 and out[0, 2, 1] == 0


def test_la_and_palette_with_transparency(tmp_path):
    la = np.zeros((1, 2, 2), np.uint8)
    la[0, :, 0] = 180
    la[0, 0, 1] = 0
    la[0, 1, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[0, 1]) == (180, 180, 180)

    p = Image.new("P", (4, 1))
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putdata([1, 1, 0, 1])
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (10, 200, 30) and tuple(out[0, 2]) == (0, 0, 0)
    p2 = Image.new("P", (2, 1))
    p2.putpalette([250, 100, 0] * 256)
    p2.save(tmp_path / "p2.gif")
    assert tuple(load_image(tmp_path / "p2.gif")[0, 1]) == (250, 100, 0)


def test_16bit_png_and_tiff_are_scaled_not_truncated(tmp_path):
    g = np.array([[0, 257 * 100, 32768, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g)
    cv2.imwrite(str(tmp_path / "g16.tif"), g)
    for name in ("g16.png", "g16.tif"):
        assert Image.open(tmp_path / name).mode.startswith("I")
        out = load_image(tmp_path / name)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out[0, :, 0], [0, 100, 128, 255])
    rgb16 = np.zeros((1, 2, 3), np.uint16)
    rgb16[0, 0] = (65535, 32768, 257)
    rgb16[0, 1] = (257 * 10, 0, 65535)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])       # cv2 writes BGR
    cv2.imwrite(str(tmp_path / "c16.tif"), rgb16[..., ::-1])
    for name in ("c16.png", "c16.tif"):
        out = load_image(tmp_path / name)
        np.testing.assert_allclose(out.astype(int), [[[255, 128, 1], [10, 0, 255]]], atol=1)


def test_exif_rotated_jpeg_is_upright(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)     # stored landscape: left half red, right half blue
    a[:, :40] = (255, 0, 0)
    a[:, 40:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6                        # "rotate 90 clockwise to display"
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (80, 40, 3)          # portrait after applying the orientation
    top, bottom = out[5, 20].astype(int), out[-5, 20].astype(int)
    assert top[0] > 200 and top[2] < 60      # stored-left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    exif[0x0112] = 3                        # 180 degrees
    im.save(tmp_path / "r3.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "r3.jpg")
    assert out.shape == (40, 80, 3) and out[20, 5, 2] > 200 and out[20, -5, 0] > 200


def test_cmyk_jpeg_and_tiff(tmp_path):
    im = Image.new("CMYK", (16, 8), (0, 255, 255, 0))        # pure red in CMYK
    im.save(tmp_path / "c.jpg", quality=95)
    im.save(tmp_path / "c.tif")
    for name in ("c.jpg", "c.tif"):
        assert Image.open(tmp_path / name).mode == "CMYK"
        out = load_image(tmp_path / name)
        assert out.shape == (8, 16, 3)
        r, g, b = out[4, 8].astype(int)
        assert r > 200 and g < 60 and b < 60, (name, r, g, b)


def test_srgb_icc_profile_is_left_alone(tmp_path):
    from PIL import ImageCms
    rgb = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb).save(tmp_path / "s.png", icc_profile=icc)
    assert Image.open(tmp_path / "s.png").info.get("icc_profile")
    np.testing.assert_array_equal(load_image(tmp_path / "s.png"), rgb)


# ---------------------------------------------------------------------------------- errors
def test_missing_and_directory(tmp_path):
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "nope.png")
    assert "does not exist" in _one_line(e.value)
    with pytest.raises(InputError) as e:
        load_image(tmp_path)
    assert "directory" in _one_line(e.value)


def test_text_empty_and_video_are_not_images(tmp_path):
    (tmp_path / "notes.png").write_text("hello, I am text\n" * 20)
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "notes.png")
    assert "not an image" in _one_line(e.value)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "empty.jpg")
    assert "empty" in _one_line(e.value)
    # a real MP4 passed where an image is expected
    import av
    vid = tmp_path / "clip.mp4"
    with av.open(str(vid), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 50, np.uint8), "rgb24")
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(InputError) as e:
        load_image(vid)
    msg = _one_line(e.value)
    assert "not an image" in msg and "video" in msg


def test_truncated_jpeg_and_png(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    for name in ("t.jpg", "t.png"):
        p = save_image(tmp_path / name, rgb)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError) as e:
            load_image(p)
        msg = _one_line(e.value)
        assert "truncated" in msg or "corrupt" in msg, msg


def test_huge_header_is_refused_before_decoding(tmp_path):
    p = _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    t0 = time.perf_counter()
    with pytest.raises(InputError) as e:
        load_image(p)
    assert time.perf_counter() - t0 < 1.0
    msg = _one_line(e.value)
    assert "100000x100000" in msg and "50,000,000" in msg
    # above our limit but below Pillow's own bomb limit: still our message
    p = _png_header_only(tmp_path / "big.png", 8000, 7000)
    with pytest.raises(InputError) as e:
        load_image(p)
    assert "8000x7000" in _one_line(e.value)
    assert probe_image(p) == (8000, 7000)
    # a custom limit
    save_image(tmp_path / "small.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "small.png", max_pixels=5000)
    assert "100x100" in _one_line(e.value) and "5,000" in _one_line(e.value)
    assert load_image(tmp_path / "small.png", max_pixels=None).shape == (100, 100, 3)


# ---------------------------------------------------------------------------------- save
def test_save_is_atomic_and_checks_its_target(tmp_path):
    rgb = np.full((10, 12, 3), 77, np.uint8)
    for ext in ("png", "jpg", "webp", "tif", "bmp"):
        p = save_image(tmp_path / f"x.{ext}", rgb)
        out = load_image(p)
        assert out.shape == (10, 12, 3) and abs(int(out[5, 5, 0]) - 77) <= 3
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]
    # overwrite in place keeps a valid file
    save_image(tmp_path / "x.png", np.zeros((3, 3, 3), np.uint8))
    assert load_image(tmp_path / "x.png").shape == (3, 3, 3)
    mode = os.stat(tmp_path / "x.png").st_mode & 0o777
    assert mode & 0o044, oct(mode)          # readable by others as with a normal open()
    save_image(tmp_path / "f.png", np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5))
    assert load_image(tmp_path / "f.png")[-1, -1, 0] == 255
    with pytest.raises(OutputError):
        save_image(tmp_path / "no" / "dir.png", rgb)
    with pytest.raises(OutputError):
        save_image(tmp_path / "x.unknownext", rgb)
    with pytest.raises(OutputError):
        save_image(tmp_path / "y.png", np.zeros((2, 2, 5), np.uint8))


# ---------------------------------------------------------------------------------- masks
def test_load_mask_grey_alpha_16bit_and_size_check(tmp_path):
    g = np.array([[0, 128, 255]], np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", (1, 3))
    assert m.dtype == np.float32 and m.shape == (1, 3)
    np.testing.assert_allclose(m, [[0, 128 / 255, 1]], atol=1e-6)
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, :, 3] = (0, 64, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    np.testing.assert_allclose(load_mask(tmp_path / "cut.png"), [[0, 64 / 255, 1]], atol=1e-6)
    cv2.imwrite(str(tmp_path / "m16.png"), np.array([[0, 32768, 65535]], np.uint16))
    np.testing.assert_allclose(load_mask(tmp_path / "m16.png"), [[0, 0.5, 1]], atol=1e-4)
    # shape as (H, W, 3) frame shape works too
    assert load_mask(tmp_path / "m.png", (1, 3, 3)).shape == (1, 3)
    Image.fromarray(np.zeros((50, 100), np.uint8)).save(tmp_path / "wrong.png")
    with pytest.raises(InputError) as e:
        load_mask(tmp_path / "wrong.png", (48, 64))
    msg = _one_line(e.value)
    assert "100x50" in msg and "64x48" in msg
    with pytest.raises(InputError):
        load_mask(tmp_path / "missing.png", (48, 64))
