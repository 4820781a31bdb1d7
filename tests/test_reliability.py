"""Issue 11: bad input, faults and signals, each through the real CLI where the CLI is the
subject. Every refusal is one line on stderr, a non-zero exit, and no file written or
replaced."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, vidharm_exe


def _one_error_line(r, *needles):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _digest(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture
def stills(tmp_path, sample_frame, asset):
    from vidharm.imageio import save_image
    person = save_image(tmp_path / "p.jpg", sample_frame)
    bg = tmp_path / "bg.jpg"
    shutil.copy(asset("sample-background"), bg)
    return person, bg


# ------------------------------------------------------------------ row 3: inputs never replaced
def test_composite_and_harmonize_never_overwrite_an_input(tmp_path, stills):
    person, bg = stills
    before = {p: _digest(p) for p in (person, bg)}
    _one_error_line(run_cli("composite", person, bg, "-o", person), "would overwrite")
    _one_error_line(run_cli("composite", person, bg, "-o", tmp_path / "." / "bg.jpg"),
                    "would overwrite")
    _one_error_line(run_cli("composite", person, bg, "-o", tmp_path / "o.png", "--mask-out", person),
                    "--mask-out")
    assert not (tmp_path / "o.png").exists()
    r = run_cli("composite", person, bg, "-o", tmp_path / "c.png", "--mask-out", tmp_path / "m.png")
    assert r.returncode == 0, r.stderr
    comp, mask = tmp_path / "c.png", tmp_path / "m.png"
    after = {p: _digest(p) for p in (comp, mask)}
    _one_error_line(run_cli("harmonize", comp, mask, "-o", comp), "would overwrite")
    _one_error_line(run_cli("harmonize", comp, mask, "-o", mask), "would overwrite")
    assert {p: _digest(p) for p in (person, bg)} == before
    assert {p: _digest(p) for p in (comp, mask)} == after


# ------------------------------------------------------------------ rows 10, 11, 14: settings
@pytest.mark.parametrize("flag,value,key", [
    ("--strength", "5", "harmonizer.strength"),
    ("--strength", "nan", "harmonizer.strength"),
    ("--strength", "-1", "harmonizer.strength"),
])
def test_strength_out_of_range_flag(tmp_path, stills, flag, value, key):
    person, bg = stills
    line = _one_error_line(run_cli("composite", person, bg, "-o", tmp_path / "o.png", flag, value),
                           key, "0.0 to 1.0")
    assert not (tmp_path / "o.png").exists(), line


@pytest.mark.parametrize("toml,key", [
    ("[harmonizer]\nstrength = 5\n", "harmonizer.strength"),
    ("[harmonizer]\nstrength = -0.5\n", "harmonizer.strength"),
    ("[harmonizer]\nstrength = nan\n", "harmonizer.strength"),
    ("[harmonizer]\ngrid = 0\n", "harmonizer.grid"),
    ("[harmonizer]\ngrid = 100000\n", "harmonizer.grid"),
    ("[harmonizer]\nwork_size = 0\n", "harmonizer.work_size"),
    ("[live]\nfps = 0\n", "live.fps"),
    ("[mask]\nrefine_radius = -3\n", "mask.refine_radius"),
    ("[output]\ncrf = 99\n", "output.crf"),
    ("[output]\npreset = \"warp\"\n", "output.preset"),
    ("[live]\nsize = \"0x0\"\n", "live.size"),
])
def test_profile_values_out_of_range(tmp_path, stills, toml, key):
    person, bg = stills
    prof = tmp_path / "bad.toml"
    prof.write_text(toml)
    line = _one_error_line(run_cli("composite", person, bg, "-o", tmp_path / "o.png",
                                   "--profile", prof), key, "profile 'bad'")
    assert "Error" not in line and "Traceback" not in line
    assert not (tmp_path / "o.png").exists()


def test_every_default_and_shipped_profile_passes_validation():
    import dataclasses
    from vidharm.config import SECTIONS, Config, available_profiles, check_value, load_config
    cfg = Config()
    for s in SECTIONS:
        for k, v in dataclasses.asdict(getattr(cfg, s)).items():
            check_value(f"{s}.{k}", v)
    for name in available_profiles():
        load_config(name)


@pytest.mark.parametrize("args,needle", [
    (["--fps", "-5"], "live.fps"),
    (["--fps", "0"], "live.fps"),
    (["--duration", "-1"], "--duration"),
    (["--refresh-hz", "-1"], "--refresh-hz"),
    (["--sink", "file", "-o", "{tmp}/x.avi"], ".mp4"),
    (["--weights", "{tmp}/nope.pth"], "uses no weights"),
    (["--harmonizer", "phnet-lite", "--weights", "{tmp}/nope.pth"], "does not exist"),
])
def test_run_refuses_bad_settings_before_starting(tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--sink" not in args:
        args += ["--sink", "null"]
    if "--duration" not in args:
        args += ["--duration", "1"]
    _one_error_line(run_cli("run", "-b", "blur", "--source", "sample", *args), needle)
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_are_one_line(tmp_path, stills):
    person, bg = stills
    _one_error_line(run_cli("composite", person, bg, "-o", tmp_path / "o.png", "--strength", "x"),
                    "--strength", "--help")
    _one_error_line(run_cli("composite", person, bg, "-o", tmp_path / "o.png", "--device", "tpu"),
                    "--device")


# ------------------------------------------------------------------ rows 9, 16: what an input is
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifo_and_devices_are_refused_without_blocking(tmp_path, stills, asset):
    person, bg = stills
    fifo = tmp_path / "f.mp4"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    _one_error_line(run_cli("transcode", fifo, "-o", out / "o.mp4", "-b", "blur", "--no-progress",
                            timeout=60), "named pipe")
    _one_error_line(run_cli("transcode", "/dev/zero", "-o", out / "o.mp4", "-b", "blur",
                            "--no-progress", timeout=60), "device")
    _one_error_line(run_cli("composite", person, fifo, "-o", out / "o.png", timeout=60),
                    "background", "named pipe")
    _one_error_line(run_cli("composite", "/dev/zero", bg, "-o", out / "o.png", timeout=60),
                    "device")
    _one_error_line(run_cli("run", "-b", "blur", "--source", fifo, "--sink", "null",
                            "--duration", "1", timeout=60), "named pipe")
    assert not list(out.rglob("*.mp4")) and not list(out.rglob("*.png"))


def test_non_image_background_is_called_what_it_is(tmp_path, stills):
    person, _ = stills
    txt = tmp_path / "notimage.jpg"
    txt.write_text("not an image at all\n")
    svg = tmp_path / "bg.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    for b in (txt, svg):
        line = _one_error_line(run_cli("composite", person, b, "-o", tmp_path / "o.png"),
                               "is not an image or a video")
        assert "video" in line and "decodable frame" not in line
