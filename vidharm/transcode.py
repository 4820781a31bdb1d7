"""Offline batch transcoding: video files in, processed H.264 MP4s out.

:func:`transcode_files` runs every input through a *frame processor* and writes an MP4 with
the input's exact frame timestamps and its audio (see :mod:`vidharm.video`).

A frame processor is any callable ``proc(rgb, t) -> rgb``: ``rgb`` is ``(H, W, 3)`` uint8 RGB,
upright, ``t`` the frame's time in seconds; it returns a frame of the same shape and dtype.
It may have ``close()`` (called after its file, also on errors) and ``timings``: a mapping
``stage -> seconds`` (cumulative) that is copied into :attr:`FileResult.stage_timings` so the
pipeline can report its own stages (segment, composite, harmonize...). It may also have
``prepare(rgb, t)``: then that runs on a thread of its own, in frame order, between the
decoder's thread and the frame loop, and its result comes back as ``proc(rgb, t, prepared)``
(the pipeline segments and refines the mask there, so that overlaps decoding of the next
frames and the harmonizing of the previous one). ``make_processor`` is called once
per file with that file's :class:`~vidharm.video.VideoInfo`.

Rules: ``out`` (``-o``) only with one input; ``out_dir`` for many (``NAME.mov`` ->
``OUT_DIR/NAME{suffix}.mp4``); with neither, outputs go beside their inputs. Existing outputs
are skipped unless ``overwrite``. In a batch a bad file is reported (one line) and the rest
still run; Ctrl-C stops the batch, deletes the partial output and re-raises.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol

import numpy as np

from .config import OutputConfig
from .errors import InputError, OutputError, VidharmError, describe
from .protocols import Closable
from .video import (MP4_SUFFIXES, ThreadedWriter, VideoInfo, VideoReader, VideoWriter,
                    audio_stream, check_input_file, check_output_config, ensure_output_dir,
                    probe, same_file)

log = logging.getLogger(__name__)

DEFAULT_SUFFIX = "_harmonized"


class FrameProcessor(Protocol):
    def __call__(self, rgb: np.ndarray, t: float) -> np.ndarray: ...


ProcessorFactory = Callable[[VideoInfo], FrameProcessor]


def identity_processor(info: VideoInfo | None = None) -> FrameProcessor:
    """A processor factory whose processor returns every frame unchanged."""
    return lambda rgb, t: rgb


# ---------------------------------------------------------------------------- results
@dataclass
class FileResult:
    """What happened to one input."""

    input: str
    output: Optional[str]
    status: str                          # "ok" | "skipped" | "failed"
    message: str = ""                    # one line: why skipped / why failed
    error: Optional[BaseException] = None
    frames: int = 0
    duration: float = 0.0                # seconds of video written
    seconds: float = 0.0                 # wall-clock time for this file
    audio: Optional[str] = None          # "copy", "aac" or None (no audio)
    timings: dict = field(default_factory=dict)        # probe/decode/process/encode/audio/total s
    stage_timings: dict = field(default_factory=dict)  # the processor's own ``timings``
    info: Optional[VideoInfo] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def fps(self) -> float:
        """Frames per wall-clock second for the whole file."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BatchResult:
    files: list[FileResult] = field(default_factory=list)

    @property
    def ok(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "ok"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def any_failed(self) -> bool:
        return any(f.status == "failed" for f in self.files)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else 1 (skipped files are not failures)."""
        return 1 if self.any_failed else 0

    def summary(self) -> str:
        parts = [f"{len(self.ok)} written"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts)


# ---------------------------------------------------------------------------- planning
def expand_inputs(inputs: list[str]) -> list[tuple[str, Optional[VidharmError]]]:
    """Expand globs; keep order; drop duplicates. Each item: (path, error or None)."""
    out: list[tuple[str, Optional[VidharmError]]] = []
    seen: set[str] = set()

    def add(p: str, err: Optional[VidharmError] = None):
        key = os.path.realpath(p)
        if err is None and key in seen:
            return
        seen.add(key)
        out.append((p, err))

    for raw in inputs:
        arg = os.path.expanduser(os.fspath(raw))
        if os.path.exists(arg) or not glob.has_magic(arg):
            add(arg)
            continue
        matches = sorted(glob.glob(arg))
        files = [m for m in matches if not os.path.isdir(m)]
        if not files:
            add(arg, InputError(f"no file matches '{arg}'",
                                "check the pattern; quote it so your shell does not expand it"))
        for m in files:
            add(m)
    return out


def output_name(input_path: str, suffix: str = DEFAULT_SUFFIX) -> str:
    """``clip.mov`` -> ``clip{suffix}.mp4``."""
    return Path(input_path).stem + suffix + ".mp4"


def _check_out_path(out: str) -> Path:
    p = Path(os.path.expanduser(out))
    if p.is_dir():
        raise OutputError(f"output '{out}' is a folder",
                          "give a file name ending in .mp4, or use --out-dir for a folder")
    if p.suffix.lower() not in MP4_SUFFIXES:
        raise OutputError(f"output '{out}' must end in .mp4",
                          "the output is always an H.264 MP4 file; name it accordingly")
    return p


# ---------------------------------------------------------------------------- progress
class _Progress:
    """Per-file bar plus an overall bar (rich). A no-op when disabled."""

    def __init__(self, enabled: bool, n_files: int, console=None):
        self.enabled = False
        self._p = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        from rich.text import Text

        console = console or Console(stderr=True)
        if not console.is_terminal or console.is_dumb_terminal:
            return

        class FpsColumn(ProgressColumn):
            def render(self, task):
                fps = task.fields.get("fps")
                return Text(f"{fps:6.1f} fps" if fps else "       fps", style="progress.data.speed")

        self._p = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                           MofNCompleteColumn(), FpsColumn(), TimeElapsedColumn(),
                           TimeRemainingColumn(), console=console, transient=False)
        self.enabled = True
        self._n = n_files
        self._t0 = time.perf_counter()
        self._frames_total = 0
        self._overall = None
        self._task = None
        self._file_t0 = 0.0
        self._file_share = 0.0
        self._file_base = 0.0

    def __enter__(self):
        if self._p is not None:
            self._p.__enter__()
            if self._n > 1:
                self._overall = self._p.add_task(f"all {self._n} files", total=self._n, fps=0.0)
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def start_file(self, index: int, name: str, frames: int) -> None:
        if not self.enabled:
            return
        self._task = self._p.add_task(name, total=max(1, frames), fps=0.0)
        self._file_t0 = time.perf_counter()
        self._file_frames = max(1, frames)
        self._file_base = float(index)

    def frame(self, done: int) -> None:
        if not self.enabled or self._task is None:
            return
        self._frames_total += 1
        now = time.perf_counter()
        self._p.update(self._task, completed=min(done, self._file_frames),
                       fps=done / max(now - self._file_t0, 1e-6))
        if self._overall is not None:
            self._p.update(self._overall,
                           completed=self._file_base + min(done / self._file_frames, 0.999),
                           fps=self._frames_total / max(now - self._t0, 1e-6))

    def end_file(self, index: int, name: str, result: FileResult) -> None:
        if not self.enabled:
            return
        mark = {"ok": "done", "skipped": "skipped", "failed": "FAILED"}[result.status]
        if self._task is None:
            self._task = self._p.add_task(name, total=1, fps=0.0)
        if result.status == "ok":
            self._p.update(self._task, total=max(result.frames, 1), completed=result.frames)
        self._p.update(self._task, description=f"{name} ({mark})")
        self._p.stop_task(self._task)
        self._task = None
        if self._overall is not None:
            self._p.update(self._overall, completed=index + 1)


# ---------------------------------------------------------------------------- one file
def transcode_file(src: str, dst: str | os.PathLike, make_processor: ProcessorFactory | None = None,
                   *, output_cfg: OutputConfig | None = None, overwrite: bool = False,
                   on_frame: Callable[[int], None] | None = None,
                   on_info: Callable[[VideoInfo], None] | None = None) -> FileResult:
    """Transcode one file through a processor. Raises :class:`VidharmError` on failure,
    and re-raises anything else (KeyboardInterrupt included) after removing partial output.
    """
    t_start = time.perf_counter()
    dst = Path(dst)
    if same_file(src, dst):
        raise OutputError(f"output '{dst}' is the input file",
                          "choose another output name or folder; the input is never overwritten")
    t0 = time.perf_counter()
    info = probe(src)
    probe_s = time.perf_counter() - t0
    if on_info is not None:
        on_info(info)
    make_processor = make_processor or identity_processor
    proc = make_processor(info)
    writer: ThreadedWriter | None = None
    try:
        def carry(packet):
            writer.write_audio_packet(packet)

        def pick_audio(container):
            s = audio_stream(container)
            return [s] if s is not None else []

        with VideoReader(src, info=info, select_streams=pick_audio, on_packet=carry) as reader:
            aud = reader.other_streams[0] if reader.other_streams else None
            writer = ThreadedWriter(VideoWriter(
                dst, info.size, time_base=info.time_base, fps=info.fps, output_cfg=output_cfg,
                audio_from=aud, overwrite=overwrite, input_path=src))
            loop = _run_frames(reader, proc, writer, (info.height, info.width, 3), on_frame)
    finally:
        if isinstance(proc, Closable):
            proc.close()
    audio_s = writer.audio_seconds
    total = time.perf_counter() - t_start
    stages = getattr(proc, "timings", None)
    return FileResult(
        input=src, output=str(dst), status="ok", frames=loop.frames,
        duration=(reader.end_time or 0.0) - info.start_time, seconds=total,
        audio=writer.audio_mode,
        # decode / prepare: the decoder's and the prepare thread's own time (overlapping
        # processing); decode_wait: how long the frame loop waited for them
        timings={"probe": probe_s, "decode": loop.decode_busy[0],
                 "prepare": loop.prepare_busy[0], "decode_wait": loop.decode_wait,
                 "process": loop.process,
                 # time the encoder thread spent (overlapping decode/process), and the time
                 # the frame loop waited for it (queue full, final flush)
                 "encode": max(0.0, writer.encode_seconds - audio_s),
                 "encode_wait": loop.encode_wait,
                 "audio": audio_s, "total": total},
        stage_timings=dict(stages) if isinstance(stages, Mapping) else {},
        info=info)


@dataclass
class _LoopTimes:
    """What the frame loop of one file counted (seconds are cumulative)."""

    frames: int = 0
    decode_busy: list = field(default_factory=lambda: [0.0])   # the decoder thread's time
    prepare_busy: list = field(default_factory=lambda: [0.0])  # the prepare thread's (waits included)
    decode_wait: float = 0.0
    process: float = 0.0
    encode_wait: float = 0.0


def _run_frames(reader: VideoReader, proc: FrameProcessor, writer: ThreadedWriter,
                expect: tuple[int, int, int], on_frame: Callable[[int], None] | None) -> _LoopTimes:
    """Decode (on its own thread), process and queue every frame, then finish the file.
    On any error or Ctrl-C the decoder is stopped and the partial output discarded."""
    times = _LoopTimes()
    prepare = getattr(proc, "prepare", None)
    if callable(prepare):
        # three stages on their own threads: decode + demux, prepare (the pipeline's
        # segmentation and mask refinement), the rest of the frame here
        decoded = _prefetch(reader, busy=times.decode_busy)
        frames_iter = _prefetch(_prepared(decoded, prepare), busy=times.prepare_busy,
                                name="vidharm-prepare")
    else:
        frames_iter = _prefetch(reader, busy=times.decode_busy)   # decode + demux on its own thread
    try:
        while True:
            t0 = time.perf_counter()
            try:
                item = next(frames_iter)
            except StopIteration:
                times.decode_wait += time.perf_counter() - t0
                break
            rgb, t, idx = item[:3]
            t1 = time.perf_counter()
            out = proc(rgb, t, item[3]) if len(item) > 3 else proc(rgb, t)
            t2 = time.perf_counter()
            _check_processed(out, expect, idx)
            writer.write(out, t)       # queued: encoding overlaps the next frame
            t3 = time.perf_counter()
            times.decode_wait += t1 - t0
            times.process += t2 - t1
            times.encode_wait += t3 - t2
            times.frames += 1
            if on_frame is not None:
                on_frame(times.frames)
        t0 = time.perf_counter()
        writer.close(end_time=reader.end_time)
        times.encode_wait += time.perf_counter() - t0
    except BaseException:
        frames_iter.close()           # stop and join the decoder before the file closes
        writer.abort()
        raise
    return times


def _prepared(reader, prepare):
    """(rgb, t, idx, prepare(rgb, t)) for every frame of ``reader`` (runs where it is
    iterated: on the prepare thread); closing it closes the reader's iterator there too."""
    it = iter(reader)
    try:
        for rgb, t, idx in it:
            yield rgb, t, idx, prepare(rgb, t)
    finally:
        close = getattr(it, "close", None)
        if close:
            close()


def _check_processed(out, expect: tuple[int, int, int], idx: int) -> None:
    if not isinstance(out, np.ndarray) or out.shape != expect or out.dtype != np.uint8:
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"frame processor returned {got} for frame {idx}; "
                         f"expected {expect} uint8")


