"""Changing a running ``vidharm run``: user commands, the control file, hot swaps.

Everything here runs on the frame loop's thread between frames or hands its result to it
through a queue of swaps (``_swaps``): a new background or segmenter is loaded on a helper
thread while the loop keeps running, then swapped in between two frames. :class:`ControlFile`
reads the commands a user (or a script) writes into a file while the engine runs.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..composite import BackgroundProvider, BlurBackground, make_background
from ..config import Config, load_config, overrides_from
from ..errors import VidharmError, describe, first_line
from ..person_check import PersonCheck
from ..registry import registry

log = logging.getLogger("vidharm.live")


class ControlFile:
    """Commands from a file the user (or a script) edits while ``vidharm run`` runs.

    JSON (``{"background": "beach.jpg"}``) or TOML (``background = "beach.jpg"``); checked once
    a second; applied when the file's modification time or size changes (what it said when the
    run started is not applied, so a stale ``quit = true`` does not end the next run). Keys:
    ``background`` (image/video/blur/colour), ``profile``, ``harmonizer``, ``strength``,
    ``harmonize`` (true/false), ``show_mask``, ``pause``, ``quit``, ``next_background``.
    """

    KEYS = ("background", "profile", "harmonizer", "strength", "harmonize", "show_mask",
            "pause", "quit", "next_background")

    def __init__(self, path: str | os.PathLike, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path).expanduser()
        self.interval = interval
        self.clock = clock
        self._sig = self._signature()
        self._next = clock() + interval

    def _signature(self):
        try:
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def poll(self, now: float | None = None) -> dict | None:
        now = self.clock() if now is None else now
        if now < self._next:
            return None
        self._next = now + self.interval
        sig = self._signature()
        if sig is None or sig == self._sig:
            return None
        self._sig = sig
        try:
            text = self.path.read_text(encoding="utf-8")
            data = self.parse(text)
        except Exception as exc:
            log.warning("control file %s ignored: %s", self.path, first_line(exc))
            return None
        unknown = sorted(set(data) - set(self.KEYS))
        if unknown:
            log.warning("control file %s: unknown keys %s (known: %s)", self.path,
                        ", ".join(unknown), ", ".join(self.KEYS))
        return {k: v for k, v in data.items() if k in self.KEYS}

    @staticmethod
    def parse(text: str) -> dict:
        s = text.strip()
        if not s:
            return {}
        if s.startswith("{"):
            data = json.loads(s)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover
                import tomli as tomllib  # type: ignore
            data = tomllib.loads(s)
        if not isinstance(data, dict):
            raise ValueError("expected an object / table of settings")
        return data


class Controls:
    """The engine's commands and hot swaps (a part of :class:`vidharm.live.engine.LiveEngine`:
    it works on the engine's ``graph``, ``worker``, ``cfg`` and swap queue)."""

    def command(self, cmd: str) -> None:
        """A user command (preview hotkeys, control file): toggle_harmonize, next_background,
        toggle_mask, toggle_pause, quit."""
        if cmd == "toggle_harmonize":
            self.set_harmonize(not self.harmonize_on)
        elif cmd == "next_background":
            self.next_background()
        elif cmd == "toggle_mask":
            self.show_mask = not self.show_mask
            log.info("mask view %s", "on" if self.show_mask else "off")
        elif cmd == "toggle_pause":
            self.paused = not self.paused
            log.info("%s", "paused" if self.paused else "resumed")
        elif cmd == "quit":
            self.stop("quit")
        else:
            log.warning("unknown command %r", cmd)

    def set_harmonize(self, on: bool) -> None:
        if on and self.worker is None:
            log.warning("harmonizer 'none': nothing to turn on")
            return
        if on and not self.harmonize_on and self.worker is not None:
            self.worker.force_cut()
        self.harmonize_on = bool(on)
        log.info("harmonization %s", "on" if on else "off (plain composite)")

    def next_background(self) -> None:
        if not self.backgrounds:
            log.warning("no other backgrounds to switch to (give --backgrounds DIR)")
            return
        self._bg_index = (self._bg_index + 1) % len(self.backgrounds)
        self.set_background(self.backgrounds[self._bg_index])

    def set_background(self, spec: str) -> None:
        """Switch to ``spec`` (loaded on a helper thread; the loop keeps running meanwhile)."""
        size = self._work_size()

        def load():
            try:
                bg = make_background(spec, self.cfg)
                if size and not bg.needs_current:
                    bg.frame(size, 0.0)            # pre-scale now, not in the frame loop
            except Exception as exc:
                log.warning("background '%s' not used: %s", spec, describe(exc))
                return
            self._swaps.put(lambda: self._swap_background(bg, spec))

        threading.Thread(target=load, name="vidharm-bg-load", daemon=True).start()

    def _swap_background(self, bg: BackgroundProvider, spec: str) -> None:
        old, owned = self.background, self._owns_background
        self.background, self._owns_background, self.background_spec = bg, True, spec
        if self.worker is not None:
            self.worker.force_cut()
        self.placeholder.clear()
        log.info("background: %s", bg.describe())
        if owned:
            try:
                old.close()
            except Exception:  # pragma: no cover
                pass

    def set_profile(self, profile: str | None = None, **overrides) -> None:
        """Apply a profile (and/or ``section.key`` overrides) without restarting. Only what
        changed is rebuilt; a new strength needs nothing rebuilt (applied per frame)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        new_over = {**self.overrides, **given}
        try:
            cfg = load_config(profile or self.profile, new_over)
            registry.harmonizers.get(cfg.harmonizer.name)
        except Exception as exc:
            log.warning("settings change ignored: %s", describe(exc))
            return
        old = self.cfg
        self.cfg, self.overrides = cfg, new_over
        if profile:
            self.profile = profile
        if cfg.segmentation != old.segmentation:
            self._load_segmenter(cfg, "segmentation settings not applied")
        self.graph.set_config(cfg)
        if replace(cfg.harmonizer, strength=old.harmonizer.strength) != old.harmonizer:
            self._switch_harmonizer(cfg)
        if cfg.background != old.background and isinstance(self.background, BlurBackground) \
                and self._owns_background:
            self._swap_background(BlurBackground(cfg.background.blur_sigma), "blur")
        if (cfg.live.size, cfg.live.fps) != (old.live.size, old.live.fps):
            log.warning("live.size / live.fps changes take effect at the next start")
        log.info("settings: %s", cfg.source)

    def _switch_harmonizer(self, cfg: Config) -> None:
        if cfg.harmonizer.name == "none":
            self.harmonize_on = False
            return
        if self.worker is None:
            self.worker = self._new_worker(cfg).start()
            self.graph.grids = self.worker
        else:
            self.worker.reconfigure(cfg)
        self.harmonize_on = True

    def _load_segmenter(self, cfg: Config, failure: str) -> None:
        """Build a segmenter for ``cfg`` on a helper thread; swapped in between frames."""
        def build():
            try:
                seg = registry.segmenters.create(cfg.segmentation.segmenter, cfg.segmentation)
                check = PersonCheck.for_config(cfg.segmentation, self.telemetry.note)
            except Exception as exc:
                log.warning("%s: %s", failure, describe(exc))
                return
            self._swaps.put(lambda: self._swap_segmenter(seg, check))
        threading.Thread(target=build, name="vidharm-seg-load", daemon=True).start()

    def _swap_segmenter(self, seg, check: PersonCheck | None) -> None:
        old, self.segmenter = self.segmenter, seg
        owned, self._owns_segmenter = self._owns_segmenter, True
        self.graph.set_person_check(check)
        self.graph.cut()
        if owned:
            try:
                old.close()
            except Exception:  # pragma: no cover
                pass

    def _rebuild_segmenter(self) -> None:
        log.warning("segmentation keeps failing: starting a fresh segmenter")
        self._load_segmenter(self.cfg, "could not restart the segmenter")

    # ------------------------------------------------------------------ swaps, control
    def _run_swaps(self) -> None:
        while True:
            try:
                fn = self._swaps.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception as exc:  # pragma: no cover
                log.warning("could not apply a change: %s", describe(exc))

    def _poll_control(self, now: float) -> None:
        if self.control is None:
            return
        data = self.control.poll(now)
        if not data:
            return
        self.apply_control(data)

    def apply_control(self, data: dict) -> None:
        """Apply a control-file dict (see :class:`ControlFile`)."""
        if "background" in data:
            self.set_background(str(data["background"]))
        if data.get("next_background"):
            self.next_background()
        try:
            over = overrides_from({k: data[k] for k in ("harmonizer", "strength") if k in data},
                                  "the control file")
        except VidharmError as exc:
            log.warning("settings change ignored: %s", describe(exc))
            over = {}
        if "profile" in data or over:
            self.set_profile(str(data["profile"]) if "profile" in data else None, **over)
        if "harmonize" in data:
            self.set_harmonize(bool(data["harmonize"]))
        if "show_mask" in data:
            self.show_mask = bool(data["show_mask"])
        if "pause" in data:
            self.paused = bool(data["pause"])
        if data.get("quit"):
            self.stop("quit (control file)")
