"""The built wheel is what `pip install vidharm` gives: build it, install it into a fresh
virtual environment outside the checkout, and run the CLI from there (profiles, --version,
a short transcode with --profile call-cpu).

The fresh environment is a real venv (``python -m venv --without-pip``) with only the vidharm
wheel installed into it. Its dependencies (torch, MediaPipe, ...) are borrowed from the test
interpreter's site-packages through a plain ``.pth`` path line written *after* the install: a
path line does not run that folder's own ``.pth`` files, so the checkout's editable install
(``__editable__.vidharm-*.pth``) stays inactive, and vidharm can only come from the wheel --
which the test asserts.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from vidharm import assets

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def sh(*cmd, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{cmd}\nstdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}"
    return r


def copy_sources(dest: Path) -> Path:
    """What the wheel is built from (the working tree, not the git index): no caches, no
    build folders, no egg-info left in the checkout."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    dest.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, dest / f)
    for d in ("vidharm", "plugins"):
        shutil.copytree(ROOT / d, dest / d, ignore=junk)
    return dest


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()

    # 1. build the wheel (no network: the set-up's setuptools, no build isolation)
    src = copy_sources(tmp_path / "src")
    wheels = tmp_path / "wheels"
    sh(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
       "--disable-pip-version-check", "-q", "-w", wheels, cwd=tmp_path)
    (whl,) = wheels.glob("vidharm-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for member in ("vidharm/profiles/call-cpu.toml", "vidharm/profiles/creator-quality.toml",
                   "vidharm/weights/phnet-lite.safetensors", "vidharm/weights/phnet-grid.onnx",
                   "vidharm/weights/phnet-grid.safetensors", "vidharm/commands/doctor.py",
                   "vidharm_plugins/sinks.py"):
        assert member in names, f"{member} is not in the wheel"

    # 2. a fresh venv outside the checkout with only the wheel installed into it
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    py = venv / "bin" / "python"
    sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
       "--disable-pip-version-check", "-q", whl, cwd=work)
    site = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                   cwd=work).stdout.strip())
    assert (site / "vidharm" / "profiles" / "call-cpu.toml").is_file()
    # dependencies from the test interpreter's site-packages (a plain path line, added last)
    (site / "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    exe = venv / "bin" / "vidharm"
    assert exe.is_file() and exe.read_text().startswith(f"#!{py}")

    # 3. vidharm is imported from the installed wheel, not from the checkout
    r = sh(py, "-c", "import vidharm, vidharm_plugins, vidharm.config as c; "
                     "print(vidharm.__file__); print(vidharm_plugins.__file__); "
                     "print(c.PROFILES_DIR)", cwd=work, env=env)
    paths = [Path(p).resolve() for p in r.stdout.split()]
    for p in paths:
        assert site.resolve() in p.parents, f"{p} is not from the installed wheel"
        assert ROOT not in p.parents, f"{p} comes from the checkout"

    # 4. the CLI from there
    r = sh(exe, "profiles", cwd=work, env=env)
    assert "call-cpu" in r.stdout and "creator-quality" in r.stdout
    assert f"(in {(site / 'vidharm' / 'profiles').resolve()}" in r.stdout \
        or f"(in {site / 'vidharm' / 'profiles'}" in r.stdout

    r = sh(exe, "--version", cwd=work, env=env)
    assert r.stdout.startswith("vidharm 0.1.0 (") and str(ROOT) not in r.stdout
    assert "torch " in r.stdout and "CUDA: " in r.stdout

    clip = assets.path("sample-clip")
    bg = assets.path("sample-background")
    r = sh(exe, "transcode", clip, "-o", "out.mp4", "--background", bg, "--profile", "call-cpu",
           "--no-progress", cwd=work, env=env)
    assert "wrote out.mp4 (72 frames" in r.stdout
    import av
    with av.open(str(work / "out.mp4")) as c:
        assert c.streams.video[0].frames == 72 or sum(1 for _ in c.decode(video=0)) == 72


def test_every_package_is_listed_for_the_wheel():
    """A new sub-package that pyproject.toml does not list would be missing from the wheel."""
    import tomllib
    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "vidharm").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml's packages: {sorted(found - listed)}"
