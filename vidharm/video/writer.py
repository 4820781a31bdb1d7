"""Writing a video: :class:`VideoWriter` (H.264 MP4, exact timestamps, audio carried over,
atomic) and :class:`ThreadedWriter` (the same on its own encoding thread)."""
from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..config import OutputConfig
from ..errors import InputError, OutputError
from .frames import _BT709, _MPEG_RANGE
from .inputs import _av, _codec_name, _ffmpeg_reason
from .metadata import MP4_AUDIO_COPY
from .output import OutputClaim, ensure_output_dir, same_file

#: Default time base for writers not given the input's (divides every common frame rate).
DEFAULT_TIME_BASE = Fraction(1, 90000)

_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)
# faststart: index at the front (plays while downloading); a fine movie timescale keeps the
# edit lists (start offsets, e.g. audio starting late) exact instead of rounded to 1 ms
_MUX_OPTIONS = {"movflags": "+faststart", "movie_timescale": "90000"}


def check_output_config(cfg: OutputConfig | None) -> None:
    """Open a tiny libx264 encoder with ``cfg``; :class:`OutputError` if x264 refuses it."""
    av = _av()
    cfg = cfg or OutputConfig()
    try:
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = 64, 64, cfg.pixel_format
        cc.time_base = Fraction(1, 30)
        cc.options = encoder_options(cfg)
        cc.open()
    except (av.error.FFmpegError, ValueError) as exc:
        extra = f", x264_params='{cfg.x264_params}'" if cfg.x264_params else ""
        raise OutputError(f"the H.264 encoder refuses the output settings (crf={cfg.crf}, "
                          f"preset='{cfg.preset}', pixel_format='{cfg.pixel_format}'{extra}: "
                          f"{_ffmpeg_reason(exc)})",
                          "presets: ultrafast, superfast, veryfast, faster, fast, medium, slow, "
                          "slower, veryslow; crf 0-51; pixel_format yuv420p (most compatible), "
                          "yuv422p or yuv444p") from None


def encoder_options(cfg: OutputConfig) -> dict:
    """libx264's options for ``cfg``: crf, preset and any ``x264_params``."""
    opts = {"crf": str(cfg.crf), "preset": str(cfg.preset)}
    if cfg.x264_params:
        opts["x264-params"] = str(cfg.x264_params)
    return opts


def _aac_rate(rate: int) -> int:
    return rate if rate in _AAC_RATES else 48000


