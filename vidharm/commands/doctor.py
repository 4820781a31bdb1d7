"""``vidharm doctor``: is this machine ready for ``vidharm run``, and if not, what to type.

One screen, one line per thing checked, each ``ok``, ``missing``, ``wrong`` or ``note`` (worth
knowing, not blocking), with the exact command that fixes it. Exit 0 when nothing is missing or
wrong, 1 otherwise.

Everything is read from files (``/sys``, ``/proc``, ``/etc``, ``/lib/modules``, macOS bundles)
under an injectable ``root`` (default ``/``), and the Windows registry through an injectable
reader, so the tests build fake trees for every state: module missing, wrong label,
``exclusive_caps=0``, Secure Boot refusing an unsigned module, and so on.
"""
from __future__ import annotations

import gzip
import json
import lzma
import os
import platform as _platform
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import click

#: what vidharm's virtual camera sink looks for (plugins/sinks.py uses the same name)
CAMERA_NAME = "PHNet Camera"
#: the EFI variable that says whether Secure Boot is enforced (4 attribute bytes, then 0/1)
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
#: the marker the kernel's sign-file appends to a signed module
MODULE_SIG_MARKER = b"~Module signature appended~\n"
#: DirectShow filters pyvirtualcam's Windows backends talk to
OBS_CLSID = "{A3FCE0F5-3493-419F-958A-ABA1250EC20B}"
UNITY_CAPTURE_CLSID = "{5C2CD55C-92AD-4999-8666-912BD3E70010}"
OBS_MAC_EXTENSION = "com.obsproject.obs-studio.mac-camera-extension.systemextension"
OBS_MAC_DAL = "Library/CoreMediaIO/Plug-Ins/DAL/obs-mac-virtualcam.plugin"
#: the OpenCV wheels that all install a top-level ``cv2`` (two of them break each other)
OPENCV_WHEELS = ("opencv-python", "opencv-contrib-python", "opencv-python-headless",
                 "opencv-contrib-python-headless")
#: segmentation models vidharm run uses (profiles pick one of them)
MODEL_ASSETS = ("selfie-general", "selfie-landscape")

STATUSES = ("ok", "missing", "wrong", "note", "info")
BLOCKING = ("missing", "wrong")


@dataclass
class Line:
    """One checked thing. ``fix`` is the exact command (or step) that makes it ok."""
    section: str
    status: str
    what: str
    fix: str = ""

    def __post_init__(self):
        assert self.status in STATUSES, self.status


def ready(lines: Iterable[Line]) -> bool:
    return not any(l.status in BLOCKING for l in lines)


# ------------------------------------------------------------------------------ helpers
def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _num(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else -1


def _bool_list(text: str | None) -> list[bool]:
    """A module bool array parameter as sysfs shows it: ``Y,N,N`` (or ``1,0``)."""
    if not text:
        return []
    return [v.strip().upper() in ("Y", "1") for v in text.split(",") if v.strip()]


def _int_list(text: str | None) -> list[int]:
    out = []
    for v in (text or "").split(","):
        try:
            out.append(int(v))
        except ValueError:
            pass
    return out


def _version_tuple(text: str | None) -> tuple[int, ...]:
    nums = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in nums[:3])


def _pkg_version(name: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def os_release(root: Path) -> dict[str, str]:
    out = {}
    for line in (_read(root / "etc/os-release") or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


def install_command(root: Path) -> str:
    """The package-manager line that installs v4l2loopback on this distribution."""
    rel = os_release(root)
    ids = {rel.get("ID", "")} | set(rel.get("ID_LIKE", "").split())
    if ids & {"debian", "ubuntu"}:
        return ("sudo apt install v4l2loopback-dkms v4l2loopback-utils "
                "linux-headers-$(uname -r)")
    if ids & {"fedora", "rhel", "centos"}:
        return "sudo dnf install akmod-v4l2loopback v4l2loopback  # from RPM Fusion (free)"
    if ids & {"arch", "manjaro", "endeavouros"}:
        return "sudo pacman -S v4l2loopback-dkms v4l2loopback-utils linux-headers"
    if ids & {"opensuse", "suse", "opensuse-tumbleweed", "opensuse-leap"}:
        return "sudo zypper install v4l2loopback-kmp-default v4l2loopback-utils"
    return ("build it from https://github.com/umlaeute/v4l2loopback "
            "(make && sudo make install && sudo depmod -a)")


def module_signed(path: Path) -> bool | None:
    """Whether a kernel module file carries a signature (None: cannot tell, e.g. .zst)."""
    try:
        if path.name.endswith(".ko"):
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - len(MODULE_SIG_MARKER)))
                return f.read() == MODULE_SIG_MARKER
        if path.name.endswith(".ko.xz"):
            return lzma.decompress(path.read_bytes()).endswith(MODULE_SIG_MARKER)
        if path.name.endswith(".ko.gz"):
            return gzip.decompress(path.read_bytes()).endswith(MODULE_SIG_MARKER)
    except (OSError, lzma.LZMAError, EOFError, gzip.BadGzipFile):
        return None
    return None


