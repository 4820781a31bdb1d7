import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def vidharm_exe() -> list[str]:
    exe = Path(sys.executable).parent / "vidharm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vidharm.cli"]


def run_cli(*args, env=None, cwd=None, timeout=300):
    """Run the real console script; returns CompletedProcess (text)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run(vidharm_exe() + [str(a) for a in args], capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def asset():
    from vidharm import assets

    def get(name):
        return str(assets.path(name))
    return get


@pytest.fixture(scope="session")
def sample_frame(asset):
    try:
        import av
    except ImportError:           # the GPU machine has OpenCV but no PyAV
        import cv2
        cap = cv2.VideoCapture(asset("sample-clip"))
        for _ in range(31):
            ok, bgr = cap.read()
            assert ok, "OpenCV could not decode the sample clip"
        cap.release()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with av.open(asset("sample-clip")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == 30:
                return f.to_ndarray(format="rgb24")


def write_audio_only(path, packets: int = 20) -> Path:
    """A real MP4 with one AAC stream (silence) and no video stream."""
    import av
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=48000, layout="stereo")
        for i in range(packets):
            af = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts = 48000, i * 1024
            for pk in s.encode(af):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return Path(path)


def load_fetch_script(name: str = "fetch_training_data"):
    """scripts/fetch_training_data.py as a module (it is a script, not part of the package)."""
    import importlib.util
    path = ROOT / "scripts" / "fetch_training_data.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up while executing
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod
