"""Person masks for the training photos, from the MediaPipe selfie segmentation model.

Masks are computed once per photo (MediaPipe Tasks ``ImageSegmenter`` in IMAGE mode, the
"general" 256x256 selfie model unless told otherwise) and cached as 8-bit PNGs holding the
confidence (0-255) in ``<mask_dir>/<sha256 of the photo file>.png``; ``<mask_dir>/index.json``
records each mask's foreground fraction (confidence > 0.5) and the model used. For the fetched
training data the mask folder is ``DATA_DIR/masks``. Users binarise at 0.5.

Photos whose mask is nearly empty (foreground fraction below ``min_fraction``, default 1 %) are
skipped: they have no usable person (e.g. the KPhotoAlbum demo pictures of landscapes).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .._fs import atomic_path, atomic_write_text, sha256_file  # noqa: F401  (re-exported)

MIN_FRACTION = 0.01
INDEX_NAME = "index.json"


# ------------------------------------------------------------------------------------------ io



def read_rgb(path: str | os.PathLike, short_side: int | None = None) -> np.ndarray:
    """Read an image as uint8 RGB (H,W,3): EXIF orientation applied, greyscale/alpha/palette
    converted; optionally downscaled (area) so that the SHORTER side is at most ``short_side``
    (never upscaled). JPEGs are decoded at a reduced scale when that is enough (fast)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if short_side and im.format == "JPEG":
            im.draft("RGB", (short_side, short_side))  # keeps both sides >= short_side
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        if short_side and min(im.size) > short_side:
            s = short_side / min(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                           Image.Resampling.BOX)
        return np.asarray(im, dtype=np.uint8).copy()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask PNG as float32 (H,W) in [0,1] (8-bit or 16-bit, any mode)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I"):
            a = np.asarray(im, dtype=np.float32)
            return np.clip(a / (65535.0 if a.max() > 255 else 255.0), 0, 1)
        if im.mode not in ("L", "1"):
            im = im.convert("L")
        a = np.asarray(im, dtype=np.float32)
        return a if im.mode == "1" else a / 255.0


def write_png_atomic(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _write_json_atomic(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


# --------------------------------------------------------------------------------- segmenter


class PersonSegmenter:
    """MediaPipe selfie segmentation in IMAGE mode: ``confidence(rgb) -> float32 (H,W)``."""

    def __init__(self, model: str = "general"):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        from ..assets import segmentation_model_path

        self._mp = mp
        self.model = model
        self.model_path = segmentation_model_path(model)
        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False)
        self._seg = vision.ImageSegmenter.create_from_options(options)

    def confidence(self, rgb: np.ndarray) -> np.ndarray:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        result = self._seg.segment(image)
        conf = np.array(result.confidence_masks[0].numpy_view(), dtype=np.float32, copy=True)
        if conf.ndim == 3:
            conf = conf[..., 0]
        return np.clip(conf, 0.0, 1.0)

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class MaskInfo:
    image: Path
    sha256: str
    mask: Path
    fraction: float     # share of pixels with confidence > 0.5

    def usable(self, min_fraction: float = MIN_FRACTION) -> bool:
        return self.fraction >= min_fraction


def mask_path_for(mask_dir: Path, sha256: str) -> Path:
    return Path(mask_dir) / f"{sha256}.png"


def _load_index(mask_dir: Path) -> dict:
    p = Path(mask_dir) / INDEX_NAME
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def ensure_masks(images: Iterable[str | os.PathLike], mask_dir: str | os.PathLike,
                 model: str = "general", segmenter: PersonSegmenter | None = None,
                 sha256s: dict | None = None, force: bool = False,
                 progress: Callable[[str], None] | None = None) -> list[MaskInfo]:
    """Masks for ``images`` (cached under ``mask_dir`` by the photo's sha256), computing only
    the missing ones. Returns one :class:`MaskInfo` per image, in order."""
    mask_dir = Path(mask_dir)
    index = _load_index(mask_dir)
    out: list[MaskInfo] = []
    owned = None
    changed = False
    try:
        for img in images:
            img = Path(img)
            sha = (sha256s or {}).get(str(img)) or sha256_file(img)
            mp_ = mask_path_for(mask_dir, sha)
            entry = index.get(sha)
            if not force and entry is not None and mp_.is_file() and entry.get("model") == model:
                out.append(MaskInfo(img, sha, mp_, float(entry["fraction"])))
                continue
            if segmenter is None:
                segmenter = owned = PersonSegmenter(model)
            rgb = read_rgb(img)
            conf = segmenter.confidence(rgb)
            write_png_atomic(mp_, np.round(conf * 255).astype(np.uint8))
            frac = float((conf > 0.5).mean())
            index[sha] = {"fraction": frac, "model": model, "image": img.name,
                          "size": [int(rgb.shape[1]), int(rgb.shape[0])]}
            changed = True
            if progress:
                progress(f"mask {img.name}: {100 * frac:.1f}% person")
            out.append(MaskInfo(img, sha, mp_, frac))
    finally:
        if owned is not None:
            owned.close()
        if changed:
            _write_json_atomic(mask_dir / INDEX_NAME, index)
    return out


# ------------------------------------------------------------------------- the fetched data


@dataclass(frozen=True)
class PhotoRecord:
    """A training photo with its person mask."""
    image: Path
    mask: Path
    source: str
    sha256: str
    fraction: float


def read_manifest(data_dir: str | os.PathLike) -> dict:
    from ..errors import InputError

    p = Path(data_dir).expanduser() / "manifest.json"
    if not p.is_file():
        raise InputError(f"no training data in {Path(data_dir).expanduser()} (manifest.json missing)",
                         "run 'python scripts/fetch_training_data.py' first")
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {p} ({exc})", "run scripts/fetch_training_data.py --force") from None


def manifest_files(data_dir: str | os.PathLike, kind: str) -> list[dict]:
    """Manifest entries of ``kind`` ("photo" | "background") whose files exist."""
    data_dir = Path(data_dir).expanduser()
    return [e for e in read_manifest(data_dir)["files"]
            if e["kind"] == kind and (data_dir / e["file"]).is_file()]


def compute_masks(data_dir: str | os.PathLike, model: str = "general", force: bool = False,
                  min_fraction: float = MIN_FRACTION,
                  progress: Callable[[str], None] | None = None) -> list[PhotoRecord]:
    """Person masks for every photo of the fetched data (``DATA_DIR/masks``); returns the
    usable photos (mask fraction >= ``min_fraction``)."""
    data_dir = Path(data_dir).expanduser()
    entries = manifest_files(data_dir, "photo")
    paths = [data_dir / e["file"] for e in entries]
    shas = {str(data_dir / e["file"]): e["sha256"] for e in entries}
    infos = ensure_masks(paths, data_dir / "masks", model=model, sha256s=shas, force=force,
                         progress=progress)
    out = []
    for e, info in zip(entries, infos):
        if info.usable(min_fraction):
            out.append(PhotoRecord(info.image, info.mask, e["source"], info.sha256, info.fraction))
        elif progress:
            progress(f"skipped {e['file']}: mask nearly empty ({100 * info.fraction:.2f}%)")
    return out