def secure_boot(root: Path) -> bool | None:
    """True/False from the EFI variable; None when not an EFI system or unreadable."""
    var = root / "sys/firmware/efi/efivars" / SECURE_BOOT_VAR
    try:
        data = var.read_bytes()
    except OSError:
        return None
    if len(data) < 5:
        return None
    return data[4] == 1


# ------------------------------------------------------------------------------ Linux
def modprobe_line(video_nr: int = 10) -> str:
    return (f'sudo modprobe v4l2loopback devices=1 video_nr={video_nr} '
            f'card_label="{CAMERA_NAME}" exclusive_caps=1')


def _free_video_nr(taken: Iterable[int], start: int = 10) -> int:
    taken = set(taken)
    n = start
    while n in taken:
        n += 1
    return n


def _loopback_devices(root: Path) -> list[tuple[int, str]]:
    """(number, card label) of every v4l2loopback device (they are virtual V4L2 devices)."""
    out = []
    for d in (root / "sys/devices/virtual/video4linux").glob("video*"):
        out.append((_num(d.name), _read(d / "name") or ""))
    return sorted(out)


def _all_video_numbers(root: Path) -> list[int]:
    nums = {_num(p.name) for p in (root / "sys/class/video4linux").glob("video*")}
    nums |= {n for n, _ in _loopback_devices(root)}
    nums |= {_num(p.name) for p in (root / "dev").glob("video*")}
    return sorted(n for n in nums if n >= 0)


def _exclusive_caps_of(root: Path, number: int, loop_numbers: list[int]) -> bool | None:
    """exclusive_caps of a device as the module parameters tell it, None when they cannot.

    The parameters are arrays (8 entries) indexed by the device's position at load time, and
    ``video_nr`` says which number each position asked for (-1: the next free one). Devices
    added later with v4l2loopback-ctl are not in them, so only two cases are certain: the
    number was asked for explicitly, or nothing was asked and it is the first device."""
    params = root / "sys/module/v4l2loopback/parameters"
    caps = _bool_list(_read(params / "exclusive_caps"))
    if not caps:
        return None
    asked = _int_list(_read(params / "video_nr"))
    if number in asked:
        idx = asked.index(number)
    elif all(v < 0 for v in asked) and loop_numbers and number == min(loop_numbers):
        idx = 0
    else:
        return None
    return caps[idx] if idx < len(caps) else None


V4L2_CAP_VIDEO_CAPTURE, V4L2_CAP_VIDEO_OUTPUT, V4L2_CAP_DEVICE_CAPS = 0x1, 0x2, 0x80000000
VIDIOC_QUERYCAP = 0x80685600           # _IOR('V', 0, struct v4l2_capability), 104 bytes


def v4l2_querycap(path: str | os.PathLike) -> tuple[str, str, int] | None:
    """(driver, card, device capabilities) of a V4L2 node; None if it cannot be asked."""
    import fcntl
    import struct
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = bytearray(104)
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    driver = bytes(buf[0:16]).split(b"\0")[0].decode("utf-8", "replace")
    card = bytes(buf[16:48]).split(b"\0")[0].decode("utf-8", "replace")
    caps, device_caps = struct.unpack_from("<II", buf, 84)
    return driver, card, device_caps if caps & V4L2_CAP_DEVICE_CAPS else caps


def _exclusive_caps_live(node: Path, querycap) -> bool | None:
    """exclusive_caps from the device itself: with it on, a loopback device announces only
    OUTPUT (nobody writing) or only CAPTURE (a program writing), never both."""
    got = querycap(node)
    if not got:
        return None
    both = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_OUTPUT
    return (got[2] & both) != both


def _persistent_options(root: Path) -> tuple[Path | None, str | None]:
    """The modprobe.d file and its ``options v4l2loopback ...`` line, if any."""
    for d in ("etc/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d"):
        for f in sorted((root / d).glob("*.conf")):
            for line in (_read(f) or "").splitlines():
                s = line.strip()
                if s.startswith("options") and s.split()[1:2] == ["v4l2loopback"]:
                    return f, s
    return None, None


