"""vidharm doctor: every check against fake /sys, /proc, /etc, /lib/modules trees (and a fake
Windows registry and macOS bundles), plus real runs of `vidharm doctor` and `--version`."""
from __future__ import annotations

import json
import os
import plistlib
from pathlib import Path

import pytest

from conftest import run_cli

from vidharm.commands import doctor as D

RELEASE = "6.1.0-27-amd64"
SIG = D.MODULE_SIG_MARKER


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def fake_linux(root: Path, *, installed=True, loaded=True, signed=True, labels=("PHNet Camera",),
               exclusive="Y", video_nr="10", secure_boot=None, dev_nodes=True, persist=True,
               webcam=True, distro="debian") -> Path:
    """A machine as /sys, /proc, /etc, /lib/modules and /dev show it."""
    write(root / "proc/sys/kernel/osrelease", RELEASE + "\n")
    write(root / "etc/os-release", f'PRETTY_NAME="test"\nID={distro}\n')
    mods = "snd_hda_intel 57344 3 - Live 0x0000000000000000\n"
    if installed:
        ko = b"\x7fELF fake module" + (SIG if signed else b"")
        write(root / f"lib/modules/{RELEASE}/updates/dkms/v4l2loopback.ko", ko)
    if loaded:
        mods += "v4l2loopback 49152 0 - Live 0x0000000000000000\n"
        params = root / "sys/module/v4l2loopback/parameters"
        caps = exclusive.split(",") + ["N"] * (8 - len(exclusive.split(",")))
        write(params / "exclusive_caps", ",".join(caps) + "\n")
        nrs = video_nr.split(",") + ["-1"] * (8 - len(video_nr.split(",")))
        write(params / "video_nr", ",".join(nrs) + "\n")
        write(root / "sys/module/v4l2loopback/version", "0.13.2\n")
        asked = [int(v) for v in video_nr.split(",")]
        auto = iter(range(20, 40))
        for i, label in enumerate(labels):
            n = asked[i] if i < len(asked) and asked[i] >= 0 else next(auto)
            dev = root / f"sys/devices/virtual/video4linux/video{n}"
            write(dev / "name", label + "\n")
            link = root / f"sys/class/video4linux/video{n}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f"../../devices/virtual/video4linux/video{n}")
            if dev_nodes:
                write(root / f"dev/video{n}", "")
    write(root / "proc/modules", mods)
    if secure_boot is not None:
        write(root / f"sys/firmware/efi/efivars/{D.SECURE_BOOT_VAR}",
              b"\x06\x00\x00\x00" + (b"\x01" if secure_boot else b"\x00"))
        write(root / "var/lib/shim-signed/mok/MOK.der", b"key")
    if persist:
        write(root / "etc/modprobe.d/v4l2loopback.conf",
              '# vidharm\noptions v4l2loopback devices=1 video_nr=10 '
              'card_label="PHNet Camera" exclusive_caps=1\n')
        write(root / "etc/modules-load.d/v4l2loopback.conf", "v4l2loopback\n")
    if webcam:
        usb = root / "sys/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/video4linux"
        for n, idx in ((0, "0"), (1, "1")):      # capture node and its metadata node
            write(usb / f"video{n}/name", "Integrated Camera: Integrated C\n")
            write(usb / f"video{n}/index", idx + "\n")
            link = root / f"sys/class/video4linux/video{n}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(usb / f"video{n}", link.parent))
            write(root / f"dev/video{n}", "")
    return root


def by_status(lines, status):
    return [l for l in lines if l.status == status]


def blocking(lines):
    return [l for l in lines if l.status in D.BLOCKING]


def all_checks(root, **kw):
    """Every Linux check against the fake tree; torch and imports faked (no GPU question)."""
    kw.setdefault("torch_info", {"torch": "2.13.0+cpu", "cuda_build": None, "cuda": False})
    kw.setdefault("import_check", lambda mod: None)
    # every library present once (the machine's own packages are not what is tested here)
    kw.setdefault("pkg_version", lambda n: None if n in D.OPENCV_WHEELS[2:] + ("opencv-python",)
                  else "1.0")
    return D.run_checks("linux", root, **kw)


