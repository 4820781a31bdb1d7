"""``vidharm doctor`` on Linux: v4l2loopback (installed, loaded, Secure Boot, the "PHNet Camera"
device, its exclusive_caps, access to its node, kept after a reboot) and the real cameras.

Everything is read from files (``/sys``, ``/proc``, ``/etc``, ``/lib/modules``, ``/dev``) under an
injectable ``root`` (default ``/``), so the tests build fake trees for every state: module
missing, wrong label, ``exclusive_caps=0``, Secure Boot refusing an unsigned module, and so on.
"""
from __future__ import annotations

import gzip
import lzma
import os
import platform as _platform
import re
from pathlib import Path
from typing import Iterable

from .doctor_report import Line

#: what vidharm's virtual camera sink looks for (plugins/sinks.py uses the same name)
CAMERA_NAME = "PHNet Camera"
#: the EFI variable that says whether Secure Boot is enforced (4 attribute bytes, then 0/1)
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
#: the marker the kernel's sign-file appends to a signed module
MODULE_SIG_MARKER = b"~Module signature appended~\n"


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


_SEC = "Virtual camera (v4l2loopback)"


def linux_virtual_camera(root: Path | str = "/", querycap=v4l2_querycap) -> list[Line]:
    """v4l2loopback: installed, loaded, Secure Boot, the "PHNet Camera" device, its
    exclusive_caps, access to its /dev node, and whether it survives a reboot."""
    root = Path(root)
    release = _read(root / "proc/sys/kernel/osrelease") or _platform.release()
    modules = _read(root / "proc/modules") or ""
    loaded = any(l.split(" ", 1)[0] == "v4l2loopback" for l in modules.splitlines()) \
        or (root / "sys/module/v4l2loopback").is_dir()
    kos = sorted((root / "lib/modules" / release).rglob("v4l2loopback.ko*")) \
        if (root / "lib/modules" / release).is_dir() else []
    loops = _loopback_devices(root)
    loop_nums = [n for n, _ in loops]
    nr_new = _free_video_nr(_all_video_numbers(root))          # for a device added next to them
    nr = _free_video_nr(n for n in _all_video_numbers(root) if n not in loop_nums)  # after reload
    mine = [(n, label) for n, label in loops if label == CAMERA_NAME]

    out = _module_lines(root, release, loaded, kos, modprobe_line(nr))
    out += _secure_boot_lines(root, loaded, kos)
    if loaded:
        out += _device_lines(root, loops, mine, nr_new, modprobe_line(nr), querycap)
    out += _persistence_lines(root, mine[0][0] if mine else nr)
    return out


def _module_lines(root: Path, release: str, loaded: bool, kos: list[Path], load: str) -> list[Line]:
    """The module: loaded, installed but not loaded (``load`` fixes it), or not installed."""
    if loaded:
        ver = _read(root / "sys/module/v4l2loopback/version")
        return [Line(_SEC, "ok", f"v4l2loopback module loaded{f' (version {ver})' if ver else ''}")]
    if kos:
        return [Line(_SEC, "missing", f"v4l2loopback is installed (/{kos[0].relative_to(root)}) "
                                      f"but not loaded: no '{CAMERA_NAME}' device", load)]
    return [Line(_SEC, "missing", f"v4l2loopback is not installed for kernel {release}: "
                                  f"no '{CAMERA_NAME}' device",
                 f"{install_command(root)} && {load}")]


def _secure_boot_lines(root: Path, loaded: bool, kos: list[Path]) -> list[Line]:
    """Secure Boot, which only matters for a module that is not loaded yet."""
    sb = secure_boot(root)
    if loaded:
        return [Line(_SEC, "ok", "Secure Boot is on and the module is loaded (signed with "
                                 "an enrolled key)")] if sb else []
    if sb is None:
        return [Line(_SEC, "info", "Secure Boot: unknown (not an EFI system, or efivars not "
                                   "readable)")]
    if not sb:
        return [Line(_SEC, "ok", "Secure Boot is off: an unsigned module loads")]
    key = _mok_key(root)
    enroll = (f"sudo mokutil --import {key}   # then reboot and choose 'Enroll MOK'; "
              f"or turn Secure Boot off in the firmware settings")
    signed = module_signed(kos[0]) if kos else None
    if signed is False:
        return [Line(_SEC, "wrong", "Secure Boot is on and the installed v4l2loopback is "
                                    "unsigned: modprobe fails with 'Key was rejected by "
                                    "service'",
                     f"sudo dkms autoinstall && sudo mokutil --import {key}   # DKMS signs "
                     f"it with its key; reboot, choose 'Enroll MOK'; or turn Secure Boot "
                     f"off in the firmware settings")]
    if kos:
        return [Line(_SEC, "note", "Secure Boot is on: if modprobe says 'Key was rejected "
                                   "by service', the module's signing key is not enrolled",
                     enroll)]
    return [Line(_SEC, "note", "Secure Boot is on: a DKMS-built module must be signed "
                               "with an enrolled key (DKMS offers to make one while "
                               "installing)", enroll)]