def _loaded_at_boot(root: Path) -> Path | None:
    cands = sorted((root / "etc/modules-load.d").glob("*.conf")) + \
        sorted((root / "usr/lib/modules-load.d").glob("*.conf")) + [root / "etc/modules"]
    for f in cands:
        for line in (_read(f) or "").splitlines():
            if line.split("#")[0].strip() == "v4l2loopback":
                return f
    return None


def _option(line: str, key: str) -> str | None:
    m = re.search(rf'\b{key}=("([^"]*)"|\S+)', line)
    if not m:
        return None
    return m.group(2) if m.group(2) is not None else m.group(1)


def linux_virtual_camera(root: Path | str = "/", querycap=v4l2_querycap) -> list[Line]:
    """v4l2loopback: installed, loaded, Secure Boot, the "PHNet Camera" device, its
    exclusive_caps, access to its /dev node, and whether it survives a reboot."""
    root = Path(root)
    sec = "Virtual camera (v4l2loopback)"
    out: list[Line] = []
    release = _read(root / "proc/sys/kernel/osrelease") or _platform.release()
    modules = _read(root / "proc/modules") or ""
    loaded = any(l.split(" ", 1)[0] == "v4l2loopback" for l in modules.splitlines()) \
        or (root / "sys/module/v4l2loopback").is_dir()
    kos = sorted((root / "lib/modules" / release).rglob("v4l2loopback.ko*")) \
        if (root / "lib/modules" / release).is_dir() else []
    sb = secure_boot(root)
    loops = _loopback_devices(root)
    loop_nums = [n for n, _ in loops]
    nr_new = _free_video_nr(_all_video_numbers(root))          # for a device added next to them
    nr = _free_video_nr(n for n in _all_video_numbers(root) if n not in loop_nums)  # after reload
    load = modprobe_line(nr)
    mine = [(n, label) for n, label in loops if label == CAMERA_NAME]

    if loaded:
        ver = _read(root / "sys/module/v4l2loopback/version")
        out.append(Line(sec, "ok", f"v4l2loopback module loaded{f' (version {ver})' if ver else ''}"))
    elif kos:
        out.append(Line(sec, "missing", f"v4l2loopback is installed (/{kos[0].relative_to(root)}) "
                                        f"but not loaded: no '{CAMERA_NAME}' device", load))
    else:
        out.append(Line(sec, "missing", f"v4l2loopback is not installed for kernel {release}: "
                                        f"no '{CAMERA_NAME}' device",
                        f"{install_command(root)} && {load}"))

    # Secure Boot only matters for a module that is not loaded yet
    if loaded:
        if sb:
            out.append(Line(sec, "ok", "Secure Boot is on and the module is loaded (signed with "
                                       "an enrolled key)"))
    elif sb is None:
        out.append(Line(sec, "info", "Secure Boot: unknown (not an EFI system, or efivars not "
                                     "readable)"))
    elif not sb:
        out.append(Line(sec, "ok", "Secure Boot is off: an unsigned module loads"))
    else:
        key = _mok_key(root)
        enroll = (f"sudo mokutil --import {key}   # then reboot and choose 'Enroll MOK'; "
                  f"or turn Secure Boot off in the firmware settings")
        signed = module_signed(kos[0]) if kos else None
        if signed is False:
            out.append(Line(sec, "wrong", "Secure Boot is on and the installed v4l2loopback is "
                                          "unsigned: modprobe fails with 'Key was rejected by "
                                          "service'",
                            f"sudo dkms autoinstall && sudo mokutil --import {key}   # DKMS signs "
                            f"it with its key; reboot, choose 'Enroll MOK'; or turn Secure Boot "
                            f"off in the firmware settings"))
        elif kos:
            out.append(Line(sec, "note", "Secure Boot is on: if modprobe says 'Key was rejected "
                                         "by service', the module's signing key is not enrolled",
                            enroll))
        else:
            out.append(Line(sec, "note", "Secure Boot is on: a DKMS-built module must be signed "
                                         "with an enrolled key (DKMS offers to make one while "
                                         "installing)", enroll))

    if loaded:
        ctl = (f'sudo v4l2loopback-ctl add -n "{CAMERA_NAME}" -x 1 /dev/video{nr_new}   '
               f'# v4l2loopback 0.13+; or reload: sudo modprobe -r v4l2loopback && {load}')
        if not loops:
            out.append(Line(sec, "missing", "the module is loaded but has no devices", ctl))
        elif not mine:
            names = ", ".join(f"/dev/video{n} '{label}'" for n, label in loops)
            out.append(Line(sec, "wrong", f"no device labelled '{CAMERA_NAME}' (found {names}); "
                                          f"vidharm would use the first one, apps show its label",
                            ctl))
        for n, label in (mine or loops[:1]):
            dev = f"/dev/video{n}"
            node = root / "dev" / f"video{n}"
            ex = _exclusive_caps_live(node, querycap)
            if ex is None:
                ex = _exclusive_caps_of(root, n, loop_nums)
            if ex is True:
                out.append(Line(sec, "ok", f"{dev} '{label}': exclusive_caps=1 (Chrome and "
                                           f"other WebRTC apps list it)"))
            elif ex is False:
                out.append(Line(sec, "wrong", f"{dev} '{label}': exclusive_caps=0, so Chrome "
                                              f"(Meet, Teams and Zoom in the browser) does not "
                                              f"list it",
                                f"sudo modprobe -r v4l2loopback && {modprobe_line(n)}"))
            else:
                out.append(Line(sec, "note", f"{dev} '{label}': exclusive_caps cannot be read "
                                             f"(the device cannot be opened, and the module "
                                             f"parameters do not cover it)",
                                f"v4l2-ctl -d {dev} --info   # 'Video Output' only, until "
                                f"vidharm writes to it, means exclusive_caps=1"))
            if not node.exists():
                out.append(Line(sec, "missing", f"{dev} does not exist here (a container?)",
                                f"docker run --device {dev} ...   # pass the device in"))
            elif not os.access(node, os.R_OK | os.W_OK):
                out.append(Line(sec, "wrong", f"{dev}: no read/write permission for this user",
                                "sudo usermod -aG video $USER   # then log out and in"))
            else:
                out.append(Line(sec, "ok", f"{dev}: this user can write to it"))

    # survives a reboot?
    conf, opts = _persistent_options(root)
    keep = mine[0][0] if mine else nr
    persist_opts = (f"echo 'options v4l2loopback devices=1 video_nr={keep} card_label=\"{CAMERA_NAME}\" "
                    f"exclusive_caps=1' | sudo tee /etc/modprobe.d/vidharm-v4l2loopback.conf")
    if opts is None:
        out.append(Line(sec, "note", "no options in /etc/modprobe.d/: after a reboot the device "
                                     "is gone, or back with the default label and "
                                     "exclusive_caps=0", persist_opts))
    else:
        label, ex = _option(opts, "card_label"), _option(opts, "exclusive_caps")
        rel = conf.relative_to(root)
        if label == CAMERA_NAME and _bool_list(ex)[:1] == [True]:
            out.append(Line(sec, "ok", f"/{rel} sets card_label=\"{CAMERA_NAME}\" exclusive_caps=1"))
        else:
            out.append(Line(sec, "note", f"/{rel} sets card_label={label!r} exclusive_caps={ex!r} "
                                         f"(wanted \"{CAMERA_NAME}\" and 1)",
                            persist_opts.replace("vidharm-v4l2loopback.conf", rel.name)))
    boot = _loaded_at_boot(root)
    if boot is None:
        out.append(Line(sec, "note", "the module is not loaded at boot",
                        "echo v4l2loopback | sudo tee /etc/modules-load.d/vidharm-v4l2loopback.conf"))
    else:
        out.append(Line(sec, "ok", f"loaded at boot (/{boot.relative_to(root)})"))
    return out


