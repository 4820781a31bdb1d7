"""phnet-grid on the CPU without torch: the shipped weights exported to ONNX
(``scripts/export_onnx.py``) and run by OpenCV's DNN module.

Importing torch costs about a second of every command's start and a few hundred MB; its
per-operation overhead is most of a small model's time. The same network through OpenCV:
0.5 ms per forward where torch takes 1.3 (one thread, this 2-core CPU); the grids agree
within 1e-4 (``tests/test_grid_harmonizers.py`` compares the two on real composites).

:class:`OnnxGridRunner` does what :class:`vidharm.models.runner.ModelRunner` does for grid
models: the composite and matte down to the working size (area), the matte binarised there,
both averaged down to the network's 64x64, the predicted grid applied as
:func:`vidharm.models.runner.applied_grid` says. The graph also outputs the global features
its joint head reads; the joint head (relative to the person's own frame) is a second, tiny
graph (``phnet-grid-joint.onnx``), run by :meth:`OnnxGridRunner.fit_relative`.
:func:`onnx_runner` picks it for the shipped phnet-grid when the model would run on the CPU;
everything else (``--weights``, CUDA, a working size that is not a multiple of 64) stays with
torch. Nothing here imports torch.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..color import ColorGrid
from ._registry import WEIGHTS_DIR

#: shipped names with an ONNX export -> file in the weights folder
ONNX_FILES = {"phnet-grid": "phnet-grid.onnx", "default": "phnet-grid.onnx"}
#: the graph's inputs: image (1, 3, 64, 64) in [0, 1], mask (1, 1, 64, 64)
input_names = ("image", "mask")
#: its outputs: the grid (1, 4, 4, 3, 4) and the global features (1, n)
output_names = ("grid", "features")
#: the joint head's graph next to it: features of composite and source -> (1, 3, 4)
JOINT_SUFFIX = "-joint.onnx"
joint_input_names = ("features_composite", "features_source")
IN_SIZE = 64
GRID = 4


def cuda_possible() -> bool:
    """Whether this machine could have a CUDA GPU at all, asked without importing torch:
    an NVIDIA driver is loaded (Linux: ``/proc/driver/nvidia``; Windows: ``nvcuda.dll`` on
    the path). False settles it; True means torch must be asked."""
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    if sys.platform == "win32":
        import ctypes.util
        return ctypes.util.find_library("nvcuda") is not None
    return False                      # macOS: no CUDA


def onnx_runner(spec: str, device: str, work_size: int, local: bool = False):
    """An :class:`OnnxGridRunner` for the shipped model ``spec`` when it has an ONNX export
    and would run on the CPU (``device`` "cpu", or "auto" on a machine without an NVIDIA
    driver), else None (use torch)."""
    name = ONNX_FILES.get(spec)
    if name is None or int(work_size) % IN_SIZE or device == "cuda":
        return None
    if device == "auto" and cuda_possible():
        return None
    path = WEIGHTS_DIR / name
    if not path.is_file():
        return None
    try:
        return OnnxGridRunner(path, work_size=work_size, local=local)
    except Exception as exc:          # an OpenCV without DNN, a damaged file: torch runs it
        import logging
        logging.getLogger("vidharm.models").warning(
            "phnet-grid's ONNX export could not be loaded (%s); running it with torch",
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None


class OnnxGridRunner:
    """The shipped phnet-grid through OpenCV's DNN module (see the module docstring);
    ``fit(composite, mask) -> ColorGrid`` as :meth:`ModelRunner.fit`."""

    device = "cpu"
    predicts_grid = True

    def __init__(self, path: str | os.PathLike, work_size: int = 256, local: bool = False,
                 name: str = "phnet-grid"):
        import cv2
        self._cv2 = cv2
        self.net = cv2.dnn.readNetFromONNX(str(path))
        self.path = Path(path)
        joint = self.path.with_name(self.path.name.removesuffix(".onnx") + JOINT_SUFFIX)
        self.joint = cv2.dnn.readNetFromONNX(str(joint)) if joint.is_file() else None
        self.work_size = int(work_size)
        self.local = bool(local)
        self.name = name
        # what the harmonizer reads of a model (arch check, streaming hooks: none)
        self.model = SimpleNamespace(config={"arch": "grid", "name": name, "grid": GRID,
                                             "in_size": IN_SIZE, "runtime": "opencv-dnn"})
        self._lock = threading.Lock()      # one forward at a time per network

    def predict(self, composite: np.ndarray, mask: np.ndarray):
        """(coefficients (gh, gw, 3, 4), composite at the working size uint8, its matte
        float32) for a composite uint8 (h, w, 3) and matte float (h, w)."""
        coeffs, _, small, msmall = self.predict_with_features(composite, mask)
        return coeffs, small, msmall

    def predict_with_features(self, composite: np.ndarray, mask: np.ndarray):
        """:meth:`predict` with the global features (1, n) between the coefficients and the
        small images."""
        cv2 = self._cv2
        s = self.work_size
        small = cv2.resize(composite, (s, s), interpolation=cv2.INTER_AREA)
        msmall = cv2.resize(np.asarray(mask, np.float32), (s, s), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small.astype(np.float32) * np.float32(1.0 / 255.0), (IN_SIZE, IN_SIZE),
                         interpolation=cv2.INTER_AREA)
        m = cv2.resize((msmall > 0.5).astype(np.float32), (IN_SIZE, IN_SIZE),
                       interpolation=cv2.INTER_AREA)
        blob = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
        mblob = np.ascontiguousarray(m[None, None])
        with self._lock:
            self.net.setInput(blob, input_names[0])
            self.net.setInput(mblob, input_names[1])
            grid, feats = self.net.forward(list(output_names))
        return (np.asarray(grid, np.float32).reshape(GRID, GRID, 3, 4),
                np.asarray(feats, np.float32).reshape(1, -1), small, msmall)

    def fit(self, composite: np.ndarray, mask: np.ndarray) -> ColorGrid:
        from .runner import applied_grid
        coeffs, small, msmall = self.predict(composite, mask)
        return applied_grid(coeffs, small, msmall, self.local)

    def fit_relative(self, composite: np.ndarray, mask: np.ndarray,
                     source: np.ndarray | None) -> ColorGrid:
        """As :meth:`vidharm.models.runner.ModelRunner.fit_relative`: relative to the frame
        the person was cut from, with the joint head's correction."""
        from ..color import fit_relative
        from .runner import applied_grid, joint_relative
        if self.joint is None:
            return fit_relative(self.fit, composite, mask, source)

        def fit_with_features(image, m):
            coeffs, feats, small, msmall = self.predict_with_features(image, m)
            return applied_grid(coeffs, small, msmall, self.local), feats

        def delta(gc, gs):
            with self._lock:
                self.joint.setInput(np.ascontiguousarray(gc, np.float32), joint_input_names[0])
                self.joint.setInput(np.ascontiguousarray(gs, np.float32), joint_input_names[1])
                return np.asarray(self.joint.forward(), np.float32)

        return joint_relative(fit_with_features, delta, self.fit, composite, mask, source)

    def close(self) -> None:
        """Nothing to free (the network goes with the object)."""