# ------------------------------------------------------------------------ Linux
def test_ready_machine(tmp_path):
    root = fake_linux(tmp_path)
    lines = D.linux_virtual_camera(root)
    assert not blocking(lines), D.render(lines)
    text = " | ".join(l.what for l in lines)
    assert "v4l2loopback module loaded (version 0.13.2)" in text
    assert "/dev/video10 'PHNet Camera': exclusive_caps=1" in text
    assert "/etc/modprobe.d/v4l2loopback.conf sets card_label=\"PHNet Camera\"" in text
    assert "loaded at boot" in text
    cams = D.linux_cameras(root)
    assert [l.status for l in cams] == ["ok"]             # the metadata node is not a camera
    assert "/dev/video0: Integrated Camera" in cams[0].what

    full = all_checks(root)
    assert D.ready(full), D.render(full)
    out = D.render(full)
    assert out.rstrip().endswith("can send to the virtual camera.") and "READY" in out


def test_module_not_installed(tmp_path):
    root = fake_linux(tmp_path, installed=False, loaded=False, persist=False)
    lines = D.linux_virtual_camera(root)
    (miss,) = by_status(lines, "missing")
    assert f"not installed for kernel {RELEASE}" in miss.what
    assert miss.fix == ("sudo apt install v4l2loopback-dkms v4l2loopback-utils "
                        "linux-headers-$(uname -r) && sudo modprobe v4l2loopback devices=1 "
                        'video_nr=10 card_label="PHNet Camera" exclusive_caps=1')
    notes = " | ".join(l.fix for l in by_status(lines, "note"))
    assert "sudo tee /etc/modprobe.d/vidharm-v4l2loopback.conf" in notes
    assert "echo v4l2loopback | sudo tee /etc/modules-load.d/" in notes
    assert not D.ready(all_checks(root))


def test_install_command_per_distribution(tmp_path):
    for distro, cmd in (("ubuntu", "sudo apt install v4l2loopback-dkms"),
                        ("fedora", "sudo dnf install akmod-v4l2loopback"),
                        ("arch", "sudo pacman -S v4l2loopback-dkms"),
                        ("gentoo", "github.com/umlaeute/v4l2loopback")):
        write(tmp_path / distro / "etc/os-release", f"ID={distro}\n")
        assert cmd in D.install_command(tmp_path / distro)


def test_installed_but_not_loaded_gives_the_modprobe_line(tmp_path):
    root = fake_linux(tmp_path, loaded=False, secure_boot=False)
    lines = D.linux_virtual_camera(root)
    (miss,) = blocking(lines)
    assert "installed (/lib/modules/" in miss.what and "not loaded" in miss.what
    assert miss.fix == D.modprobe_line(10)
    assert any(l.status == "ok" and "Secure Boot is off" in l.what for l in lines)


def test_wrong_label(tmp_path):
    root = fake_linux(tmp_path, labels=("Dummy video device (0x0000)",))
    lines = D.linux_virtual_camera(root)
    (wrong,) = by_status(lines, "wrong")
    assert "no device labelled 'PHNet Camera'" in wrong.what
    assert "/dev/video10 'Dummy video device (0x0000)'" in wrong.what
    # a new device next to the existing one takes the next free number; a reload reuses 10
    assert wrong.fix.startswith('sudo v4l2loopback-ctl add -n "PHNet Camera" -x 1 /dev/video11')
    assert "sudo modprobe -r v4l2loopback && " + D.modprobe_line(10) in wrong.fix


def test_exclusive_caps_off(tmp_path):
    root = fake_linux(tmp_path, exclusive="N")
    lines = D.linux_virtual_camera(root)
    (wrong,) = blocking(lines)
    assert "/dev/video10 'PHNet Camera': exclusive_caps=0" in wrong.what and "Chrome" in wrong.what
    assert wrong.fix == "sudo modprobe -r v4l2loopback && " + D.modprobe_line(10)
    assert not D.ready(all_checks(root))


