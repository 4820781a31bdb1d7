"""Configuration: typed sections, TOML profiles, command-line overrides.

A profile (``vidharm/profiles/*.toml``) is just a set of defaults. Resolution order, later wins:
built-in defaults -> profile -> overrides (command-line flags, the live control file; see
:func:`overrides_from`). Unknown keys and values out of range are an error naming the key.
"""
from __future__ import annotations

import dataclasses
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"  # shipped inside the package


@dataclass
class SegmentationConfig:
    segmenter: str = "mediapipe"      # registry name
    model: str = "general"            # general (256x256) | landscape (144x256) | a .tflite path
    threshold: float = 0.0            # confidences below this are cut to 0 (0 = keep soft matte)
    person_check: str = "auto"        # auto: another model than general is confirmed by it | off


@dataclass
class MaskConfig:
    refine: str = "guided"            # guided | none: edge-aware refinement guided by the frame
    refine_radius: int = 12           # guided filter radius at 720p (scaled with frame size)
    refine_eps: float = 1e-3          # guided filter regularisation (smaller keeps more edge)
    smooth_still: float = 0.6         # temporal smoothing while the person is still (0..1)
    smooth_motion: float = 0.05       # temporal smoothing while they move (0..1)
    motion_scale: float = 6.0         # grey-level change per pixel regarded as "moving"


@dataclass
class BackgroundConfig:
    blur_sigma: float = 12.0          # for --background blur, at 720p


@dataclass
class HarmonizerConfig:
    name: str = "phnet-grid"          # registry name: phnet-grid | light | none | phnet-lite | ...
    strength: float = 1.0             # 0 = plain composite, 1 = full harmonization
    grid: int = 4                     # cells of the grid fitted to pixel models (phnet-lite, fmm)
    weights: str = ""                 # weights file for learned harmonizers ("" = default)
    device: str = "auto"              # auto | cpu | cuda
    precision: str = "auto"           # on CUDA: auto (bf16 where supported, else fp16) | bf16 | fp16 | fp32
    work_size: int = 256              # the harmonizer's own resolution (short side)
    offline_hz: float = 0.0           # offline video: fits per second of video (0: every frame)
    relative: bool = True             # relative to the person's own frame (see harmonize.base)


@dataclass
class OutputConfig:
    crf: int = 20                     # H.264 quality (lower = better, bigger)
    preset: str = "veryfast"          # x264 preset
    pixel_format: str = "yuv420p"
    x264_params: str = ""             # a few x264 settings over the preset: "threads=1:partitions=..."


@dataclass
class LiveConfig:
    size: str = "1280x720"
    fps: int = 30
    sink: str = "virtualcam"
    source: str = "camera"


SECTIONS = {
    "segmentation": SegmentationConfig,
    "mask": MaskConfig,
    "background": BackgroundConfig,
    "harmonizer": HarmonizerConfig,
    "output": OutputConfig,
    "live": LiveConfig,
}


@dataclass
class Config:
    description: str = ""
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    harmonizer: HarmonizerConfig = field(default_factory=HarmonizerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    source: str = "built-in defaults"

    # ------------------------------------------------------------------ updates
    def apply(self, values: Mapping[str, Any], origin: str) -> "Config":
        """Return a copy with ``values`` applied. Keys are ``section.key`` or nested dicts."""
        cfg = dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s)) for s in SECTIONS})
        for dotted, value in _flatten(values):
            if dotted == "description":
                cfg.description = str(value)
                continue
            value = _checked(dotted, value, origin)
            section, _, key = dotted.partition(".")
            setattr(getattr(cfg, section), key, value)
        cfg.source = origin if self.source == "built-in defaults" else f"{self.source} + {origin}"
        return cfg


