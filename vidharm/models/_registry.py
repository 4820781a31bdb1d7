"""The model table (timm-style): name -> architecture, configuration, shipped weights.

Each model family registers itself at the bottom of its own module::

    register_arch("fmm", FMMNet, FMM_DEFAULT_OPTIONS)
    register_model("fmm", "U-Net + FMM at the bottleneck", arch="fmm",
                   weights="fmm.safetensors", enc_sizes=[4, 16, 32, 64, 128], fmm_levels=[0])

This module imports no family: :mod:`vidharm.models` imports the built-in ones before it
reads the table, so use its functions rather than these.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..errors import ConfigError, InputError

#: the shipped weights files (package data)
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: what the shipped name "default" stands for
DEFAULT_MODEL = "phnet-grid"


@dataclass(frozen=True)
class Arch:
    """How to build one architecture: ``builder(**options)``; ``defaults`` holds every option
    a configuration may leave out, ``required`` the ones it must give, ``optional`` the ones
    that are recorded only when given."""

    builder: Callable[..., Any]
    defaults: Mapping[str, Any]
    required: Tuple[str, ...] = ("enc_sizes",)
    optional: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """One named configuration: ``config`` as registered, ``weights`` the shipped file (or None)."""

    config: Dict[str, Any]
    help: str = ""
    weights: Optional[str] = None


ARCHS: Dict[str, Arch] = {}
MODELS: Dict[str, ModelEntry] = {}


def register_arch(arch: str, builder: Callable[..., Any], defaults: Mapping[str, Any],
                  required: Tuple[str, ...] = ("enc_sizes",), optional: Tuple[str, ...] = ()) -> None:
    """Make ``arch`` (the ``arch`` of a configuration) buildable by ``builder``."""
    ARCHS[arch] = Arch(builder, dict(defaults), tuple(required), tuple(optional))


def register_model(name: str, help: str = "", *, arch: str, weights: Optional[str] = None,
                   **config: Any) -> None:
    """Add the named configuration; ``weights``: its shipped file under :data:`WEIGHTS_DIR`."""
    cfg = {"arch": arch, **copy.deepcopy(config)}
    cfg["name"] = name
    MODELS[name] = ModelEntry(cfg, help, weights)


def list_models() -> List[str]:
    return sorted(MODELS)


def model_config(name: str) -> Dict[str, Any]:
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown model '{name}'",
                          f"{hint}known models: {', '.join(list_models())}")
    cfg = MODELS[name].config
    return copy.deepcopy({**ARCHS[cfg["arch"]].defaults, **cfg})


def build_model(config: Dict[str, Any]):
    cfg = dict(config)
    name = cfg.pop("arch", "phnet")
    arch = ARCHS.get(name)
    if arch is None:
        raise ConfigError(f"unknown model architecture '{name}'",
                          f"known architectures: {', '.join(sorted(ARCHS))}")
    allowed = set(arch.defaults) | set(arch.required) | set(arch.optional) | {"name"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(f"unknown model option(s): {', '.join(unknown)}",
                          f"known options: {', '.join(sorted(allowed))}")
    missing = [k for k in arch.required if k not in cfg]
    if missing:
        raise ConfigError(f"model configuration lacks {', '.join(missing)}")
    try:
        return arch.builder(**cfg)
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"invalid model configuration: {exc}") from None


def shipped_names() -> List[str]:
    return ["default"] + sorted(n for n, e in MODELS.items() if e.weights)


def shipped_weights(name: str) -> Path:
    entry = MODELS.get(DEFAULT_MODEL if name == "default" else name)
    if entry is None or not entry.weights:
        raise InputError(f"no shipped weights for '{name}'",
                         f"use one of: {', '.join(shipped_names())}, or pass --weights PATH")
    path = WEIGHTS_DIR / entry.weights
    if not path.is_file():
        raise InputError(f"no shipped weights for '{name}' ({path} is missing)",
                         "reinstall vidharm, or pass --weights PATH")
    return path