def test_exclusive_caps_found_by_load_position(tmp_path):
    # no numbers asked for: the first device (video20) is position 0, whose caps are on
    root = fake_linux(tmp_path, labels=("PHNet Camera", "OBS Cam"), video_nr="-1,-1",
                      exclusive="Y,N")
    lines = D.linux_virtual_camera(root)
    assert any(l.status == "ok" and "/dev/video20 'PHNet Camera': exclusive_caps=1" in l.what
               for l in lines), D.render(lines)
    # the second one could also be a device added later: not guessed
    root1 = fake_linux(tmp_path / "a", labels=("OBS Cam", "PHNet Camera"), video_nr="-1,-1",
                       exclusive="N,Y")
    assert any(l.status == "note" and "video21" in l.what and "cannot be read" in l.what
               for l in D.linux_virtual_camera(root1))
    # the same devices, the PHNet one asked for 10 in the second slot, caps off
    root2 = fake_linux(tmp_path / "b", labels=("OBS Cam", "PHNet Camera"), video_nr="-1,10",
                       exclusive="Y,N")
    (wrong,) = blocking(D.linux_virtual_camera(root2))
    assert "/dev/video10 'PHNet Camera': exclusive_caps=0" in wrong.what


def test_device_added_later(tmp_path):
    """Loaded with video_nr=10 ('OBS Cam'), then `v4l2loopback-ctl add` made video42: the
    module parameters do not cover it; asking the device itself (VIDIOC_QUERYCAP) does."""
    root = fake_linux(tmp_path, labels=("OBS Cam",), exclusive="Y")
    write(root / "sys/devices/virtual/video4linux/video42/name", "PHNet Camera\n")
    write(root / "dev/video42", "")
    lines = D.linux_virtual_camera(root)
    assert not blocking(lines), D.render(lines)
    (note,) = [l for l in by_status(lines, "note") if "video42" in l.what]
    assert "cannot be read" in note.what and note.fix.startswith("v4l2-ctl -d /dev/video42")
    # the device answers: OUTPUT only (nobody writing) = exclusive_caps on ...
    asked = []

    def querycap(caps):
        def q(node):
            asked.append(Path(node).name)
            return ("v4l2 loopback", "PHNet Camera", caps)
        return q
    on = D.linux_virtual_camera(root, querycap=querycap(D.V4L2_CAP_VIDEO_OUTPUT))
    assert any(l.status == "ok" and "/dev/video42 'PHNet Camera': exclusive_caps=1" in l.what
               for l in on) and asked == ["video42"]
    # ... CAPTURE and OUTPUT together = off
    both = D.V4L2_CAP_VIDEO_CAPTURE | D.V4L2_CAP_VIDEO_OUTPUT
    (wrong,) = blocking(D.linux_virtual_camera(root, querycap=querycap(both)))
    assert "exclusive_caps=0" in wrong.what


def test_querycap_of_something_that_is_not_a_device(tmp_path):
    assert D.v4l2_querycap(write(tmp_path / "video0", "")) is None
    assert D.v4l2_querycap(tmp_path / "absent") is None


def test_secure_boot_blocks_an_unsigned_module(tmp_path):
    root = fake_linux(tmp_path, loaded=False, signed=False, secure_boot=True)
    lines = D.linux_virtual_camera(root)
    (wrong,) = by_status(lines, "wrong")
    assert "Secure Boot is on" in wrong.what and "unsigned" in wrong.what
    assert "Key was rejected by service" in wrong.what
    assert "sudo mokutil --import /var/lib/shim-signed/mok/MOK.der" in wrong.fix
    assert any(l.status == "missing" and l.fix == D.modprobe_line(10) for l in lines)


def test_secure_boot_with_signed_or_loaded_module(tmp_path):
    signed = D.linux_virtual_camera(fake_linux(tmp_path / "a", loaded=False, secure_boot=True))
    assert not by_status(signed, "wrong")
    assert any(l.status == "note" and "Secure Boot is on" in l.what for l in signed)
    loaded = D.linux_virtual_camera(fake_linux(tmp_path / "b", secure_boot=True, signed=False))
    assert not blocking(loaded)
    assert any(l.status == "ok" and "Secure Boot is on and the module is loaded" in l.what
               for l in loaded)