def _prefetch(iterable, depth: int = 3, busy: list | None = None, name: str = "vidharm-decode"):
    """Iterate ``iterable`` on a background thread, ``depth`` items ahead (bounded memory).

    FFmpeg decodes with the GIL released, so decoding the next frame overlaps segmentation
    and compositing of this one. Exceptions from the producer are re-raised here; closing the
    generator (an error or Ctrl-C in the consumer) stops the producer. ``busy`` (a one-item
    list) accumulates the seconds the producer spent producing (decode time).
    """
    import queue
    import threading
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        it = iter(iterable)
        try:
            t0 = time.perf_counter()
            for item in it:
                if busy is not None:
                    busy[0] += time.perf_counter() - t0
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
                t0 = time.perf_counter()
            q.put(done)
        except BaseException as exc:            # handed to the consumer
            q.put(exc)
        finally:
            close = getattr(it, "close", None)  # finish the reader's generator on THIS thread
            if close:
                close()

    t = threading.Thread(target=produce, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():                     # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)



# ---------------------------------------------------------------------------- batch
def transcode_files(inputs: list[str], out: str | None = None, out_dir: str | None = None,
                    make_processor: ProcessorFactory | None = None, overwrite: bool = False,
                    output_cfg: OutputConfig | None = None, progress: bool = True,
                    suffix: str = DEFAULT_SUFFIX, console=None,
                    on_result: Callable[[FileResult], None] | None = None) -> BatchResult:
    """Transcode ``inputs`` (paths or glob patterns) and report per file.

    Raises :class:`OutputError` before any work for unusable output settings (``out`` with
    several inputs, both ``out`` and ``out_dir``, an output folder that cannot be written) and
    :class:`InputError` when no inputs are given. Per-file problems (bad input, existing
    output, output == input) are recorded in the result and the batch goes on.
    ``on_result`` is called after each file (e.g. to print a line).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [os.fspath(inputs)]
    plan, out_path = _plan_batch(list(inputs), out, out_dir, output_cfg)
    result = BatchResult()
    claimed: dict[str, str] = {}
    with _Progress(progress, len(plan), console) as bar:
        for i, (src, plan_err) in enumerate(plan):
            t0 = time.perf_counter()
            if out_path is not None:
                dst = out_path
            else:
                folder = Path(os.path.expanduser(out_dir)) if out_dir else Path(src).parent
                dst = folder / output_name(src, suffix)
            name = os.path.basename(src) or src
            try:
                if plan_err is not None:
                    raise plan_err
                res = _batch_file(
                    src, dst, claimed, make_processor, output_cfg=output_cfg,
                    overwrite=overwrite, own_dir=not out and not out_dir,
                    on_info=lambda info, i=i, name=name: bar.start_file(i, name, info.frames),
                    on_frame=bar.frame)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a bad file must not stop the batch
                if not isinstance(exc, VidharmError):
                    log.debug("unexpected error on %s", src, exc_info=True)
                res = FileResult(input=src, output=None, status="failed",
                                 message=describe(exc), error=exc)
                res.seconds = time.perf_counter() - t0
            bar.end_file(i, name, res)
            result.files.append(res)
            if on_result is not None:
                on_result(res)
    return result


def _plan_batch(inputs: list[str], out: str | None, out_dir: str | None,
                output_cfg: OutputConfig | None):
    """The inputs expanded, and ``out`` checked as a path (None without ``out``); every
    setting that would fail every file is refused here, before any work."""
    if not inputs:
        raise InputError("no input files given", "name one or more video files")
    if out and out_dir:
        raise OutputError("both an output file and an output folder were given",
                          "use -o FILE for one input, or --out-dir DIR for several")
    plan = expand_inputs(inputs)
    if out and len(plan) > 1:
        raise OutputError(f"-o/--output names one file but {len(plan)} inputs were given",
                          "use --out-dir DIR to transcode several files")
    # encoder settings, outputs, and the folders they go to: checked before any work
    check_output_config(output_cfg)
    out_path = None
    if out:
        out_path = _check_out_path(out)
        ensure_output_dir(out_path.parent)
    elif out_dir:
        ensure_output_dir(os.path.expanduser(out_dir))
    return plan, out_path


def _batch_file(src: str, dst: Path, claimed: dict[str, str],
                make_processor: ProcessorFactory | None, *, output_cfg: OutputConfig | None,
                overwrite: bool, own_dir: bool, on_info, on_frame) -> FileResult:
    """One file of a batch: checked against the others' outputs (``claimed``, updated), skipped
    when its output exists (without ``overwrite``), else transcoded. Raises on failure."""
    check_input_file(src)
    if same_file(src, dst):
        raise OutputError(f"output '{dst}' would be the input file itself",
                          "use a --suffix or another --out-dir; inputs are never overwritten")
    key = os.path.realpath(dst)
    if key in claimed:
        raise OutputError(f"'{src}' and '{claimed[key]}' would both be written to '{dst}'",
                          "rename one of them or transcode them into different folders")
    claimed[key] = src
    if dst.exists() and not overwrite:
        return FileResult(input=src, output=str(dst), status="skipped",
                          message=f"output '{dst}' already exists (use --overwrite to replace it)")
    if own_dir:
        ensure_output_dir(dst.parent)
    # overwrite as asked: a file that appears meanwhile (another job) is not replaced
    # without --overwrite (see vidharm.video.OutputClaim)
    return transcode_file(src, dst, make_processor, output_cfg=output_cfg, overwrite=overwrite,
                          on_info=on_info, on_frame=on_frame)
