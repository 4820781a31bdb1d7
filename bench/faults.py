"""Fault injection against the real ``vidharm`` command line (issue 11).

Every case runs the console script in a fresh temporary folder with one bad input, bad
setting, signal or failing disk, and is *clean* when vidharm

- exits non-zero with exactly one ``error: ...`` line on stderr (no traceback, no
  ``internal error``) -- or, for the cases that must succeed, exits 0 and writes its output;
- leaves no output, no partial / temporary file, and every input file byte for byte as it was;
- finishes within the case's time limit (nothing blocks forever, nothing allocates for minutes);
- and passes the case's own check (e.g. a hostile checkpoint's code did not run).

Usage::

    .venv/bin/python bench/faults.py              # all cases
    .venv/bin/python bench/faults.py -k sigterm   # cases whose name contains 'sigterm'
    .venv/bin/python bench/faults.py --list

Prints one line per case (``clean`` / ``FAILED: why``) and the totals tried / clean / failed;
the exit code is 1 if any case failed. Needs the sample assets (``vidharm assets fetch``).
Runs on Linux (FIFOs, signals, RLIMIT_FSIZE for the full disk).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
LEFTOVER_MARKS = (".partial.mp4", ".claim", ".part")


def cli() -> list[str]:
    exe = Path(sys.executable).parent / "vidharm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vidharm.cli"]


# ------------------------------------------------------------------------------ fixtures
class Fixtures:
    """Files every case may copy: made once per run."""

    def __init__(self, folder: Path):
        from vidharm import assets
        self.dir = folder
        self.clip = Path(assets.path("sample-clip"))
        self.long_clip = Path(assets.path("clip-portrait"))    # 20 s: still running when polled
        self.bg = folder / "bg.jpg"
        shutil.copy(assets.path("sample-background"), self.bg)
        import av
        from vidharm.imageio import save_image
        with av.open(str(self.clip)) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i == 30:
                    save_image(folder / "person.jpg", f.to_ndarray(format="rgb24"))
                    break
        self.person = folder / "person.jpg"
        r = subprocess.run(cli() + ["composite", str(self.person), str(self.bg), "-o",
                                    str(folder / "comp.png"), "--mask-out", str(folder / "mask.png")],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"cannot make the composite fixture: {r.stderr}")
        self.comp, self.mask = folder / "comp.png", folder / "mask.png"


# ------------------------------------------------------------------------------ cases
@dataclass
class Case:
    name: str
    row: str                                   # issue 11 row, or "pass" (handled before)
    args: Callable[[Path, Fixtures], list]     # command line (after 'vidharm')
    expect: str = "error"                      # "error" | "ok"
    needle: str = ""                           # must appear in the error line
    setup: Optional[Callable[[Path, Fixtures], None]] = None
    check: Optional[Callable[[Path, subprocess.CompletedProcess], Optional[str]]] = None
    env: dict = field(default_factory=dict)
    fsize: Optional[int] = None                # RLIMIT_FSIZE in bytes: a full disk
    timeout: float = 180.0
    run: Optional[Callable[["Case", Path, Fixtures], Optional[str]]] = None   # custom driver
    needs: Optional[Callable[[], bool]] = None


CASES: list[Case] = []


def case(*a, **kw) -> Case:
    c = Case(*a, **kw)
    CASES.append(c)
    return c


def _write(rel: str, data: bytes | str):
    def setup(d: Path, fx: Fixtures) -> None:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _copy_clip(rel: str):
    def setup(d: Path, fx: Fixtures) -> None:
        shutil.copy(fx.clip, d / rel)
    return setup


def _fifo(rel: str):
    def setup(d: Path, fx: Fixtures) -> None:
        os.mkfifo(d / rel)
    return setup


def _profile(text: str):
    return _write("bad.toml", text)


def _composite(*extra):
    return lambda d, fx: ["composite", fx.person, fx.bg, "-o", d / "out" / "o.png", *extra]


def _transcode(*extra, src=None):
    return lambda d, fx: ["transcode", src(d, fx) if src else fx.clip, "-o", d / "out" / "o.mp4",
                          "-b", "blur", "--no-progress", *extra]


def _run(*extra, sink=("--sink", "null")):
    return lambda d, fx: ["run", "-b", "blur", "--source", "sample", "--size", "320x180",
                          *sink, "--duration", "1", *extra]


# --- row 1: a hostile training checkpoint
def _evil_ckpt(d: Path, fx: Fixtures) -> None:
    import torch
    (d / "run").mkdir()

    class Payload:
        def __reduce__(self):
            return (open, (str(d / "PWNED"), "w"))
    torch.save({"step": 1, "model": Payload(), "optimizer": {}}, d / "run" / "checkpoint.pt")


def _have_train_data() -> bool:
    from vidharm.assets import cache_dir
    p = cache_dir() / "train-data"
    return p.is_dir() and any(p.iterdir())


case("train --resume from a checkpoint whose pickle runs code", "1",
     lambda d, fx: ["train", "--resume", "--out-dir", d / "run", "--steps", "2", "--batch-size",
                    "2", "--size", "64", "--workers", "0", "--no-progress"],
     needle="nothing in it was run", setup=_evil_ckpt, needs=_have_train_data,
     check=lambda d, r: "the checkpoint's code ran" if (d / "PWNED").exists() else None)


# --- row 2: a weights file whose recorded config lies about its tensors
def _lying_weights(last: int):
    def setup(d: Path, fx: Fixtures) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file
        from vidharm.api import WEIGHTS_DIR
        src = WEIGHTS_DIR / "phnet-lite.safetensors"
        with safe_open(str(src), framework="pt") as f:
            meta = dict(f.metadata())
        cfg = json.loads(meta["vidharm.config"])
        cfg["enc_sizes"][-1] = last
        meta["vidharm.config"] = json.dumps(cfg)
        save_file(load_file(str(src)), str(d / "lie.safetensors"), metadata=meta)
    return setup


for _last in (32768, 4096, 10 ** 9):
    case(f"safetensors config says enc_sizes[-1] = {_last}", "2",
         lambda d, fx: ["harmonize", fx.comp, fx.mask, "-o", d / "out" / "h.png", "--harmonizer",
                        "phnet-lite", "--weights", d / "lie.safetensors"],
         needle="lie.safetensors", setup=_lying_weights(_last), timeout=60)

# --- row 3: an output that names an input
case("composite -o the person", "3", lambda d, fx: ["composite", fx.person, fx.bg, "-o", fx.person],
     needle="would overwrite")
case("composite -o the background", "3", lambda d, fx: ["composite", fx.person, fx.bg, "-o", fx.bg],
     needle="would overwrite")
case("composite --mask-out the person", "3",
     lambda d, fx: ["composite", fx.person, fx.bg, "-o", d / "out" / "o.png", "--mask-out",
                    fx.person], needle="would overwrite")
case("harmonize -o the composite", "3", lambda d, fx: ["harmonize", fx.comp, fx.mask, "-o", fx.comp],
     needle="would overwrite")
case("harmonize -o the mask", "3", lambda d, fx: ["harmonize", fx.comp, fx.mask, "-o", fx.mask],
     needle="would overwrite")
case("transcode -o the input", "pass", lambda d, fx: ["transcode", d / "in.mp4", "-o", d / "in.mp4",
                                                       "-b", "blur", "--no-progress"],
     setup=_copy_clip("in.mp4"), needle="input")

# --- row 4: a disk that fills up
case("run --sink file on a full disk", "4",
     _run("--duration", "3", sink=("--sink", "file", "-o", "{d}/out/live.mp4")), fsize=10_000,
     needle="live.mp4")
case("transcode on a full disk", "4", _transcode(), fsize=20_000, needle="o.mp4")


# --- rows 5, 6, 7: concurrent jobs, SIGTERM, SIGKILL (custom drivers)
def _popen(args: list, d: Path) -> subprocess.Popen:
    return subprocess.Popen(cli() + [str(a) for a in args], cwd=d, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_partial(p: subprocess.Popen, path: Path, timeout: float = 120) -> Optional[str]:
    t_end = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        if p.poll() is not None:
            return f"the job ended before writing (rc {p.returncode}): {p.communicate()[1][-300:]}"
        if time.monotonic() > t_end:
            return "the job never started writing"
        time.sleep(0.05)
    return None


def _concurrent(c: Case, d: Path, fx: Fixtures) -> Optional[str]:
    out = d / "out" / "o.mp4"
    out.parent.mkdir()
    a = _popen(["transcode", fx.long_clip, "-o", out, "-b", "blur", "--no-progress"], d)
    try:
        why = _wait_partial(a, out.parent / ".o.mp4.partial.mp4")
        if why:
            return why
        b = subprocess.run(cli() + ["transcode", str(fx.clip), "-o", str(out), "-b", "blur",
                                    "--no-progress", "--overwrite"],
                           capture_output=True, text=True, timeout=c.timeout)
        why = _error_problem(b, "another vidharm job")
        if why:
            return f"second job: {why}"
    finally:
        so, se = a.communicate(timeout=600)
    if a.returncode != 0 or not out.is_file():
        return f"first job failed: {se[-300:]}"
    return None


def _signalled(sig: int, batch: bool) -> Callable:
    def drive(c: Case, d: Path, fx: Fixtures) -> Optional[str]:
        out = d / "out"
        out.mkdir()
        if batch:
            for n in ("a", "b"):
                shutil.copy(fx.clip, d / f"{n}.mp4")
            args, partial = (["transcode", d / "*.mp4", "--out-dir", out, "-b", "blur",
                              "--no-progress"], out / ".a_harmonized.mp4.partial.mp4")
        else:
            args, partial = (["transcode", fx.clip, "-o", out / "o.mp4", "-b", "blur",
                              "--no-progress"], out / ".o.mp4.partial.mp4")
        p = _popen(args, d)
        why = _wait_partial(p, partial)
        if why:
            p.kill()
            p.communicate()
            return why
        p.send_signal(sig)
        so, se = p.communicate(timeout=120)
        want = {signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
        if p.returncode != want:
            return f"exit {p.returncode}, expected {want}; stderr: {se[-200:]!r}"
        lines = [l for l in se.splitlines() if l.strip()]
        if len(lines) != 1:
            return f"expected one line on stderr, got {len(lines)}: {se[-300:]!r}"
        if list(out.glob("*.mp4")):
            return "an output was written"
        return None
    return drive


def _killed_then_again(kind: str) -> Callable:
    def drive(c: Case, d: Path, fx: Fixtures) -> Optional[str]:
        out = d / "out" / "o.mp4"
        out.parent.mkdir()
        if kind == "transcode":
            args = ["transcode", fx.clip, "-o", out, "-b", "blur", "--no-progress"]
        else:
            args = ["run", "-b", "blur", "--source", "sample", "--sink", "file", "-o", out,
                    "--size", "320x180", "--duration", "2"]
        p = _popen(args, d)
        why = _wait_partial(p, out.parent / ".o.mp4.partial.mp4")
        p.kill()
        p.communicate()
        if why:
            return why
        r = subprocess.run(cli() + [str(a) for a in args], cwd=d, capture_output=True, text=True,
                           timeout=c.timeout)
        if r.returncode != 0 or not out.is_file():
            return f"the second run failed: {r.stderr[-300:]!r}"
        return None
    return drive


case("two transcodes to one output at once", "5", None, run=_concurrent)
case("SIGTERM during transcode", "6", None, run=_signalled(signal.SIGTERM, False))
case("SIGTERM during a transcode batch", "6", None, run=_signalled(signal.SIGTERM, True))
case("SIGINT during transcode", "pass", None, run=_signalled(signal.SIGINT, False))
case("SIGKILL during transcode, then again", "7", None, run=_killed_then_again("transcode"))
case("SIGKILL during run --sink file, then again", "7", None, run=_killed_then_again("run"))

# --- row 8: no display server
case("run --sink preview with DISPLAY=:99 and no X server", "8",
     _run(sink=("--sink", "preview")), env={"DISPLAY": ":99", "WAYLAND_DISPLAY": ""},
     needle="DISPLAY")
case("run --sink preview with no DISPLAY", "pass", _run(sink=("--sink", "preview")),
     env={"DISPLAY": "", "WAYLAND_DISPLAY": ""}, needle="DISPLAY")

# --- row 9, 16: inputs that are not regular files
case("transcode a FIFO", "9", _transcode(src=lambda d, fx: d / "f.mp4"), setup=_fifo("f.mp4"),
     needle="FIFO", timeout=60)
case("transcode /dev/zero", "16", _transcode(src=lambda d, fx: "/dev/zero"), needle="device",
     timeout=60)
case("composite with a FIFO background", "9",
     lambda d, fx: ["composite", fx.person, d / "f.jpg", "-o", d / "out" / "o.png"],
     setup=_fifo("f.jpg"), needle="FIFO", timeout=60)
case("composite with /dev/zero as the person", "16",
     lambda d, fx: ["composite", "/dev/zero", fx.bg, "-o", d / "out" / "o.png"], needle="device",
     timeout=60)
case("run --source a FIFO", "9",
     lambda d, fx: ["run", "-b", "blur", "--source", d / "f.mp4", "--sink", "null",
                    "--duration", "1"], setup=_fifo("f.mp4"), needle="FIFO", timeout=60)
case("transcode a folder", "pass", _transcode(src=lambda d, fx: d), needle="folder")

# --- rows 10, 11, 14: settings out of range
for _v in ("5", "nan", "-1"):
    case(f"--strength {_v}", "10", _composite("--strength", _v), needle="harmonizer.strength")
for _t, _k, _row in (("[harmonizer]\nstrength = 5\n", "harmonizer.strength", "10"),
                     ("[harmonizer]\nstrength = -0.5\n", "harmonizer.strength", "10"),
                     ("[harmonizer]\nstrength = nan\n", "harmonizer.strength", "10"),
                     ("[harmonizer]\ngrid = 0\n", "harmonizer.grid", "11"),
                     ("[harmonizer]\nwork_size = 0\n", "harmonizer.work_size", "11"),
                     ("[harmonizer]\ngrid = 100000\n", "harmonizer.grid", "11"),
                     ("[live]\nfps = 0\n", "live.fps", "14"),
                     ("[mask]\nrefine_radius = -3\n", "mask.refine_radius", "14"),
                     ("[output]\ncrf = 99\n", "output.crf", "14")):
    case(f"profile {_t.strip().splitlines()[-1]}", _row,
         _composite("--profile", "{d}/bad.toml") if _k != "output.crf" else
         _transcode("--profile", "{d}/bad.toml"), setup=_profile(_t), needle=_k)
case("run --fps -5", "14", _run("--fps", "-5"), needle="--fps")
case("run --fps 0", "14", _run("--fps", "0"), needle="--fps")
case("run profile fps = 0", "14", _run("--profile", "{d}/bad.toml"),
     setup=_profile("[live]\nfps = 0\n"), needle="live.fps")
case("run --duration -1", "14",
     lambda d, fx: ["run", "-b", "blur", "--source", "sample", "--sink", "null", "--duration", "-1"],
     needle="--duration")
case("run --refresh-hz -1", "14", _run("--refresh-hz", "-1"), needle="--refresh-hz")
case("transcode --profile crf = 99", "14", _transcode("--profile", "{d}/bad.toml"),
     setup=_profile("[output]\ncrf = 99\n"), needle="output.crf")
case("run --sink file -o x.avi", "14", _run(sink=("--sink", "file", "-o", "{d}/out/x.avi")),
     needle=".mp4")
case("--weights nope.pth with the stats harmonizer", "14",
     _composite("--harmonizer", "stats", "--weights", "{d}/nope.pth"), needle="uses no weights")
case("--weights nope.pth with phnet-lite", "14",
     _composite("--harmonizer", "phnet-lite", "--weights", "{d}/nope.pth"), needle="does not exist")
case("train --device tpu", "12", lambda d, fx: ["train", "--device", "tpu", "--out-dir", d / "t",
                                                "--steps", "1"], needle="tpu")

# --- row 13: a source that breaks mid-way
def _corrupt_middle(d: Path, fx: Fixtures) -> None:
    data = bytearray(fx.clip.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 20000] = os.urandom(20000)
    (d / "mid.mp4").write_bytes(bytes(data))


case("run --source a clip corrupt in the middle", "13",
     lambda d, fx: ["run", "-b", "blur", "--source", d / "mid.mp4", "--sink", "null", "--size",
                    "320x180", "--duration", "30"], setup=_corrupt_middle, needle="corrupt")
case("transcode a clip corrupt in the middle", "pass", _transcode(src=lambda d, fx: d / "mid.mp4"),
     setup=_corrupt_middle, needle="mid.mp4")


# --- row 15: mistakes written into the control file while running
def _control(c: Case, d: Path, fx: Fixtures) -> Optional[str]:
    ctl = d / "ctl.json"
    ctl.write_text("{}")
    p = _popen(["run", "-b", "blur", "--source", "sample", "--sink", "null", "--size", "320x180",
                "--control", ctl, "--duration", "9"], d)
    try:
        p.stderr.readline()
        for text in ('{"background": ', '{"harmonizer": "nosuch"}',
                     '{"background": "missing.jpg"}', '{"strength": 5}'):
            time.sleep(1.6)
            ctl.write_text(text)
        so, se = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    missing = [w for w, needle in (("broken JSON", "ignored"), ("unknown harmonizer", "nosuch"),
                                   ("bad background", "missing.jpg"),
                                   ("strength 5", "harmonizer.strength")) if needle not in se]
    return f"not shown: {', '.join(missing)}" if missing else None


case("control file: broken JSON, unknown harmonizer, bad background, strength 5", "15", None,
     run=_control)

# --- row 16: what is wrong, in one line
case("background: a text file named .jpg", "16",
     lambda d, fx: ["composite", fx.person, d / "notimage.jpg", "-o", d / "out" / "o.png"],
     setup=_write("notimage.jpg", "not an image\n"), needle="not an image or a video")
case("background: an SVG", "16",
     lambda d, fx: ["composite", fx.person, d / "bg.svg", "-o", d / "out" / "o.png"],
     setup=_write("bg.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'),
     needle="not an image or a video")
case("eval FILE (a file, not a folder)", "16",
     lambda d, fx: ["eval", d / "file.txt", "--weights", "none"], setup=_write("file.txt", "x"),
     needle="not a folder")
case("--device tpu (click usage)", "16", _composite("--device", "tpu"), needle="--device")
case("--strength abc (click usage)", "16", _composite("--strength", "abc"), needle="--strength")

# --- handled before this work (kept so they stay handled)
case("transcode a missing input", "pass", _transcode(src=lambda d, fx: d / "nope.mp4"),
     needle="does not exist")
case("transcode a zero-byte input", "pass", _transcode(src=lambda d, fx: d / "z.mp4"),
     setup=_write("z.mp4", b""), needle="empty")
case("transcode a truncated MP4", "pass", _transcode(src=lambda d, fx: d / "t.mp4"),
     setup=lambda d, fx: (d / "t.mp4").write_bytes(fx.clip.read_bytes()[:60000]), needle="t.mp4")
case("transcode a text file named .mp4", "pass", _transcode(src=lambda d, fx: d / "n.mp4"),
     setup=_write("n.mp4", "hello\n"), needle="not a video")
case("transcode -o x.txt", "pass",
     lambda d, fx: ["transcode", fx.clip, "-o", d / "out" / "x.txt", "-b", "blur"], needle=".mp4")
case("transcode into /proc (cannot write)", "pass",
     lambda d, fx: ["transcode", fx.clip, "-o", "/proc/o.mp4", "-b", "blur"], needle="/proc")
case("transcode an existing output without --overwrite (skipped)", "pass",
     lambda d, fx: ["transcode", fx.clip, "-o", d / "out" / "o.mp4", "-b", "blur", "--no-progress"],
     setup=_write("out/o.mp4", b"keep me"), expect="ok",
     check=lambda d, r: None if (d / "out" / "o.mp4").read_bytes() == b"keep me"
     else "the existing output was replaced")


def _png_bomb(d: Path, fx: Fixtures) -> None:
    import struct
    import zlib
    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    (d / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                                 chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


case("background: a 10-gigapixel PNG header", "pass",
     lambda d, fx: ["composite", fx.person, d / "bomb.png", "-o", d / "out" / "o.png"],
     setup=_png_bomb, needle="too large", timeout=60)
def _huge_clip(d: Path, fx: Fixtures) -> None:
    import av
    import numpy as np
    with av.open(str(d / "huge.mp4"), "w") as c:
        s = c.add_stream("mpeg4", rate=1)
        s.width, s.height, s.pix_fmt = 8000, 8000, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((8000, 8000, 3), np.uint8), format="rgb24")
        for i in range(2):
            frame.pts = i
            for pk in s.encode(frame):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)


case("transcode an 8000x8000 clip (pixel limit)", "also", _transcode(src=lambda d, fx: d / "huge.mp4"),
     setup=_huge_clip, needle="limit", timeout=60)
case("composite on an 8000x8000 video background", "also",
     lambda d, fx: ["composite", fx.person, d / "huge.mp4", "-o", d / "out" / "o.png"],
     setup=_huge_clip, needle="limit", timeout=60)
case("unknown profile", "pass", _composite("--profile", "nosuch"), needle="nosuch")
case("unknown profile key", "pass", _composite("--profile", "{d}/bad.toml"),
     setup=_profile("[harmonizer]\nstrenght = 1\n"), needle="strenght")
case("unknown harmonizer", "pass", _composite("--harmonizer", "stat"), needle="stats")


def _evil_pth(d: Path, fx: Fixtures) -> None:
    import torch

    class Payload:
        def __reduce__(self):
            return (open, (str(d / "PWNED"), "w"))
    torch.save({"x": Payload()}, d / "evil.pth")


case("--weights: a .pth whose pickle runs code", "pass",
     _composite("--harmonizer", "phnet", "--weights", "{d}/evil.pth"), setup=_evil_pth,
     needle="evil.pth", check=lambda d, r: "its code ran" if (d / "PWNED").exists() else None)
case("--weights: truncated safetensors", "pass",
     _composite("--harmonizer", "phnet-lite", "--weights", "{d}/cut.safetensors"),
     setup=lambda d, fx: (d / "cut.safetensors").write_bytes(
         (ROOT / "vidharm/weights/phnet-lite.safetensors").read_bytes()[:5000]),
     needle="cut.safetensors")
case("harmonize with a mask of the wrong size", "pass",
     lambda d, fx: ["harmonize", fx.comp, d / "m.png", "-o", d / "out" / "h.png"],
     setup=lambda d, fx: __import__("vidharm.imageio", fromlist=["x"]).save_image(
         d / "m.png", __import__("numpy").zeros((10, 10), "uint8")), needle="mask")
# --- privacy: nobody in the frame, nothing of the room (the landscape model fires on sky)
def _nobody_shown(d: Path, r: subprocess.CompletedProcess) -> Optional[str]:
    import av
    import numpy as np
    worst = 0.0
    with av.open(str(d / "out" / "o.mp4")) as c:
        for f in c.decode(video=0):
            diff = np.abs(f.to_ndarray(format="rgb24").astype(int) - (0, 255, 0)).sum(2)
            worst = max(worst, float((diff > 60).mean()))
    return None if worst < 0.001 else f"{100 * worst:.1f} % of a frame showed the room"


def _noface_clip(d: Path, fx: Fixtures) -> str:
    from vidharm import assets
    return str(assets.path("clip-noface"))


case("privacy: a clip with nobody in it shows nothing of the room (call-cpu)", "priv",
     lambda d, fx: ["transcode", _noface_clip(d, fx), "-o", d / "out" / "o.mp4", "-b", "#00ff00",
                    "--profile", "call-cpu", "--harmonizer", "none", "--no-progress"],
     expect="ok", check=_nobody_shown)
case("transcode (sanity: works)", "pass", _transcode(), expect="ok",
     check=lambda d, r: None if (d / "out" / "o.mp4").is_file() else "no output")
case("run --sink file (sanity: works)", "pass",
     _run(sink=("--sink", "file", "-o", "{d}/out/live.mp4")), expect="ok",
     check=lambda d, r: None if (d / "out" / "live.mp4").is_file() else "no recording")


# ------------------------------------------------------------------------------ running
def _digests(folder: Path) -> dict:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _leftovers(*folders: Path) -> list[str]:
    found = []
    for f in folders:
        if f.is_dir():
            found += [p.name for p in f.rglob("*") if p.name.endswith(LEFTOVER_MARKS)]
    return found


def _error_problem(r: subprocess.CompletedProcess, needle: str) -> Optional[str]:
    if r.returncode == 0:
        return "exit 0 (success claimed)"
    if r.returncode < 0:
        return f"killed by signal {-r.returncode}"
    text = r.stderr
    if "Traceback" in text or "internal error" in text:
        return f"traceback / internal error: {text.strip().splitlines()[-1][:200]!r}"
    lines = [l for l in text.splitlines()
             if l.strip() and not l.startswith(("vidharm run: ", "data: "))]
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"expected one 'error:' line, got {len(lines)}: {text.strip()[-300:]!r}"
    if needle and needle not in lines[0]:
        return f"error line does not say {needle!r}: {lines[0][:200]!r}"
    return None


def _fsize_limit(n: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return limit


def run_case(c: Case, fx: Fixtures) -> Optional[str]:
    with tempfile.TemporaryDirectory(prefix="vidharm-fault-") as tmp:
        d = Path(tmp)
        if c.setup:
            c.setup(d, fx)
        before = {**_digests(d), **_digests(fx.dir)}
        if c.run is not None:
            why = c.run(c, d, fx)
        else:
            args = [str(a).replace("{d}", str(d)) for a in c.args(d, fx)]
            env = {**os.environ, **c.env}
            for k, v in c.env.items():
                if v == "":
                    env.pop(k, None)
            t0 = time.monotonic()
            try:
                r = subprocess.run(cli() + args, cwd=d, capture_output=True, text=True, env=env,
                                   timeout=c.timeout,
                                   preexec_fn=_fsize_limit(c.fsize) if c.fsize else None)
            except subprocess.TimeoutExpired:
                return f"still running after {c.timeout:.0f} s (blocked or allocating)"
            if c.expect == "ok":
                why = None if r.returncode == 0 else f"exit {r.returncode}: {r.stderr[-300:]!r}"
            else:
                why = _error_problem(r, c.needle)
                out = d / "out"
                if why is None and out.exists() and [p for p in out.rglob("*") if p.is_file()]:
                    why = "an output file was written"
            if why is None and c.check:
                why = c.check(d, r)
        if why:
            return why
        after = {**_digests(d), **_digests(fx.dir)}
        changed = [Path(p).name for p, h in before.items() if after.get(p) != h]
        if changed:
            return f"input changed or removed: {', '.join(changed)}"
        left = _leftovers(d, fx.dir)
        if left:
            return f"left behind: {', '.join(left)}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", metavar="TEXT", help="only cases whose name contains TEXT")
    ap.add_argument("--row", help="only the cases of this issue-11 row (or 'pass')")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args(argv)
    cases = [c for c in CASES if (not a.k or a.k.lower() in c.name.lower())
             and (not a.row or c.row == a.row)]
    if a.list:
        for c in cases:
            print(f"row {c.row:4s} {c.name}")
        return 0
    tried = clean = skipped = 0
    failed: list[tuple[Case, str]] = []
    with tempfile.TemporaryDirectory(prefix="vidharm-fault-fixtures-") as ft:
        fx = Fixtures(Path(ft))
        for c in cases:
            if c.needs is not None and not c.needs():
                skipped += 1
                print(f"[row {c.row:>4}] {c.name}: skipped (needs data not present)", flush=True)
                continue
            tried += 1
            t0 = time.monotonic()
            try:
                why = run_case(c, fx)
            except Exception as exc:   # the harness itself: counts as a failed case
                why = f"harness error: {type(exc).__name__}: {exc}"
            dt = time.monotonic() - t0
            if why:
                failed.append((c, why))
                print(f"[row {c.row:>4}] {c.name}: FAILED ({dt:.1f} s): {why}", flush=True)
            else:
                clean += 1
                print(f"[row {c.row:>4}] {c.name}: clean ({dt:.1f} s)", flush=True)
    print(f"\ntried {tried}, clean {clean}, failed {len(failed)}"
          + (f", skipped {skipped}" if skipped else ""))
    for c, why in failed:
        print(f"  failed: row {c.row}: {c.name}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