def _device_lines(root: Path, loops: list[tuple[int, str]], mine: list[tuple[int, str]],
                  nr_new: int, load: str, querycap) -> list[Line]:
    """With the module loaded: its devices, and for the "PHNet Camera" one (else the first)
    its exclusive_caps and its /dev node."""
    out = []
    ctl = (f'sudo v4l2loopback-ctl add -n "{CAMERA_NAME}" -x 1 /dev/video{nr_new}   '
           f'# v4l2loopback 0.13+; or reload: sudo modprobe -r v4l2loopback && {load}')
    if not loops:
        out.append(Line(_SEC, "missing", "the module is loaded but has no devices", ctl))
    elif not mine:
        names = ", ".join(f"/dev/video{n} '{label}'" for n, label in loops)
        out.append(Line(_SEC, "wrong", f"no device labelled '{CAMERA_NAME}' (found {names}); "
                                       f"vidharm would use the first one, apps show its label",
                        ctl))
    loop_nums = [n for n, _ in loops]
    for n, label in (mine or loops[:1]):
        out.append(_exclusive_caps_line(root, n, label, loop_nums, querycap))
        out.append(_node_line(root, n))
    return out


def _exclusive_caps_line(root: Path, n: int, label: str, loop_nums: list[int], querycap) -> Line:
    """exclusive_caps of /dev/video<n>, asked of the device, else read from the parameters."""
    dev = f"/dev/video{n}"
    ex = _exclusive_caps_live(root / "dev" / f"video{n}", querycap)
    if ex is None:
        ex = _exclusive_caps_of(root, n, loop_nums)
    if ex is True:
        return Line(_SEC, "ok", f"{dev} '{label}': exclusive_caps=1 (Chrome and "
                                f"other WebRTC apps list it)")
    if ex is False:
        return Line(_SEC, "wrong", f"{dev} '{label}': exclusive_caps=0, so Chrome "
                                   f"(Meet, Teams and Zoom in the browser) does not "
                                   f"list it",
                    f"sudo modprobe -r v4l2loopback && {modprobe_line(n)}")
    return Line(_SEC, "note", f"{dev} '{label}': exclusive_caps cannot be read "
                              f"(the device cannot be opened, and the module "
                              f"parameters do not cover it)",
                f"v4l2-ctl -d {dev} --info   # 'Video Output' only, until "
                f"vidharm writes to it, means exclusive_caps=1")


def _node_line(root: Path, n: int) -> Line:
    """Whether /dev/video<n> exists here and this user may read and write it."""
    dev = f"/dev/video{n}"
    node = root / "dev" / f"video{n}"
    if not node.exists():
        return Line(_SEC, "missing", f"{dev} does not exist here (a container?)",
                    f"docker run --device {dev} ...   # pass the device in")
    if not os.access(node, os.R_OK | os.W_OK):
        return Line(_SEC, "wrong", f"{dev}: no read/write permission for this user",
                    "sudo usermod -aG video $USER   # then log out and in")
    return Line(_SEC, "ok", f"{dev}: this user can write to it")


def _persistence_lines(root: Path, keep: int) -> list[Line]:
    """Whether the device survives a reboot: modprobe.d options (for /dev/video<keep>) and
    loading at boot."""
    out = []
    conf, opts = _persistent_options(root)
    persist_opts = (f"echo 'options v4l2loopback devices=1 video_nr={keep} card_label=\"{CAMERA_NAME}\" "
                    f"exclusive_caps=1' | sudo tee /etc/modprobe.d/vidharm-v4l2loopback.conf")
    if opts is None:
        out.append(Line(_SEC, "note", "no options in /etc/modprobe.d/: after a reboot the device "
                                      "is gone, or back with the default label and "
                                      "exclusive_caps=0", persist_opts))
    else:
        label, ex = _option(opts, "card_label"), _option(opts, "exclusive_caps")
        rel = conf.relative_to(root)
        if label == CAMERA_NAME and _bool_list(ex)[:1] == [True]:
            out.append(Line(_SEC, "ok", f"/{rel} sets card_label=\"{CAMERA_NAME}\" exclusive_caps=1"))
        else:
            out.append(Line(_SEC, "note", f"/{rel} sets card_label={label!r} exclusive_caps={ex!r} "
                                          f"(wanted \"{CAMERA_NAME}\" and 1)",
                            persist_opts.replace("vidharm-v4l2loopback.conf", rel.name)))
    boot = _loaded_at_boot(root)
    if boot is None:
        out.append(Line(_SEC, "note", "the module is not loaded at boot",
                        "echo v4l2loopback | sudo tee /etc/modules-load.d/vidharm-v4l2loopback.conf"))
    else:
        out.append(Line(_SEC, "ok", f"loaded at boot (/{boot.relative_to(root)})"))
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
