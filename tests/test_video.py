"""vidharm.video: probe, reader, writer, and the file source / mp4 + null sinks.

Real clips (fetched assets) and small clips written here with PyAV; everything written is read
back with PyAV directly, not only through the code under test.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import write_audio_only

from vidharm import assets
from vidharm.errors import AssetError, InputError, OutputError
from vidharm.video import (VideoReader, VideoWriter, orientation_from_matrix, probe,
                           read_frames)


def clip(name: str) -> Path:
    try:
        return assets.path(name)
    except AssetError as exc:  # pragma: no cover - only without the fetched assets
        pytest.skip(f"asset {name} unavailable: {exc.one_line()}")


def frame_times(path) -> list[float]:
    """Presentation times of every decoded frame, read with PyAV directly."""
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if "partial" in n or n.startswith(".vidharm")]


def pattern(w=64, h=32) -> np.ndarray:
    """Asymmetric test card: white top-left quadrant, red top-right, green bottom-left."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = 255
    a[: h // 2, w // 2:] = (255, 0, 0)
    a[h // 2:, : w // 2] = (0, 255, 0)
    return a


def write_raw(path, frames, pts, tb=Fraction(1, 1000), rotation=None, hflip=False):
    """Write H.264 video with PyAV only (no vidharm code), optionally with a display matrix."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = tb
        vs.time_base = tb
        if rotation is not None:
            vs.set_display_rotation(rotation, hflip=hflip)
        for rgb, p in zip(frames, pts):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts, f.time_base = p, tb
            for pk in vs.encode(f):
                c.mux(pk)
        for pk in vs.encode():
            c.mux(pk)


# ----------------------------------------------------------------------------- probe
def test_probe_sample_clip():
    info = probe(clip("sample-clip"))
    assert info.size == (640, 360)
    assert info.fps == 30
    assert info.frames == 72 and info.frames_exact
    assert info.duration == pytest.approx(2.4, abs=1e-6)
    assert info.rotation == 0 and info.flip == ""
    assert info.video_codec == "h264"
    assert info.has_audio and info.audio_codec == "mp3" and info.audio_copyable
    assert "640x360" in info.summary()


def test_probe_hevc_mov_and_silent_clip():
    info = probe(clip("clip-face-noface"))
    assert (info.size, info.video_codec, info.audio_codec) == ((960, 540), "hevc", "aac")
    car = probe(clip("clip-carphone"))
    assert car.size == (176, 144) and not car.has_audio and car.audio_codec is None


def test_reader_yields_upright_rgb_with_times():
    path = clip("clip-carphone")
    info = probe(path)
    with VideoReader(path) as r:
        got = [(rgb.shape, rgb.dtype, t, i) for rgb, t, i in r]
        end = r.end_time
    assert len(got) == info.frames == 120
    assert all(s == (144, 176, 3) and d == np.uint8 for s, d, _, _ in got)
    assert [i for *_, i in got] == list(range(120))
    assert [t for _, _, t, _ in got] == pytest.approx(frame_times(path), abs=1e-9)
    assert end == pytest.approx(info.duration, abs=1e-3)


# ----------------------------------------------------------------------- bad inputs


@pytest.fixture
def bad_inputs(tmp_path):
    data = clip("sample-clip").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: int(len(data) * 0.3)])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "garbage.mp4").write_bytes(bytes(range(256)) * 40)
    write_audio_only(tmp_path / "audio_only.m4a")
    (tmp_path / "folder.mp4").mkdir()
    # an MP4 whose index is at the front (faststart), cut short: it opens, but is incomplete
    with VideoWriter(tmp_path / "full.mp4", (64, 32), fps=30) as w:
        for i in range(60):
            w.write(np.random.default_rng(i).integers(0, 255, (32, 64, 3), np.uint8), i / 30)
    full = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut_faststart.mp4").write_bytes(full[: int(len(full) * 0.3)])
    return tmp_path


@pytest.mark.parametrize("name, phrase", [
    ("missing.mp4", "does not exist"),
    ("empty.mp4", "is empty"),
    ("truncated.mp4", "damaged or incomplete"),
    ("cut_faststart.mp4", "is truncated"),
    ("notes.mp4", "text file"),
    ("garbage.mp4", "not a video file"),
    ("audio_only.m4a", "no video stream"),
    ("folder.mp4", "is a folder"),
])
def test_bad_input_is_one_line_input_error(bad_inputs, name, phrase):
    path = bad_inputs / name
    with pytest.raises(InputError) as ei:
        probe(path)
    line = ei.value.one_line()
    assert phrase in line and str(path) in line and "\n" not in line
    assert ei.value.hint  # says what to do
    with pytest.raises(InputError):
        VideoReader(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_input(tmp_path):
    p = tmp_path / "secret.mp4"
    p.write_bytes(clip("clip-carphone").read_bytes())
    p.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            probe(p)
    finally:
        p.chmod(0o644)


# ----------------------------------------------------------------------- orientation
@pytest.mark.parametrize("deg, hflip, vflip", [
    (0, False, False), (90, False, False), (-90, False, False), (180, False, False),
    (0, True, False), (0, False, True), (90, True, False), (-90, True, False)])
def test_orientation_from_matrix_matches_pyav_display_rotation(tmp_path, deg, hflip, vflip):
    """The matrix PyAV writes for a rotation/flip is undone exactly by Orientation."""
    src = pattern()
    with av.open(str(tmp_path / "m.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv444p"
        s.set_display_rotation(deg, hflip=hflip, vflip=vflip)
        f = av.VideoFrame.from_ndarray(src, format="rgb24")
        f.pts = 0
        for pk in [*s.encode(f), *s.encode()]:
            c.mux(pk)
    with av.open(str(tmp_path / "m.mp4")) as c:
        frame = next(c.decode(video=0))
        sd = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)  # PyAV 17-19
        import struct
        m = struct.unpack("<9i", bytes(sd)[:36]) if sd is not None else None
    o = orientation_from_matrix(m)
    expected = np.rot90(src, k=(deg // 90) % 4)        # PyAV: degrees counter-clockwise,
    if hflip:                                           # then mirror
        expected = expected[:, ::-1]
    if vflip:
        expected = expected[::-1]
    assert np.array_equal(o.apply(src), expected)


@pytest.mark.parametrize("deg, hflip", [(90, False), (-90, False), (180, False), (90, True)])
def test_reader_turns_rotated_clip_upright(tmp_path, deg, hflip):
    src = pattern()
    path = tmp_path / f"rot{deg}.mp4"
    write_raw(path, [src] * 3, [0, 33, 67], rotation=deg, hflip=hflip)
    expected = np.rot90(src, k=(deg // 90) % 4)
    if hflip:
        expected = expected[:, ::-1]
    info = probe(path)
    assert info.size == (expected.shape[1], expected.shape[0])
    assert info.rotation or info.flip
    frames = list(read_frames(path))
    assert len(frames) == 3
    for rgb, _, _ in frames:
        assert rgb.shape == expected.shape
        assert np.abs(rgb.astype(int) - expected).mean() < 12   # upright (lossy codec)
        rotated_wrong = np.rot90(expected, 2)
        assert np.abs(rgb.astype(int) - rotated_wrong).mean() > 60


# ---------------------------------------------------------------------------- writer
def test_writer_keeps_irregular_timestamps_and_duration(tmp_path):
    tb = Fraction(1, 1000)
    pts = [0, 33, 50, 120, 130, 300, 310, 320, 400]
    out = tmp_path / "vfr.mp4"
    with VideoWriter(out, (64, 48), time_base=tb, fps=25) as w:
        for i, p in enumerate(pts):
            w.write(np.full((48, 64, 3), i * 20, np.uint8), float(p * tb))
        assert w.tmp_path.name.startswith(".vfr.mp4.") and w.tmp_path.exists()
        assert not out.exists()          # nothing under the final name until complete
        w.close(end_time=0.45)
    assert frame_times(out) == pytest.approx([float(p * tb) for p in pts], abs=1e-4)
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert float(s.duration * s.time_base) == pytest.approx(0.45, abs=1e-3)
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
    assert leftovers(tmp_path) == []


def test_writer_colours_round_trip():
    """BT.709-tagged output decodes back to the same colours."""
    import tempfile
    rgb = np.zeros((32, 64, 3), np.uint8)
    rgb[:, :16] = (200, 30, 30)
    rgb[:, 16:32] = (30, 200, 30)
    rgb[:, 32:48] = (30, 30, 200)
    rgb[:, 48:] = (128, 128, 128)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "c.mp4"
        with VideoWriter(out, (64, 32), fps=30) as w:
            for i in range(3):
                w.write(rgb, i / 30)
        back = next(iter(read_frames(out))).rgb
    for x in (8, 24, 40, 56):
        assert np.abs(back[16, x].astype(int) - rgb[16, x]).max() <= 6


def test_writer_pads_odd_sizes(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, (63, 31), fps=30) as w:
        for i in range(3):
            w.write(np.full((31, 63, 3), 100, np.uint8), i / 30)
    assert probe(out).size == (64, 32)


def test_writer_error_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, (64, 32), fps=30) as w:
            w.write(np.zeros((32, 64, 3), np.uint8), 0.0)
            raise RuntimeError("boom")
    assert not out.exists() and leftovers(tmp_path) == []


def test_writer_rejects_wrong_frames(tmp_path):
    with VideoWriter(tmp_path / "x.mp4", (64, 32), fps=30) as w:
        with pytest.raises(ValueError, match="uint8"):
            w.write(np.zeros((32, 64, 3), np.float32), 0.0)
        w.write(np.zeros((32, 64, 3), np.uint8), 0.0)


def test_threaded_writer_writes_in_order_and_hands_errors_back(tmp_path):
    from vidharm.video import ThreadedWriter
    out = tmp_path / "t.mp4"
    w = ThreadedWriter(VideoWriter(out, (64, 32), fps=10), depth=2)
    for i in range(5):
        w.write(np.full((32, 64, 3), 50 * i, np.uint8), i / 10)
    w.close(end_time=0.5)
    assert frame_times(out) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert w.frames_written == 5 and w.encode_seconds > 0       # the writer's own attributes
    bad = tmp_path / "bad.mp4"
    w = ThreadedWriter(VideoWriter(bad, (64, 32), fps=10))
    w.write(np.zeros((32, 64, 3), np.float32), 0.0)             # fails on the writer thread
    with pytest.raises(ValueError, match="uint8"):
        w.close()
    assert not bad.exists() and leftovers(tmp_path) == []


def test_writer_refuses_input_and_existing_and_unwritable(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(clip("clip-carphone").read_bytes())
    with pytest.raises(OutputError, match="is the input"):
        VideoWriter(src, (176, 144), input_path=src, overwrite=True)
    with pytest.raises(OutputError, match="already exists"):
        VideoWriter(src, (176, 144))
    blocker = tmp_path / "some_file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError) as ei:
        VideoWriter(blocker / "out" / "o.mp4", (64, 32))
    assert "\n" not in ei.value.one_line()
    assert src.read_bytes() == clip("clip-carphone").read_bytes()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------- sources/sinks
def test_registry_has_file_source_and_sinks():
    from vidharm.registry import registry
    assert "file" in registry.sources.names()
    assert {"mp4", "null"} <= set(registry.sinks.names())


def test_file_source_loops_with_increasing_times():
    from vidharm.registry import registry
    path = clip("clip-carphone")
    n = probe(path).frames
    with registry.sources.create("file", path=path, loop=True) as src:
        assert src.size == (176, 144) and src.fps == pytest.approx(29.97, abs=0.01)
        times = []
        for rgb, t in src:
            times.append(t)
            if len(times) == n + 5:
                break
    assert times[0] == 0.0
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[n] == pytest.approx(4.004, abs=1e-3)   # second pass starts at the clip's end


def test_looping_file_source_primes_the_next_pass_and_closes_it():
    """While one pass plays, the next is opened and its first frame decoded on a helper thread
    (a camera has no pause at a loop point); it starts with the clip's first frame, and closing
    the source mid-pass closes the primed pass too (no thread or file left behind)."""
    import threading
    from vidharm_plugins.sources import FileSource
    src = FileSource(clip("clip-carphone"), loop=True)
    first = None
    for i, (rgb, t) in enumerate(src):
        if i == 0:
            first = rgb.copy()
            primed = src._primed
            assert primed is not None                  # opened while pass 1 plays
        if i == 125:                                   # pass 2, 5 frames in
            assert src._primed is not None and src._primed is not primed
            break
        if i == 120:
            assert np.array_equal(rgb, first)          # pass 2 starts at frame 0 again
    nxt = src._primed
    src.close()
    assert src._primed is None and nxt.reader.container is None
    assert not [th for th in threading.enumerate() if th.name == "vidharm-source-prime"]


def test_file_source_realtime_paces_with_clock():
    from vidharm_plugins.sources import FileSource
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    src = FileSource(clip("clip-carphone"), realtime=True, clock=lambda: now[0], sleep=sleep)
    times = [t for _, t in src]
    assert len(times) == 120
    assert now[0] - 100.0 == pytest.approx(times[-1], abs=1e-6)  # took the clip's own time
    assert len(slept) == 119


def test_mp4_and_null_sinks(tmp_path):
    from vidharm.registry import registry
    out = tmp_path / "rec.mp4"
    ts = [1000.0, 1000.04, 1000.1, 1000.12]           # a live clock: rebased to 0
    with registry.sinks.create("mp4", path=out, fps=25, crf=30) as sink:
        for i, t in enumerate(ts):
            sink.send(np.full((48, 64, 3), 40 * i, np.uint8), t)
    assert frame_times(out) == pytest.approx([t - ts[0] for t in ts], abs=1e-4)
    null = registry.sinks.create("null")
    with null:
        for i in range(5):
            null.send(np.zeros((4, 4, 3), np.uint8), i / 10)
    assert null.frames == 5 and null.size == (4, 4)
    # an error inside the with: no file
    bad = tmp_path / "bad.mp4"
    with pytest.raises(KeyError):
        with registry.sinks.create("mp4", path=bad) as sink:
            sink.send(np.zeros((48, 64, 3), np.uint8), 0.0)
            raise KeyError("x")
    assert not bad.exists() and leftovers(tmp_path) == []
