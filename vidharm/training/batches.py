"""Where training batches come from: the datasets a :class:`TrainConfig` names, and
:class:`BatchSchedule`, which interleaves the training set's batches with temporal pair batches
and restarts both at the same place after a resume (batch n is the same whether or not the run
was interrupted before it)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from .data import default_data_dir
from .train_config import TrainConfig


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset | None, dict]:
    """(train, validation, info) for ``cfg``."""
    if cfg.dataset == "synthetic":
        from .data import build_training_data
        td = build_training_data(cfg.data_dir or default_data_dir(), size=cfg.size, seed=cfg.seed,
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
    root = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_data_dir()
    clips = [prepare_clip(c, root / "clips", progress=log) for c in cfg.temporal_clips]
    return TemporalPairs(clips, size=cfg.size, seed=cfg.seed + 7)


def collate(batch: list[dict]) -> dict:
    """Samples -> a batch of their ``composite``, ``mask`` and ``real`` tensors."""
    out = {}
    for k in ("composite", "mask", "real"):
        out[k] = torch.stack([b[k] for b in batch])
    return out


def flatten_pairs(b: dict) -> dict:
    """Temporal pair batches (B,2,C,H,W) -> (2B,C,H,W)."""
    if b["composite"].dim() == 5:
        return {k: v.flatten(0, 1) for k, v in b.items()}
    return b


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


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
                            num_workers=cfg.num_workers, collate_fn=collate,
                            pin_memory=device.type == "cuda", worker_init_fn=_seed_worker,
                            generator=g, persistent_workers=False,
                            prefetch_factor=4 if cfg.num_workers > 0 else None)
        for batch in loader:
            yield epoch, batch
            n += 1


class BatchSchedule:
    """Which batch each step trains on: the training set's, or on every ``temporal_every``-th
    step a batch of temporal pairs; both resume at the position an uninterrupted run had."""

    def __init__(self, cfg: TrainConfig, world: int, rank: int, train_ds: Dataset,
                 temporal_ds: Dataset | None):
        from torch.utils.data.distributed import DistributedSampler
        self.cfg, self.rank, self.train_ds, self.temporal_ds = cfg, rank, train_ds, temporal_ds
        self.sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                          seed=cfg.seed, drop_last=True)
        self.per_epoch = len(self.sampler) // cfg.batch_size
        if self.per_epoch < 1:
            raise InputError(f"the training set has {len(train_ds)} samples: fewer than one batch of "
                             f"{cfg.batch_size} per process", "use a smaller batch_size or more samples")
        self.t_sampler, self.t_batch = None, max(1, cfg.batch_size // 2)
        if temporal_ds is not None:
            self.t_sampler = DistributedSampler(temporal_ds, num_replicas=world, rank=rank,
                                                shuffle=True, seed=cfg.seed + 1, drop_last=True)
            if len(self.t_sampler) // self.t_batch < 1:
                raise InputError(f"only {len(temporal_ds)} temporal pairs: fewer than one batch",
                                 "use a smaller batch_size or more clips")
        self.main_stream = self.temporal_stream = None

    def is_temporal(self, step: int) -> bool:
        every = self.cfg.temporal_every
        return self.t_sampler is not None and step % every == every - 1

    def temporal_done(self, step: int) -> int:
        """Temporal batches consumed before ``step``."""
        return step // self.cfg.temporal_every if self.t_sampler is not None else 0

    def start(self, step: int, device: torch.device) -> int:
        """Open the streams at ``step``; returns the training set's epoch there."""
        cfg, rank, done = self.cfg, self.rank, self.temporal_done(step)
        self.main_stream = _stream(self.train_ds, self.sampler, cfg.batch_size, step - done, cfg,
                                   device, rank, 0)
        if self.t_sampler is not None:
            self.temporal_stream = _stream(self.temporal_ds, self.t_sampler, self.t_batch, done, cfg,
                                           device, rank, 1)
        return (step - done) // self.per_epoch

    def next(self, step: int, epoch: int) -> tuple[int, dict]:
        """(epoch, batch) for ``step``; a temporal batch leaves the epoch as it was."""
        if self.is_temporal(step):
            return epoch, next(self.temporal_stream)[1]
        return next(self.main_stream)

    def close(self) -> None:
        for s in (self.main_stream, self.temporal_stream):
            if s is not None:
                s.close()
