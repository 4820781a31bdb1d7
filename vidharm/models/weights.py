"""Loading and saving model weights, safely and with one-line errors.

Two formats:

1. **Published PHNet checkpoints** (``ffhqh256.pth``, ``iharmony512.pth``, ...): plain
   PyTorch state dicts. :func:`load_published` reads them ONLY through
   ``torch.load(path, map_location="cpu", weights_only=True)``, which refuses pickles that
   would build arbitrary objects or run code. The result must be a flat ``{str: Tensor}``
   dict; nothing is stripped or renamed (a ``module.`` prefix or a ``{"state_dict": ...}``
   wrapper is reported, with a hint, not silently fixed). Keys, shapes and dtypes are
   checked against the model before loading; :func:`detect_published` tells which published
   configuration a state dict belongs to, :func:`infer_config` reads any PHNet layout from
   the shapes.

2. **vidharm weights** (``.safetensors``): :func:`save_weights` stores the tensors and, in the
   safetensors metadata, ``vidharm.model`` (the name) and ``vidharm.config`` (the full
   ``model.config`` as JSON); :func:`load_weights` rebuilds exactly that model from the
   metadata and loads the tensors strictly.

Every problem with a file raises :class:`vidharm.errors.InputError` whose message is one line,
e.g. ``weights 'x.pth' do not fit model 'phnet-ffhqh': 8 missing keys (normalizers.3.weights,
...), 61 wrong shapes (encoder.1.0.weight is (32,16,3,3) in the file vs (64,16,3,3) in the
model; ...) -- it is a phnet-iharmony4 checkpoint: load it as 'phnet-iharmony4'``.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .._fs import atomic_path
from ..errors import ConfigError, InputError
from . import build_model, create_model
from .phnet import PUBLISHED_MODELS

StateDict = Dict[str, Tensor]
PathLike = Union[str, os.PathLike]

META_FORMAT = "vidharm.format"
META_MODEL = "vidharm.model"
META_CONFIG = "vidharm.config"
FORMAT_VERSION = "1"
_SHOW = 3  # how many names an error message lists


# ------------------------------------------------------------------------------ helpers

def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(items: List[str], show: int = _SHOW, sep: str = ", ") -> str:
    head = sep.join(items[:show])
    return head + (f"{sep}..." if len(items) > show else "")


def _shape(t: Union[Tensor, Tuple[int, ...], torch.Size]) -> str:
    dims = tuple(t.shape) if isinstance(t, Tensor) else tuple(t)
    return "(" + ",".join(str(d) for d in dims) + ")"


def _read_head(p: Path, n: int) -> bytes:
    """The first ``n`` bytes of a weights file (to tell the format), or one clear error."""
    try:
        with open(p, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise InputError(f"cannot open weights file '{p}' ({exc.strerror or exc})",
                         "check the file's permissions") from None


def _check_path(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} '{p}' not found", "check the path")
    if p.is_dir():
        raise InputError(f"{what} '{p}' is a folder, not a file", "give the weights file itself")
    if p.stat().st_size == 0:
        raise InputError(f"{what} '{p}' is empty", "download or save it again")
    return p


def _model_and_name(model_or_name: Union[nn.Module, str]) -> Tuple[nn.Module, str]:
    if isinstance(model_or_name, nn.Module):
        cfg = getattr(model_or_name, "config", {}) or {}
        return model_or_name, str(cfg.get("name", type(model_or_name).__name__))
    try:
        return create_model(str(model_or_name)), str(model_or_name)
    except ConfigError as exc:
        raise InputError(exc.what, exc.hint) from None


# ------------------------------------------------------------------------------ reading .pth

def read_state_dict(path: PathLike) -> StateDict:
    """Read a plain PyTorch state dict safely (``weights_only=True``) and validate it.

    Raises InputError for: a missing/empty file, a file torch cannot read (text, truncated,
    corrupt), a pickle that needs anything but tensors and plain containers (code execution
    is refused, never attempted), a non-dict, a wrapper dict, non-tensor values, NaN/Inf.
    """
    p = _check_path(path, "weights file")
    head = _read_head(p, 8)
    if not (head[:2] == b"PK" or head[:1] == b"\x80"):   # zip (torch.save) or binary pickle
        raise InputError(
            f"'{p.name}' is not a PyTorch checkpoint (neither a torch.save zip nor a "
            f"pickle; it starts with {head!r})",
            "give the .pth file itself, not a web page, text or another format")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4" notes: not the user's concern
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        msg = str(exc)
        if "Weights only load failed" in msg:
            m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|\. Please|$)", msg, re.S)
            detail = _short(m.group(1), 100) if m else "it holds objects other than tensors"
            raise InputError(
                f"refused to load '{p.name}': the file is not a plain tensor checkpoint and "
                f"would need to run code or build arbitrary objects ({detail})",
                "only plain state dicts are loaded; do not use files from untrusted sources"
            ) from None
        kind = type(exc).__name__
        raise InputError(
            f"cannot read weights file '{p.name}': not a readable PyTorch checkpoint "
            f"(truncated, corrupt or another format; {kind}: {_short(msg, 90) or 'no detail'})",
            "download the file again and check its size/checksum") from None
    return validate_state_dict(obj, p.name)


def validate_state_dict(obj: Any, label: str = "checkpoint") -> StateDict:
    """Check that ``obj`` is a flat ``{str: Tensor}`` dict of finite values; return it."""
    if not isinstance(obj, Mapping):
        raise InputError(f"'{label}' holds a {type(obj).__name__}, not a state dict",
                         "give a file saved with torch.save(model.state_dict(), path)")
    if not obj:
        raise InputError(f"'{label}' holds an empty dict", "give the model's state dict")
    bad_keys = [repr(k) for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise InputError(f"'{label}' has non-text keys ({_names(bad_keys)})",
                         "give a plain state dict")
    non_tensor = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if non_tensor:
        wrappers = [k for k in non_tensor if isinstance(obj[k], Mapping)]
        if wrappers:
            raise InputError(
                f"'{label}' is a wrapper dict, not a flat state dict: entries "
                f"{_names(wrappers)} hold dicts ({len(obj)} top-level keys)",
                f"save the inner state dict on its own, e.g. torch.save(ckpt['{wrappers[0]}'], "
                f"'plain.pth')")
        raise InputError(
            f"'{label}' is not a flat state dict: {len(non_tensor)} entries are not tensors "
            f"({_names(non_tensor)})", "give a file saved with torch.save(model.state_dict())")
    nonfinite = [k for k, v in obj.items()
                 if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise InputError(f"'{label}' has NaN/Inf values in {len(nonfinite)} tensors "
                         f"({_names(nonfinite)})", "the weights are broken; get them again")
    return dict(obj)


# ------------------------------------------------------------------------------ comparing

def compare_state_dict(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]
                       ) -> Tuple[List[str], List[str], List[str]]:
    """(missing keys, unexpected keys, 'key is S in the file vs S in the model' mismatches)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = []
    for k, ref in expected.items():
        if k not in given:
            continue
        t = given[k]
        if tuple(t.shape) != tuple(ref.shape):
            wrong.append(f"{k} is {_shape(t)} in the file vs {_shape(ref)} in the model")
        elif ref.is_floating_point() != t.is_floating_point():
            wrong.append(f"{k} is {t.dtype} in the file vs {ref.dtype} in the model")
    return missing, unexpected, wrong


