"""Training: losses, synthetic data, folder readers, the training loop, resume and DDP.

Everything runs on data the tests make themselves (synthetic photos; frames of the sample
clip), never on the Debian photos, which CI does not have.
"""
from __future__ import annotations

import csv
import faulthandler
import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

torch.set_num_threads(1)

from vidharm.errors import InputError  # noqa: E402
from vidharm.training import losses  # noqa: E402
from vidharm.training.data import (ClipFrames, FFHQHAlteration, SyntheticPairs,  # noqa: E402
                                   TemporalPairs, split_by_source)
from vidharm.training.masks import PhotoRecord, read_mask, sha256_file  # noqa: E402


# ------------------------------------------------------------------------------ helpers


class StandIn(nn.Module):
    """A tiny harmonizer with the models' interface: forward(image, mask) -> (B,3,H,W) in [0,1]."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, image, mask):
        x = torch.cat([image, mask], 1)
        return torch.sigmoid(self.c2(torch.relu(self.c1(x))))


def make_photo(folder: Path, name: str, seed: int, h: int = 72, w: int = 96, source: str = "synthetic") -> PhotoRecord:
    """A smooth textured 'photo' with an ellipse 'person' and its mask (PNG)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    img = base + 40 * np.sin(xx[..., None] / rng.uniform(5, 15) + rng.uniform(0, 6, 3)) \
        + 20 * np.cos(yy[..., None] / rng.uniform(4, 12))
    cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.35, 0.65)
    ell = ((yy - cy) / (h * 0.35)) ** 2 + ((xx - cx) / (w * 0.2)) ** 2 < 1
    img[ell] = rng.uniform(60, 220, 3) + 15 * np.sin(yy[ell, None] / 3.0)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    ip, mp_ = folder / f"{name}.png", folder / f"{name}_mask.png"
    Image.fromarray(img).save(ip)
    Image.fromarray((ell * 255).astype(np.uint8)).save(mp_)
    return PhotoRecord(ip, mp_, source, sha256_file(ip), float(ell.mean()))


def make_background(folder: Path, name: str, seed: int, h: int = 80, w: int = 120) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.uniform(30, 220, 3) + 30 * np.sin(xx[..., None] / 7 + yy[..., None] / 11 + rng.uniform(0, 6, 3))
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
    return p


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    photos = [make_photo(d, f"p{i}", i, source=f"src{i % 3}") for i in range(6)]
    bgs = [make_background(d / "bg", f"b{i}", 100 + i) for i in range(3)]
    return photos, bgs


# ------------------------------------------------------------------------------ losses


def test_psnr_loss_identical_is_small_and_finite():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    m = (torch.rand(2, 1, 16, 16) > 0.5).float()
    t = losses.phnet_loss(x, x.detach().clone(), m)
    assert math.isfinite(float(t.total.detach())) and math.isfinite(float(t.psnr.detach()))
    assert float(t.psnr.detach()) <= 0.5 + 1e-6       # PSNR capped at 200 dB -> 100/200
    assert float(t.fn_mse.detach()) == 0.0 and float(t.grad.detach()) == 0.0
    t.total.backward()
    assert torch.isfinite(x.grad).all()


def test_psnr_loss_value():
    real = torch.full((2, 3, 8, 8), 0.4)
    pred = real + 0.1                          # MSE 0.01 -> PSNR 20 dB -> L = 5
    assert float(losses.psnr_batch(pred, real)) == pytest.approx(20.0, abs=1e-4)
    assert float(losses.psnr_loss(pred, real)) == pytest.approx(100 / (20 + 1e-7), rel=1e-5)


def test_fn_mse_formula():
    g = torch.Generator().manual_seed(0)
    pred, real = torch.rand(2, 3, 20, 20, generator=g), torch.rand(2, 3, 20, 20, generator=g)
    mask = torch.zeros(2, 1, 20, 20)
    mask[0, :, :15, :] = 1          # 300 px
    mask[1, :, :5, :10] = 1         # 50 px -> clamped to 100
    d = ((pred - real) ** 2).numpy()
    expect = np.mean([d[0].sum() / (3 * 300), d[1].sum() / (3 * 100)])
    assert float(losses.fn_mse(pred, real, mask)) == pytest.approx(expect, rel=1e-5)