def test_module_signature_in_compressed_files(tmp_path):
    import gzip
    import lzma
    assert D.module_signed(write(tmp_path / "a.ko", b"x" + SIG)) is True
    assert D.module_signed(write(tmp_path / "b.ko", b"x")) is False
    assert D.module_signed(write(tmp_path / "c.ko.xz", lzma.compress(b"x" + SIG))) is True
    assert D.module_signed(write(tmp_path / "d.ko.gz", gzip.compress(b"x"))) is False
    assert D.module_signed(write(tmp_path / "e.ko.zst", b"?")) is None


def test_device_node_missing_in_a_container(tmp_path):
    root = fake_linux(tmp_path, dev_nodes=False)
    (miss,) = blocking(D.linux_virtual_camera(root))
    assert "/dev/video10 does not exist" in miss.what and "--device /dev/video10" in miss.fix


def test_persistent_options_with_old_label(tmp_path):
    root = fake_linux(tmp_path)
    write(root / "etc/modprobe.d/v4l2loopback.conf",
          "options v4l2loopback card_label=OBS exclusive_caps=0\n")
    (note,) = [l for l in D.linux_virtual_camera(root) if "modprobe.d" in l.what]
    assert note.status == "note" and "card_label='OBS'" in note.what
    assert note.fix.endswith("| sudo tee /etc/modprobe.d/v4l2loopback.conf")
    assert 'video_nr=10 card_label="PHNet Camera" exclusive_caps=1' in note.fix


def test_no_webcam(tmp_path):
    (l,) = D.linux_cameras(fake_linux(tmp_path, webcam=False))
    assert l.status == "missing" and "--source sample" in l.fix


# ------------------------------------------------------------------------ Windows, macOS
def test_windows_obs_unity_and_nothing():
    def reg(entries):
        return lambda path, value="": entries.get((path, value))
    obs_key = (f"HKCR\\CLSID\\{D.OBS_CLSID}", "")
    ver_key = ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\OBS Studio",
               "DisplayVersion")
    ok = D.windows_virtual_camera(reg({obs_key: "OBS Virtual Camera", ver_key: "31.0.2"}))
    assert [l.status for l in ok] == ["ok"] and "OBS 31.0.2" in ok[0].what
    old = D.windows_virtual_camera(reg({obs_key: "x", ver_key: "25.0.8"}))
    assert old[0].status == "wrong" and "26.0+" in old[0].what
    assert old[0].fix.startswith("winget install OBSProject.OBSStudio")
    unity = D.windows_virtual_camera(reg({(f"HKCR\\CLSID\\{D.UNITY_CAPTURE_CLSID}", ""): "x"}))
    assert [l.status for l in unity] == ["ok"] and "Unity Capture" in unity[0].what
    (none,) = D.windows_virtual_camera(reg({}))
    assert none.status == "missing" and "winget install" in none.fix


def obs_app(root: Path, version: str, extension=False, dal=False) -> Path:
    info = root / "Applications/OBS.app/Contents/Info.plist"
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_bytes(plistlib.dumps({"CFBundleShortVersionString": version}))
    if extension:
        (root / "Library/SystemExtensions/ABCD-1234" / D.OBS_MAC_EXTENSION).mkdir(parents=True)
    if dal:
        (root / D.OBS_MAC_DAL).mkdir(parents=True)
    return root


def test_macos(tmp_path):
    (none,) = D.macos_virtual_camera(tmp_path / "none", darwin_release="23.4.0")
    assert none.status == "missing" and none.fix.startswith("brew install --cask obs")
    old = D.macos_virtual_camera(obs_app(tmp_path / "old", "29.1.3", dal=True), "23.4.0")
    assert old[0].status == "wrong" and "needs OBS 30+" in old[0].what
    fresh = D.macos_virtual_camera(obs_app(tmp_path / "fresh", "30.2.0"), "23.4.0")
    assert [l.status for l in fresh] == ["ok", "missing"]
    assert "Start Virtual Camera" in fresh[1].fix
    good = D.macos_virtual_camera(obs_app(tmp_path / "good", "30.2.0", extension=True), "23.4.0")
    assert [l.status for l in good] == ["ok", "ok"]
    # macOS 12 (Darwin 21): the DAL plug-in, OBS 28 is enough
    dal = D.macos_virtual_camera(obs_app(tmp_path / "dal", "28.0.1", dal=True), "21.6.0")
    assert [l.status for l in dal] == ["ok", "ok"] and "DAL" in dal[1].what


