"""End to end through the real console script: real clips, real MediaPipe model, output read
back with PyAV. Bad input: one line, non-zero exit, no partial output."""
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_audio_only


def _read_back(path):
    import av
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
        audio = [s.codec_context.name for s in c.streams.audio]
        dur = float(c.duration) / 1e6 if c.duration else None
    return frames, audio, dur


def _no_partials(folder: Path):
    return [p.name for p in folder.iterdir() if "partial" in p.name or p.name.endswith(".part")]


def test_transcode_sample_clip_end_to_end(asset, tmp_path):
    """The webcam stand-in through segment + composite + stats harmonizer, audio kept."""
    out = tmp_path / "out.mp4"
    r = run_cli("transcode", asset("sample-clip"), "-o", out, "--background", asset("sample-background"),
                "--harmonizer", "stats", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    frames, audio, dur = _read_back(out)
    src, src_audio, src_dur = _read_back(asset("sample-clip"))
    assert len(frames) == len(src) == 72
    assert max(abs(a[0] - b[0]) for a, b in zip(frames, src)) < 1e-3
    assert audio == src_audio == ["mp3float"] and abs(dur - src_dur) < 0.1   # mp3 copied
    # the person is kept (centre of frame looks like the source), the room is replaced
    f_out, f_src = frames[40][1].astype(int), src[40][1].astype(int)
    h, w = f_out.shape[:2]
    corner = np.abs(f_out[: h // 6, : w // 8] - f_src[: h // 6, : w // 8]).mean()
    assert corner > 25                      # background replaced
    face = np.abs(f_out[h // 3: h // 2, 2 * w // 5: 3 * w // 5] - f_src[h // 3: h // 2, 2 * w // 5: 3 * w // 5])
    assert face.mean() < corner             # the person stays (recoloured, not replaced)
    assert not _no_partials(tmp_path)


def test_batch_with_bad_file_and_skip(asset, tmp_path):
    clips = tmp_path / "in"
    clips.mkdir()
    shutil.copy(asset("clip-carphone"), clips / "a.mp4")
    (clips / "b.mp4").write_bytes(b"")                       # zero-byte
    data = Path(asset("clip-carphone")).read_bytes()
    (clips / "c.mp4").write_bytes(data[: len(data) // 3])    # truncated
    out = tmp_path / "out"
    r = run_cli("transcode", str(clips / "*.mp4"), "--out-dir", out, "--background", "blur", "--no-progress")
    assert r.returncode == 2
    assert (out / "a_harmonized.mp4").is_file()
    assert not (out / "b_harmonized.mp4").exists() and not (out / "c_harmonized.mp4").exists()
    errs = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errs) == 2 and any("b.mp4" in e for e in errs) and any("c.mp4" in e for e in errs)
    assert not _no_partials(out)
    frames, audio, _ = _read_back(out / "a_harmonized.mp4")
    assert len(frames) == 120 and audio == []
    # second run: exists -> skipped, exit 0 for the good file alone
    r2 = run_cli("transcode", clips / "a.mp4", "--out-dir", out, "--background", "blur", "--no-progress")
    assert r2.returncode == 0 and "skipped" in r2.stderr


def _png_header_only(path, w, h):
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(sig + chunk)


@pytest.mark.parametrize("case", ["missing", "zero", "truncated", "no-video", "text", "bg-not-image",
                                  "bg-huge", "out-unwritable", "profile", "harmonizer", "profile-key"])
def test_bad_input_one_line_no_output(case, asset, tmp_path):
    clip = asset("clip-carphone")
    bg = asset("sample-background")
    out = tmp_path / "o" / "out.mp4"
    args = None
    if case == "missing":
        args = [tmp_path / "nope.mp4", "-o", out, "-b", bg]
    elif case == "zero":
        (tmp_path / "z.mp4").write_bytes(b"")
        args = [tmp_path / "z.mp4", "-o", out, "-b", bg]
    elif case == "truncated":
        data = Path(clip).read_bytes()
        (tmp_path / "t.mp4").write_bytes(data[: len(data) // 3])
        args = [tmp_path / "t.mp4", "-o", out, "-b", bg]
    elif case == "no-video":
        p = write_audio_only(tmp_path / "audio.m4a")
        args = [p, "-o", out, "-b", bg]
    elif case == "text":
        (tmp_path / "notes.mp4").write_text("hello, not a video\n")
        args = [tmp_path / "notes.mp4", "-o", out, "-b", bg]
    elif case == "bg-not-image":
        (tmp_path / "bg.jpg").write_text("not an image")
        args = [clip, "-o", out, "-b", tmp_path / "bg.jpg"]
    elif case == "bg-huge":
        _png_header_only(tmp_path / "huge.png", 100000, 100000)
        args = [clip, "-o", out, "-b", tmp_path / "huge.png"]
    elif case == "out-unwritable":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "out.mp4"
        args = [clip, "-o", out, "-b", bg]
    elif case == "profile":
        args = [clip, "-o", out, "-b", bg, "--profile", "no-such-profile"]
    elif case == "harmonizer":
        args = [clip, "-o", out, "-b", bg, "--harmonizer", "phnet-huge"]
    elif case == "profile-key":
        p = tmp_path / "p.toml"
        p.write_text("[mask]\nbogus = 1\n")
        args = [clip, "-o", out, "-b", bg, "--profile", p]
    r = run_cli("transcode", *args, "--no-progress")
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and "Traceback" not in r.stderr
    assert " -- " in lines[0] or case in ("missing", "zero", "truncated", "no-video", "text")
    assert not out.exists()
    if out.parent.is_dir():
        assert not _no_partials(out.parent)


def test_stills_composite_and_harmonize(asset, sample_frame, tmp_path):
    from vidharm.imageio import load_image, save_image
    person = tmp_path / "person.png"
    save_image(person, sample_frame)
    comp, mask = tmp_path / "comp.png", tmp_path / "mask.png"
    r = run_cli("composite", person, asset("sample-background"), "-o", comp, "--mask-out", mask,
                "--harmonizer", "none")
    assert r.returncode == 0, r.stderr
    c, m = load_image(comp), load_image(mask)[..., 0]
    assert c.shape == sample_frame.shape and 0.1 < (m > 127).mean() < 0.7
    out = tmp_path / "harm.png"
    r = run_cli("harmonize", comp, mask, "-o", out)                 # the default, phnet-grid
    assert r.returncode == 0, r.stderr
    h = load_image(out)
    assert np.array_equal(h[m == 0], c[m == 0])
    assert np.abs(h[m == 255].astype(int) - c[m == 255]).mean() > 2
    # wrong mask size: one line, no output
    small = tmp_path / "small.png"
    save_image(small, np.zeros((10, 10), np.uint8))
    r = run_cli("harmonize", comp, small, "-o", tmp_path / "x.png")
    assert r.returncode == 2 and "mask" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_composite_harmonizes_relative_to_the_persons_own_photo(sample_frame, tmp_path):
    """`vidharm composite` harmonizes with the default (phnet-grid) relative to the person's
    own photo: on a background that is that photo the person is left exactly as they are;
    from the composite alone (--absolute) phnet-grid changes them."""
    from vidharm.imageio import load_image, save_image
    person = tmp_path / "person.png"
    save_image(person, sample_frame)
    outs = {}
    for name, flags in (("plain", ("--harmonizer", "none")), ("relative", ()),
                        ("absolute", ("--absolute",))):
        outs[name] = tmp_path / f"{name}.png"
        r = run_cli("composite", person, person, "-o", outs[name], "--mask-out",
                    tmp_path / f"{name}_mask.png", *flags)
        assert r.returncode == 0, r.stderr
    plain, rel, ab = (load_image(outs[k]).astype(int) for k in ("plain", "relative", "absolute"))
    m = load_image(tmp_path / "plain_mask.png")[..., 0] > 127
    assert np.array_equal(rel, plain)
    assert np.abs(ab - plain)[m].mean() > 3


def test_help_shows_examples():
    for cmd in ("transcode", "composite", "harmonize", "demo"):
        r = run_cli(cmd, "--help")
        assert r.returncode == 0 and "Example" in r.stdout


def test_commands_do_not_import_the_cli_and_frame_commands_pin_blas():
    """Layering one way (commands never import vidharm.cli); the process settings of frame
    commands are made by the command, not by importing the library."""
    import subprocess
    import sys
    code = ("import sys, numpy, vidharm.commands.run, vidharm.commands.transcode, "
            "vidharm.commands.stills, vidharm.commands.demo, vidharm.commands.bench\n"
            "from threadpoolctl import threadpool_info\n"
            "from vidharm.commands.common import frame_process_settings\n"
            "assert 'vidharm.cli' not in sys.modules\n"
            "blas = lambda: {i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}\n"
            "before = blas()\n"
            "frame_process_settings()\n"
            "import torch\n"                  # imported after: one thread too
            "print(sorted(before), sorted(blas()), torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stderr
    # every BLAS loaded by then (numpy's and mediapipe's own OpenBLAS) on one thread, and torch
    assert r.stdout.split("] ", 1)[1].strip() == "[1] 1", r.stdout
