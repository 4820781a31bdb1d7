"""What every ``vidharm doctor`` check returns (:class:`Line`: one checked thing, its status and
the command that fixes it) and the report printed from them."""
from __future__ import annotations

import platform as _platform
import sys
from dataclasses import dataclass
from typing import Iterable

import click

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