def _mok_key(root: Path) -> str:
    for cand in ("var/lib/shim-signed/mok/MOK.der", "var/lib/dkms/mok.pub"):
        if (root / cand).is_file():
            return "/" + cand
    return "/var/lib/dkms/mok.pub"


def linux_cameras(root: Path | str = "/") -> list[Line]:
    """Real cameras: V4L2 devices that are not virtual, the main node (index 0) of each."""
    root = Path(root)
    sec = "Cameras"
    found = []
    for d in sorted((root / "sys/class/video4linux").glob("video*"), key=lambda p: _num(p.name)):
        real = d.resolve()
        if "/devices/virtual/" in real.as_posix():
            continue
        if (_read(d / "index") or "0") != "0":
            continue                       # a UVC camera's metadata node
        found.append((d.name, _read(d / "name") or "?"))
    if not found:
        return [Line(sec, "missing", "no camera found (no V4L2 capture device)",
                     "plug in a webcam; or run without one: vidharm run --source sample "
                     "(or --source FILE)")]
    return [Line(sec, "ok", f"/dev/{n}: {label}" + ("   (vidharm run uses this one)" if i == 0
                                                    else f"   (--camera /dev/{n})"))
            for i, (n, label) in enumerate(found)]


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


# ------------------------------------------------------------------------------ everywhere
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