def describe_mismatch(missing: List[str], unexpected: List[str], wrong: List[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key{'s' * (len(missing) != 1)} ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) != 1)} "
                     f"({_names(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape{'s' * (len(wrong) != 1)} "
                     f"({_names(wrong, 2, '; ')})")
    return ", ".join(parts)


def _mismatch_hint(sd: Mapping[str, Tensor], target: str) -> str:
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return ("its keys start with 'module.' (saved from DataParallel); save "
                "{k[7:]: v for k, v in sd.items()} instead")
    found = detect_published(sd)
    if found and found != target:
        return f"it is a {found} checkpoint: load it as '{found}'"
    try:
        cfg = infer_config(sd)
    except InputError:
        return "it is not a PHNet state dict"
    return (f"it looks like a PHNet with enc_sizes {cfg['enc_sizes']} and grid_count "
            f"{cfg['grid_count']}; pass no model name to build the matching one")


def check_compatible(model: nn.Module, sd: Mapping[str, Tensor], label: str,
                     model_name: str) -> None:
    """Raise one-line InputError unless ``sd`` fits ``model`` exactly (keys, shapes)."""
    missing, unexpected, wrong = compare_state_dict(model.state_dict(), sd)
    if missing or unexpected or wrong:
        raise InputError(
            f"weights '{label}' do not fit model '{model_name}': "
            f"{describe_mismatch(missing, unexpected, wrong)}",
            _mismatch_hint(sd, model_name))