class VideoWriter:
    """H.264 MP4 writer with exact timestamps, optional audio, and atomic output.

    ``VideoWriter(path, (width, height), time_base=tb, fps=rate)``; ``write(rgb, t)`` per
    frame with ``t`` in seconds (stored as ``round(t / time_base)``; give the input's time base
    to keep its timestamps exactly); ``close(end_time=...)`` finishes the file (``end_time`` is
    when the last frame stops showing; default: the previous frame interval). Used as a
    context manager it closes on success and :meth:`abort`\\ s on any exception.

    ``audio_from``: an input audio stream to carry over; feed its packets to
    :meth:`write_audio_packet` as they are demuxed (copied when MP4 holds the codec,
    otherwise decoded and re-encoded to AAC). :attr:`audio_mode` is ``"copy"``, ``"aac"`` or
    ``None``.

    Odd sizes are padded by one edge-replicated pixel for 4:2:0/4:2:2 output (x264 needs
    even dimensions there).
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], *,
                 time_base: Fraction | None = None, fps: Fraction | float | None = None,
                 output_cfg: OutputConfig | None = None, audio_from=None,
                 overwrite: bool = False, input_path: str | os.PathLike | None = None):
        av = _av()
        self.path = Path(path)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"bad frame size {size}")
        self.cfg = output_cfg or OutputConfig()
        self.time_base = Fraction(time_base) if time_base else DEFAULT_TIME_BASE
        self.fps = Fraction(fps).limit_denominator(1_000_000) if fps else Fraction(30)
        if input_path is not None and same_file(input_path, self.path):
            raise OutputError(f"output '{self.path}' is the input file",
                              "choose another output name; the input is never overwritten")
        if self.path.exists() and not overwrite:
            raise OutputError(f"output '{self.path}' already exists",
                              "choose another name or allow overwriting")
        if self.path.is_dir():
            raise OutputError(f"output '{self.path}' is a folder", "give a file name ending in .mp4")
        ensure_output_dir(self.path.parent)
        self.overwrite = overwrite
        self.claim = OutputClaim(self.path)      # this job's exclusive temporary
        self.tmp_path = self.claim.path
        self.frames_written = 0
        self.audio_mode: str | None = None
        self.encode_seconds = 0.0
        self.audio_seconds = 0.0
        self._closed = False
        self._pending = None          # (VideoFrame, pts): one frame held back for its duration
        self._last_pts: int | None = None
        self._last_step: int = 0
        self._durations: dict[int, int] = {}
        self._held = None                       # newest encoded video packet, not yet muxed
        self._first_dts: int | None = None
        self._first_pts: int | None = None
        self._audio_in = None
        self._audio_out = None
        pad = "444" not in self.cfg.pixel_format and not self.cfg.pixel_format.startswith(("rgb", "gbr", "bgr"))
        self._enc_w = self.width + (self.width % 2 if pad else 0)
        self._enc_h = self.height + (self.height % 2 if pad else 0)
        try:
            self.container = av.open(str(self.tmp_path), mode="w", format="mp4",
                                     options=_MUX_OPTIONS)
        except OSError as exc:
            self._remove_tmp()
            raise OutputError(f"cannot create output '{self.path}' ({_ffmpeg_reason(exc)})",
                              "check the output folder's permissions and free space") from None
        try:
            self._setup_video()
            if audio_from is not None:
                self._setup_audio(audio_from)
        except OutputError:
            self.abort()
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            self.abort()
            detail = str(exc).rsplit("[error]:", 1)[-1] if "[error]:" in str(exc) else _ffmpeg_reason(exc)
            c = self.cfg
            raise OutputError(f"cannot set up the H.264 encoder (crf={c.crf}, preset='{c.preset}', "
                              f"pixel_format='{c.pixel_format}'): {' '.join(detail.split())}",
                              "check the [output] settings in your profile or flags") from None
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ setup
    def _setup_video(self) -> None:
        av = _av()
        cfg = self.cfg
        try:
            av.codec.Codec("libx264", "w")
        except Exception:
            raise OutputError("this PyAV build has no libx264 encoder",
                              "install the PyAV wheel from PyPI ('pip install av'), which includes it") from None
        vs = self.container.add_stream("libx264", rate=self.fps, options=encoder_options(cfg))
        vs.width, vs.height = self._enc_w, self._enc_h
        vs.pix_fmt = cfg.pixel_format
        cc = vs.codec_context
        cc.time_base = self.time_base
        cc.framerate = self.fps
        vs.time_base = self.time_base
        cc.colorspace = _BT709
        cc.color_primaries = 1
        cc.color_trc = 1
        cc.color_range = _MPEG_RANGE
        self.vstream = vs
        cc.open()   # now, so bad settings fail before any decoding (PyAV would open lazily)

    def _setup_audio(self, stream) -> None:
        name = _codec_name(stream)
        self._audio_in = stream
        if name in MP4_AUDIO_COPY:
            # the template's codec tag is cleared, so the MP4 muxer picks its own
            self._audio_out = self.container.add_stream_from_template(stream)
            self.audio_mode = "copy"
        else:
            ic = stream.codec_context
            channels = ic.channels or 2
            # layouts the AAC encoder takes; PyAV resamples/remixes the decoded audio to it
            layout = {1: "mono", 6: "5.1", 8: "7.1"}.get(channels, "stereo")
            rate = _aac_rate(ic.sample_rate or 48000)
            out = self.container.add_stream("aac", rate=rate, layout=layout)
            out.codec_context.bit_rate = min(64000 * max(1, min(channels, 8)), 384000)
            self._audio_out = out
            self.audio_mode = "aac"

    # ------------------------------------------------------------------ frames
    def write(self, rgb: np.ndarray, t: float) -> None:
        """Queue frame ``rgb`` (``(H, W, 3)`` uint8 RGB, the writer's size) shown at ``t`` s."""
        if self._closed:
            raise ValueError("write() on a closed VideoWriter")
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8, got "
                             f"{rgb.shape} {rgb.dtype}")
        pts = int(round(t / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1   # H.264 needs strictly increasing timestamps
        self._last_pts = pts
        t0 = time.perf_counter()
        try:
            if self._pending is not None:   # its duration is known now
                prev, prev_pts = self._pending
                self._pending = None
                self._last_step = pts - prev_pts
                self._encode(prev, prev_pts, self._last_step)
            self._pending = (self._convert(rgb), pts)   # a copy: the caller may reuse rgb
        except OSError as exc:
            raise OutputError(f"could not write '{self.path}' ({_ffmpeg_reason(exc)})",
                              "check free disk space and the output folder") from None
        finally:
            self.encode_seconds += time.perf_counter() - t0

    def _convert(self, rgb: np.ndarray):
        av = _av()
        if (self._enc_w, self._enc_h) != (self.width, self.height):
            rgb = np.pad(rgb, ((0, self._enc_h - self.height), (0, self._enc_w - self.width), (0, 0)),
                         mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        return frame.reformat(format=self.cfg.pixel_format, dst_colorspace=_BT709,
                              dst_color_range=_MPEG_RANGE)

    def _encode(self, frame, pts: int, duration: int) -> None:
        frame.pts = pts
        frame.time_base = self.time_base
        if self._first_pts is None:
            self._first_pts = pts
        self._durations[pts] = max(1, duration)
        self._mux_video(self.vstream.encode(frame))
        self.frames_written += 1

    def _mux_video(self, packets) -> None:
        # Each packet gets its frame's duration (the encoder leaves it 0). The newest packet
        # is held back so that close() can fix the last one: see _finish_video().
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, 0)
            if self._first_dts is None:
                self._first_dts = packet.dts
            if self._held is not None:
                self.container.mux(self._held)
            self._held = packet

    def _finish_video(self, end_pts: int) -> None:
        """Mux the last packet so the track ends exactly at ``end_pts``.

        MP4 sample durations are decode-time deltas; with B-frames the decode times lag the
        presentation times by the reorder delay, and when frames are unevenly spaced (VFR) the
        last frame's own duration would make the track end early or late. The last sample's
        duration is chosen so the decode-time span equals the presentation span.
        """
        last, self._held = self._held, None
        if last is None:
            return
        if last.dts is not None and self._first_dts is not None and self._first_pts is not None:
            d = (end_pts - self._first_pts) - (last.dts - self._first_dts)
            if d > 0:
                last.duration = d
        self.container.mux(last)

    # ------------------------------------------------------------------ audio
    def write_audio_packet(self, packet) -> None:
        """Carry one demuxed packet of ``audio_from`` into the output."""
        if self._audio_out is None or packet.stream is not self._audio_in:
            return
        av = _av()
        t0 = time.perf_counter()
        try:
            if self.audio_mode == "copy":
                if packet.size == 0 or (packet.dts is None and packet.pts is None):
                    return   # demuxer's end-of-stream marker
                packet.stream = self._audio_out
                self.container.mux(packet)
            else:
                try:
                    frames = packet.decode()
                except (av.error.FFmpegError, ValueError) as exc:
                    raise InputError(f"the audio of '{self._audio_in.container.name}' cannot be "
                                     f"decoded ({_ffmpeg_reason(exc)})",
                                     "the file is damaged; repair or re-encode its audio") from None
                for frame in frames:
                    for out in self._audio_out.encode(frame):
                        self.container.mux(out)
        except OSError as exc:
            raise OutputError(f"could not write '{self.path}' ({_ffmpeg_reason(exc)})",
                              "check free disk space and the output folder") from None
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"could not write the audio of '{self.path}' ({_ffmpeg_reason(exc)})",
                              "the audio could not be carried over; re-encode the input's audio") from None
        finally:
            self.audio_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ finish
    def close(self, end_time: float | None = None) -> Path:
        """Encode the held-back frame, flush, fsync and move into place. Returns the path."""
        if self._closed:
            return self.path
        av = _av()
        t0 = time.perf_counter()
        try:
            if self._pending is None:
                raise InputError(f"no frames were written to '{self.path}'",
                                 "the input had no decodable video frames")
            frame, pts = self._pending
            self._pending = None
            dur = int(round(end_time / self.time_base)) - pts if end_time is not None else 0
            if dur <= 0:
                dur = self._last_step or self._nominal_step()
            self._encode(frame, pts, dur)
            self._mux_video(self.vstream.encode(None))
            self._finish_video(pts + dur)
            if self.audio_mode == "aac":
                for out in self._audio_out.encode(None):
                    self.container.mux(out)
            self.container.close()
            self._closed = True
            with open(self.tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            self.claim.commit(self.overwrite)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, (av.error.FFmpegError, OSError)) and not isinstance(exc, InputError):
                raise OutputError(f"could not finish writing '{self.path}' ({_ffmpeg_reason(exc)})",
                                  "check free disk space and the output folder") from None
            raise
        finally:
            self.encode_seconds += time.perf_counter() - t0
        return self.path

    def _nominal_step(self) -> int:
        return max(1, int(round(1 / (self.fps * self.time_base))))

    def abort(self) -> None:
        """Discard everything: close the container, delete the temporary file."""
        if not self._closed:
            self._closed = True
            self._pending = None
            try:
                self.container.close()
            except Exception:
                pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        claim = getattr(self, "claim", None)
        if claim is not None:
            claim.release()

    def __del__(self):  # a writer dropped without close(): leave no temporary file behind
        try:
            if not self._closed or getattr(self, "claim", None) is not None:
                self.abort()
        except Exception:
            pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ThreadedWriter:
    """Runs a :class:`VideoWriter` on its own thread so x264 encodes while the next frame is
    decoded and processed (on 2 cores this overlap is most of the real-time margin).

    Every call (video frames, audio packets, close, abort) goes through one ordered queue, so
    the muxer is only ever touched by the writer thread. The queue holds ``depth`` calls
    (back-pressure, bounded memory). An error on the writer thread is re-raised in the caller
    on its next call. Other attributes (``audio_mode``, ``audio_seconds``, ...) are the
    writer's; :attr:`encode_seconds` is the writer thread's busy time.
    """

    _STOP = object()

    def __init__(self, writer: VideoWriter, depth: int = 4):
        import queue
        import threading
        self._w = writer
        self._q: "queue.Queue" = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._encode_s = 0.0
        self._thread = threading.Thread(target=self._run, name="vidharm-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is self._STOP:
                return
            fn, args = item
            if self._error is not None:
                continue                       # drain after a failure
            try:
                t0 = time.perf_counter()
                fn(*args)
                self._encode_s += time.perf_counter() - t0
            except BaseException as exc:       # handed to the caller
                self._error = exc

    def _put(self, fn, *args) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((fn, args))

    def write(self, rgb: np.ndarray, t: float) -> None:
        """Queue a frame (see :meth:`VideoWriter.write`); ``rgb`` must not be reused."""
        self._put(self._w.write, rgb, t)

    def write_audio_packet(self, packet) -> None:
        self._put(self._w.write_audio_packet, packet)

    def _finish(self) -> None:
        self._q.put(self._STOP)
        self._thread.join()

    def close(self, end_time: float | None = None) -> None:
        """Finish the file after every queued call; re-raises the writer thread's error."""
        if self._error is not None:            # failed earlier (disk full): discard, report
            self.abort()
            raise self._error
        self._put(self._w.close, end_time)
        self._finish()
        if self._error is not None:
            self._w.abort()
            raise self._error

    def abort(self) -> None:
        """Stop the thread and discard the file."""
        if self._thread.is_alive():
            self._q.put(self._STOP)
            self._thread.join()
        self._w.abort()

    @property
    def encode_seconds(self) -> float:
        return self._encode_s

    def __getattr__(self, name):               # audio_mode, audio_seconds, ...
        return getattr(self._w, name)
