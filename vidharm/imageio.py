"""Still-image input/output: backgrounds, mattes, stills.

:func:`load_image` always returns uint8 RGB ``(H, W, 3)``, whatever the file holds:

- greyscale (1-bit, 8-bit, 16-bit, 32-bit int/float) -> replicated to 3 channels;
- palette images -> their colours (with their transparency, if any, as alpha);
- images with alpha (RGBA, LA, PA, palette + tRNS) -> **composited over black**
  (``rgb * alpha``): transparent parts come out black, never as whatever colour happened to be
  stored under alpha 0. Use :func:`load_mask` to read an alpha matte;
- 16-bit PNG/TIFF -> scaled to 8 bits with rounding (``v * 255 / 65535``), not truncated;
- JPEG/TIFF/... with an EXIF orientation -> rotated/flipped upright (as viewers show it);
- CMYK (and other colour spaces) -> RGB, through the embedded ICC profile when there is one;
  non-sRGB ICC profiles of RGB images (Display P3 photos...) are converted to sRGB too.

Every problem is an :class:`~vidharm.errors.InputError` with a one-line message: missing file,
a directory, not an image (a text file, a video...), truncated/corrupt data, or an image whose
header claims more than ``max_pixels`` pixels (checked before anything is decoded).
"""
from __future__ import annotations

import io
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, OutputError

__all__ = ["load_image", "save_image", "load_mask", "probe_image", "DEFAULT_MAX_PIXELS",
           "VIDEO_EXTENSIONS"]

DEFAULT_MAX_PIXELS = 50_000_000
VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg",
                    ".mpeg", ".ts", ".mts", ".m2ts", ".3gp", ".ogv", ".y4m"}
_PIL_LIMIT_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------- opening
def _check_path(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} '{p}' does not exist", "check the path")
    if p.is_dir():
        raise InputError(f"{what} '{p}' is a directory, not an image file",
                         "give the path of an image file (PNG, JPEG, TIFF, WebP...)")
    from ._fs import regular_file_stat
    regular_file_stat(p, what)      # a FIFO or a device: refused before anything opens it
    return p


def _open(p: Path, what: str) -> Image.Image:
    """Open (header only). Pillow's own decompression-bomb limit is side-stepped so that our
    ``max_pixels`` check, which reports the real size, is the one that applies."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                return Image.open(p)
            except Image.DecompressionBombError:
                # header parse only, under a lock; the size is checked by the caller
                with _PIL_LIMIT_LOCK:
                    old = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        return Image.open(p)
                    finally:
                        Image.MAX_IMAGE_PIXELS = old
    except UnidentifiedImageError:
        hint = "give a PNG, JPEG, TIFF, WebP or BMP file"
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            hint = ("this looks like a video; videos are accepted as a background "
                    "(--background clip.mp4), not as an image")
        elif p.stat().st_size == 0:
            raise InputError(f"{what} '{p}' is empty (0 bytes)", "give a valid image file") \
                from None
        raise InputError(f"{what} '{p}' is not an image that can be read", hint) from None
    except PermissionError:
        raise InputError(f"{what} '{p}' cannot be read (permission denied)",
                         "check the file's permissions") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{what} '{p}' is not a readable image ({_short(exc)})",
                         "give a valid PNG, JPEG, TIFF, WebP or BMP file") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def _check_size(im: Image.Image, p: Path, what: str, max_pixels: int | None) -> None:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise InputError(f"{what} '{p}' has an invalid size {w}x{h}", "give a valid image file")
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(
            f"{what} '{p}' is too large: {w}x{h} = {w * h:,} pixels, the limit is "
            f"{max_pixels:,} pixels",
            "scale the image down first (or raise the limit if you trust the file)")


def _decode(im: Image.Image, p: Path, what: str) -> Image.Image:
    """Decode the pixels (first frame) and apply the EXIF orientation."""
    try:
        im.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except MemoryError:
        raise InputError(f"{what} '{p}' is too large to decode in memory",
                         "scale the image down first") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors...
        msg = _short(exc)
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise InputError(f"{what} '{p}' is truncated: the image data ends early",
                             "the file is incomplete: copy or download it again") from None
        raise InputError(f"{what} '{p}' is corrupt or unsupported ({msg})",
                         "re-save it as PNG or JPEG") from None
    try:
        orientation = im.getexif().get(0x0112, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            im = ImageOps.exif_transpose(im) or im
    except Exception:   # a broken EXIF block must not stop us: keep the stored orientation
        pass
    return im


def probe_image(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) if ``path`` is an image Pillow can identify, else None (no decoding)."""
    try:
        p = Path(path).expanduser()
        if not p.is_file():           # a FIFO would block Image.open forever
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(p) as im:
                    return im.size
            except Image.DecompressionBombError:
                with _PIL_LIMIT_LOCK:
                    old = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        with Image.open(p) as im:
                            return im.size
                    finally:
                        Image.MAX_IMAGE_PIXELS = old
    except Exception:
        return None