def test_per_image_psnr_loss_weights_every_image_alike():
    """The per-image term is -mean PSNR_i / 10 (MSE floored at PER_IMAGE_FLOOR): an image
    needing a small change counts as much as one needing a big one, unlike the pooled term."""
    from vidharm.training.losses import PER_IMAGE_FLOOR, per_image_psnr_loss, psnr_loss
    real = torch.full((2, 3, 8, 8), 0.5)
    pred = real.clone()
    pred[0] += 0.1                                   # 20 dB
    pred[1] += 0.001                                 # 60 dB: floored at 10*log10(1/floor)
    cap = -10 * math.log10(PER_IMAGE_FLOOR)
    assert float(per_image_psnr_loss(pred, real)) == pytest.approx(-(20 + cap) / 2 / 10, abs=1e-4)
    pred.requires_grad_(True)
    g_img = torch.autograd.grad(per_image_psnr_loss(pred, real), pred)[0]
    g_pool = torch.autograd.grad(psnr_loss(pred, real), pred)[0]
    # pooled: the 20-dB image takes almost all the gradient; per image: the floored one none,
    # and the 20-dB image's gradient does not depend on how good the other one is
    assert g_pool[1].abs().max() < 0.02 * g_pool[0].abs().max()
    assert float(g_img[1].abs().max()) == 0.0 and float(g_img[0].abs().max()) > 0


def test_grad_loss_formula_and_total_weights():
    g = torch.Generator().manual_seed(1)
    pred, real = torch.rand(1, 3, 6, 7, generator=g), torch.rand(1, 3, 6, 7, generator=g)
    mask = (torch.rand(1, 1, 6, 7, generator=g) > 0.4).float()
    p, r = (pred * mask).numpy(), (real * mask).numpy()
    gx = np.abs(np.diff(p, axis=-1) - np.diff(r, axis=-1)).mean()
    gy = np.abs(np.diff(p, axis=-2) - np.diff(r, axis=-2)).mean()
    assert float(losses.grad_loss(pred, real, mask)) == pytest.approx((gx + gy) / 2, rel=1e-5)
    t = losses.phnet_loss(pred, real, mask)
    assert float(t.total) == pytest.approx(0.2 * float(t.psnr) + 0.01 * float(t.fn_mse) + 0.01 * float(t.grad),
                                           rel=1e-6)


def test_temporal_consistency_term():
    real = torch.rand(2, 2, 3, 8, 8)
    mask = torch.zeros(2, 2, 1, 8, 8)
    mask[:, 0, :, :4] = 1
    mask[:, 1, :, 2:6] = 1                       # union: rows 0-5
    pred = real + 0.2                            # same change as the real frames
    assert float(losses.temporal_consistency(pred, real, mask)) == pytest.approx(0.0, abs=1e-6)
    pred2 = real.clone()
    pred2[:, 1] += 0.1                           # flicker of 0.1 everywhere
    assert float(losses.temporal_consistency(pred2, real, mask)) == pytest.approx(0.1, rel=1e-4)


# ------------------------------------------------------------------------------ data


