"""``vidharm doctor`` checks every platform shares: the segmentation models in the cache, the
GPU as torch sees it, Python and the libraries (two OpenCV wheels, imports that fail) and
pyvirtualcam's backend."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from .doctor_report import Line

#: the OpenCV wheels that all install a top-level ``cv2`` (two of them break each other)
OPENCV_WHEELS = ("opencv-python", "opencv-contrib-python", "opencv-python-headless",
                 "opencv-contrib-python-headless")
#: segmentation models vidharm run uses (profiles pick one of them)
MODEL_ASSETS = ("selfie-general", "selfie-landscape")


def _pkg_version(name: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def model_lines() -> list[Line]:
    """The segmentation models in the cache, re-hashed against their pins."""
    from .. import assets as A
    sec = "Segmentation models"
    out = []
    for name, status in A.verify(MODEL_ASSETS):
        a = A.get_asset(name)
        where = A._asset_path(a)
        if status == "ok":
            out.append(Line(sec, "ok", f"{name}: {where} (sha256 {a.sha256[:12]}... matches)"))
        elif status == "missing":
            out.append(Line(sec, "missing", f"{name}: not in the cache ({A.cache_dir()})",
                            "vidharm assets fetch"))
        else:
            out.append(Line(sec, "wrong", f"{name}: {where} does not match its SHA-256 pin",
                            f"rm '{where}' && vidharm assets fetch"))
    return out


def torch_summary() -> dict:
    """torch version, whether its build has CUDA, and the GPU if one is usable."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 -- a broken install is what doctor reports
        return {"torch": None, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda": False}
    try:
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(cuda=True, gpu=props.name, gpu_gib=props.total_memory / 2 ** 30,
                        gpus=torch.cuda.device_count())
    except Exception as exc:  # noqa: BLE001
        info["cuda_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return info


def gpu_lines(root: Path | str = "/", info: dict | None = None) -> list[Line]:
    root = Path(root)
    sec = "GPU"
    info = torch_summary() if info is None else info
    if info.get("torch") is None:
        return [Line(sec, "wrong", f"torch does not import: {info.get('error')}",
                     f"{sys.executable} -m pip install --force-reinstall torch==2.13.0")]
    if info.get("cuda"):
        n = info.get("gpus", 1)
        return [Line(sec, "ok", f"CUDA {info['cuda_build']}: {info['gpu']} "
                                f"({info['gpu_gib']:.0f} GiB){f', {n} GPUs' if n > 1 else ''}; "
                                f"--device auto uses it")]
    driver = (root / "proc/driver/nvidia/version").exists()
    if info.get("cuda_build") is None and driver:
        return [Line(sec, "note", f"an NVIDIA driver is installed but torch {info['torch']} is a "
                                  f"CPU-only build",
                     "install a CUDA build of torch (pytorch.org lists the pip line per CUDA "
                     "version) to run phnet on the GPU")]
    if info.get("cuda_build") is None:
        return [Line(sec, "note", f"no CUDA (torch {info['torch']} is a CPU build): everything "
                                  f"runs on the CPU; the call-cpu profile is made for that")]
    return [Line(sec, "note", f"torch {info['torch']} is built for CUDA {info['cuda_build']} but "
                              f"finds no usable GPU{': ' + info['cuda_error'] if info.get('cuda_error') else ''}",
                 "nvidia-smi   # no output: install or update the NVIDIA driver")]


def python_lines(import_check: Callable[[str], str | None] | None = None,
                 pkg_version: Callable[[str], str | None] | None = None) -> list[Line]:
    """Python and library versions; two OpenCV wheels; whether mediapipe imports (the
    protobuf conflicts other tools trip over show up here)."""
    sec = "Python and libraries"
    out = []
    py = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 10):
        out.append(Line(sec, "wrong", f"Python {py}: vidharm needs 3.10 or newer",
                        "install Python 3.10-3.13 and create the virtualenv with it"))
    else:
        out.append(Line(sec, "ok", f"Python {py} ({sys.executable})"))
    names = ("vidharm", "torch", "numpy", "opencv-contrib-python", "mediapipe", "protobuf", "av",
             "pyvirtualcam", "kornia", "safetensors", "click")
    pkg_version = pkg_version or _pkg_version
    vers = {n: pkg_version(n) for n in names}
    absent = [n for n in names if vers[n] is None and n not in ("protobuf",)]
    out.append(Line(sec, "info", ", ".join(f"{n} {v}" for n, v in vers.items() if v)))
    if absent:
        out.append(Line(sec, "missing", f"not installed: {', '.join(absent)}",
                        f"{sys.executable} -m pip install "
                        + " ".join("torch==2.13.0" if n == "torch" else n for n in absent)
                        + ("   # torch pinned as scripts/setup.sh does" if "torch" in absent
                           else "")))
    cv = [n for n in OPENCV_WHEELS if pkg_version(n)]
    if len(cv) > 1:
        others = " ".join(n for n in cv if n != "opencv-contrib-python")
        out.append(Line(sec, "wrong", f"{len(cv)} OpenCV wheels installed ({', '.join(cv)}): they "
                                      f"overwrite each other's cv2",
                        f"{sys.executable} -m pip uninstall -y {others} && {sys.executable} -m pip "
                        f"install --force-reinstall opencv-contrib-python"))
    check = import_check or _import_error
    for mod in ("mediapipe", "av", "pyvirtualcam"):
        if vers.get(mod) is None:
            continue
        err = check(mod)
        if err:
            fix = f"{sys.executable} -m pip install --force-reinstall {mod}"
            if mod == "mediapipe" and "protobuf" in err.lower():
                fix = f"{sys.executable} -m pip install '{_protobuf_requirement()}'"
            out.append(Line(sec, "wrong", f"{mod} does not import: {err}", fix))
    return out


def _import_error(mod: str) -> str | None:
    import importlib
    try:
        importlib.import_module(mod)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def _protobuf_requirement() -> str:
    from importlib import metadata
    try:
        for req in metadata.requires("mediapipe") or []:
            if req.replace(" ", "").startswith("protobuf"):
                return req.split(";")[0].replace(" ", "")
    except metadata.PackageNotFoundError:
        pass
    return "protobuf<5"


def pyvirtualcam_line(platform: str) -> list[Line]:
    """The pyvirtualcam backend for this platform is importable."""
    sec = ("Virtual camera (v4l2loopback)" if platform.startswith("linux") else
           "Virtual camera (Windows)" if platform.startswith("win") else "Virtual camera (macOS)")
    try:
        from pyvirtualcam.camera import BACKENDS
    except Exception as exc:  # noqa: BLE001
        return [Line(sec, "missing", f"pyvirtualcam does not import ({type(exc).__name__})",
                     f"{sys.executable} -m pip install --force-reinstall pyvirtualcam")]
    if not BACKENDS:
        return [Line(sec, "wrong", "pyvirtualcam has no backend for this platform",
                     f"{sys.executable} -m pip install --force-reinstall pyvirtualcam")]
    return [Line(sec, "ok", f"pyvirtualcam backends: {', '.join(sorted(BACKENDS))}")]
