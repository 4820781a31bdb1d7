"""vidharm.transcode: real clips through real processors, read back with PyAV.

Checks timestamps (frame by frame), duration, audio (copied or re-encoded, and in sync),
that frames were really processed, atomic output on failure and Ctrl-C, and the batch rules.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import write_audio_only

from vidharm import assets
from vidharm.errors import AssetError, InputError, OutputError
from vidharm.transcode import (BatchResult, expand_inputs, output_name, transcode_file,
                               transcode_files)


def clip(name: str) -> Path:
    # the set-up fetches every test clip; a missing one is a failure, not a skip
    return assets.path(name)


def invert(info):
    return lambda rgb, t: 255 - rgb


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if "partial" in n or n.startswith(".vidharm")]


def video_facts(path):
    """(frame times, time base, video duration s, mean of first frame, audio facts)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = list(c.decode(vs))
        times = [float(f.pts * f.time_base) for f in frames]
        mean0 = frames[0].to_ndarray(format="rgb24").astype(float).mean()
        dur = float(vs.duration * vs.time_base) if vs.duration else None
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = dict(codec=a.codec_context.codec.canonical_name,
                         duration=float(a.duration * a.time_base) if a.duration else None,
                         start=float(a.start_time * a.time_base) if a.start_time is not None else 0.0,
                         rate=a.codec_context.sample_rate)
        return times, Fraction(vs.time_base), dur, mean0, audio


def assert_same_timing(src, dst):
    ti, tbi, di, _, ai = video_facts(src)
    to, tbo, do, _, ao = video_facts(dst)
    tick = float(max(tbi, tbo))
    assert len(to) == len(ti)
    assert np.max(np.abs(np.array(to) - np.array(ti))) <= tick + 1e-9
    assert do == pytest.approx(di, abs=tick + 1e-9)
    return ai, ao


# ------------------------------------------------------------------------ real clips
def test_sample_clip_inverted_with_mp3_copied(tmp_path):
    src = clip("sample-clip")
    before = sha(src)
    res = transcode_files([str(src)], out=str(tmp_path / "inv.mp4"), make_processor=invert,
                          progress=False)
    assert isinstance(res, BatchResult) and res.exit_code == 0
    (f,) = res.files
    assert f.status == "ok" and f.frames == 72 and f.audio == "copy"
    assert set(f.timings) >= {"decode", "process", "encode", "total"}
    assert all(v >= 0 for v in f.timings.values()) and f.fps > 0
    ai, ao = assert_same_timing(src, tmp_path / "inv.mp4")
    assert ai["codec"] == ao["codec"] == "mp3"
    assert ao["duration"] == pytest.approx(ai["duration"], abs=0.1)
    _, _, _, mean_in, _ = video_facts(src)
    _, _, _, mean_out, _ = video_facts(tmp_path / "inv.mp4")
    assert mean_out == pytest.approx(255 - mean_in, abs=3)   # really processed
    assert sha(src) == before and leftovers(tmp_path) == []


def test_portrait_clip_aac_copied_identity(tmp_path):
    src = clip("clip-portrait")
    res = transcode_files([str(src)], out_dir=str(tmp_path), progress=False)
    (f,) = res.files
    out = tmp_path / "WolfgangLanger_Pexels_harmonized.mp4"
    assert f.status == "ok" and Path(f.output) == out and f.frames == 472
    ai, ao = assert_same_timing(src, out)
    assert ai["codec"] == ao["codec"] == "aac"
    assert ao["duration"] == pytest.approx(ai["duration"], abs=0.1)
    assert ao["start"] == pytest.approx(ai["start"], abs=1e-3)
    _, _, _, mean_in, _ = video_facts(src)
    _, _, _, mean_out, _ = video_facts(out)
    assert mean_out == pytest.approx(mean_in, abs=2)           # colours kept


