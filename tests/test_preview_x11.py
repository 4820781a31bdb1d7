"""The preview window under a real X server (Xvfb): `vidharm run --source sample --sink
preview` opens an OpenCV window; screenshots (xwd) show the frame and the overlay, and
synthetic key presses (xdotool, XTEST) drive the hotkeys: m mask, h harmonization, n next
background, space pause, q quit.

Skips with a reason where Xvfb, xdotool or xwd is missing (Debian: apt-get install xvfb
xdotool x11-apps). ``VIDHARM_PREVIEW_PNG=path`` also saves the first screenshot of the window
there (docs/preview.png is made that way).
"""
from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import vidharm_exe

TOOLS = ("Xvfb", "xdotool", "xwd")
_missing = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_missing), reason=f"{', '.join(_missing)} not installed (Debian: "
                                             f"apt-get install xvfb xdotool x11-apps)"),
]

TITLE = "vidharm - PHNet Camera preview"
W, H = 640, 360


# ------------------------------------------------------------------------ X helpers
def read_xwd(data: bytes) -> np.ndarray:
    """An ``xwd`` dump (ZPixmap, 24 or 32 bits per pixel, TrueColor) as HxWx3 RGB."""
    (header_size, version, _fmt, _depth, width, height, _xoff, byte_order, _unit, _bit_order,
     _pad, bpp, bpl, _vclass, rmask, gmask, bmask, _bits_rgb, _entries, ncolors,
     *_rest) = struct.unpack(">25I", data[:100])
    assert version == 7 and bpp in (24, 32), (version, bpp)
    offset = header_size + ncolors * 12
    rows = np.frombuffer(data, np.uint8, count=height * bpl, offset=offset).reshape(height, bpl)
    nb = bpp // 8
    b = rows[:, :width * nb].reshape(height, width, nb).astype(np.uint32)
    order = range(nb) if byte_order == 0 else range(nb - 1, -1, -1)     # LSBFirst / MSBFirst
    px = sum(b[..., i] << (8 * k) for k, i in enumerate(order))

    def channel(mask):
        return ((px & mask) >> ((mask & -mask).bit_length() - 1)).astype(np.uint8)
    return np.dstack([channel(rmask), channel(gmask), channel(bmask)])


@pytest.fixture
def display():
    """A fresh Xvfb; it picks a free display number and tells us (-displayfd)."""
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1024x768x24",
                             "-nolisten", "tcp"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "Xvfb did not start"
        num = proc.stdout.readline().decode().strip()
        assert num.isdigit(), num
        yield f":{num}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