# ---------------------------------------------------------------------------------- conversion
def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale a single-band array of any depth to uint8."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16 or (a.dtype.kind in "iu" and a.size and a.min() >= 0
                                and a.max() <= 65535):
        # 16-bit (PNG "I;16" or "I" holding 0..65535): v * 255 / 65535 = v / 257, rounded
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    f = a.astype(np.float32)
    if a.dtype.kind == "f":
        hi = float(np.nanmax(f)) if f.size else 1.0
        scale = 255.0 if hi <= 1.0 else (1.0 if hi <= 255.0 else 255.0 / hi)
    else:   # 32-bit integers beyond 16 bits: stretch to the data's range
        lo, hi = float(f.min()), float(f.max())
        f -= lo
        scale = 255.0 / max(hi - lo, 1.0)
    return np.clip(np.nan_to_num(f) * scale + 0.5, 0, 255).astype(np.uint8)


_SRGB_COLORANTS = ((0.4360, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7139))


def _is_srgb(profile) -> bool:
    """True when an RGB ICC profile has sRGB's primaries (D50-adapted colorants): such photos
    (most of them, whatever the profile is called: "sRGB IEC61966-2.1", "c2"...) need no
    conversion."""
    try:
        p = profile.profile
        got = (p.red_colorant[0], p.green_colorant[0], p.blue_colorant[0])
        return all(abs(a - b) < 0.003 for g, s in zip(got, _SRGB_COLORANTS) for a, b in zip(g, s))
    except Exception:
        return False


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    """Convert through the embedded ICC profile to sRGB, when there is a profile and it is not
    sRGB already (CMYK, Display P3, Adobe RGB...); otherwise return ``im`` unchanged."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        from PIL import ImageCms
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode != "CMYK" and _is_srgb(src):
            return im
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"),
                                         outputMode=out_mode)
    except Exception:   # unusual or broken profile: fall back to Pillow's plain conversion
        return im


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("1", "L") and "transparency" in im.info:
        im = im.convert("LA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    im = _icc_to_srgb(im)
    mode = im.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F", "1", "L"):
        g = _to_uint8(np.asarray(im))
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if mode in ("LA", "La", "RGBA", "RGBa"):
        a = np.asarray(im)
        premult = mode in ("La", "RGBa")
        colour = a[:, :, :1] if mode in ("LA", "La") else a[:, :, :3]
        alpha = a[:, :, -1:]
        if premult:
            out = colour
        else:   # composite over black: rgb * alpha / 255, rounded
            out = ((colour.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
        if out.shape[2] == 1:
            out = np.repeat(out, 3, axis=2)
        return np.ascontiguousarray(out)
    if mode != "RGB":
        im = im.convert("RGB")   # CMYK without profile, YCbCr, LAB, HSV, RGBX...
    return np.array(im, dtype=np.uint8)


# ---------------------------------------------------------------------------------- public
def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               what: str = "image") -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)`` (see the module docs for the conversions:
    alpha is composited over black, 16-bit is scaled, EXIF orientation applied).

    ``max_pixels`` (width x height, checked on the header before decoding; None = no limit)
    guards against decompression bombs. ``what`` names the file in error messages
    ("background", "mask"...). Raises :class:`InputError` for every unusable file.
    """
    p = _check_path(path, what)
    im = _open(p, what)
    try:
        _check_size(im, p, what, max_pixels)
        im2 = _decode(im, p, what)
        try:
            return _to_rgb_array(im2)
        except MemoryError:
            raise InputError(f"{what} '{p}' is too large to convert in memory",
                             "scale the image down first") from None
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{what} '{p}' has an unsupported pixel format {im2.mode} "
                             f"({_short(exc)})", "re-save it as an 8-bit PNG or JPEG") from None
    finally:
        im.close()