def test_hevc_mov_with_late_audio(tmp_path):
    """face_noface.mov: HEVC in .mov, AAC starting 2.4 s in; output name ends .mp4."""
    src = clip("clip-face-noface")
    res = transcode_files([str(src)], out_dir=str(tmp_path), suffix="", progress=False)
    (f,) = res.files
    assert f.status == "ok", f.message
    out = tmp_path / "face_noface.mp4"
    assert Path(f.output) == out
    ai, ao = assert_same_timing(src, out)
    assert ao["codec"] == "aac" and ao["start"] == pytest.approx(ai["start"], abs=0.03)
    with av.open(str(out)) as c, av.open(str(src)) as ci:
        a_out = next(c.decode(audio=0))
        a_in = next(ci.decode(audio=0))
        # the first decoded audio sample plays at the same moment (the edit list keeps it)
        assert float(a_out.pts * a_out.time_base) == pytest.approx(
            float(a_in.pts * a_in.time_base), abs=0.03)


# --------------------------------------------------------------------- synthetic clips
def _write(path, pts, tb=Fraction(1, 1000), size=(64, 48), rotation=None, audio=None,
           audio_start=0.0):
    w, h = size
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = tb
        vs.time_base = tb
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = c.add_stream(audio, rate=48000, layout="stereo") if audio else None
        for i, p in enumerate(pts):
            a = np.zeros((h, w, 3), np.uint8)
            a[: h // 2, : w // 2] = 255                      # white top-left marker
            a[h // 2:, w // 2:] = (20 * i) % 200              # changes per frame
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts, f.time_base = p, tb
            for pk in vs.encode(f):
                c.mux(pk)
        for pk in vs.encode():
            c.mux(pk)
        if aus is not None:
            n = int((float(pts[-1] * tb) + 0.05 - audio_start) * 48000)
            x = (np.sin(2 * np.pi * 440 * np.arange(n) / 48000) * 8000).astype(np.int16)
            for i in range(0, n, 1024):
                chunk = x[i:i + 1024]
                af = av.AudioFrame.from_ndarray(np.repeat(chunk, 2).reshape(1, -1), format="s16",
                                                layout="stereo")
                af.sample_rate = 48000
                af.pts = int(round(audio_start * 48000)) + i
                for pk in aus.encode(af):
                    c.mux(pk)
            for pk in aus.encode():
                c.mux(pk)


def test_vfr_clip_keeps_irregular_timestamps(tmp_path):
    src = tmp_path / "vfr.mp4"
    pts = [0, 40, 50, 130, 140, 150, 400, 433, 500, 700, 710, 760]   # ms, very irregular
    _write(src, pts)
    res = transcode_files([str(src)], out=str(tmp_path / "o.mp4"), make_processor=invert,
                          progress=False)
    assert res.files[0].status == "ok", res.files[0].message
    times_in = [p / 1000 for p in pts]
    to, tbo, _, _, _ = video_facts(tmp_path / "o.mp4")
    assert to == pytest.approx(times_in, abs=float(tbo) + 1e-9)
    assert_same_timing(src, tmp_path / "o.mp4")


def test_pcm_audio_is_reencoded_to_aac_in_sync(tmp_path):
    src = tmp_path / "pcm.mov"
    _write(src, [i * 40 for i in range(25)], audio="pcm_s16le", audio_start=0.2)
    _, _, _, _, ai = video_facts(src)
    assert ai["codec"] == "pcm_s16le"
    res = transcode_files([str(src)], out_dir=str(tmp_path / "out"), progress=False)
    (f,) = res.files
    assert f.status == "ok" and f.audio == "aac", f.message
    ai, ao = assert_same_timing(src, Path(f.output))
    assert ao["codec"] == "aac" and ao["rate"] == 48000
    assert ao["duration"] == pytest.approx(ai["duration"], abs=0.1)
    assert ao["start"] == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize("rotation", [90, -90])
def test_rotated_clip_comes_out_upright(tmp_path, rotation):
    src = tmp_path / "rot.mp4"
    _write(src, [0, 33, 67, 100], size=(64, 32), rotation=rotation)
    res = transcode_files([str(src)], out=str(tmp_path / "up.mp4"), progress=False)
    assert res.files[0].status == "ok"
    with av.open(str(tmp_path / "up.mp4")) as c:
        f = next(c.decode(video=0))
        assert (f.width, f.height) == (32, 64)
        assert f.rotation == 0                              # no rotation left to apply
        rgb = f.to_ndarray(format="rgb24").astype(float)
    # the white marker was top-left before the turn: 90 ccw -> bottom-left, 90 cw -> top-right
    quad = {"tl": rgb[:32, :16], "tr": rgb[:32, 16:], "bl": rgb[32:, :16], "br": rgb[32:, 16:]}
    white = max(quad, key=lambda k: quad[k].mean())
    assert white == ("bl" if rotation == 90 else "tr")


# --------------------------------------------------------------------------- failures
@pytest.fixture
def bad_files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    data = clip("sample-clip").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: int(len(data) * 0.3)])
    (d / "empty.mp4").write_bytes(b"")
    (d / "readme.mp4").write_text("not a video\n" * 10)
    write_audio_only(d / "audio.m4a", packets=10)
    return d


