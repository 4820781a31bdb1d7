"""What a training run reads and writes in its ``out_dir``: the checkpoint (written atomically,
read back with ``weights_only=True``), ``log.csv``, TensorBoard events and the final weights."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._fs import atomic_path
from ..errors import ConfigError, InputError

CSV_FIELDS = ("step", "epoch", "lr", "loss", "l_psnr", "l_fnmse", "l_grad",
              "val_loss", "val_psnr", "val_fpsnr", "val_mse", "val_fmse", "seconds")
CHECKPOINT_NAME = "checkpoint.pt"


# ------------------------------------------------------------------------------ checkpoints


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(state: dict, out_dir: Path, keep_copy: bool) -> None:
    """``state`` to ``out_dir/checkpoint.pt`` (temp file, fsync, rename), and to
    ``checkpoint-<step>.pt`` as well when ``keep_copy``."""
    _atomic_torch_save(state, out_dir / CHECKPOINT_NAME)
    if keep_copy:
        _atomic_torch_save(state, out_dir / f"checkpoint-{state['step']:07d}.pt")


def load_checkpoint(path: Path) -> dict:
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


def resume_path(resume: bool | str, out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: ``resume`` itself when it is a path (which must exist),
    ``out_dir/checkpoint.pt`` when it is true and that file exists, else None."""
    if not resume:
        return None
    if isinstance(resume, (str, os.PathLike)) and str(resume) not in ("True", "true", "1"):
        p = Path(resume).expanduser()
        if not p.is_file():
            raise InputError(f"checkpoint {p} does not exist", "check the --resume path")
        return p
    p = Path(out_dir) / CHECKPOINT_NAME
    return p if p.is_file() else None


def save_final(model: nn.Module, path: Path, meta: dict) -> Path:
    """The trained weights with ``meta``: through :func:`vidharm.models.weights.save_weights`,
    or as a bare safetensors state dict for a model without a vidharm config."""
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


# ------------------------------------------------------------------------------ logs


class CsvLog:
    """``log.csv`` with :data:`CSV_FIELDS`, flushed after every row; on a resume the rows up
    to ``keep_until`` are kept and the later ones dropped."""

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


def open_tensorboard(out_dir: Path):
    """A SummaryWriter on ``out_dir/tb``, or None when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    try:
        return SummaryWriter(str(out_dir / "tb"))
    except Exception:  # noqa: BLE001
        return None