def run_checks(platform: str | None = None, root: Path | str = "/", *,
               registry_reader: Callable[[str, str], str | None] | None = None,
               darwin_release: str | None = None, open_camera=None,
               torch_info: dict | None = None, import_check=None,
               pkg_version=None) -> list[Line]:
    """Every check for ``platform`` (default: this one), probing under ``root``."""
    platform = platform or sys.platform
    root = Path(root)
    lines: list[Line] = []
    if platform.startswith("linux"):
        lines += linux_virtual_camera(root)
        lines += pyvirtualcam_line(platform)
        lines += linux_cameras(root)
    elif platform.startswith("win"):
        lines += windows_virtual_camera(registry_reader or _winreg_reader)
        lines += pyvirtualcam_line(platform)
        lines += opencv_cameras(open_camera)
    elif platform == "darwin":
        lines += macos_virtual_camera(root, darwin_release)
        lines += pyvirtualcam_line(platform)
        lines += opencv_cameras(open_camera)
    else:
        lines.append(Line("Virtual camera", "note", f"no virtual camera backend for {platform}; "
                                                    f"use --sink file or --sink preview"))
    lines += model_lines()
    lines += gpu_lines(root, torch_info)
    lines += python_lines(import_check, pkg_version)
    return lines


# ------------------------------------------------------------------------------ output
_COLOURS = {"ok": "green", "missing": "red", "wrong": "red", "note": "yellow", "info": None}


def render(lines: list[Line], platform: str | None = None, colour: bool = False) -> str:
    platform = platform or sys.platform
    head = f"vidharm doctor: {platform}, {_platform.platform(terse=True)}, {_platform.machine()}"
    out = [head]
    section = None
    for l in lines:
        if l.section != section:
            section = l.section
            out += ["", section]
        tag = f"{l.status:8s}"
        if colour and _COLOURS[l.status]:
            tag = click.style(tag, fg=_COLOURS[l.status], bold=l.status in BLOCKING)
        out.append(f"  {tag} {l.what}")
        if l.fix:
            out.append(f"  {'':8s}   fix: {l.fix}")
    bad = [l for l in lines if l.status in BLOCKING]
    out.append("")
    if bad:
        n_m = sum(l.status == "missing" for l in bad)
        n_w = len(bad) - n_m
        out.append(f"NOT READY: {n_m} missing, {n_w} wrong. Run the fix lines from the top, "
                   f"then `vidharm doctor` again.")
    else:
        out.append("READY: `vidharm run --background IMAGE` can send to the virtual camera.")
    return "\n".join(out)


def version_text() -> str:
    """``vidharm --version``: vidharm, Python, torch and whether CUDA is usable."""
    from .. import __version__
    import vidharm
    info = torch_summary()
    lines = [f"vidharm {__version__} ({Path(vidharm.__file__).resolve().parent})",
             f"Python {'.'.join(map(str, sys.version_info[:3]))}"]
    if info.get("torch") is None:
        lines.append(f"torch: does not import ({info.get('error')})")
    elif info.get("cuda"):
        lines.append(f"torch {info['torch']}, CUDA: yes ({info['cuda_build']}, {info['gpu']})")
    elif info.get("cuda_build"):
        lines.append(f"torch {info['torch']}, CUDA: no (built for CUDA {info['cuda_build']}, "
                     f"no usable GPU)")
    else:
        lines.append(f"torch {info['torch']}, CUDA: no (CPU-only build)")
    return "\n".join(lines)


@click.command("doctor", epilog="""\b
Examples:
  vidharm doctor            # what is missing for the virtual camera, and the commands to fix it
  vidharm doctor --json     # the same, machine-readable
""")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def command(as_json: bool):
    """Check this machine for `vidharm run`: virtual camera, cameras, models, GPU, libraries.

    Each line is ok / missing / wrong / note, with the exact command that fixes it. Exit code
    0 when ready, 1 when something is missing or wrong.
    """
    lines = run_checks()
    if as_json:
        click.echo(json.dumps({"ready": ready(lines), "platform": sys.platform,
                               "checks": [asdict(l) for l in lines]}, indent=2))
    else:
        click.echo(render(lines, colour=sys.stdout.isatty()))
    raise click.exceptions.Exit(0 if ready(lines) else 1)