@pytest.mark.parametrize("name, cls, phrase", [
    ("missing.mp4", InputError, "does not exist"),
    ("empty.mp4", InputError, "is empty"),
    ("truncated.mp4", InputError, "damaged or incomplete"),
    ("readme.mp4", InputError, "not a video"),
    ("audio.m4a", InputError, "no video stream"),
])
def test_bad_input_reported_and_nothing_written(bad_files, tmp_path, name, cls, phrase):
    out = tmp_path / "out"
    res = transcode_files([str(bad_files / name)], out_dir=str(out), progress=False)
    (f,) = res.files
    assert f.status == "failed" and res.exit_code == 1
    assert isinstance(f.error, cls) and phrase in f.message and "\n" not in f.message
    assert os.listdir(out) == []                # no output, no temp file


def test_directory_input_rejected(tmp_path):
    res = transcode_files([str(tmp_path)], out_dir=str(tmp_path / "o"), progress=False)
    assert res.files[0].status == "failed" and "is a folder" in res.files[0].message


def test_unwritable_out_dir_fails_before_any_work(tmp_path):
    blocker = tmp_path / "some_file.txt"
    blocker.write_text("x")
    calls = []
    with pytest.raises(OutputError) as ei:
        transcode_files([str(clip("clip-carphone"))], out_dir=str(blocker / "out"),
                        make_processor=lambda info: calls.append(info), progress=False)
    assert "\n" not in ei.value.one_line() and calls == []
    with pytest.raises(OutputError):
        transcode_files([str(clip("clip-carphone"))], out=str(blocker / "x.mp4"), progress=False)
    if os.geteuid() != 0:          # chmod means nothing to root
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(OutputError, match="cannot write"):
                transcode_files([str(clip("clip-carphone"))], out_dir=str(ro), progress=False)
        finally:
            ro.chmod(0o755)


def test_bad_encoder_settings_fail_before_any_work(tmp_path):
    from vidharm.config import OutputConfig
    with pytest.raises(OutputError, match="preset='bogus'"):
        transcode_files([str(clip("clip-carphone"))], out_dir=str(tmp_path / "o"),
                        output_cfg=OutputConfig(preset="bogus"), progress=False)
    assert not (tmp_path / "o").exists()


def test_existing_output_skipped_unless_overwrite(tmp_path):
    src = str(clip("clip-carphone"))
    out = tmp_path / "o.mp4"
    out.write_bytes(b"old")
    res = transcode_files([src], out=str(out), progress=False)
    assert res.files[0].status == "skipped" and "--overwrite" in res.files[0].message
    assert res.exit_code == 0 and out.read_bytes() == b"old"
    res = transcode_files([src], out=str(out), overwrite=True, progress=False)
    assert res.files[0].status == "ok" and out.stat().st_size > 1000
    assert leftovers(tmp_path) == []


def test_output_equal_to_input_refused(tmp_path):
    src = tmp_path / "clip.mp4"
    shutil.copy(clip("clip-carphone"), src)
    before = sha(src)
    for kwargs in (dict(out=str(src), overwrite=True),
                   dict(out_dir=str(tmp_path), suffix="", overwrite=True)):
        res = transcode_files([str(src)], progress=False, **kwargs)
        (f,) = res.files
        assert f.status == "failed" and isinstance(f.error, OutputError), f.message
        assert "input" in f.message
    assert sha(src) == before and leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="is the input"):
        transcode_file(str(src), src)