class Screen:
    def __init__(self, disp: str):
        self.env = {**os.environ, "DISPLAY": disp}
        self.env.pop("WAYLAND_DISPLAY", None)

    def xdotool(self, *args, timeout=30) -> str:
        r = subprocess.run(["xdotool", *map(str, args)], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        return r.stdout.strip()

    def shot(self) -> np.ndarray:
        data = subprocess.run(["xwd", "-root", "-silent"], env=self.env, capture_output=True,
                              check=True, timeout=30).stdout
        return read_xwd(data)

    def key(self, wid: str, key: str) -> None:
        self.xdotool("windowfocus", "--sync", wid)
        self.xdotool("key", key)


def wait_for(pred, timeout=20.0, every=0.2, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got is not None and (isinstance(got, np.ndarray) or got):
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------ what is on screen
def expected_help_pixels():
    """The preview's help line (below the status line) as the sink's own drawing code makes
    it: the pixels it fully decides (the same on a black and on a white frame: the text and
    its dark outline, not their anti-aliased edges), and their values."""
    from vidharm_plugins.sinks import PreviewSink
    sink = PreviewSink(imshow=lambda *a: None, wait_key=lambda ms: -1)
    sink.set_overlay(" ")                      # a status line that draws nothing
    on_black = sink._draw(np.zeros((H, W, 3), np.uint8)).astype(np.int16)
    on_white = sink._draw(np.full((H, W, 3), 255, np.uint8)).astype(np.int16)
    decided = np.abs(on_black - on_white).max(axis=2) <= 8
    return decided, on_black[..., ::-1]        # BGR -> RGB


def status_extent(img: np.ndarray) -> int:
    """Rightmost column with white overlay text in the status line's band."""
    band = img[2:20, :, :].min(axis=2) >= 235
    cols = np.nonzero(band.sum(axis=0) >= 1)[0]
    return int(cols.max()) if cols.size else -1


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


STRIP = (slice(120, H), slice(W - 70, W))       # right edge below the overlay: background only
PERSON = (slice(120, 300), slice(230, 360))      # the sample clip's face and shoulders


def test_preview_window_frame_overlay_and_hotkeys(display, tmp_path, asset):
    from PIL import Image
    from vidharm.composite import make_background

    # two backgrounds in one folder: the sample room, then plain blue ('n' goes there)
    bgs = tmp_path / "bgs"
    bgs.mkdir()
    room = bgs / "a_room.jpg"
    shutil.copy(asset("sample-background"), room)
    Image.new("RGB", (640, 480), (20, 40, 230)).save(bgs / "b_blue.png")
    with make_background(str(room)) as bg:
        room_frame = np.asarray(bg.frame((W, H), 0.0))
    assert room_frame.shape == (H, W, 3)

    scr = Screen(display)
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(vidharm_exe() + ["-v", "run", "--source", "sample", "--sink",
                                             "preview", "-b", str(room), "--size", f"{W}x{H}",
                                             "--harmonizer", "stats", "--duration", "150"],
                            stdout=log, stderr=subprocess.STDOUT, env=scr.env, cwd=tmp_path)

    def logged(text):
        return text in (tmp_path / "run.log").read_text(errors="replace")

    try:
        wid = wait_for(lambda: scr.xdotool("search", "--name", TITLE).split()[:1], 90,
                       what="the preview window")[0]

        def geometry():
            g = dict(l.split("=", 1) for l in scr.xdotool("getwindowgeometry", "--shell",
                                                          wid).splitlines() if "=" in l)
            return {k: int(v) for k, v in g.items()}
        # the window is sized to the frame when the first one arrives (Qt opens it at 400x300)
        geom = wait_for(lambda: (lambda g: g if (g.get("WIDTH"), g.get("HEIGHT")) == (W, H)
                                 else None)(geometry()), 60, what=f"a {W}x{H} window")
        x, y = geom["X"], geom["Y"]

        def window():
            return scr.shot()[y:y + H, x:x + W]

        # ---- the frame: the room at the edges (background pixels are not touched), a
        # person in the middle (not the room), and the overlay
        decided, drawn = expected_help_pixels()
        bright = decided & (drawn.min(axis=2) >= 128)
        assert decided.sum() > 300 and bright.sum() > 100

        def help_line(img, shift=0):
            """Share of the help line's decided pixels that are on screen as drawn."""
            got = img[np.roll(decided, shift, axis=0)].astype(np.int16)
            return float((np.abs(got - drawn[decided]).max(axis=1) <= 40).mean())

        # (the first frames come before the first status text, the help line one line up)
        def composited():
            return wait_for(lambda: (lambda w: w if diff(w[STRIP], room_frame[STRIP]) < 12
                                     and help_line(w) > 0.9 else None)(window()), 20,
                            what="a composited frame with the overlay")
        try:
            first = composited()
        except AssertionError:
            # Xvfb has no window manager: with the CPU loaded, Qt now and then misses the
            # window's first Expose and never paints it (6 runs in 30 with three busy loops
            # beside it; the app ran at 30 fps, its frames shown but the window all black:
            # CI failed so on 2026-11-30). A window manager maps it again; so does this,
            # once, and only for that case.
            assert window().max() == 0, "the window shows something, but not the frame"
            for step in ("windowunmap", "windowmap"):
                scr.xdotool(step, "--sync", wid)
            first = composited()
        assert diff(first[PERSON], room_frame[PERSON]) > 25
        assert help_line(first, 26) < 0.6      # not there by chance: one line lower fails
        if os.environ.get("VIDHARM_PREVIEW_PNG"):
            Image.fromarray(first).save(os.environ["VIDHARM_PREVIEW_PNG"])
        Image.fromarray(first).save(tmp_path / "preview.png")
        on_width = status_extent(first)
        assert on_width > 150, "no status line"          # "30 fps  latency .. harmonize ON (stats)"

        # ---- m: the mask (grey levels: room black, person white), m again: back
        scr.key(wid, "m")
        wait_for(lambda: logged("mask view on"), what="'mask view on'")
        mask = wait_for(lambda: (lambda w: w if w[STRIP].max() < 40 else None)(window()),
                        what="the mask view")
        body = mask[60:, :].astype(int)
        assert np.abs(body[..., 0] - body[..., 1]).max() <= 2          # grey
        assert mask[PERSON].mean() > 180
        scr.key(wid, "m")
        wait_for(lambda: logged("mask view off"), what="'mask view off'")
        wait_for(lambda: diff(window()[STRIP], room_frame[STRIP]) < 12, what="the frame again")

        # ---- h: harmonization off, and the status line says so (shorter: "OFF")
        scr.key(wid, "h")
        wait_for(lambda: logged("harmonization off"), what="'harmonization off'")
        wait_for(lambda: status_extent(window()) < on_width - 20, what="'harmonize OFF' drawn")
        scr.key(wid, "h")
        wait_for(lambda: logged("harmonization on"), what="'harmonization on'")

        # ---- n: the next background in the folder (blue)
        scr.key(wid, "n")
        wait_for(lambda: logged("background: "), what="'background: ...'")
        blue = wait_for(lambda: (lambda w: w if (w[STRIP][..., 2].mean() > 180 and
                                                 w[STRIP][..., 0].mean() < 60) else None)(
            window()), what="the blue background")
        assert diff(blue[PERSON], np.array([20, 40, 230], np.uint8)) > 40   # person still there

        # ---- space: paused (the picture stops), space again: it moves again
        scr.key(wid, "space")
        wait_for(lambda: logged("paused"), what="'paused'")
        time.sleep(0.5)
        a = window()
        time.sleep(1.0)
        b = window()
        assert np.array_equal(a[60:], b[60:]), "the picture moved while paused"
        scr.key(wid, "space")
        wait_for(lambda: logged("resumed"), what="'resumed'")
        c = window()
        wait_for(lambda: diff(window()[PERSON], c[PERSON]) > 0.5, what="motion after resume")

        # ---- q: quits cleanly, the window goes away
        scr.key(wid, "q")
        assert proc.wait(30) == 0, (tmp_path / "run.log").read_text()[-2000:]
        assert logged("vidharm run: ")                     # the end-of-run summary
        assert not scr.xdotool("search", "--name", TITLE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
