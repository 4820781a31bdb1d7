"""Runs a harmonization network on frames: :class:`ModelRunner` (public as
:class:`vidharm.Harmonizer`).

The network runs at its own resolution (``work_size``, square, as the published test script
did); its effect is fitted as a grid of affine colour transforms (:mod:`vidharm.color`), or
predicted directly by grid models, and applied to the full-resolution composite, so the
person's detail is kept. Background pixels come back unchanged. Importing this module does not
import torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..color import ColorGrid, apply_grid, bounded_by_scene, fit_grid, fit_relative, global_refit
from ..errors import InputError
from ..mask import to_float_mask
from . import shipped_names, shipped_weights


def resolve_device(device: str = "auto") -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available",
                         "use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device '{device}'", "use auto, cpu or cuda")
    return device


def applied_grid(coeffs: np.ndarray, small: np.ndarray, msmall: np.ndarray,
                 local: bool = False) -> ColorGrid:
    """A grid model's prediction ``coeffs`` (gh, gw, 3, 4) as vidharm applies it: its own
    grid (``local``) or the one global transform closest to it over the person, fitted on
    the composite and matte at the working size (``small`` uint8, ``msmall`` float)."""
    grid = ColorGrid(np.ascontiguousarray(coeffs, np.float32))
    if local or grid.shape == (1, 1):
        return grid
    return global_refit(grid, small, msmall.astype(np.float32, copy=False))[0]


class ModelRunner:
    """A harmonization network plus the full-resolution colour-transform fitting.

    Parameters
    ----------
    model: a ``torch.nn.Module`` with ``forward(image (B,3,h,w) [0,1], mask (B,1,h,w) {0,1})``.
    work_size: the network's input size (square), 256 by default.
    grid: cells of the fitted colour-transform grid (rows, cols).
    precision: on CUDA, ``auto`` (bf16 where the GPU supports it, else fp16), ``bf16``,
        ``fp16`` (autocast) or ``fp32``; the CPU always runs fp32.
    local: grid models (phnet-grid) only: apply the model's own grid of transforms. By default
    they apply the one global 3x4 transform closest to it over the person
    (:func:`vidharm.color.global_refit`), which scores better on every held-out recipe
    (docs/model-card-grid.md: the model's local variation does more harm than good).
    """

    def __init__(self, model, device: str = "auto", work_size: int = 256,
                 grid: tuple[int, int] = (4, 4), name: str = "custom", local: bool = False,
                 precision: str = "auto"):
        import torch
        if precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.work_size = int(work_size)
        self.grid = grid
        self.name = name
        self.local = bool(local)
        self._torch = torch
        self.amp_dtype = None
        if self.device == "cuda":
            if precision == "auto":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        #: what the network runs in: fp32 on the CPU; on CUDA bf16 / fp16 autocast or fp32
        self.precision = "fp32" if self.amp_dtype is None else \
            ("bf16" if self.amp_dtype == torch.bfloat16 else "fp16")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name: str = "default", device: str = "auto", **kw):
        """``name``: "default" (shipped phnet-grid), a shipped model name ("phnet-grid",
        "phnet-lite", "fmm": :func:`vidharm.models.shipped_names`), or a weights path (vidharm
        ``.safetensors`` or a published PHNet ``.pth``)."""
        from .weights import load_published, load_weights
        if name in shipped_names():
            path = shipped_weights(name)
        else:
            path = Path(os.path.expanduser(name))
            if not path.is_file():
                raise InputError(f"weights file '{name}' does not exist",
                                 f"give a .safetensors/.pth path or one of: {', '.join(shipped_names())}")
        if path.suffix == ".safetensors":
            model = load_weights(path)
        else:
            model = load_published(path)
        return cls(model, device=device, name=path.stem, **kw)

    # ------------------------------------------------------------------ core
    def _to_tensor(self, composite: np.ndarray, mask: np.ndarray):
        """Square low-res network input: (1,3,s,s) float [0,1] and (1,1,s,s) {0,1}."""
        import cv2
        s = self.work_size
        small = cv2.resize(composite, (s, s), interpolation=cv2.INTER_AREA)
        msmall = cv2.resize(mask, (s, s), interpolation=cv2.INTER_AREA)
        torch = self._torch
        img = torch.from_numpy(small).permute(2, 0, 1)[None].float().div_(255.0)
        m = torch.from_numpy((msmall > 0.5).astype(np.float32))[None, None]   # binarised at .5
        return img.to(self.device), m.to(self.device), small, msmall

    def run_network(self, image, mask):
        """Torch form for the engine: (B,3,h,w) [0,1], (B,1,h,w) -> blended (B,3,h,w)."""
        torch = self._torch
        with torch.inference_mode():
            if self.amp_dtype is not None:
                with torch.autocast("cuda", dtype=self.amp_dtype):
                    out = self.model(image, mask)
            else:
                out = self.model(image, mask)
            out = out.float().clamp_(0, 1)
            return out * mask + image * (1 - mask)

    tensor = run_network

    @property
    def predicts_grid(self) -> bool:
        """True for models that output the colour grid themselves (``phnet-grid``)."""
        return callable(getattr(self.model, "predict_grid", None))

    def predict_grids(self, image, mask) -> np.ndarray:
        """Grid models: (B,3,h,w) [0,1], (B,1,h,w) -> coefficients (B, gh, gw, 3, 4)."""
        with self._torch.inference_mode():
            return self.model.predict_grid(image, mask).float().cpu().numpy()

    @property
    def has_joint(self) -> bool:
        """True for grid models with a joint head (:class:`vidharm.models.gridnet.JointHead`)."""
        return getattr(self.model, "joint", None) is not None

    def fit(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        """The colour-transform grid for this composite: predicted directly by grid models,
        otherwise fitted to the network's output at low resolution."""
        img, m, small, msmall = self._to_tensor(composite, mask)
        if self.predicts_grid:
            return self._as_applied(self.predict_grids(img, m)[0], small, msmall)
        out = self.run_network(img, m)[0].permute(1, 2, 0).float().cpu().numpy()
        return fit_grid(small.astype(np.float32) / 255.0, out, (msmall > 0.5).astype(np.float32),
                        self.grid, ridge=1e-3)

    def _as_applied(self, coeffs: np.ndarray, small: np.ndarray, msmall: np.ndarray) -> ColorGrid:
        return applied_grid(coeffs, small, msmall, self.local)

    def fit_relative(self, composite: np.ndarray, mask: np.ndarray,
                     source: np.ndarray | None) -> ColorGrid:
        """:meth:`fit` relative to the frame the person was cut from
        (:func:`vidharm.color.fit_relative`); for a model with a joint head, plus its
        correction from both frames (:func:`joint_relative`)."""
        if not self.has_joint:
            return fit_relative(self.fit, composite, mask, source)
        torch = self._torch

        def fit_with_features(image, m):
            img, mt, small, msmall = self._to_tensor(image, m)
            with torch.inference_mode():
                coeffs, feats = self.model.predict_with_features(img, mt)
            return (self._as_applied(coeffs[0].float().cpu().numpy(), small, msmall),
                    feats.float().cpu().numpy())

        def delta(gc, gs):
            with torch.inference_mode():
                return self.model.joint_delta(torch.from_numpy(gc).to(self.device),
                                              torch.from_numpy(gs).to(self.device)).float().cpu().numpy()

        return joint_relative(fit_with_features, delta, self.fit, composite, mask, source)

    def __call__(self, composite: np.ndarray, mask: np.ndarray,
                 source: np.ndarray | None = None) -> np.ndarray:
        """The harmonized composite; with ``source`` (the frame the person was cut from, same
        size) relative to it, as vidharm's commands apply it."""
        comp, m = _check_pair(composite, mask)
        src = None if source is None else _check_pair(source, mask)[0]
        return apply_grid(comp, m, self.fit_relative(comp, m, src))

    def batch(self, composites: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Harmonize several frames in one network call."""
        torch = self._torch
        pairs = [_check_pair(c, m) for c, m in zip(composites, masks)]
        if not pairs:
            return []
        tens = [self._to_tensor(c, m) for c, m in pairs]
        img = torch.cat([t[0] for t in tens])
        msk = torch.cat([t[1] for t in tens])
        if self.predicts_grid:
            return [apply_grid(comp, m, self._as_applied(c, t[2], t[3]))
                    for (comp, m), t, c in zip(pairs, tens, self.predict_grids(img, msk))]
        outs = self.run_network(img, msk).permute(0, 2, 3, 1).float().cpu().numpy()
        res = []
        for (comp, m), t, o in zip(pairs, tens, outs):
            g = fit_grid(t[2].astype(np.float32) / 255.0, o, (t[3] > 0.5).astype(np.float32),
                         self.grid, ridge=1e-3)
            res.append(apply_grid(comp, m, g))
        return res

    def full_resolution(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Run the network on the whole frame (for comparison; slow on large frames)."""
        comp, m = _check_pair(composite, mask)
        torch = self._torch
        img = torch.from_numpy(comp).permute(2, 0, 1)[None].float().div_(255.0).to(self.device)
        mb = torch.from_numpy((m > 0.5).astype(np.float32))[None, None].to(self.device)
        out = self.run_network(img, mb)[0].permute(1, 2, 0).cpu().numpy()
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def joint_relative(fit_with_features, delta, fit, composite: np.ndarray, mask: np.ndarray,
                   source: np.ndarray | None) -> ColorGrid:
    """The relative transform of a grid model with a joint head: ``fit(composite)`` with
    ``fit(source)`` undone (as :func:`vidharm.color.fit_relative`, whose cases it keeps: no
    source, the fit alone; a source equal to the composite, the identity), plus the joint
    head's correction ``delta(features(composite), features(source))`` (1, 3, 4), added to
    every cell, within :func:`vidharm.color.bounded_by_scene`.
    ``fit_with_features(image, mask) -> (ColorGrid as applied, features (1, n))``."""
    if source is None or source.shape != composite.shape or np.array_equal(source, composite):
        return fit_relative(fit, composite, mask, source)     # its answers and its errors
    grid_c, feats_c = fit_with_features(composite, mask)
    grid_s, feats_s = fit_with_features(source, mask)
    rel = grid_c.relative_to(grid_s)
    d = np.asarray(delta(feats_c, feats_s), np.float32).reshape(1, 1, 3, 4)
    return bounded_by_scene(ColorGrid(np.ascontiguousarray(rel.coeffs + d, np.float32)),
                            composite, mask, source)


def _check_pair(composite, mask):
    comp = np.asarray(composite)
    if comp.ndim != 3 or comp.shape[2] != 3 or comp.dtype != np.uint8:
        raise InputError(f"composite must be uint8 HxWx3 RGB, got {comp.dtype} {comp.shape}",
                         "pass an 8-bit RGB image")
    m = to_float_mask(mask)
    if m.shape != comp.shape[:2]:
        raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is "
                         f"{comp.shape[1]}x{comp.shape[0]}",
                         "give a mask with the same width and height as the image")
    return np.ascontiguousarray(comp), m