def test_keyboard_interrupt_leaves_nothing(tmp_path):
    src = tmp_path / "in.mp4"
    shutil.copy(clip("sample-clip"), src)
    before = sha(src)
    closed = []

    class Interrupting:
        def __init__(self, info):
            self.n = 0

        def __call__(self, rgb, t):
            self.n += 1
            if self.n == 20:
                raise KeyboardInterrupt
            return rgb

        def close(self):
            closed.append(True)

    with pytest.raises(KeyboardInterrupt):
        transcode_files([str(src)], out=str(tmp_path / "out.mp4"), make_processor=Interrupting,
                        progress=False)
    assert not (tmp_path / "out.mp4").exists()
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["in.mp4"]
    assert sha(src) == before and closed == [True]


def test_batch_with_a_bad_file_goes_on(tmp_path, bad_files):
    good1 = tmp_path / "a.mp4"
    good2 = tmp_path / "b.mov"
    shutil.copy(clip("clip-carphone"), good1)
    shutil.copy(clip("clip-carphone"), good2)
    out = tmp_path / "out"
    res = transcode_files([str(good1), str(bad_files / "truncated.mp4"), str(good2)],
                          out_dir=str(out), make_processor=invert, progress=False)
    assert [f.status for f in res.files] == ["ok", "failed", "ok"]
    assert res.exit_code == 1 and len(res.failed) == 1 and len(res.ok) == 2
    assert "truncated.mp4" in res.failed[0].message
    assert sorted(os.listdir(out)) == ["a_harmonized.mp4", "b_harmonized.mp4"]
    assert res.summary() == "2 written, 1 failed"


def test_bad_processor_output_fails_the_file(tmp_path):
    res = transcode_files([str(clip("clip-carphone"))], out_dir=str(tmp_path),
                          make_processor=lambda info: (lambda rgb, t: rgb[::2]), progress=False)
    (f,) = res.files
    assert f.status == "failed" and "expected (144, 176, 3) uint8" in f.message
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ batch rules
def test_out_rules(tmp_path):
    a, b = str(clip("clip-carphone")), str(clip("sample-clip"))
    with pytest.raises(OutputError, match="--out-dir"):
        transcode_files([a, b], out=str(tmp_path / "x.mp4"), progress=False)
    with pytest.raises(OutputError, match="both"):
        transcode_files([a], out=str(tmp_path / "x.mp4"), out_dir=str(tmp_path), progress=False)
    with pytest.raises(OutputError, match=r"\.mp4"):
        transcode_files([a], out=str(tmp_path / "x.avi"), progress=False)
    with pytest.raises(InputError):
        transcode_files([], out_dir=str(tmp_path), progress=False)
    assert output_name("/x/clip.mov") == "clip_harmonized.mp4"
    assert output_name("clip.mov", "") == "clip.mp4"


def test_globs_expanded_and_duplicate_outputs_caught(tmp_path):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    for p in (d1 / "x.mp4", d1 / "y.mp4", d2 / "x.mov"):
        shutil.copy(clip("clip-carphone"), p)
    items = expand_inputs([str(d1 / "*.mp4"), str(d1 / "x.mp4"), str(tmp_path / "nothing*.mp4")])
    assert [Path(p).name for p, _ in items] == ["x.mp4", "y.mp4", "nothing*.mp4"]
    assert items[2][1] is not None and "no file matches" in items[2][1].one_line()
    res = transcode_files([str(d1 / "x.mp4"), str(d2 / "x.mov")], out_dir=str(tmp_path / "o"),
                          progress=False)
    assert [f.status for f in res.files] == ["ok", "failed"]
    assert "both be written" in res.files[1].message


def test_progress_bars_and_stage_timings(tmp_path):
    from rich.console import Console
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)

    class Timed:
        def __init__(self, info):
            self.timings = {"segment": 0.0}

        def __call__(self, rgb, t):
            self.timings["segment"] += 0.001
            return rgb

    src = tmp_path / "a.mp4"
    shutil.copy(clip("clip-carphone"), src)
    shutil.copy(clip("clip-carphone"), tmp_path / "b.mp4")
    res = transcode_files([str(tmp_path / "*.mp4")], out_dir=str(tmp_path / "o"),
                          make_processor=Timed, console=console, progress=True)
    assert [f.status for f in res.files] == ["ok", "ok"]
    assert res.files[0].stage_timings["segment"] == pytest.approx(0.12)
    text = buf.getvalue()
    assert "fps" in text and "a.mp4" in text and "all 2 files" in text
    # not a terminal: nothing drawn
    quiet = io.StringIO()
    transcode_files([str(src)], out_dir=str(tmp_path / "o2"), console=Console(file=quiet),
                    progress=True)
    assert quiet.getvalue() == ""


