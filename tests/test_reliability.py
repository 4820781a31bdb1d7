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
    # `vidharm run` announces what it starts (source -> sink) before it runs: not an error
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("vidharm run: ")]
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
    (["--fps", "-5"], "--fps"),
    (["--fps", "0"], "--fps"),
    (["--duration", "-1"], "--duration"),
    (["--refresh-hz", "-1"], "--refresh-hz"),
    (["--sink", "file", "-o", "{tmp}/x.avi"], ".mp4"),
    (["--harmonizer", "light", "--weights", "{tmp}/nope.pth"], "uses no weights"),
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


# ------------------------------------------------------------------ rows 5, 6, 7: one output per job
def _start(*args, **kw):
    return subprocess.Popen(vidharm_exe() + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(path: Path, proc, timeout: float = 120.0) -> None:
    t_end = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < t_end, f"{path} never appeared"
        time.sleep(0.05)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if "partial" in p.name or p.name.endswith((".claim", ".part")))


def test_two_jobs_to_one_output_the_second_is_refused(asset, tmp_path):
    out = tmp_path / "o.mp4"
    # the 20-second clip: the first job must still be running when the second one starts
    a = _start("transcode", asset("clip-portrait"), "-o", out, "-b", "blur", "--no-progress")
    try:
        _wait_for(tmp_path / ".o.mp4.partial.mp4", a)
        line = _one_error_line(run_cli("transcode", asset("sample-clip"), "-o", out, "-b", "blur",
                                       "--no-progress", "--overwrite"), "another vidharm job")
        assert "o.mp4" in line
    finally:
        so, se = a.communicate(timeout=600)
    assert a.returncode == 0, se
    assert out.stat().st_size > 0 and _leftovers(tmp_path) == []


def test_a_file_that_appears_meanwhile_is_not_replaced_without_overwrite(tmp_path):
    from vidharm.errors import OutputError
    from vidharm.video import VideoWriter
    out = tmp_path / "o.mp4"
    w = VideoWriter(out, (64, 32), fps=30)
    w.write(np.zeros((32, 64, 3), np.uint8), 0.0)
    out.write_bytes(b"someone else's file")
    with pytest.raises(OutputError, match="appeared while"):
        w.close()
    assert out.read_bytes() == b"someone else's file" and _leftovers(tmp_path) == []


def test_sigterm_during_transcode_cleans_up_and_says_so(asset, tmp_path):
    out = tmp_path / "o.mp4"
    a = _start("transcode", asset("sample-clip"), "-o", out, "-b", "blur", "--no-progress")
    _wait_for(tmp_path / ".o.mp4.partial.mp4", a)
    a.send_signal(signal.SIGTERM)
    so, se = a.communicate(timeout=60)
    assert a.returncode == 143, se
    lines = [l for l in se.splitlines() if l.strip()]
    assert len(lines) == 1 and "terminated" in lines[0], se
    assert not out.exists() and _leftovers(tmp_path) == []


def test_sigterm_during_a_batch_cleans_up(asset, tmp_path):
    clips = tmp_path / "in"
    clips.mkdir()
    for n in ("a", "b"):
        shutil.copy(asset("sample-clip"), clips / f"{n}.mp4")
    out = tmp_path / "out"
    a = _start("transcode", clips / "*.mp4", "--out-dir", out, "-b", "blur", "--no-progress")
    _wait_for(out / ".a_harmonized.mp4.partial.mp4", a)
    a.send_signal(signal.SIGTERM)
    so, se = a.communicate(timeout=60)
    assert a.returncode == 143 and "terminated" in se
    assert _leftovers(out) == [] and not list(out.glob("*.mp4"))


@pytest.mark.parametrize("cmd", ["transcode", "run"])
def test_sigkill_leftover_is_removed_by_the_next_run(asset, tmp_path, cmd):
    out = tmp_path / "o.mp4"
    if cmd == "transcode":
        args = ["transcode", asset("sample-clip"), "-o", out, "-b", "blur", "--no-progress"]
    else:
        args = ["run", "-b", "blur", "--source", "sample", "--sink", "file", "-o", out,
                "--size", "320x180", "--duration", "2"]
    a = _start(*args)
    _wait_for(tmp_path / ".o.mp4.partial.mp4", a)
    a.kill()
    a.communicate(timeout=60)
    assert _leftovers(tmp_path) == [".o.mp4.partial.mp4"]
    # an older random-named leftover (earlier versions) goes too
    (tmp_path / ".o.mp4.0123abcd.partial.mp4").write_bytes(b"x" * 100)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0 and _leftovers(tmp_path) == []