def test_alteration_same_params_and_seeded():
    alt = FFHQHAlteration()
    x = torch.rand(1, 3, 24, 24)
    pair = alt(torch.cat([x, x]), seed=5)
    assert torch.equal(pair[0], pair[1])                   # same parameters for every image
    assert torch.equal(alt(x, seed=5), alt(x, seed=5))     # deterministic given the seed
    outs = [alt(x, seed=s) for s in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert all(o.min() >= 0 and o.max() <= 1 for o in outs)


def test_synthetic_pairs_shapes_determinism_and_foreground_only(photo_set):
    photos, bgs = photo_set
    ds = SyntheticPairs(photos, bgs, size=32, length=24, seed=3, p_transplant=0.4)
    kinds = set()
    changed = 0
    for i in range(len(ds)):
        s = ds[i]
        assert s["composite"].shape == (3, 32, 32) and s["real"].shape == (3, 32, 32)
        assert s["mask"].shape == (1, 32, 32)
        assert set(torch.unique(s["mask"]).tolist()) <= {0.0, 1.0}
        outside = s["mask"].expand(3, -1, -1) == 0
        assert torch.equal(s["composite"][outside], s["real"][outside])  # background untouched
        changed += int((s["composite"] - s["real"]).abs().max() > 1e-3)
        kinds.add(s["kind"])
    assert changed >= len(ds) // 2          # the foreground is altered in most samples
    assert kinds == {0, 1}                  # photos and transplants
    again = SyntheticPairs(photos, bgs, size=32, length=24, seed=3, p_transplant=0.4)
    for i in (0, 7, 23):
        a, b = ds[i], again[i]
        assert all(torch.equal(a[k], b[k]) for k in ("composite", "mask", "real"))
    other = SyntheticPairs(photos, bgs, size=32, length=24, seed=4, p_transplant=0.4)
    assert not torch.equal(other[0]["composite"], ds[0]["composite"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["composite"], again[0]["composite"])


def test_transplant_target_is_background(photo_set):
    photos, bgs = photo_set
    ds = SyntheticPairs(photos, bgs, size=32, length=6, seed=0, p_transplant=1.0, scale=(1.0, 1.0),
                        hflip=False)
    bg_means = [np.asarray(Image.open(b)).mean() / 255 for b in bgs]
    for i in range(len(ds)):
        s = ds[i]
        assert s["kind"] == 1 and s["mask"].mean() > 0
        assert min(abs(float(s["real"].mean()) - m) for m in bg_means) < 0.08


def test_split_by_source(photo_set):
    photos, _ = photo_set
    tr, va = split_by_source(photos, ["src1"])
    assert {p.source for p in va} == {"src1"} and "src1" not in {p.source for p in tr}
    assert len(tr) + len(va) == len(photos)


def _fake_clip(folder: Path, frames: list[np.ndarray], masks: list[np.ndarray]) -> ClipFrames:
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    for t, (f, m) in enumerate(zip(frames, masks)):
        Image.fromarray(f).save(folder / "frames" / f"{t:05d}.jpg", quality=95)
        Image.fromarray(m).save(folder / "masks" / f"{t:05d}.png")
    return ClipFrames(folder.name, folder, tuple(float((m > 127).mean()) for m in masks), 25.0)


def test_temporal_pairs_share_crop_flip_and_alteration(tmp_path):
    rec = make_photo(tmp_path / "src", "f", 9, h=64, w=80)
    frame = np.asarray(Image.open(rec.image))
    mask = np.asarray(Image.open(rec.mask))
    clip = _fake_clip(tmp_path / "clip", [frame] * 4, [mask] * 4)   # a still "clip"
    ds = TemporalPairs([clip], size=32, max_gap=2, length=8, seed=1)
    for i in range(len(ds)):
        s = ds[i]
        assert s["composite"].shape == (2, 3, 32, 32) and s["mask"].shape == (2, 1, 32, 32)
        t0, t1 = s["frames"].tolist()
        assert 1 <= t1 - t0 <= 2
        # identical frames -> identical composites: same crop, flip and alteration parameters
        assert torch.equal(s["composite"][0], s["composite"][1])
    assert any((ds[i]["composite"] - ds[i]["real"]).abs().max() > 1e-3 for i in range(len(ds)))
    b = ds[3]
    assert torch.equal(b["composite"], TemporalPairs([clip], size=32, length=8, seed=1)[3]["composite"])


def test_prepare_clip_and_masks_from_sample_clip(tmp_path):
    pytest.importorskip("mediapipe")
    from vidharm import assets
    from vidharm.errors import AssetError
    from vidharm.training.data import prepare_clip
    from vidharm.training.masks import compute_masks, ensure_masks
    try:
        assets.path("sample-clip"), assets.path("selfie-general")
    except AssetError as exc:
        pytest.skip(f"assets unavailable: {exc}")
    clip = prepare_clip("sample-clip", tmp_path / "clips", max_frames=4, short_side=180)
    assert len(clip) == 4 and all(f > 0.05 for f in clip.fractions)   # a person in every frame
    again = prepare_clip("sample-clip", tmp_path / "clips", max_frames=4, short_side=180)
    assert again.fractions == clip.fractions                          # read from the cache
    pair = TemporalPairs([clip], size=32, length=2, seed=0)[0]
    assert pair["composite"].shape == (2, 3, 32, 32)

    # the photo pipeline: a manifest, masks keyed by sha256, empty masks skipped
    data = tmp_path / "data"
    (data / "photos" / "clipframes").mkdir(parents=True)
    files = []
    for t in range(2):
        dst = data / "photos" / "clipframes" / f"f{t}.jpg"
        dst.write_bytes(clip.frame_path(t).read_bytes())
        files.append(dst)
    blank = data / "photos" / "clipframes" / "blank.png"
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(blank)
    files.append(blank)
    manifest = {"manifest_version": 1, "sources": {}, "files": [
        {"file": str(p.relative_to(data)), "kind": "photo", "source": "clipframes",
         "sha256": sha256_file(p)} for p in files]}
    (data / "manifest.json").write_text(json.dumps(manifest))
    recs = compute_masks(data)
    assert [r.image.name for r in recs] == ["f0.jpg", "f1.jpg"]       # the blank one is skipped
    assert all(r.mask == data / "masks" / f"{r.sha256}.png" and r.mask.is_file() for r in recs)
    m = read_mask(recs[0].mask)
    assert m.shape == (180, 320) and 0.05 < (m > 0.5).mean() < 0.95
    before = recs[0].mask.stat().st_mtime_ns
    ensure_masks([recs[0].image], data / "masks")                     # cached: not recomputed
    assert recs[0].mask.stat().st_mtime_ns == before


# ------------------------------------------------------------------------------ folders


def _save(p: Path, a: np.ndarray) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(p)


def _rand_img(rng, h=40, w=48):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rand_mask(rng, h=40, w=48):
    m = np.zeros((h, w), np.uint8)
    m[rng.integers(0, 10):rng.integers(20, 40), rng.integers(0, 10):rng.integers(20, 48)] = 255
    return m


def build_iharmony4(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    expect = {}
    for sub, prefix in (("HAdobe5k", "a"), ("HFlickr", "f")):
        names = []
        for n in range(2):
            name = f"{prefix}{n:04d}"
            _save(root / sub / "real_images" / f"{name}.jpg", _rand_img(rng))
            for k in (1, 2):
                _save(root / sub / "masks" / f"{name}_{k}.png", _rand_mask(rng))
                for j in (1, 2):
                    comp = f"{name}_{k}_{j}.jpg"
                    _save(root / sub / "composite_images" / comp, _rand_img(rng))
                    names.append(comp)
        (root / sub / f"{sub}_train.txt").write_text("\n".join(names[:6]) + "\n")
        (root / sub / f"{sub}_test.txt").write_text("\n".join(names[6:]) + "\n")
        expect[sub] = names
    return expect


def test_iharmony4_reader(tmp_path):
    from vidharm.training.folders import IHarmony4, detect_layout
    expect = build_iharmony4(tmp_path / "ih")
    assert detect_layout(tmp_path / "ih") == "iharmony4"
    tr = IHarmony4(tmp_path / "ih", "train", size=32)
    te = IHarmony4(tmp_path / "ih", "test", size=None)
    assert len(tr) == 12 and len(te) == 4
    s = tr[0]
    assert s["composite"].shape == (3, 32, 32) and s["mask"].shape == (1, 32, 32)
    assert set(torch.unique(s["mask"]).tolist()) <= {0.0, 1.0}
    assert te[0]["composite"].shape == (3, 40, 48)
    # the right files are paired: a0000_2_1 -> masks/a0000_2.png, real_images/a0000.jpg
    name = expect["HAdobe5k"][2]
    assert name == "a0000_2_1.jpg" and tr[2]["name"] == name
    real = np.asarray(Image.open(tmp_path / "ih" / "HAdobe5k" / "real_images" / "a0000.jpg")) / 255
    mask = np.asarray(Image.open(tmp_path / "ih" / "HAdobe5k" / "masks" / "a0000_2.png")) > 127
    full = IHarmony4(tmp_path / "ih", "train", size=None)[2]
    assert np.allclose(full["real"].permute(1, 2, 0).numpy(), real, atol=1e-6)
    assert np.array_equal(full["mask"][0].numpy() > 0.5, mask)
    one = IHarmony4(tmp_path / "ih" / "HFlickr", "test")     # a single sub-dataset folder
    assert len(one) == 2
    (tmp_path / "ih" / "HFlickr" / "masks" / "f0001_2.png").unlink()
    with pytest.raises(InputError):
        IHarmony4(tmp_path / "ih", "test")


def test_ffhqh_reader_and_generic_layout(tmp_path):
    from vidharm.training.folders import FFHQH, detect_layout
    rng = np.random.default_rng(1)
    root, ffhq = tmp_path / "ffhqh", tmp_path / "ffhq" / "images1024x1024"
    names = [f"{i:05d}.png" for i in range(5)]
    for n in names:
        _save(root / "comp" / n, _rand_img(rng, 32, 32))
        _save(root / "alpha" / n, _rand_mask(rng, 32, 32))
        _save(ffhq / n, _rand_img(rng, 64, 64))
    (root / "train_split.txt").write_text("\n".join(names[:3]))
    (root / "test_split.txt").write_text("\n".join(names[3:]))
    assert detect_layout(root) == "ffhqh"
    with pytest.raises(InputError):
        FFHQH(root, "train")                                   # no real images without real_root
    tr = FFHQH(root, "train", real_root=ffhq, size=16)
    te = FFHQH(root, "test", real_root=ffhq, size=None)
    assert len(tr) == 3 and len(te) == 2
    assert tr[0]["real"].shape == (3, 16, 16)
    assert te[0]["real"].shape == (3, 32, 32)                  # real resized to the composite
    # generic: composites/ masks/ real/ with matching stems (different extensions)
    g = tmp_path / "generic"
    for i in range(3):
        _save(g / "composites" / f"x{i}.jpg", _rand_img(rng))
        _save(g / "masks" / f"x{i}.png", _rand_mask(rng))
        _save(g / "real" / f"x{i}.jpg", _rand_img(rng))
    gen = FFHQH(g, "test", size=24)
    assert len(gen) == 3 and gen[1]["name"] == "x1.jpg" and gen[1]["mask"].shape == (1, 24, 24)


# ------------------------------------------------------------------------------ training


def _cfg(tmp_path, **kw):
    from vidharm.training.train import TrainConfig
    base = dict(size=32, batch_size=4, lr=2e-3, num_workers=0, out_dir=str(tmp_path / "run"),
                checkpoint_every=0, val_every=0, log_every=1, progress=False, tensorboard=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def test_tiny_training_lowers_the_loss(tmp_path, photo_set):
    from vidharm.training.train import train
    photos, bgs = photo_set
    ds = SyntheticPairs(photos, bgs, size=32, length=64, seed=0)
    val = SyntheticPairs(photos[:2], bgs, size=32, length=4, seed=9, hflip=False)
    fixed = SyntheticPairs(photos, bgs, size=32, length=8, seed=77)
    b = {k: torch.stack([fixed[i][k] for i in range(8)]) for k in ("composite", "mask", "real")}
    torch.manual_seed(0)
    model = StandIn()
    with torch.no_grad():
        before = float(losses.phnet_loss(model(b["composite"], b["mask"]), b["real"], b["mask"]).total)
    res = train(_cfg(tmp_path, steps=40, lr=1e-2), model=model, train_dataset=ds, val_dataset=val)
    with torch.no_grad():
        after = float(losses.phnet_loss(model(b["composite"], b["mask"]), b["real"], b["mask"]).total)
    assert after < 0.9 * before
    ls = _losses(tmp_path / "run")
    assert len(ls) == 40 and all(math.isfinite(v) for v in ls)
    assert np.mean(ls[-8:]) < np.mean(ls[:8])
    assert res["steps"] == 40 and math.isfinite(res["validation"]["val_psnr"])
    assert Path(res["weights"]).is_file() and (tmp_path / "run" / "train_result.json").is_file()
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert any(r["val_psnr"] for r in rows) and any(r["val_fmse"] for r in rows)


def test_staged_lr_schedule():
    from vidharm.training.train import TrainConfig, lr_at
    cfg = TrainConfig(steps=100, lr_schedule="staged", stage_fractions=(0.5, 0.9))
    assert [lr_at(cfg, s) for s in (0, 49, 50, 89, 90, 99)] == [1e-4, 1e-4, 1e-5, 1e-5, 1e-7, 1e-7]
    assert lr_at(TrainConfig(lr=3e-5), 77) == 3e-5


def test_checkpoint_resume_continues_the_step_count(tmp_path, photo_set):
    from vidharm.training.train import train
    photos, bgs = photo_set
    mk = lambda: SyntheticPairs(photos, bgs, size=32, length=20, seed=1)   # 5 batches / epoch
    rec = make_photo(tmp_path / "clipsrc", "c", 5, h=48, w=64)
    frames = [np.roll(np.asarray(Image.open(rec.image)), t, axis=1) for t in range(5)]
    masks = [np.roll(np.asarray(Image.open(rec.mask)), t, axis=1) for t in range(5)]
    clip = _fake_clip(tmp_path / "clip", frames, masks)
    mkt = lambda: TemporalPairs([clip], size=32, length=4, seed=2)          # 2 pair batches / epoch
    kw = dict(temporal_every=3, temporal_weight=0.5)                        # steps 3, 6, 9: pairs
    torch.manual_seed(0)
    ref_model = StandIn()
    init = {k: v.clone() for k, v in ref_model.state_dict().items()}
    train(_cfg(tmp_path / "a", steps=10, **kw), model=ref_model, train_dataset=mk(), temporal_dataset=mkt())

    m1 = StandIn()
    m1.load_state_dict(init)
    r1 = train(_cfg(tmp_path / "b", steps=7, checkpoint_every=3, **kw), model=m1, train_dataset=mk(),
               temporal_dataset=mkt())
    assert r1["steps"] == 7
    ck = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 7
    assert not list((tmp_path / "b" / "run").glob("*.part"))          # atomic writes left nothing
    m2 = StandIn()                                                     # fresh weights: must be restored
    r2 = train(_cfg(tmp_path / "b", steps=10, resume=True, **kw), model=m2, train_dataset=mk(),
               temporal_dataset=mkt())
    assert r2["steps"] == 10
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "b" / "run" / "log.csv"))]
    assert steps == list(range(1, 11))
    # interrupted + resumed == uninterrupted (same data position, optimizer state)
    for k, v in ref_model.state_dict().items():
        assert torch.allclose(v, m2.state_dict()[k], atol=1e-6), k


def test_phnet_lite_trains_and_saves(tmp_path, photo_set):
    models = pytest.importorskip("vidharm.models")
    if not hasattr(models, "create_model"):
        pytest.skip("vidharm.models.create_model not there yet")
    from vidharm.models.weights import load_weights
    from vidharm.training.train import train
    photos, bgs = photo_set
    ds = SyntheticPairs(photos, bgs, size=64, length=16, seed=0)
    res = train(_cfg(tmp_path, size=64, steps=4, lr=1e-4, model="phnet-lite"), train_dataset=ds,
                val_dataset=SyntheticPairs(photos[:1], bgs, size=64, length=2, seed=5))
    assert all(math.isfinite(v) for v in _losses(tmp_path / "run"))
    m = load_weights(res["weights"])
    assert m.config["name"] == "phnet-lite"
    out = m(torch.rand(1, 3, 64, 64), torch.ones(1, 1, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, tmp: str, photo_dir: str) -> None:
    # a worker that aborts (CI saw one SIGABRT, "terminate called without an active exception",
    # not reproduced here in 445 runs under load) then prints where each of its threads was
    faulthandler.enable(all_threads=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from vidharm.training.train import TrainConfig, train
    d = Path(photo_dir)
    photos = [make_photo(d / f"r{rank}", f"p{i}", i, source="s") for i in range(4)]
    ds = SyntheticPairs(photos, (), size=32, length=16, seed=0)
    torch.manual_seed(rank)            # different init on each rank: DDP must broadcast rank 0's
    model = StandIn()
    cfg = TrainConfig(size=32, batch_size=2, steps=5, lr=2e-3, num_workers=0, out_dir=str(Path(tmp) / "run"),
                      checkpoint_every=0, val_every=0, log_every=1, progress=False, tensorboard=False,
                      device="cpu")
    res = train(cfg, model=model, train_dataset=ds)
    torch.save({"state": model.state_dict(), "result": res}, Path(tmp) / f"rank{rank}.pt")


def test_ddp_two_processes_cpu_gloo(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), str(tmp_path / "photos")),
             nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=False)
    b = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert a["result"]["world_size"] == 2 and a["result"]["steps"] == 5 == b["result"]["steps"]
    for k, v in a["state"].items():
        assert torch.equal(v, b["state"][k]), k
    assert (tmp_path / "run" / "final.safetensors").is_file()          # written by rank 0 only
    assert len(_losses(tmp_path / "run")) == 5


# ------------------------------------------------------------------------------ fetch script


def _fetch_module():
    from conftest import load_fetch_script
    return load_fetch_script("fetch_training_data")


def test_fetch_script_helpers(tmp_path, capsys):
    f = _fetch_module()
    assert f._matches("usr/share/backgrounds/Cielo_by_Tiziano.jpg", ("usr/share/backgrounds/*_by_*.jpg",))
    assert not f._matches("usr/share/backgrounds/mate/x_by_y.jpg", ("usr/share/backgrounds/*_by_*.jpg",))
    pat = ("usr/share/wallpapers/*/contents/images/*",)
    assert f._dest_name("usr/share/wallpapers/Altai/contents/images/1920x1080.png", pat) == \
        "Altai__contents__images__1920x1080.png"
    assert f._dest_name("tests/test_images/obama.jpg", ("tests/test_images/*.jpg",)) == "obama.jpg"
    keep = f._one_per_wallpaper([f"usr/share/wallpapers/A/contents/images/{s}.jpg" for s in
                                 ("1280x800", "1920x1080", "5120x2880")] +
                                ["usr/share/wallpapers/B/contents/images/1024x768.png"])
    assert keep == ["usr/share/wallpapers/A/contents/images/1920x1080.jpg",
                    "usr/share/wallpapers/B/contents/images/1024x768.png"]
    dep5 = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: x\nLicense: GPL-2+\n\n"
            "Files: backgrounds/Cielo_by_Tiziano.jpg\nCopyright: y\nLicense: CC-BY-SA-4.0\n")
    assert f._debian_licence(dep5, "usr/share/backgrounds/Cielo_by_Tiziano.jpg") == "CC-BY-SA-4.0"
    assert f._debian_licence(dep5, "usr/share/backgrounds/Other_by_Z.jpg") == "GPL-2+"
    assert f.main(["--list"]) == 0
    assert "libdlib19.1" in capsys.readouterr().out
    assert f.main(["--data-dir", str(tmp_path), "--sources", "no-such-source"]) == 2
