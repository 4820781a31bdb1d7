"""Readers for harmonization datasets users may have on disk (none ships in a registry).

iHarmony4 (Cong et al., DoveNet) -- one folder per sub-dataset (HAdobe5k, HCOCO, HFlickr,
Hday2night)::

    ROOT/<sub>/composite_images/<name>_<k>_<j>.jpg   composite j of foreground k
    ROOT/<sub>/masks/<name>_<k>.png                  foreground k's mask
    ROOT/<sub>/real_images/<name>.jpg                the real photo
    ROOT/<sub>/<sub>_train.txt, <sub>_test.txt       one composite per line

A list line is a composite file name (``a0001_1_1.jpg``) or a path with the sub-folder
(``HAdobe5k/composite_images/a0001_1_1.jpg``, as in the combined ``ROOT/IHD_train.txt``, which
is read when present and no per-subset list is). ``ROOT`` may also be one sub-dataset folder.

FFHQH (PHNet's portrait set). Its README only says it "contains real images, foreground masks,
and synthesized composites"; the authors' released loader reads::

    ROOT/train_split.txt, ROOT/test_split.txt        one relative file name per line
    ROOT/comp/<line>                                 composite
    ROOT/alpha/<line>                                foreground mask
    REAL_ROOT/<line>                                 the real image: FFHQ's images1024x1024

and that is the layout assumed here. ``real_root`` defaults to the first of ``ROOT/real``,
``ROOT/real_images``, ``ROOT/images1024x1024``, ``ROOT/ffhq`` that exists. For other
paired sets (and if the split lists are missing) a generic layout is also accepted::

    ROOT/composites/ (or comp/, composite_images/)   composites
    ROOT/masks/      (or alpha/)                     masks, same file stem
    ROOT/real/       (or real_images/)               real images, same file stem

with every composite used (no split lists needed; ``<split>_split.txt`` honoured if present).
A composite stem ``<name>_<k>_<j>`` without a same-stem mask/real falls back to iHarmony4's
naming (mask ``<name>_<k>``, real ``<name>``).

Samples are dicts ``{"composite": (3,H,W), "mask": (1,H,W) in {0,1}, "real": (3,H,W),
"name": str}``, float in [0,1], masks binarised at 0.5. ``size=N`` resizes all three to NxN
(bicubic images, bilinear mask then threshold), as the published loaders do; ``size=None``
keeps each image's own size (batch them one by one).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from .masks import read_mask, read_rgb

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _find_with_ext(folder: Path, stem: str, prefer: Sequence[str] = (".jpg", ".png")) -> Path | None:
    for ext in tuple(prefer) + IMAGE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _load_triplet(comp: Path, mask: Path, real: Path, size: int | None) -> dict:
    import cv2

    c = read_rgb(comp)
    r = read_rgb(real)
    m = read_mask(mask)
    if size is not None:
        c = cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC)
        r = cv2.resize(r, (size, size), interpolation=cv2.INTER_CUBIC)
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
    else:
        h, w = c.shape[:2]
        if r.shape[:2] != (h, w):
            r = cv2.resize(r, (w, h), interpolation=cv2.INTER_CUBIC)
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0
    return {"composite": to_t(c), "real": to_t(r),
            "mask": torch.from_numpy((m > 0.5).astype(np.float32))[None], "name": comp.name}


class _Triplets(Dataset):
    def __init__(self, items: list[tuple[Path, Path, Path]], size: int | None, hflip: bool = False,
                 seed: int = 0):
        self.items = items
        self.size = size
        self.hflip = hflip
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        s = _load_triplet(*self.items[i], self.size)
        if self.hflip and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            for k in ("composite", "mask", "real"):
                s[k] = s[k].flip(-1)
        return s


# --------------------------------------------------------------------------------- iHarmony4


def _is_iharmony_subset(d: Path) -> bool:
    return (d / "composite_images").is_dir() and (d / "masks").is_dir() and (d / "real_images").is_dir()


def _iharmony_item(sub_dir: Path, comp_name: str) -> tuple[Path, Path, Path]:
    comp = sub_dir / "composite_images" / comp_name
    stem = Path(comp_name).stem
    parts = stem.rsplit("_", 2)
    if len(parts) != 3:
        raise InputError(f"iHarmony4 composite name '{comp_name}' is not <name>_<k>_<j>",
                         f"check the lists in {sub_dir}")
    name, k, _ = parts
    mask = _find_with_ext(sub_dir / "masks", f"{name}_{k}", (".png",))
    real = _find_with_ext(sub_dir / "real_images", name, (".jpg",))
    if not comp.is_file() or mask is None or real is None:
        missing = comp if not comp.is_file() else (sub_dir / "masks" / f"{name}_{k}.png" if mask is None
                                                   else sub_dir / "real_images" / f"{name}.jpg")
        raise InputError(f"iHarmony4 file missing: {missing}", "the dataset folder is incomplete")
    return comp, mask, real


class IHarmony4(_Triplets):
    """iHarmony4 ``split`` ("train" | "test") of ``subsets`` (default: all present)."""

    def __init__(self, root: str | os.PathLike, split: str = "test",
                 subsets: Sequence[str] | None = None, size: int | None = 256,
                 hflip: bool = False, seed: int = 0):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise InputError(f"dataset folder {root} does not exist", "check the path")
        if _is_iharmony_subset(root):
            sub_dirs = {root.name: root}
            base = root.parent
        else:
            base = root
            sub_dirs = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and _is_iharmony_subset(d)}
        if subsets is not None:
            unknown = [s for s in subsets if s not in sub_dirs]
            if unknown:
                raise InputError(f"iHarmony4 sub-dataset(s) {', '.join(unknown)} not in {root}",
                                 f"found: {', '.join(sub_dirs) or 'none'}")
            sub_dirs = {s: sub_dirs[s] for s in subsets}
        if not sub_dirs:
            raise InputError(f"{root} is not in the iHarmony4 layout (no <sub>/composite_images, "
                             "masks, real_images)", "see vidharm.training.folders for the layouts read")
        items: list[tuple[Path, Path, Path]] = []
        combined = base / f"IHD_{split}.txt"
        for sub, d in sub_dirs.items():
            lst = d / f"{sub}_{split}.txt"
            if lst.is_file():
                lines = lst.read_text().split()
            elif combined.is_file():
                lines = [ln for ln in combined.read_text().split() if ln.split("/")[0] == sub]
            else:
                raise InputError(f"no {split} list for {sub} ({lst} missing)",
                                 f"iHarmony4 folders come with {sub}_train.txt and {sub}_test.txt")
            for ln in lines:
                items.append(_iharmony_item(d, Path(ln).name))
        super().__init__(items, size, hflip, seed)
        self.subsets = list(sub_dirs)


# ------------------------------------------------------------------------------------ FFHQH


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


class FFHQH(_Triplets):
    """FFHQH (authors' layout: comp/, alpha/, real images in ``real_root``, split lists) or the
    generic composites/ masks/ real/ layout; see the module docstring."""

    COMP_DIRS = ("comp", "composites", "composite_images")
    MASK_DIRS = ("alpha", "masks")
    REAL_DIRS = ("real", "real_images", "images1024x1024", "ffhq")

    def __init__(self, root: str | os.PathLike, split: str = "test",
                 real_root: str | os.PathLike | None = None, size: int | None = 256,
                 hflip: bool = False, seed: int = 0):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise InputError(f"dataset folder {root} does not exist", "check the path")
        comp_dir = _first_dir(root, self.COMP_DIRS)
        mask_dir = _first_dir(root, self.MASK_DIRS)
        real_dir = Path(real_root).expanduser() if real_root else _first_dir(root, self.REAL_DIRS)
        if comp_dir is None or mask_dir is None:
            raise InputError(f"{root} is not in the FFHQH layout (comp/ and alpha/, or composites/ "
                             "and masks/)", "see vidharm.training.folders for the layouts read")
        if real_dir is None or not real_dir.is_dir():
            raise InputError(f"no real images for {root} (looked for {', '.join(self.REAL_DIRS)})",
                             "pass real_root: FFHQH keeps them in FFHQ's images1024x1024 folder")
        lst = root / f"{split}_split.txt"
        if lst.is_file():
            rel = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
        else:
            rel = sorted(str(p.relative_to(comp_dir)) for p in comp_dir.rglob("*")
                         if p.suffix.lower() in IMAGE_EXTS)
        items = []
        for r in rel:
            comp = comp_dir / r
            if not comp.is_file():
                raise InputError(f"FFHQH composite missing: {comp}", "the dataset folder is incomplete")
            items.append((comp, self._partner(mask_dir, r, (".png",), masks=True),
                          self._partner(real_dir, r, (".png", ".jpg"))))
        if not items:
            raise InputError(f"no composites in {comp_dir}", "the dataset folder is empty")
        super().__init__(items, size, hflip, seed)

    @staticmethod
    def _partner(folder: Path, rel: str, prefer, masks: bool = False) -> Path:
        p = folder / rel
        if p.is_file():
            return p
        rp = Path(rel)
        found = _find_with_ext(folder / rp.parent, rp.stem, prefer)
        if found is None:
            parts = rp.stem.rsplit("_", 2)
            if len(parts) == 3:  # iHarmony4-style naming
                found = _find_with_ext(folder / rp.parent, f"{parts[0]}_{parts[1]}" if masks else parts[0],
                                       prefer)
        if found is None:
            raise InputError(f"no match for {rel} in {folder}", "masks and real images must share the "
                             "composite's file name (or stem)")
        return found


# --------------------------------------------------------------------------------- detection


def detect_layout(root: str | os.PathLike) -> str | None:
    """"iharmony4", "ffhqh", or "photos" (a folder of plain images), else None."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    if _is_iharmony_subset(root) or any(_is_iharmony_subset(d) for d in root.iterdir() if d.is_dir()):
        return "iharmony4"
    if _first_dir(root, FFHQH.COMP_DIRS) and _first_dir(root, FFHQH.MASK_DIRS):
        return "ffhqh"
    if any(p.suffix.lower() in IMAGE_EXTS for p in root.rglob("*") if p.is_file()):
        return "photos"
    return None


def open_folder(root: str | os.PathLike, split: str = "test", size: int | None = 256, **kw) -> Dataset:
    """The dataset for ``root`` by its layout (see :func:`detect_layout`). A folder of photos
    gives deterministic synthetic composites (:func:`vidharm.training.data.photo_folder_pairs`)."""
    layout = detect_layout(root)
    if layout == "iharmony4":
        return IHarmony4(root, split=split, size=size, **kw)
    if layout == "ffhqh":
        return FFHQH(root, split=split, size=size, **kw)
    if layout == "photos":
        from .data import photo_folder_pairs
        return photo_folder_pairs(root, size=size or 256, **kw)
    raise InputError(f"{root} holds no dataset vidharm can read",
                     "expected the iHarmony4 or FFHQH layout, or a folder of photos")