def load_mask(path: str | os.PathLike, shape: tuple[int, ...] | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a matte as float32 ``(H, W)`` in [0, 1] (1 = person).

    A greyscale file gives its grey levels (8-bit /255, 16-bit /65535); a colour file its
    luminance; a file with an alpha channel that is not fully opaque (a cut-out PNG) gives its
    ALPHA. ``shape`` (H, W[, C]) is the frame it belongs to: a matte of another size is an
    :class:`InputError` naming both sizes (it is never silently resized).
    """
    p = _check_path(path, "mask")
    im = _open(p, "mask")
    try:
        _check_size(im, p, "mask", max_pixels)
        im = _decode(im, p, "mask")
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "L")
            mode = im.mode
        elif mode == "PA":
            im = im.convert("RGBA")
            mode = im.mode
        if mode in ("LA", "La", "RGBA", "RGBa", "PA"):
            a = np.asarray(im)
            alpha = a[:, :, -1]
            if alpha.min() < 255:
                m = alpha.astype(np.float32) / 255.0
            else:
                m = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        elif mode in ("I;16", "I;16L", "I;16B", "I;16N") or mode == "I":
            a = np.asarray(im)
            m = a.astype(np.float32) / (65535.0 if a.max(initial=0) > 255 or mode != "I"
                                        else 255.0)
        elif mode == "F":
            a = np.asarray(im, dtype=np.float32)
            m = a / (255.0 if a.size and np.nanmax(a) > 1.0 else 1.0)
        else:
            m = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    finally:
        im.close()
    m = np.clip(np.nan_to_num(m), 0.0, 1.0).astype(np.float32, copy=False)
    if shape is not None:
        h, w = int(shape[0]), int(shape[1])
        if m.shape != (h, w):
            raise InputError(
                f"mask '{p}' is {m.shape[1]}x{m.shape[0]} but the frame is {w}x{h}",
                "give a mask with the same width and height as the image or video")
    return np.ascontiguousarray(m)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def save_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write ``rgb`` (uint8 (H, W, 3) RGB, (H, W) grey, (H, W, 4) RGBA; float arrays are taken
    as 0..1) atomically: to a temporary file in the same folder, then ``os.replace``. The format
    follows the extension (.png, .jpg, .webp, .tif, .bmp...). Returns the path."""
    p = Path(path).expanduser()
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise OutputError(f"cannot tell the image format of '{p}' from its extension",
                          "use .png, .jpg, .webp, .tif or .bmp")
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise OutputError(f"cannot save an array of shape {a.shape} as an image",
                          "pass (H, W), (H, W, 3) or (H, W, 4)")
    im = Image.fromarray(np.ascontiguousarray(a))
    if fmt in ("JPEG", "BMP") and im.mode == "RGBA":
        im = im.convert("RGB")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"folder '{parent}' does not exist", "create it or choose another path")
    kwargs = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            im.save(f, format=fmt, **kwargs)
        try:   # mkstemp makes the file 0600; give it the usual umask-based permissions
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError:  # pragma: no cover
            pass
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write '{p}' ({_short(exc)})",
                          "check the folder exists, is writable and has space") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