def _checked(dotted: str, value: Any, origin: str) -> Any:
    """``value`` coerced to the type of the setting ``dotted`` (``section.key``) and checked
    against :data:`LIMITS`; one :class:`ConfigError` naming the key and ``origin`` if the key
    is unknown or the value not allowed."""
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key or "." in key:
        raise ConfigError(f"unknown key '{dotted}' in {origin}",
                          f"valid sections: {', '.join(SECTIONS)}")
    names = {f.name: f for f in fields(SECTIONS[section])}
    if key not in names:
        raise ConfigError(f"unknown key '{dotted}' in {origin}",
                          f"valid keys in [{section}]: {', '.join(names)}")
    return check_value(dotted, _coerce(value, names[key], dotted, origin), origin)


#: Short names used by command-line flags and the live control file -> ``section.key``.
SHORT_NAMES: dict[str, str] = {
    "harmonizer": "harmonizer.name",
    "strength": "harmonizer.strength",
    "weights": "harmonizer.weights",
    "device": "harmonizer.device",
    "relative": "harmonizer.relative",
    "segmentation_model": "segmentation.model",
    "size": "live.size",
    "fps": "live.fps",
    "sink": "live.sink",
    "source": "live.source",
}


def overrides_from(values: Mapping[str, Any], origin: str = "the settings") -> dict[str, Any]:
    """Settings given by flags or the control file as ``{"section.key": value}`` for
    :func:`load_config`.

    Keys are the short names of :data:`SHORT_NAMES` (``strength``) or ``section.key``
    (``harmonizer.strength``); ``None`` means "not given" and is dropped. Each value is
    coerced and range-checked; an unknown key or a bad value raises one
    :class:`ConfigError` naming the key and ``origin`` ("command line", "the control file").
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        dotted = SHORT_NAMES.get(name, name)
        if "." not in dotted:
            raise ConfigError(f"unknown key '{name}' in {origin}",
                              f"use one of: {', '.join(SHORT_NAMES)}, or section.key")
        out[dotted] = _checked(dotted, value, origin)
    return out

def _flatten(values: Mapping[str, Any], prefix: str = ""):
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _coerce(value: Any, f: dataclasses.Field, dotted: str, origin: str) -> Any:
    typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str,
                                                   "bool": bool}.get(str(f.type), str)
    try:
        if typ is bool:
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if typ in (int, float) and isinstance(value, bool):
            raise ValueError
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return typ(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"'{dotted}' in {origin} must be {typ.__name__}, got {value!r}") from None


#: x264 presets (``output.preset``)
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")

#: The one table of allowed values, checked wherever a setting comes from (built-in defaults,
#: profiles, command-line flags, the live control file): ``(low, high)`` for numbers
#: (inclusive; NaN and infinities are refused) or a tuple of choices for strings. Upper
#: bounds keep a typo from allocating petabytes (``harmonizer.grid = 100000``).
LIMITS: dict[str, tuple] = {
    "segmentation.threshold": (0.0, 1.0),
    "segmentation.person_check": ("auto", "off"),
    "mask.refine": ("guided", "none"),
    "mask.refine_radius": (0, 256),
    "mask.refine_eps": (1e-8, 1.0),
    "mask.smooth_still": (0.0, 1.0),
    "mask.smooth_motion": (0.0, 1.0),
    "mask.motion_scale": (0.01, 255.0),
    "background.blur_sigma": (0.0, 500.0),
    "harmonizer.strength": (0.0, 1.0),
    "harmonizer.grid": (1, 32),
    "harmonizer.work_size": (16, 4096),
    "harmonizer.device": ("auto", "cpu", "cuda"),
    "harmonizer.precision": ("auto", "bf16", "fp16", "fp32"),
    "harmonizer.offline_hz": (0.0, 1000.0),
    "output.crf": (0, 51),
    "output.preset": X264_PRESETS,
    "output.pixel_format": ("yuv420p", "yuv422p", "yuv444p"),
    "live.fps": (1, 240),
}


def check_value(dotted: str, value: Any, origin: str = "the settings") -> Any:
    """``value`` if it is allowed for ``dotted`` (see :data:`LIMITS`), else one
    :class:`ConfigError` naming the key, where it came from and the allowed range."""
    import math
    rule = LIMITS.get(dotted)
    if dotted == "live.size":
        _check_size(value, dotted, origin)
    elif dotted in ("harmonizer.name", "segmentation.segmenter", "segmentation.model",
                    "live.sink", "live.source") and not str(value).strip():
        raise ConfigError(f"'{dotted}' in {origin} is empty", "give a name (see `vidharm plugins`)")
    if dotted == "output.x264_params":
        _check_x264_params(value, dotted, origin)
    if rule is None:
        return value
    if isinstance(rule[0], str):
        if value not in rule:
            raise ConfigError(f"'{dotted}' in {origin} is {value!r}",
                              f"use one of: {', '.join(rule)}")
        return value
    lo, hi = rule
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"'{dotted}' in {origin} is {value!r}, out of range",
                          f"use a value from {lo} to {hi}")
    return value


#: the x264 settings ``output.x264_params`` may change (``key=value`` joined by ':') and their
#: values: an (low, high) integer range or the allowed words (partitions: a comma list).
#: Checked here because x264 only logs a value it cannot parse and goes on without it.
X264_PARAMS: dict[str, tuple] = {
    "threads": (0, 64), "lookahead-threads": (0, 64), "subme": (0, 11), "ref": (1, 16),
    "rc-lookahead": (0, 250), "bframes": (0, 16), "trellis": (0, 2), "aq-mode": (0, 3),
    "mbtree": (0, 1), "me": ("dia", "hex", "umh", "esa", "tesa"),
    "partitions": ("none", "all", "i4x4", "i8x8", "p8x8", "p4x4", "b8x8"),
}


def _x264_value_ok(key: str, value: str) -> bool:
    rule = X264_PARAMS[key]
    if isinstance(rule[0], int):
        return value.isdigit() and rule[0] <= int(value) <= rule[1]
    words = value.split(",") if key == "partitions" else [value]
    return all(w in rule for w in words)


def _check_x264_params(value: Any, dotted: str, origin: str) -> None:
    text = str(value)
    if not text:
        return
    for item in text.split(":"):
        key, sep, val = item.partition("=")
        if not sep or key not in X264_PARAMS or not _x264_value_ok(key, val):
            raise ConfigError(f"'{dotted}' in {origin} has {item!r}",
                              f"give key=value pairs joined by ':' ({', '.join(X264_PARAMS)}; "
                              "e.g. threads=1:partitions=i8x8,i4x4)")


def _check_size(value: Any, dotted: str, origin: str) -> None:
    try:
        w, h = (int(v) for v in str(value).lower().replace("*", "x").split("x"))
        if not (16 <= w <= 8192 and 16 <= h <= 8192):
            raise ValueError
    except ValueError:
        raise ConfigError(f"'{dotted}' in {origin} is {value!r}",
                          "give WIDTHxHEIGHT, each 16 to 8192, e.g. 1280x720") from None


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def resolve_profile_path(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix == ".toml" or p.exists() or "/" in name_or_path:
        if not p.is_file():
            raise ConfigError(f"profile file '{name_or_path}' does not exist",
                              f"give an existing .toml file or one of: {', '.join(available_profiles())}")
        return p
    cand = PROFILES_DIR / f"{name_or_path}.toml"
    if not cand.is_file():
        raise ConfigError(f"unknown profile '{name_or_path}'",
                          f"choose one of: {', '.join(available_profiles())}, or give a path to a .toml file")
    return cand


def load_config(profile: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the profile (name in ``profiles/`` or a path), then ``overrides``."""
    cfg = Config()
    if profile:
        path = resolve_profile_path(profile)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"profile '{path}' is not valid TOML: {exc}",
                              "fix the file's syntax") from None
        cfg = cfg.apply(data, f"profile '{path.stem}'")
    if overrides:
        cfg = cfg.apply({k: v for k, v in overrides.items() if v is not None}, "command line")
    return cfg