# ------------------------------------------------------------------ row 4: a full disk is a failure
def _file_size_limit(nbytes: int):
    import resource

    def limit():   # writes past nbytes fail with EFBIG (Python ignores SIGXFSZ): a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_run_file_sink_on_a_full_disk_fails_and_leaves_nothing(tmp_path):
    out = tmp_path / "full" / "live.mp4"
    cmd = vidharm_exe() + ["run", "-b", "blur", "--source", "sample", "--sink", "file", "-o",
                           str(out), "--duration", "2", "--size", "320x180"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       preexec_fn=_file_size_limit(20_000))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "wrote" not in r.stdout
    err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and "live.mp4" in err[0], r.stderr
    assert not out.exists() and _leftovers(out.parent) == []


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_transcode_on_a_full_disk_fails_and_leaves_nothing(asset, tmp_path):
    out = tmp_path / "o.mp4"
    cmd = vidharm_exe() + ["transcode", asset("sample-clip"), "-o", str(out), "-b", "blur",
                           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       preexec_fn=_file_size_limit(20_000))
    _one_error_line(r, "o.mp4")
    assert not out.exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------ row 8: no display server
def test_preview_without_an_x_server_is_one_line_not_sigabrt(tmp_path):
    r = run_cli("run", "-b", "blur", "--source", "sample", "--sink", "preview", "--duration", "1",
                env={"DISPLAY": ":97", "WAYLAND_DISPLAY": ""}, timeout=120)
    _one_error_line(r, "no X server", "DISPLAY=:97")
    assert r.returncode == 2


def test_display_probe_connects_to_the_server(tmp_path, monkeypatch):
    import socket
    from vidharm_plugins.sinks import display_problem
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    path = str(tmp_path / "xsock")
    monkeypatch.setenv("DISPLAY", f"{path}:0")
    assert display_problem() is not None            # nothing listening yet
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(1)
        assert display_problem() is None
    monkeypatch.delenv("DISPLAY")
    assert "DISPLAY is not set" in display_problem()


# ------------------------------------------------------------------ row 13: a source that breaks
def test_run_source_corrupt_in_the_middle_fails(asset, tmp_path):
    data = bytearray(Path(asset("sample-clip")).read_bytes())
    rng = np.random.default_rng(1)
    mid = len(data) // 2
    data[mid:mid + 20000] = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    bad = tmp_path / "mid.mp4"
    bad.write_bytes(bytes(data))
    r = run_cli("run", "-b", "blur", "--source", bad, "--sink", "null", "--size", "320x180",
                "--duration", "30", timeout=200)
    _one_error_line(r, "mid.mp4", "corrupt")


