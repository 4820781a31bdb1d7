"""``vidharm doctor`` on Windows and macOS: OBS's virtual camera (or Unity Capture) and the
cameras OpenCV can open. The registry is read through an injectable reader and the macOS
bundles under an injectable ``root``, so the tests fake both."""
from __future__ import annotations

import platform as _platform
import re
import sys
from pathlib import Path
from typing import Callable

from .doctor_report import Line

#: DirectShow filters pyvirtualcam's Windows backends talk to
OBS_CLSID = "{A3FCE0F5-3493-419F-958A-ABA1250EC20B}"
UNITY_CAPTURE_CLSID = "{5C2CD55C-92AD-4999-8666-912BD3E70010}"
OBS_MAC_EXTENSION = "com.obsproject.obs-studio.mac-camera-extension.systemextension"
OBS_MAC_DAL = "Library/CoreMediaIO/Plug-Ins/DAL/obs-mac-virtualcam.plugin"


def _version_tuple(text: str | None) -> tuple[int, ...]:
    nums = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in nums[:3])


# ------------------------------------------------------------------------------ Windows
def _winreg_reader(path: str, value: str = "") -> str | None:
    """Read a value from the Windows registry: ``path`` is 'HKLM\\...' or 'HKCR\\...'."""
    try:
        import winreg  # type: ignore
    except ImportError:
        return None
    hive_name, _, sub = path.partition("\\")
    hive = {"HKLM": winreg.HKEY_LOCAL_MACHINE, "HKCR": winreg.HKEY_CLASSES_ROOT,
            "HKCU": winreg.HKEY_CURRENT_USER}[hive_name]
    try:
        with winreg.OpenKey(hive, sub) as k:
            return str(winreg.QueryValueEx(k, value)[0])
    except OSError:
        return None


def windows_virtual_camera(reg: Callable[[str, str], str | None] = _winreg_reader) -> list[Line]:
    """OBS Studio's virtual camera (OBS 26.0+) or Unity Capture, as DirectShow filters."""
    sec = "Virtual camera (Windows)"
    out = []
    obs = reg(f"HKCR\\CLSID\\{OBS_CLSID}", "") is not None
    obs_ver = reg("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\OBS Studio",
                  "DisplayVersion")
    unity = reg(f"HKCR\\CLSID\\{UNITY_CAPTURE_CLSID}", "") is not None
    install = "winget install OBSProject.OBSStudio   # OBS 26.0 or newer, then start it once"
    if obs and obs_ver and _version_tuple(obs_ver) < (26, 0):
        out.append(Line(sec, "wrong", f"OBS {obs_ver} is too old for its virtual camera "
                                      f"(26.0+ needed)", install))
    elif obs:
        out.append(Line(sec, "ok", f"OBS Virtual Camera registered"
                                   f"{f' (OBS {obs_ver})' if obs_ver else ''}; apps show it as "
                                   f"'OBS Virtual Camera'"))
    if unity:
        out.append(Line(sec, "ok", "Unity Capture registered (vidharm run --sink virtualcam uses "
                                   "whichever backend opens first)"))
    if not obs and not unity:
        out.append(Line(sec, "missing", "no virtual camera: neither OBS Virtual Camera nor Unity "
                                        "Capture is registered", install))
    return out


# ------------------------------------------------------------------------------ macOS
def macos_virtual_camera(root: Path | str = "/", darwin_release: str | None = None) -> list[Line]:
    """OBS's camera extension (macOS 13+, OBS 30+) or DAL plug-in (older macOS, OBS 28+)."""
    import plistlib
    root = Path(root)
    sec = "Virtual camera (macOS)"
    darwin = _version_tuple(darwin_release or _platform.release())[:1] or (0,)
    extension_era = darwin[0] >= 22         # Darwin 22 = macOS 13
    need = (30, 0) if extension_era else (28, 0)
    need_s = "30" if extension_era else "28"
    install = f"brew install --cask obs   # OBS {need_s} or newer"
    info = root / "Applications/OBS.app/Contents/Info.plist"
    ver = None
    try:
        with open(info, "rb") as f:
            ver = plistlib.load(f).get("CFBundleShortVersionString")
    except (OSError, plistlib.InvalidFileException, ValueError):
        pass
    if ver is None:
        return [Line(sec, "missing", "OBS Studio is not installed (its virtual camera is the one "
                                     "vidharm sends to)", install)]
    if _version_tuple(ver) < need:
        return [Line(sec, "wrong", f"OBS {ver} is too old: on this macOS the virtual camera "
                                   f"needs OBS {need_s}+", install)]
    out = [Line(sec, "ok", f"OBS {ver} installed")]
    if extension_era:
        present = any((root / "Library/SystemExtensions").glob(f"*/{OBS_MAC_EXTENSION}"))
    else:
        present = (root / OBS_MAC_DAL).exists()
    what = "camera extension" if extension_era else "DAL plug-in"
    if present:
        out.append(Line(sec, "ok", f"OBS virtual camera {what} installed; apps show it as "
                                   f"'OBS Virtual Camera'"))
    else:
        out.append(Line(sec, "missing", f"OBS virtual camera {what} not installed yet",
                        "open OBS, click 'Start Virtual Camera' once (approve it in System "
                        "Settings > Privacy & Security), stop it, quit OBS"))
    return out


def opencv_cameras(open_camera: Callable[[int], bool] | None = None, tries: int = 3) -> list[Line]:
    """Cameras on Windows/macOS: OpenCV indices that open (the OS lists them no other way)."""
    sec = "Cameras"
    if open_camera is None:
        def open_camera(i: int) -> bool:
            import cv2
            cap = cv2.VideoCapture(i)
            try:
                return bool(cap.isOpened())
            finally:
                cap.release()
    found = []
    for i in range(tries):
        try:
            ok = open_camera(i)
        except Exception:
            ok = False
        if not ok:
            break
        found.append(i)
    if not found:
        hint = (" (macOS: allow camera access for your terminal in System Settings > Privacy & "
                "Security > Camera)" if sys.platform == "darwin" else "")
        return [Line(sec, "missing", "no camera could be opened" + hint,
                     "plug in a webcam; or run without one: vidharm run --source sample")]
    return [Line(sec, "ok", f"camera {i} opens" + ("   (vidharm run uses this one)" if i == 0
                                                  else f"   (--camera {i})")) for i in found]
