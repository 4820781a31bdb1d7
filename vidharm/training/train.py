"""Training loop: PHNet's published recipe on vidharm's data.

    from vidharm.training.train import TrainConfig, train
    result = train(TrainConfig(model="phnet-lite", steps=20000, out_dir="runs/lite"))

* Loss: :func:`vidharm.training.losses.phnet_loss` (0.2·L_PSNR + 0.01·L_FN-MSE + 0.01·L_grad) on
  the unblended prediction.
* Optimizer: Lion (lion-pytorch). Learning rate ``lr`` (published code: 1e-5) constant, or the
  paper's three stages with ``lr_schedule="staged"``: ``stage_lrs`` (1e-4, 1e-5, 1e-7) switching
  at ``stage_fractions`` of ``steps``.
* Mixed precision on CUDA only (bf16 where supported, else fp16 with a GradScaler); the loss
  is computed in float32.
* Data: ``dataset="synthetic"`` builds pairs on the fly from the fetched photos (split by
  source, see :mod:`vidharm.training.data`); ``"iharmony4"``/``"ffhqh"`` read those layouts
  (train list for training, test list for validation); or pass datasets to :func:`train`.
* Checkpoints every ``checkpoint_every`` steps to ``out_dir/checkpoint.pt`` (written atomically:
  temp file, fsync, rename); ``resume=True`` continues from it (same step count, optimizer,
  scaler, data position); ``resume="path"`` from another file.
* Logs: ``out_dir/log.csv`` (training losses every ``log_every`` steps, validation PSNR/fMSE
  every ``val_every`` steps), TensorBoard under ``out_dir/tb`` when ``torch.utils.tensorboard``
  imports, a rich progress bar.
* Final weights: ``out_dir/<weights_name>`` via :func:`vidharm.models.weights.save_weights`
  (safetensors with the model config), plus ``out_dir/train_result.json``.
* Multi-GPU / multi-process: run under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``):
  DistributedDataParallel, nccl on CUDA, gloo on CPU, a DistributedSampler; only rank 0 logs,
  validates and saves. ``batch_size`` is per process.
* Deterministic given ``seed``: model init, sample order and every sample's content.

The settings live in :mod:`vidharm.training.train_config`, the datasets and batch order in
:mod:`vidharm.training.batches`, the files written in :mod:`vidharm.training.train_io`.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._fs import atomic_write_text
from ..errors import ConfigError
from .batches import BatchSchedule, build_datasets, build_temporal_dataset, collate, flatten_pairs
from .losses import phnet_loss, temporal_consistency
from .metrics import MetricAccumulator, blend
from .train_config import TrainConfig, lr_at, training_device
from .train_io import (CHECKPOINT_NAME, CsvLog, load_checkpoint, open_tensorboard, resume_path,
                       save_checkpoint, save_final)

__all__ = ["TrainConfig", "lr_at", "train", "validate", "build_datasets", "build_temporal_dataset"]


# ------------------------------------------------------------------------------ distributed


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    owned: bool = False  # we initialised the process group

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _setup_dist(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    owned = False
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
        owned = True
    return _Dist(dist.get_world_size(), dist.get_rank(), local, owned)


@torch.no_grad()
def validate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 8,
             amp_dtype: torch.dtype | None = None, psnr_max: str = "target") -> dict:
    """Loss and metrics (blended, 0-255, :mod:`metrics` conventions) over ``dataset``."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(psnr_max=psnr_max)
    loss_sum, n = 0.0, 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    for b in loader:
        b = {k: v.to(device) for k, v in flatten_pairs(b).items()}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(b["composite"], b["mask"])
        pred = pred.float().clamp(0, 1)
        loss_sum += float(phnet_loss(pred, b["real"], b["mask"]).total) * pred.shape[0]
        n += pred.shape[0]
        acc.update(blend(pred, b["composite"], b["mask"]), b["real"], b["mask"])
    model.train(was_training)
    s = acc.summary()["all"]
    return {"val_loss": loss_sum / max(n, 1), "val_psnr": s["psnr"], "val_fpsnr": s["fpsnr"],
            "val_mse": s["mse"], "val_fmse": s["fmse"], "val_count": n}


# ------------------------------------------------------------------------------ the run's parts


