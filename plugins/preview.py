"""The preview window (the ``preview`` sink): an OpenCV window showing what the camera would
show, with hotkeys and a status overlay; and whether a window can be shown at all."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


#: preview hotkeys -> engine commands
PREVIEW_KEYS = {ord("h"): "toggle_harmonize", ord("n"): "next_background",
                ord("m"): "toggle_mask", ord(" "): "toggle_pause", ord("q"): "quit", 27: "quit"}
PREVIEW_HELP = "h harmonize on/off  n next background  m mask  space pause  q/Esc quit"


def have_display() -> bool:
    """Whether an OpenCV window can be shown (a desktop session)."""
    return display_problem() is None


def display_problem() -> str | None:
    """None when a window can be shown, else what is wrong (one line).

    On Linux the display server is actually reached (a socket connect, no window): OpenCV's
    Qt backend aborts the whole process (SIGABRT, no message) when ``DISPLAY`` names a
    server that is not there, so this has to be known before the first window.
    """
    if not sys.platform.startswith("linux"):
        return None
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if wayland:
        sock = Path(wayland) if wayland.startswith("/") else \
            Path(os.environ.get("XDG_RUNTIME_DIR", "/run/user/%d" % os.getuid())) / wayland
        if sock.exists():
            return None
    disp = os.environ.get("DISPLAY")
    if not disp:
        return "no display for the preview window (DISPLAY is not set)"
    if _x_server_reachable(disp):
        return None
    return f"no X server answers on DISPLAY={disp}"


def _x_server_reachable(disp: str, timeout: float = 1.0) -> bool:
    import socket
    host, _, rest = disp.rpartition(":")
    num = rest.split(".")[0]
    if not num.isdigit():
        return False
    if host in ("", "unix") or host.startswith("/"):
        path = host if host.startswith("/") else f"/tmp/.X11-unix/X{num}"
        for addr in (path, "\0" + path):       # file socket, then Linux's abstract one
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout)
                    s.connect(addr)
                    return True
            except OSError:
                continue
        return False
    try:
        with socket.create_connection((host, 6000 + int(num)), timeout=timeout):
            return True
    except OSError:
        return False


class PreviewSink:
    """An OpenCV window showing what the camera would show, with hotkeys and an overlay.

    Keys (:data:`PREVIEW_KEYS`): ``h`` harmonization on/off (A/B), ``n`` next background,
    ``m`` show the mask, space pause, ``q``/Esc quit; closing the window quits too. Pressed
    keys become commands returned by :meth:`events` (the engine acts on them). The overlay is
    the engine's status text (fps, latency) set with :meth:`set_overlay`.

    The window functions are injectable (``imshow(title, bgr)``, ``wait_key(ms) -> int``,
    ``destroy(title)``, ``window_visible(title) -> bool``), so the logic runs headless in
    tests; the defaults are OpenCV's. Protocols (:mod:`vidharm.protocols`): Sink, Openable,
    Interactive.
    """

    def __init__(self, title: str = "vidharm - PHNet Camera preview", imshow=None,
                 wait_key=None, destroy=None, window_visible=None, check_display: bool = True):
        self.title = title
        self._custom = imshow is not None
        self._imshow = imshow
        self._wait_key = wait_key
        self._destroy = destroy
        self._visible = window_visible
        self._resize = None
        self.check_display = check_display and imshow is None
        self.overlay = ""
        self.frames = 0
        self.last_shown: np.ndarray | None = None
        self._events: list[str] = []
        self._opened = False

    def open(self, size=None, fps=None) -> "PreviewSink":
        if self._opened:
            return self
        problem = display_problem() if self.check_display else None
        if problem:
            from vidharm.errors import OutputError
            raise OutputError(problem, "run it in a desktop session, or use --sink virtualcam / "
                                       "file / null")
        if not self._custom:
            import cv2
            # resizable, aspect kept, no Qt toolbar/status bar; sized to the frame on the
            # first one (Qt opens a WINDOW_NORMAL window at 400x300, overlay unreadable)
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO
                            | cv2.WINDOW_GUI_NORMAL)
            self._resize = cv2.resizeWindow
            self._imshow = cv2.imshow
            self._wait_key = cv2.waitKey
            self._destroy = cv2.destroyWindow
            self._visible = lambda t: cv2.getWindowProperty(t, cv2.WND_PROP_VISIBLE) >= 1
        self._opened = True
        return self

    def set_overlay(self, text: str) -> None:
        self.overlay = text

    def _draw(self, rgb: np.ndarray) -> np.ndarray:
        import cv2
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        scale = max(0.45, bgr.shape[0] / 1080)
        lines = [l for l in (self.overlay, PREVIEW_HELP) if l]
        for i, line in enumerate(lines):
            y = int((24 + 26 * i) * scale * 1.4)
            for colour, thick in (((0, 0, 0), 4), ((255, 255, 255), 1)):
                cv2.putText(bgr, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale * 1.4,
                            colour, max(1, int(thick * scale * 1.4)), cv2.LINE_AA)
        return bgr

    def send(self, rgb: np.ndarray, t: float | None = None) -> None:
        if not self._opened:
            self.open()
        img = self._draw(rgb)
        if self.frames == 0 and self._resize is not None:
            h, w = img.shape[:2]
            k = min(1.0, 1280 / w)                 # 1080p frames: a window that fits a laptop
            self._resize(self.title, int(w * k), int(h * k))
        self._imshow(self.title, img)
        self.last_shown = img
        self.frames += 1
        self.pump()

    def pump(self) -> None:
        """Read keys (and notice a closed window) without showing a new frame."""
        if not self._opened:
            return
        key = self._wait_key(1)
        if key is not None and key >= 0:
            cmd = PREVIEW_KEYS.get(key & 0xFF)
            if cmd:
                self._events.append(cmd)
        if self._visible is not None and self.frames:
            try:
                if not self._visible(self.title):
                    self._events.append("quit")
            except Exception:
                pass

    def events(self) -> list[str]:
        ev, self._events = self._events, []
        return ev

    def close(self) -> None:
        if self._opened and self._destroy is not None:
            try:
                self._destroy(self.title)
                if not self._custom:
                    self._wait_key(1)          # let the GUI thread process the close
            except Exception:
                pass
        self._opened = False

    def __enter__(self) -> "PreviewSink":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
