"""Video files with PyAV: probe, read upright RGB frames, write H.264 MP4 atomically.

Three pieces, each a context manager in PyAV's style (resources explicit, timestamps explicit):

- :func:`probe` ``(path) -> VideoInfo``: size (upright, after rotation), frame rate, frame
  count, duration, rotation, codecs, audio. Every way a file can be unusable (missing,
  unreadable, empty, truncated, not a video, no video stream) raises
  :class:`~vidharm.errors.InputError` with one line saying what to do.
- :class:`VideoReader`: ``for rgb, t, index in VideoReader(path)``; ``rgb`` is ``(H, W, 3)``
  uint8 RGB, upright (the display matrix / ``rotate`` tag is applied), ``t`` the frame's
  presentation time in seconds (``pts * time_base``, not renumbered), ``index`` counts from 0.
- :class:`VideoWriter`: ``with VideoWriter(path, (w, h), time_base=tb) as w: w.write(rgb, t)``.
  H.264 (libx264; crf, preset and pixel format from :class:`~vidharm.config.OutputConfig`)
  in MP4 with every frame stamped at ``t`` (variable frame rate is kept; nothing assumes a
  constant rate), optional audio carried over from an input stream (stream copy when MP4 can
  hold the codec, otherwise re-encoded to AAC), written to a hidden temporary file beside the
  target, fsynced and renamed into place only when complete; on any error or Ctrl-C the
  temporary file is deleted and the target is left as it was. :class:`ThreadedWriter` runs
  one on its own thread.

Colour: decoded frames are converted with their tagged YUV matrix; untagged ones with the
matrix players assume (BT.709 above 576 lines, BT.601 otherwise). Output is BT.709,
limited range, and tagged so, which every player honours. HDR input is not tone-mapped.

Modules: ``inputs`` (opening a file for reading), ``frames`` (orientation and colour of
decoded frames), ``metadata`` (:func:`probe`, :class:`VideoInfo`, :func:`parse_size`),
``reader``, ``output`` (atomic output paths), ``writer``. Import from this package.
"""
from __future__ import annotations

from .frames import Orientation, orientation_from_matrix
from .inputs import audio_stream, check_input_file, open_input, video_stream
from .metadata import (MAX_VIDEO_PIXELS, MP4_AUDIO_COPY, VideoInfo, check_video_pixels,
                       parse_size, probe)
from .output import MP4_SUFFIXES, OutputClaim, ensure_output_dir, same_file, temp_path_for
from .reader import Frame, VideoReader, read_frames
from .writer import DEFAULT_TIME_BASE, ThreadedWriter, VideoWriter, check_output_config

__all__ = ["probe", "VideoInfo", "VideoReader", "Frame", "read_frames", "VideoWriter",
           "ThreadedWriter", "Orientation", "orientation_from_matrix", "open_input",
           "check_input_file", "video_stream", "audio_stream", "check_video_pixels",
           "MAX_VIDEO_PIXELS", "MP4_AUDIO_COPY", "MP4_SUFFIXES", "DEFAULT_TIME_BASE",
           "OutputClaim", "temp_path_for", "ensure_output_dir", "same_file",
           "check_output_config", "parse_size"]