@dataclass
class _Run:
    """What the loop's steps share: settings, process group, device, model, optimiser, logs."""
    cfg: TrainConfig
    dd: _Dist
    device: torch.device
    out_dir: Path
    say: Callable[[str], None]
    model: nn.Module | None = None
    net: nn.Module | None = None          # the model, or its DistributedDataParallel wrapper
    opt: Any = None
    scaler: Any = None
    amp_dtype: torch.dtype | None = None
    val_ds: Dataset | None = None
    per_epoch: int = 0
    csv_log: CsvLog | None = None
    tb: Any = None
    t0: float = 0.0
    last_val: dict = field(default_factory=dict)
    last_terms: dict = field(default_factory=dict)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _rank0_first(dd: _Dist, build: Callable[[], Any]) -> Any:
    """``build()`` on rank 0, then on the others (rank 0 may compute and cache masks)."""
    got = build() if dd.main else None
    dd.barrier()
    return got if dd.main else build()


def _load_data(run: _Run, train_ds, val_ds, temporal_ds) -> tuple[Dataset, Dataset | None, dict]:
    """The training and temporal sets (``cfg``'s unless given) and ``run.val_ds``; says what
    was built. Returns (train, temporal, info)."""
    cfg, info = run.cfg, {}
    if train_ds is None:
        train_ds, built_val, info = _rank0_first(run.dd, lambda: build_datasets(cfg))
        if val_ds is None:
            val_ds = built_val
    run.val_ds = val_ds
    if temporal_ds is None and cfg.temporal_clips:
        temporal_ds = _rank0_first(run.dd, lambda: build_temporal_dataset(cfg, run.say))
    if temporal_ds is not None:
        info = {**info, "temporal_clips": list(cfg.temporal_clips), "temporal_pairs": len(temporal_ds)}
    if info:
        run.say(f"data: {json.dumps(info)}")
    return train_ds, temporal_ds, info


def _build_model(run: _Run, model: nn.Module | None) -> None:
    """``run.model`` (``cfg.model``, from ``cfg.init_weights`` if set, unless given) on the
    device in training mode, and ``run.net``, the DDP wrapper under torchrun."""
    cfg = run.cfg
    if model is None:
        from ..models import create_model
        if cfg.init_weights:
            from ..models.weights import load_any
            model = load_any(cfg.init_weights, cfg.model)
        else:
            model = create_model(cfg.model)
    run.model = run.net = model.to(run.device).train()
    if run.dd.active:
        # the published configurations keep parameters that forward never uses (the last
        # normalizer, skip.N): DDP must then look for unused parameters
        cfgd = getattr(model, "config", None)
        find_unused = bool(cfgd.get("keep_unused", True)) if isinstance(cfgd, dict) else False
        run.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None,
            find_unused_parameters=find_unused)


def _build_optimiser(run: _Run) -> None:
    """Lion, the autocast dtype (CUDA only: bf16 where supported, else fp16) and the
    GradScaler (enabled for fp16)."""
    from lion_pytorch import Lion
    cfg, device = run.cfg, run.device
    run.opt = Lion(run.model.parameters(), lr=lr_at(cfg, 0), betas=tuple(cfg.betas),
                   weight_decay=cfg.weight_decay)
    run.amp_dtype = None
    if device.type == "cuda" and cfg.amp != "off":
        if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
            run.amp_dtype = torch.float16
        else:
            run.amp_dtype = torch.bfloat16
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.amp_dtype == torch.float16)


def _resume(run: _Run) -> int | None:
    """Model, optimiser and scaler state from the checkpoint ``cfg.resume`` names; the step
    it was written at, or None when there is none to resume from."""
    rp = resume_path(run.cfg.resume, run.out_dir)
    if rp is None:
        if run.cfg.resume:
            run.say(f"no checkpoint in {run.out_dir}; starting from step 0")
        return None
    ck = load_checkpoint(rp)
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    if ck.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(ck["scaler"])
    step = int(ck["step"])
    if ck.get("per_epoch") not in (None, run.per_epoch):
        run.say(f"[yellow]warning: batches per epoch changed ({ck['per_epoch']} -> {run.per_epoch}); "
                f"the data order differs from an uninterrupted run[/]")
    run.say(f"resumed from {rp} at step {step}")
    return step


