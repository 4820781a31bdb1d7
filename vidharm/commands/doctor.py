"""``vidharm doctor``: is this machine ready for ``vidharm run``, and if not, what to type.

One screen, one line per thing checked, each ``ok``, ``missing``, ``wrong`` or ``note`` (worth
knowing, not blocking), with the exact command that fixes it. Exit 0 when nothing is missing or
wrong, 1 otherwise.

The checks live by topic: :mod:`.doctor_linux` (v4l2loopback, V4L2 cameras),
:mod:`.doctor_win_mac` (OBS / Unity Capture, OpenCV cameras), :mod:`.doctor_runtime` (models,
GPU, Python libraries, pyvirtualcam); :mod:`.doctor_report` holds :class:`Line` and the
rendering. They read everything under an injectable ``root`` (default ``/``) and the Windows
registry through an injectable reader, so the tests build fake machines for every state.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import click

from .doctor_linux import (CAMERA_NAME, MODULE_SIG_MARKER, SECURE_BOOT_VAR, V4L2_CAP_VIDEO_CAPTURE,
                           V4L2_CAP_VIDEO_OUTPUT, install_command, linux_cameras,
                           linux_virtual_camera, modprobe_line, module_signed, secure_boot,
                           v4l2_querycap)
from .doctor_report import BLOCKING, STATUSES, Line, ready, render
from .doctor_runtime import (OPENCV_WHEELS, gpu_lines, model_lines, python_lines, pyvirtualcam_line,
                             torch_summary)
from .doctor_win_mac import (OBS_CLSID, OBS_MAC_DAL, OBS_MAC_EXTENSION, UNITY_CAPTURE_CLSID,
                             _winreg_reader, macos_virtual_camera, opencv_cameras,
                             windows_virtual_camera)

# the checks' names, importable from here as before the split (tests/test_doctor.py uses them)
__all__ = ["BLOCKING", "CAMERA_NAME", "Line", "MODULE_SIG_MARKER", "OBS_CLSID", "OBS_MAC_DAL",
           "OBS_MAC_EXTENSION", "OPENCV_WHEELS", "SECURE_BOOT_VAR", "STATUSES",
           "UNITY_CAPTURE_CLSID", "V4L2_CAP_VIDEO_CAPTURE", "V4L2_CAP_VIDEO_OUTPUT", "command",
           "gpu_lines", "install_command", "linux_cameras", "linux_virtual_camera",
           "macos_virtual_camera", "model_lines", "modprobe_line", "module_signed",
           "opencv_cameras", "python_lines", "pyvirtualcam_line", "ready", "render", "run_checks",
           "secure_boot", "torch_summary", "v4l2_querycap", "version_text",
           "windows_virtual_camera"]


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