# ------------------------------------------------------------------------------ detection

def infer_config(sd: Mapping[str, Tensor]) -> Dict[str, Any]:
    """Read a PHNet configuration from state-dict shapes (enc_sizes, grid_count, options).

    Raises InputError if the keys are not a PHNet layout.
    """
    try:
        enc = []
        i = 0
        while f"encoder.{i}.0.weight" in sd:
            w = sd[f"encoder.{i}.0.weight"]
            if i == 0:
                enc.append(int(w.shape[1]))
            enc.append(int(w.shape[0]))
            i += 1
        grids = []
        k = 0
        while f"normalizers.{k}.grid_weights" in sd:
            grids.append(int(sd[f"normalizers.{k}.grid_weights"].shape[-1]))
            k += 1
        n = len(enc) - 1
        if n < 2 or not grids:
            raise KeyError("encoder/normalizers")
        skip_kernel = int(sd["skip.0.rconv.weight"].shape[-1])
        keep_unused = f"skip.{n}.rconv.weight" in sd
        if not keep_unused:   # the unused trailing normalizer was left out: restore its grid
            grids.append(1)
        hidden = int(sd["SE_block.fc.0.weight"].shape[0])
        reduction = max(int(sd["SE_block.fc.0.weight"].shape[1]) // max(hidden, 1), 1)
    except (KeyError, IndexError, AttributeError) as exc:
        raise InputError(f"not a PHNet state dict (no usable {exc} entries)",
                         "give a PHNet checkpoint") from None
    return dict(arch="phnet", enc_sizes=enc, grid_count=grids, skip_kernel=skip_kernel,
                se_reduction=reduction, keep_unused=keep_unused,
                quirk_scalar_se="SE_block.harm_fc.weight" not in sd,
                # not visible in the weights: the published files all use the /255 composite
                quirk_bg_div255=True, pfe_grid=None)


def _meta_shapes(name: str) -> Dict[str, Tuple[int, ...]]:
    with torch.device("meta"):
        m = create_model(name)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


_PUBLISHED_SHAPES: Dict[str, Dict[str, Tuple[int, ...]]] = {}


def detect_published(sd: Mapping[str, Tensor]) -> Optional[str]:
    """Name of the published configuration whose keys and shapes ``sd`` has exactly, or None."""
    for name in PUBLISHED_MODELS:
        if name not in _PUBLISHED_SHAPES:
            _PUBLISHED_SHAPES[name] = _meta_shapes(name)
        shapes = _PUBLISHED_SHAPES[name]
        if set(shapes) == set(sd) and all(tuple(sd[k].shape) == s for k, s in shapes.items()):
            return name
    return None


# ------------------------------------------------------------------------------ published

def load_published(path: PathLike, model_or_name: Union[nn.Module, str, None] = None
                   ) -> nn.Module:
    """Load a published PHNet ``.pth`` into a model; returns it in eval mode.

    ``model_or_name``: a model to fill, a registry name, or None to detect the configuration
    from the file (a published one by name, else any PHNet layout read from the shapes).
    """
    sd = read_state_dict(path)
    label = Path(path).name
    if model_or_name is None:
        found = detect_published(sd)
        if found:
            model, name = create_model(found), found
        else:
            cfg = infer_config(sd)
            cfg["name"] = "phnet-custom"
            try:
                model = build_checked(cfg, sd, label, "phnet-custom")
            except ConfigError as exc:
                raise InputError(f"weights '{label}': {exc.what}", exc.hint) from None
            name = "phnet-custom"
    else:
        model, name = _model_and_name(model_or_name)
    check_compatible(model, sd, label, name)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# ------------------------------------------------------------------------------ safetensors

def save_weights(model: nn.Module, path: PathLike,
                 metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Save ``model``'s state dict as safetensors, with its name and config in the metadata.

    ``metadata`` values that are not strings are stored as JSON. Written atomically
    (``<path>.part`` then rename). Returns the path.
    """
    from safetensors.torch import save_file

    cfg = getattr(model, "config", None)
    if not isinstance(cfg, Mapping) or "enc_sizes" not in cfg:
        raise ConfigError("the model has no .config to record",
                          "build it with vidharm.models.create_model")
    meta: Dict[str, str] = {}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    meta[META_FORMAT] = FORMAT_VERSION
    meta[META_MODEL] = str(cfg.get("name", "phnet-custom"))
    meta[META_CONFIG] = json.dumps(dict(cfg), sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone()
               for k, v in model.state_dict().items()}
    p = Path(path)
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return p


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The safetensors metadata of a vidharm weights file (InputError if unreadable)."""
    from safetensors import safe_open

    p = _check_path(path, "weights file")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        hint = ("published PHNet .pth files are loaded with load_published"
                if p.suffix in (".pth", ".pt") else "save it again with save_weights")
        raise InputError(f"cannot read '{p.name}' as safetensors weights "
                         f"({type(exc).__name__}: {_short(str(exc), 90)})", hint) from None


#: Upper bounds on a model configuration read from a file: any number in it (channels,
#: grid counts...), the length of any list in it, and the parameters the model would have
#: (the largest published PHNet has 39.9M). Checked before anything is allocated.
MAX_CONFIG_NUMBER = 8192
MAX_CONFIG_LIST = 64
MAX_PARAMETERS = 200_000_000

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _check_config_bounds(cfg: Any, label: str, where: str = "config") -> None:
    """Refuse absurd numbers in a configuration read from a file (one InputError)."""
    if isinstance(cfg, bool) or cfg is None or isinstance(cfg, str):
        return
    if isinstance(cfg, (int, float)):
        if not math.isfinite(cfg) or abs(cfg) > MAX_CONFIG_NUMBER:
            raise InputError(f"weights '{label}' record {where} = {cfg!r}, beyond the sane "
                             f"limit of {MAX_CONFIG_NUMBER}", "the file is damaged or not "
                             "made by vidharm; save the weights again")
        return
    if isinstance(cfg, Mapping):
        for k, v in cfg.items():
            _check_config_bounds(v, label, f"{where}.{k}" if where != "config" else str(k))
        return
    if isinstance(cfg, (list, tuple)):
        if len(cfg) > MAX_CONFIG_LIST:
            raise InputError(f"weights '{label}' record {where} with {len(cfg)} entries",
                             "the file is damaged or not made by vidharm")
        for v in cfg:
            _check_config_bounds(v, label, where)


def build_checked(cfg: Dict[str, Any], file_tensors: Mapping[str, Tensor], label: str,
                  name: str) -> nn.Module:
    """Build ``cfg`` for real only once it is known to fit ``file_tensors``.

    The configuration is bounded (:data:`MAX_CONFIG_NUMBER`), then built on PyTorch's
    ``meta`` device (shapes, no memory) and its state-dict shapes compared with the file's
    (which may themselves be meta tensors read from a header): a configuration that
    disagrees with its tensors, or would need more than :data:`MAX_PARAMETERS`, is refused
    before any memory is allocated.
    """
    _check_config_bounds(cfg, label)
    with torch.device("meta"):
        ghost = build_model(cfg)
    n = sum(t.numel() for t in ghost.state_dict().values())
    if n > MAX_PARAMETERS:
        raise InputError(f"weights '{label}' describe a model with {n:,} parameters (the limit "
                         f"is {MAX_PARAMETERS:,})", "the file is damaged or not made by vidharm")
    check_compatible(ghost, file_tensors, label, name)
    del ghost
    return build_model(cfg)


def read_safetensors_shapes(path: PathLike) -> Dict[str, Tensor]:
    """The tensors a safetensors file declares, as ``meta`` tensors (shape and dtype only),
    read from its JSON header; offsets are checked against the file size."""
    p = Path(path)
    size = p.stat().st_size
    bad = InputError(f"'{p.name}' is not a valid safetensors file (damaged header)",
                     "the file is damaged; save it again")
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(size - 8, 100 << 20):
            raise bad
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise bad from None
    if not isinstance(header, dict):
        raise bad
    data = size - 8 - n
    out: Dict[str, Tensor] = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            shape = [int(d) for d in v["shape"]]
            a, b = (int(o) for o in v["data_offsets"])
            dtype = _ST_DTYPES[v["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise bad from None
        if any(d < 0 for d in shape) or not 0 <= a <= b <= data:
            raise bad
        out[k] = torch.empty(shape, dtype=dtype, device="meta")
    return out


def load_weights(path: PathLike, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild the model recorded in a vidharm safetensors file and load it; eval mode.

    Nothing is allocated before the recorded configuration is known to fit the file's
    tensors (:func:`build_checked`)."""
    from safetensors.torch import load_file

    p = Path(path)
    meta = read_metadata(p)
    if META_CONFIG not in meta:
        raise InputError(f"'{p.name}' is a safetensors file without a vidharm model config",
                         "save weights with vidharm.models.weights.save_weights")
    try:
        cfg = json.loads(meta[META_CONFIG])
        if not isinstance(cfg, dict):
            raise ValueError("not an object")
        model = build_checked(cfg, read_safetensors_shapes(p), p.name,
                              str(cfg.get("name", "phnet-custom")))
    except (ValueError, ConfigError) as exc:
        detail = exc.what if isinstance(exc, ConfigError) else str(exc)
        raise InputError(f"'{p.name}' records an unusable model config ({_short(detail, 100)})",
                         "save the weights again with this version of vidharm") from None
    try:
        sd = load_file(str(p), device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read the tensors of '{p.name}' ({type(exc).__name__}: "
                         f"{_short(str(exc), 90)})", "the file is damaged; save it again") from None
    sd = validate_state_dict(sd, p.name)
    check_compatible(model, sd, p.name, str(cfg.get("name", "phnet-custom")))
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def load_any(path: PathLike, model_or_name: Union[nn.Module, str, None] = None,
             device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load vidharm safetensors or a published ``.pth``, whichever the file is."""
    p = _check_path(path, "weights file")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        is_safetensors = True
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        is_safetensors = False
    else:  # sniff: zip (torch.save) or pickle (legacy torch.save) -> .pth
        head = _read_head(p, 2)
        is_safetensors = not (head == b"PK" or head[:1] == b"\x80")
    if is_safetensors:
        model = load_weights(p)
        if model_or_name is not None and isinstance(model_or_name, str) \
                and model.config.get("name") != model_or_name:
            raise InputError(f"'{p.name}' holds a '{model.config.get('name')}' model, "
                             f"not '{model_or_name}'", "pick the matching model name")
        return model.to(device)
    return load_published(p, model_or_name).to(device)