class _Ahead:
    """A processor that prepares on the decoder thread: records where and in which order."""

    def __init__(self, fail_at=None):
        self.prepared, self.called, self.fail_at = [], [], fail_at

    def prepare(self, rgb, t):
        import threading
        if self.fail_at is not None and len(self.prepared) == self.fail_at:
            raise RuntimeError("segmenter broke")
        self.prepared.append((threading.current_thread().name, t))
        return ("token", t, int(rgb[0, 0, 0]))

    def __call__(self, rgb, t, prepared=None):
        assert prepared == ("token", t, int(rgb[0, 0, 0]))     # this frame's own result
        self.called.append(t)
        return 255 - rgb


def _vidharm_threads():
    import threading
    return [t.name for t in threading.enumerate() if t.name.startswith("vidharm-")]


def test_prepare_runs_ahead_on_its_own_thread_in_frame_order(tmp_path):
    proc = _Ahead()
    res = transcode_files([str(clip("sample-clip"))], out=str(tmp_path / "a.mp4"),
                          make_processor=lambda info: proc, progress=False)
    (f,) = res.files
    assert f.status == "ok" and f.frames == 72
    assert {name for name, _ in proc.prepared} == {"vidharm-prepare"}
    assert _vidharm_threads() == []
    times = [t for _, t in proc.prepared]
    assert times == sorted(times) and times == proc.called


def test_a_failing_prepare_fails_the_file_and_writes_nothing(tmp_path):
    res = transcode_files([str(clip("sample-clip"))], out=str(tmp_path / "a.mp4"),
                          make_processor=lambda info: _Ahead(fail_at=10), progress=False)
    (f,) = res.files
    assert f.status == "failed" and "segmenter broke" in f.message
    assert os.listdir(tmp_path) == []
    assert _vidharm_threads() == []                  # decoder and prepare threads stopped


def test_the_pipeline_segmenting_ahead_gives_the_same_frames(asset):
    """FramePipeline.prepare (run ahead by the transcoder) changes nothing in the output."""
    from vidharm.config import load_config
    from vidharm.pipeline import FramePipeline
    from vidharm.video import VideoReader
    frames = []
    for rgb, t, _ in VideoReader(asset("sample-clip")):
        frames.append((rgb, t))
        if len(frames) == 12:
            break
    outs = []
    for ahead in (False, True):
        with FramePipeline(load_config("call-cpu"), asset("sample-background")) as p:
            preps = [p.prepare(rgb, t) for rgb, t in frames] if ahead else [None] * len(frames)
            outs.append([p(rgb, t, pr) for (rgb, t), pr in zip(frames, preps)])
    assert all(np.array_equal(a, b) for a, b in zip(*outs))


def test_refining_ahead_restarts_the_smoothing_at_the_same_frame_after_a_bad_mask(asset):
    """The pipeline refines masks ahead on the decoder thread; a frame whose mask cannot be
    used (here: NaN from the segmenter) falls back to the background and the mask smoothing
    starts over after it, at the same frame as when nothing runs ahead."""
    from vidharm.config import load_config
    from vidharm.pipeline import FramePipeline
    from vidharm.registry import registry
    from vidharm.video import VideoReader
    cfg = load_config("call-cpu")
    frames = []
    for rgb, t, _ in VideoReader(asset("sample-clip")):
        frames.append((rgb, t))
        if len(frames) == 10:
            break
    bad_t = frames[4][1]

    class Broken:
        def __init__(self):
            self.real = registry.segmenters.create(cfg.segmentation.segmenter, cfg.segmentation)
            self.input_size = self.real.input_size

        def segment(self, rgb, t=None):
            m = self.real.segment(rgb, t)
            return np.full_like(m, np.nan) if t == bad_t else m

        def close(self):
            self.real.close()

    outs = []
    for ahead in (False, True):
        seg = Broken()
        with FramePipeline(cfg, asset("sample-background"), segmenter=seg) as p:
            preps = [p.prepare(rgb, t) for rgb, t in frames] if ahead else [None] * len(frames)
            outs.append([p(rgb, t, pr) for (rgb, t), pr in zip(frames, preps)])
        seg.close()
    plain, ahead = outs
    bg_only = plain[4]
    assert not np.array_equal(bg_only, plain[3])              # the fallback frame differs
    assert all(np.array_equal(a, b) for a, b in zip(plain, ahead))


