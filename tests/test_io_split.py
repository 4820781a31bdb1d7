"""The built-in sources, segmenters and sinks satisfy the protocols of vidharm.protocols that
they claim (isinstance on real instances), and the plugins use only public names of the core."""
from __future__ import annotations

import ast
from pathlib import Path

import av
import numpy as np
import pytest

from vidharm.protocols import (Closable, Interactive, Noted, Openable, Reconnecting,
                               Releasable, Segmenter, SizedSegmenter, SizedSource, Sink, Source,
                               Watchable)

#: what each kind must do and may do
SINK = (Sink, Openable, Watchable, Interactive, Noted)
SOURCE = (Source, SizedSource, Closable, Releasable, Reconnecting, Noted)
SEGMENTER = (Segmenter, SizedSegmenter, Closable)
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _claims(kind, obj, *protocols):
    """``obj`` satisfies exactly ``protocols`` among those of its ``kind``."""
    for p in kind:
        assert isinstance(obj, p) == (p in protocols), f"{type(obj).__name__} vs {p.__name__}"


class _FakeCapture:
    """Just enough of cv2.VideoCapture for CameraSource to open."""

    def isOpened(self):
        return True

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 0.0

    def read(self):
        return True, np.zeros((36, 64, 3), np.uint8)

    def release(self):
        pass


def test_builtin_sinks_satisfy_their_protocols(tmp_path):
    from vidharm_plugins.sinks import LiveFileSink, Mp4Sink, NullSink, PreviewSink, VirtualCamSink
    _claims(SINK, NullSink(), Sink, Openable)
    _claims(SINK, Mp4Sink(tmp_path / "a.mp4"), Sink, Openable)
    _claims(SINK, LiveFileSink(tmp_path / "b.mp4"), Sink, Openable)
    _claims(SINK, VirtualCamSink(), Sink, Openable, Watchable, Noted)
    _claims(SINK, PreviewSink(imshow=lambda t, img: None, wait_key=lambda ms: -1), Sink,
            Openable, Interactive)


def test_builtin_sources_satisfy_their_protocols(asset):
    from vidharm_plugins.sources import CameraSource, FileSource
    src = FileSource(asset("sample-clip"))
    _claims(SOURCE, src, Source, SizedSource, Closable)
    src.close()
    cam = CameraSource(0, capture_factory=lambda d: _FakeCapture())
    _claims(SOURCE, cam, Source, SizedSource, Closable, Releasable, Reconnecting, Noted)
    cam.close()


def test_builtin_segmenter_satisfies_its_protocols(asset):
    from vidharm_plugins.segmenters import MediaPipeSegmenter
    asset("selfie-general")
    seg = MediaPipeSegmenter("general")
    try:
        _claims(SEGMENTER, seg, Segmenter, SizedSegmenter, Closable)
    finally:
        seg.close()


def test_mp4_sink_opened_without_a_size_opens_at_the_first_frame(tmp_path):
    """Openable: ``open(None, fps)`` takes the rate; the size comes from the first frame."""
    from vidharm_plugins.sinks import Mp4Sink
    out = tmp_path / "o.mp4"
    with Mp4Sink(out).open(None, fps=25) as sink:
        for i in range(3):
            sink.send(np.full((48, 80, 3), 40 * i, np.uint8), i / 25)
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (80, 48)
        assert len(list(c.decode(vs))) == 3


def test_parse_size_lives_in_the_core():
    from vidharm.errors import ConfigError
    from vidharm.video import parse_size
    assert parse_size("1280x720") == (1280, 720) and parse_size("640*360") == (640, 360)
    assert parse_size(None) is None and parse_size((2, 3)) == (2, 3)
    for bad in ("1280", "0x10", "9000x10", "axb"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_plugins_import_no_private_names_of_the_core():
    private = []
    for path in sorted(PLUGINS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidharm"):
                parts = node.module.split(".")
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
                private += [f"{path.name}: {node.module}" for p in parts if p.startswith("_")]
    assert private == []