def _checkpoint(run: _Run, at_step: int) -> None:
    if not run.dd.main:
        return
    state = {"step": at_step, "per_epoch": run.per_epoch, "model": run.model.state_dict(),
             "optimizer": run.opt.state_dict(),
             "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
             "config": asdict(run.cfg), "world_size": run.dd.world}
    save_checkpoint(state, run.out_dir, run.cfg.keep_checkpoints)


def _run_validation(run: _Run, at_step: int) -> None:
    """Validate on rank 0 (log.csv, TensorBoard, one line said); every process waits."""
    if run.dd.main and run.val_ds is not None and len(run.val_ds):
        v = run.last_val = validate(run.model, run.val_ds, run.device,
                                    batch_size=min(run.cfg.batch_size, 16), amp_dtype=run.amp_dtype)
        row = {"step": at_step, "epoch": at_step // run.per_epoch, **v}
        row.pop("val_count", None)
        run.csv_log.write(row)
        if run.tb:
            for k in ("val_loss", "val_psnr", "val_fpsnr", "val_fmse"):
                if v.get(k) is not None:
                    run.tb.add_scalar(k, v[k], at_step)
        run.say(f"step {at_step}: val PSNR {v['val_psnr']:.2f} dB, fMSE {v['val_fmse']:.1f}, "
                f"fPSNR {v['val_fpsnr']:.2f} dB (loss {v['val_loss']:.4f})")
    run.dd.barrier()


def _train_step(run: _Run, batch: dict):
    """Forward, loss (plus the temporal term on pair batches), backward and optimiser step;
    returns the loss terms."""
    cfg, device = run.cfg, run.device
    pairs = batch["composite"].dim() == 5
    b = {k: v.to(device, non_blocking=True) for k, v in flatten_pairs(batch).items()}
    with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        pred = run.net(b["composite"], b["mask"])
    terms = phnet_loss(pred.float(), b["real"], b["mask"])
    if pairs and cfg.temporal_weight:
        n2 = pred.shape[0] // 2
        tc = temporal_consistency(pred.float().view(n2, 2, *pred.shape[1:]),
                                  b["real"].view(n2, 2, *pred.shape[1:]),
                                  b["mask"].view(n2, 2, 1, *pred.shape[2:]))
        terms.total = terms.total + cfg.temporal_weight * tc
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(terms.total).backward()
    if cfg.grad_clip:
        run.scaler.unscale_(run.opt)
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    return terms


def _log_losses(run: _Run, window: list[dict], step: int, epoch: int, lr: float) -> None:
    """The mean of ``window``'s loss terms (over all processes) to log.csv and TensorBoard."""
    vals = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    if run.dd.active:  # average the logged losses over the processes
        t = torch.tensor([vals[k] for k in sorted(vals)], dtype=torch.float64,
                         device=run.device if run.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        vals = {k: float(v) / run.dd.world for k, v in zip(sorted(vals), t.tolist())}
    run.last_terms = vals
    if run.dd.main:
        run.csv_log.write({"step": step, "epoch": epoch, "lr": lr, **vals,
                           "seconds": round(time.time() - run.t0, 2)})
        if run.tb:
            for k, v in vals.items():
                run.tb.add_scalar(k, v, step)
            run.tb.add_scalar("lr", lr, step)


class _Bar:
    """The rich progress bar: steps done of ``total``, the last logged loss and the lr."""

    def __init__(self, console, total: int, done: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, loss: float, lr: float) -> None:
        self.progress.update(self.task, completed=step, info=f"loss {loss:.4f} lr {lr:.1e}")

    def stop(self) -> None:
        self.progress.stop()


# ------------------------------------------------------------------------------ the loop


def train(cfg: TrainConfig, *, model: nn.Module | None = None, train_dataset: Dataset | None = None,
          val_dataset: Dataset | None = None, temporal_dataset: Dataset | None = None,
          log: Callable[[str], None] | None = None) -> dict:
    """Train according to ``cfg``; returns a summary dict (also in ``out_dir/train_result.json``).

    ``model``/``train_dataset``/``val_dataset``/``temporal_dataset`` override what ``cfg`` would
    build (tests, custom nets). Datasets yield dicts with ``composite``, ``mask``, ``real`` (and may have
    ``set_epoch``); temporal pair samples are flattened into the batch.
    """
    cfg.validate()
    want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    dd = _setup_dist("cuda" if want_cuda else "cpu")
    try:
        return _train(cfg, dd, model, train_dataset, val_dataset, temporal_dataset, log)
    finally:
        if dd.owned and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, dd: _Dist, model, train_ds, val_ds, temporal_ds, log) -> dict:
    from rich.console import Console

    console = Console(stderr=True)
    say = log or (lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    run = _Run(cfg, dd, training_device(cfg.device, dd.local_rank), Path(cfg.out_dir).expanduser(),
               say if dd.main else (lambda msg: None))
    if dd.main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
    _seed_all(cfg.seed)
    train_ds, temporal_ds, info = _load_data(run, train_ds, val_ds, temporal_ds)
    _build_model(run, model)
    _build_optimiser(run)
    batches = BatchSchedule(cfg, dd.world, dd.rank, train_ds, temporal_ds)
    run.per_epoch = batches.per_epoch
    resumed = _resume(run)
    step = resumed or 0
    if dd.main:
        run.csv_log = CsvLog(run.out_dir / "log.csv", keep_until=resumed)
        run.tb = open_tensorboard(run.out_dir) if cfg.tensorboard else None
    bar = _Bar(console, cfg.steps, step) if dd.main and cfg.progress else None
    run.t0 = time.time()
    epoch = batches.start(step, run.device)
    try:
        step = _loop(run, batches, step, epoch, bar)
    finally:
        if bar is not None:
            bar.stop()
        batches.close()
    return _finish(run, step, info)


def _loop(run: _Run, batches: BatchSchedule, step: int, epoch: int, bar: _Bar | None) -> int:
    """Steps from ``step`` to ``cfg.steps``: train, log, validate and checkpoint on their
    schedules. Returns the step reached."""
    cfg = run.cfg
    window: list[dict] = []
    while step < cfg.steps:
        epoch, batch = batches.next(step, epoch)
        lr = lr_at(cfg, step)
        for pg in run.opt.param_groups:
            pg["lr"] = lr
        terms = _train_step(run, batch)
        step += 1
        if not math.isfinite(float(terms.total.detach())):
            raise FloatingPointError(f"loss is {float(terms.total)} at step {step}")
        window.append(terms.as_floats())
        if step % cfg.log_every == 0 or step == cfg.steps:
            _log_losses(run, window, step, epoch, lr)
            window = []
        if bar is not None:
            bar.update(step, run.last_terms.get("loss", float("nan")), lr)
        if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
            _run_validation(run, step)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            _checkpoint(run, step)
            run.dd.barrier()
    return step


def _finish(run: _Run, step: int, info: dict) -> dict:
    """Last validation and checkpoint; on rank 0 the final weights, ``train_result.json`` and
    closed logs. Returns the summary."""
    cfg = run.cfg
    if run.val_ds is not None:
        _run_validation(run, step)
    _checkpoint(run, step)
    result = {"steps": step, "final_loss": run.last_terms, "validation": run.last_val,
              "seconds": round(time.time() - run.t0, 2), "world_size": run.dd.world,
              "device": str(run.device),
              "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
              "data": info}
    if run.dd.main:
        meta = {"trained_by": "vidharm.training", "steps": str(step), "size": str(cfg.size),
                "dataset": cfg.dataset, "lr_schedule": cfg.lr_schedule,
                "loss": "0.2*L_PSNR + 0.01*L_FN-MSE + 0.01*L_grad"}
        if info:
            meta["data"] = json.dumps(info, sort_keys=True)
        if run.last_val:
            meta["val_psnr"] = f"{run.last_val['val_psnr']:.3f}"
        wpath = save_final(run.model, run.out_dir / cfg.weights_name, meta)
        result["weights"] = str(wpath)
        result["checkpoint"] = str(run.out_dir / CHECKPOINT_NAME)
        atomic_write_text(run.out_dir / "train_result.json", json.dumps(result, indent=1, default=str))
        run.csv_log.close()
        if run.tb:
            run.tb.close()
        run.say(f"done: {step} steps, weights {wpath}")
    run.dd.barrier()
    return result