# ------------------------------------------------------------------ rows 1, 12: training
class _Payload:
    """Pickles to 'call open(marker, "w")' -- what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(folder: Path) -> Path:
    import torch
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "PWNED"
    torch.save({"step": 1, "model": _Payload(marker), "optimizer": {}}, folder / "checkpoint.pt")
    return marker


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    from vidharm.errors import InputError
    from vidharm.training.train_io import load_checkpoint as _load_checkpoint
    marker = _evil_checkpoint(tmp_path)
    with pytest.raises(InputError, match="holds a pickled '.*open'"):
        _load_checkpoint(tmp_path / "checkpoint.pt")
    assert not marker.exists()
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:40])
    with pytest.raises(InputError, match="cannot be read"):
        _load_checkpoint(tmp_path / "trunc.pt")


def _have_train_data() -> bool:
    from vidharm.assets import cache_dir
    d = cache_dir() / "train-data"
    return d.is_dir() and any(d.iterdir())


@pytest.mark.skipif(not _have_train_data(), reason="needs scripts/fetch_training_data.py's photos")
def test_train_resume_from_a_hostile_checkpoint_through_the_cli(tmp_path):
    marker = _evil_checkpoint(tmp_path / "run")
    r = run_cli("train", "--resume", "--out-dir", tmp_path / "run", "--steps", "2",
                "--batch-size", "2", "--size", "64", "--workers", "0", "--no-progress",
                timeout=600)
    assert r.returncode == 2, r.stdout + r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and "nothing in it was run" in err[0]
    assert not marker.exists()


def test_train_unknown_device_is_one_line(tmp_path):
    _one_error_line(run_cli("train", "--device", "tpu", "--out-dir", tmp_path / "t", "--steps", "1"),
                    "unknown device 'tpu'", "cuda:N")


# ------------------------------------------------------------------ row 2: shapes before memory
def _lite_with_config(path: Path, **change) -> Path:
    import json
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from vidharm.api import WEIGHTS_DIR
    src = WEIGHTS_DIR / "phnet-lite.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    cfg = json.loads(meta["vidharm.config"])
    for k, fn in change.items():
        cfg[k] = fn(cfg[k])
    meta["vidharm.config"] = json.dumps(cfg)
    save_file(load_file(str(src)), str(path), metadata=meta)
    return path


@pytest.mark.parametrize("last,needle", [(32768, "sane limit"), (4096, "wrong shape"),
                                         (1_000_000_000, "sane limit")])
def test_weights_config_is_checked_against_the_tensors_before_building(tmp_path, last, needle):
    from vidharm.errors import InputError
    from vidharm.models.weights import load_any
    bad = _lite_with_config(tmp_path / "bad.safetensors",
                            enc_sizes=lambda e: e[:-1] + [last])
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=needle):
        load_any(bad)
    assert time.perf_counter() - t0 < 5.0          # was 36 s and 10 GB


def test_weights_config_lie_through_the_cli(tmp_path, stills):
    person, bg = stills
    bad = _lite_with_config(tmp_path / "bad.safetensors", enc_sizes=lambda e: e[:-1] + [32768])
    r = run_cli("composite", person, bg, "-o", tmp_path / "o.png", "--harmonizer", "phnet-lite",
                "--weights", bad, timeout=120)
    _one_error_line(r, "bad.safetensors", "enc_sizes")
    assert r.returncode == 2 and not (tmp_path / "o.png").exists()


def test_safetensors_header_pointing_past_the_end_is_refused(tmp_path):
    from vidharm.errors import InputError
    from vidharm.models.weights import read_safetensors_shapes
    good = _lite_with_config(tmp_path / "g.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged"):
        read_safetensors_shapes(tmp_path / "cut.safetensors")
    shapes = read_safetensors_shapes(good)
    assert all(t.device.type == "meta" for t in shapes.values()) and len(shapes) > 10


# ------------------------------------------------------------------ row 15: control-file mistakes
def test_control_file_mistakes_are_shown_without_verbose(tmp_path):
    ctl = tmp_path / "ctl.json"
    ctl.write_text("{}")
    p = _start("run", "-b", "blur", "--source", "sample", "--sink", "null", "--size", "320x180",
               "--control", ctl, "--duration", "9")
    try:
        first = p.stderr.readline()
        assert first.startswith("vidharm run:"), first
        for text in ('{"background": ', '{"harmonizer": "nosuch"}',
                     '{"background": "%s"}' % (tmp_path / "missing.jpg"), '{"strength": 5}'):
            time.sleep(1.6)
            ctl.write_text(text)
        so, se = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, se
    assert "control file" in se and "ignored" in se                  # broken JSON
    assert "nosuch" in se                                            # unknown harmonizer
    assert "missing.jpg" in se and "does not exist" in se            # bad background
    assert "'harmonizer.strength' in the control file" in se and "0.0 to 1.0" in se


# ------------------------------------------------------------------ also seen: video pixel limit
def _huge_clip(path: Path, w: int = 8000, h: int = 8000) -> Path:
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=1)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")
        for i in range(2):
            frame.pts = i
            for pk in s.encode(frame):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


def test_video_over_the_pixel_limit_is_refused_from_its_header(tmp_path, stills):
    person, _ = stills
    clip = _huge_clip(tmp_path / "huge.mp4")
    _one_error_line(run_cli("transcode", clip, "-o", tmp_path / "o.mp4", "-b", "blur",
                            "--no-progress"), "8000x8000", "limit")
    _one_error_line(run_cli("composite", person, clip, "-o", tmp_path / "o.png"),
                    "background", "8000x8000")
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.png").exists()