def test_cameras_through_opencv():
    lines = D.opencv_cameras(lambda i: i < 2)
    assert [l.status for l in lines] == ["ok", "ok"] and "--camera 1" in lines[1].what
    (none,) = D.opencv_cameras(lambda i: False)
    assert none.status == "missing"


# ------------------------------------------------------------------------ GPU, libraries
def test_gpu_lines(tmp_path):
    cuda = D.gpu_lines(tmp_path, {"torch": "2.13.0", "cuda_build": "12.8", "cuda": True,
                                  "gpu": "NVIDIA H200", "gpu_gib": 139.8, "gpus": 1})
    assert cuda[0].status == "ok" and "CUDA 12.8: NVIDIA H200 (140 GiB)" in cuda[0].what
    cpu = D.gpu_lines(tmp_path, {"torch": "2.13.0+cpu", "cuda_build": None, "cuda": False})
    assert cpu[0].status == "note" and "CPU build" in cpu[0].what
    write(tmp_path / "proc/driver/nvidia/version", "NVRM version: 570.86\n")
    drv = D.gpu_lines(tmp_path, {"torch": "2.13.0+cpu", "cuda_build": None, "cuda": False})
    assert "NVIDIA driver is installed" in drv[0].what
    broken = D.gpu_lines(tmp_path, {"torch": None, "error": "ImportError: libcudnn"})
    assert broken[0].status == "wrong" and "torch==2.13.0" in broken[0].fix


def test_missing_libraries_two_opencv_wheels_and_a_broken_mediapipe():
    installed = {"opencv-python": "4.10.0.84", "opencv-contrib-python": "4.10.0.84",
                 "mediapipe": "0.10.21", "av": "14.0"}
    lines = D.python_lines(lambda mod: ("TypeError: Descriptors cannot be created directly "
                                        "(protobuf)") if mod == "mediapipe" else None,
                           installed.get)
    (miss,) = by_status(lines, "missing")
    assert "torch" in miss.what and "pip install vidharm torch==2.13.0 numpy" in miss.fix
    wrong = by_status(lines, "wrong")
    assert any("OpenCV wheels" in l.what and "pip uninstall -y opencv-python" in l.fix
               for l in wrong)
    assert any(l.what.startswith("mediapipe does not import") and "pip install" in l.fix
               for l in wrong)


def test_every_blocking_line_has_a_fix(tmp_path):
    cases = [fake_linux(tmp_path / "a", installed=False, loaded=False, webcam=False),
             fake_linux(tmp_path / "b", labels=("Dummy",), exclusive="N", dev_nodes=False),
             fake_linux(tmp_path / "c", loaded=False, signed=False, secure_boot=True)]
    for root in cases:
        lines = all_checks(root)
        assert blocking(lines)
        assert all(l.fix for l in blocking(lines)), D.render(lines)
        assert "NOT READY" in D.render(lines)


# ------------------------------------------------------------------------ the real CLI
def test_doctor_cli_on_this_machine():
    r = run_cli("doctor", timeout=120)
    assert r.returncode in (0, 1), r.stderr
    out = r.stdout
    for section in ("Segmentation models", "GPU", "Python and libraries"):
        assert section in out
    assert ("NOT READY" in out) == (r.returncode == 1)
    j = run_cli("doctor", "--json", timeout=120)
    data = json.loads(j.stdout)
    assert data["ready"] == (j.returncode == 0) == (r.returncode == 0)
    assert {c["status"] for c in data["checks"]} <= set(D.STATUSES)
    assert all(c["fix"] for c in data["checks"] if c["status"] in D.BLOCKING)


def test_version_cli():
    torch = pytest.importorskip("torch")
    r = run_cli("--version", timeout=120)
    assert r.returncode == 0, r.stderr
    import vidharm
    assert f"vidharm {vidharm.__version__}" in r.stdout
    assert f"torch {torch.__version__}, CUDA: {'yes' if torch.cuda.is_available() else 'no'}" \
        in r.stdout