def test_offline_video_applies_the_cheap_form_of_the_grid_close_to_the_full_one(asset):
    """On the CPU the offline pipeline, like the live engine (``--grid auto``), applies one
    global transform or per-channel grids fitted to a model's full affine grid (here
    phnet-grid-local's own 4x4 grid); on real frames the picture stays within about a grey
    level of the full grid's, far nearer than to the plain composite; ``grid_mode="full"``
    and stills keep the full grid. phnet-grid itself publishes one global transform."""
    from vidharm.composite import composite
    from vidharm.config import load_config
    from vidharm.pipeline import FramePipeline
    from vidharm.video import VideoReader
    frames = []
    for rgb, t, _ in VideoReader(asset("sample-clip")):
        frames.append((rgb, t))
        if len(frames) == 8:
            break
    cfg = load_config("call-cpu", {"harmonizer": {"name": "phnet-grid-local"}})
    runs = {}
    for mode in ("auto", "full"):
        with FramePipeline(cfg, asset("sample-background"), grid_mode=mode) as p:
            outs = [p(rgb, t) for rgb, t in frames]
            runs[mode] = (outs, p.grids.latest.grid, p.last_mask, p.last_composite)
    (cheap, g_cheap, mask, plain), (full, g_full, _, _) = runs["auto"], runs["full"]
    assert g_cheap.shape == (1, 1) or g_cheap.is_diagonal
    assert g_full.shape == (4, 4) and not g_full.is_diagonal
    person = mask > 0.5
    diff = np.abs(cheap[-1].astype(np.int16) - full[-1])[person].mean()
    effect = np.abs(full[-1].astype(np.int16) - plain)[person].mean()
    assert effect > 3.0 and diff < 0.3 * effect and diff < 2.0, (diff, effect)
    with FramePipeline(cfg, asset("sample-background"), video=False) as p:
        p(*frames[0])
        assert not p.grids.latest.grid.is_diagonal
    with FramePipeline(load_config("call-cpu"), asset("sample-background")) as p:
        p(*frames[0])
        assert p.grids.latest.grid.shape == (1, 1)
    with pytest.raises(Exception, match="unknown grid mode"):
        FramePipeline(cfg, asset("sample-background"), grid_mode="fast")


def test_offline_refresh_cap_fits_by_video_time_and_always_at_a_cut(asset):
    """``harmonizer.offline_hz``: at most that many fits per second of video (30 fps at 15 Hz:
    every second frame; the frames between keep the last fit), a cut fitted at once; 0
    (creator-quality) fits every frame."""
    from vidharm.config import load_config
    from vidharm.pipeline import FramePipeline
    from vidharm.video import VideoReader
    assert load_config("call-cpu").harmonizer.offline_hz == 15
    assert load_config("creator-quality").harmonizer.offline_hz == 0
    frames = []
    for rgb, t, _ in VideoReader(asset("sample-clip")):
        frames.append((rgb, t))
        if len(frames) == 12:
            break
    with FramePipeline(load_config("call-cpu"), asset("sample-background")) as p:
        seen = []
        for i, (rgb, t) in enumerate(frames):
            if i == 7:
                p.graph.cut(mask=False)          # e.g. the next clip of a batch
            p(rgb, t)
            seen.append(p.grids.latest.t)
        assert p.grids.fits == 7                 # frames 0 2 4 6, the cut at 7, then 9 11
        assert seen[1] == seen[0] and seen[7] == frames[7][1] and seen[8] == seen[7]
    with FramePipeline(load_config("creator-quality"), asset("sample-background")) as p:
        for rgb, t in frames:
            p(rgb, t)
        assert p.grids.fits == len(frames)
