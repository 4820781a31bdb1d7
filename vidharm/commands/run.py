"""``vidharm run``: the live engine, webcam to "PHNet Camera" in real time."""
from __future__ import annotations

import signal
from pathlib import Path

import click

from ..protocols import Closable, Openable, SizedSource
from .common import check_plugins, frame_process_settings, pipeline_options


@click.command("run", epilog="""\b
Examples:
  vidharm run --background beach.jpg                 # webcam 0 -> "PHNet Camera" (CPU: call-cpu)
  vidharm run -b blur --sink preview                 # a window; keys: h n m space q
  vidharm run -b office.jpg --source sample --sink file --output rec.mp4 --duration 10
  vidharm run -b beach.jpg --camera /dev/video2 --size 1920x1080 --fps 30 --profile call-cpu
  vidharm run -b beach.jpg --control live.json       # edit live.json to switch while running
\b
Linux: the virtual camera needs v4l2loopback, once per boot:
  sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="PHNet Camera" exclusive_caps=1
""")
@click.option("--background", "-b", required=True, metavar="IMAGE|VIDEO|blur|#RRGGBB",
              help="Virtual background: still image, looping video, 'blur' or a colour.")
@click.option("--source", metavar="camera|sample|FILE",
              help="Frames from the webcam (default), the built-in sample clip, or a video "
                   "file played at its real pace, looping.")
@click.option("--camera", default="0", show_default=True, metavar="INDEX|PATH",
              help="Webcam index or device path (with --source camera).")
@click.option("--size", metavar="WxH", help="Frame size asked of the camera and sent to the "
                                            "sink (profile live.size; default 1280x720).")
@click.option("--fps", type=click.IntRange(min=1, max=240),
              help="Frame rate asked of the camera and the most processed and sent per "
                   "second (default 30): faster cameras' extra frames are skipped.")
@click.option("--sink", type=click.Choice(["virtualcam", "preview", "file", "null"]),
              help="Where frames go (default: virtualcam; 'file' with --output).")
@click.option("--output", "-o", metavar="OUT.mp4", help="Recording for --sink file.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop after this long.")
@click.option("--backgrounds", "backgrounds_dir", metavar="DIR",
              help="Folder the 'next background' key cycles through (default: the "
                   "background's own folder).")
@click.option("--control", metavar="FILE.json|toml",
              help="Watched file: background, profile, harmonizer, strength, harmonize, "
                   "pause, quit... applied when it changes (checked once a second).")
@click.option("--telemetry", "telemetry_png", metavar="PNG",
              help="Write a chart of fps, latency and stage times at the end.")
@click.option("--smoothing", type=click.Choice(["adaptive", "fixed", "off"]), default="adaptive",
              show_default=True, help="Temporal smoothing of the colour transform.")
@click.option("--refresh-hz", type=click.FloatRange(min=0, min_open=True, max=1000), metavar="HZ",
              help="Cap on harmonizer refreshes per second (default: 15 on CPU, none on CUDA).")
@click.option("--grid", "grid_mode", type=click.Choice(["auto", "full", "diagonal"]),
              default="auto", show_default=True,
              help="How a full 4x4 colour grid (phnet-grid-local, phnet-lite, fmm) is applied "
                   "per frame: full affine, or per-channel gain/offset (about half the cost); "
                   "auto = on the CPU one global transform while it is about as close, else "
                   "per-channel. phnet-grid gives one global transform already.")
@click.option("--no-harmonize", is_flag=True, help="Start with harmonization off (A/B).")
@click.option("--no-mjpg", is_flag=True, help="Do not ask the camera for MJPG.")
@pipeline_options
def command(background, source, camera, size, fps, sink, output, duration, backgrounds_dir,
            control, telemetry_png, smoothing, refresh_hz, grid_mode, no_harmonize, no_mjpg, profile,
            **kw):
    """Live: camera -> segment -> new background -> harmonize -> virtual camera.

    Runs until Ctrl-C (or --duration, or q in the preview), then prints one line: achieved
    fps, capture-to-sink latency p50/p95, dropped frames, harmonizer refresh rate.
    """
    from .. import assets
    from ..composite import make_background
    from ..config import load_config, overrides_from
    from ..live import LiveEngine
    from ..temporal import SmoothingTuning
    from ..video import parse_size

    frame_process_settings(live=True)
    if not profile and not _cuda_available():
        # beside a video call on a CPU: the light profile (general model and the rest of the
        # defaults: 0.56 cores at 720p; call-cpu: 0.46, bench live) unless one is chosen
        profile = "call-cpu"
        chosen = "profile call-cpu (no GPU; --profile chooses another)"
    else:
        chosen = f"profile {profile}" if profile else "default settings"
    if output and not sink:
        sink = "file"
    overrides = overrides_from({**kw, "size": size, "fps": fps, "sink": sink, "source": source},
                               "command line")
    cfg = load_config(profile, overrides)
    _check_settings(cfg, output, telemetry_png)
    out_size, rate = parse_size(cfg.live.size), float(cfg.live.fps or 30)

    # everything that can fail on user input fails here, before the camera is opened: the
    # sink is opened first (a bad output fails before the camera), the engine does not reopen it
    bg = make_background(background, cfg)
    snk = src = None
    try:
        snk = _open_sink(cfg.live.sink, out_size, rate, output, cfg)
        src, resize_to, src_desc = _make_source(cfg.live.source, camera, out_size, rate,
                                                not no_mjpg, assets)
        engine = LiveEngine(cfg, src, snk, bg, fps=src.fps if isinstance(src, SizedSource) else rate,
                            resize_to=resize_to,
                            harmonize=not no_harmonize,
                            backgrounds=_background_list(background, backgrounds_dir),
                            control=control, tuning=SmoothingTuning(mode=smoothing),
                            max_refresh_hz=refresh_hz or "auto", grid_mode=grid_mode,
                            max_fps=rate, profile=profile, overrides=overrides, open_sink=False)
    except BaseException:
        _close_quietly(src, snk, bg)
        raise
    click.echo(f"vidharm run: {src_desc} -> {_where(cfg.live.sink, snk, output)}; background "
               f"{bg.describe()}; harmonizer {cfg.harmonizer.name}"
               f"{'' if cfg.harmonizer.relative else ' (--absolute)'}; {chosen}; Ctrl-C to stop",
               err=True)
    summary = _run_until_stopped(engine, duration)
    _report(summary, engine, snk, cfg.live.sink, src_desc, output, telemetry_png)


def _check_settings(cfg, output: str | None, telemetry_png: str | None) -> None:
    """Plugin names, model files, --output against --sink and the chart's folder: checked
    before anything is opened."""
    from ..errors import ConfigError
    check_plugins(cfg)
    sink_name = cfg.live.sink
    if sink_name == "file" and not output:
        raise ConfigError("--sink file needs --output OUT.mp4", "give the recording's path")
    if output and sink_name != "file":
        raise ConfigError(f"--output is for --sink file, not --sink {sink_name}",
                          "drop --output or use --sink file")
    if telemetry_png:
        from ..video import ensure_output_dir
        ensure_output_dir(Path(telemetry_png).expanduser().resolve().parent)


def _close_quietly(*parts) -> None:
    for part in parts:
        if isinstance(part, Closable):
            try:
                part.close()
            except Exception:
                pass


def _where(sink_name: str, snk, output: str | None) -> str:
    """The sink in words, for the start line."""
    return {"virtualcam": f"virtual camera {getattr(snk, 'device_name', None) or ''}".strip(),
            "preview": "preview window", "file": f"recording {output}",
            "null": "nowhere (null sink)"}.get(sink_name, sink_name)


def _run_until_stopped(engine, duration: float | None) -> dict:
    """Run the engine; the first Ctrl-C (or SIGTERM) stops it gracefully, a second one
    stops waiting. Returns the telemetry summary."""
    def on_signal(signum, frame):
        if engine.stopped:                       # second Ctrl-C: stop waiting
            raise KeyboardInterrupt
        engine.stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return engine.run(duration=duration)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _report(summary: dict, engine, snk, sink_name: str, src_desc: str, output: str | None,
            telemetry_png: str | None) -> None:
    """The closing lines: notes, the one-line summary, the chart, the recording."""
    from ..errors import OutputError
    from ..telemetry import one_line
    for note in summary.get("notes", []):
        click.echo(f"note: {note}", err=True)
    click.echo(f"vidharm run: {one_line(summary)}")
    if telemetry_png:
        engine.telemetry.save_chart(telemetry_png, title=f"vidharm run ({src_desc})")
        click.echo(f"wrote {telemetry_png}")
    if sink_name == "file":
        if not getattr(snk, "frames", 0) or not Path(output).expanduser().is_file():
            raise OutputError(f"no recording was written to '{output}' (no frames reached it)",
                              "check the source and the output folder")
        click.echo(f"wrote {output} ({snk.frames} frames)")


def _open_sink(name, size, fps, output, cfg):
    """The sink, created and opened (where it has ``open``)."""
    snk = _make_sink(name, size, fps, output, cfg)
    try:
        if isinstance(snk, Openable):
            snk.open(size, fps)
    except BaseException:
        _close_quietly(snk)
        raise
    return snk


def _make_sink(name, size, fps, output, cfg):
    from ..registry import registry
    if name == "virtualcam":
        return registry.sinks.create("virtualcam", size=size, fps=fps)
    if name == "file":
        return registry.sinks.create("file", path=output, size=size, fps=fps, overwrite=True,
                                     output_cfg=cfg.output)
    if name == "preview":
        return registry.sinks.create("preview")
    return registry.sinks.create(name)


def _cuda_available() -> bool:
    from ..models.onnx_grid import cuda_possible
    if not cuda_possible():      # no NVIDIA driver: settled without importing torch (~1 s)
        return False
    try:
        from ..models.runner import resolve_device
        return resolve_device("auto") == "cuda"
    except Exception:            # no torch (learning-free use) or a broken CUDA install
        return False


def _make_source(spec, camera, size, fps, mjpg, assets):
    """(source, resize_to, description) for camera | sample | a file path."""
    from ..errors import InputError
    from ..registry import registry
    spec = spec or "camera"
    if spec == "camera":
        src = registry.sources.create("camera", device=camera, size=size, fps=fps, mjpg=mjpg)
        w, h = src.size
        return src, None, f"{src.name} ({w}x{h} @ {src.fps:g} fps)"
    path = str(assets.path("sample-clip")) if spec == "sample" else spec
    if spec != "sample" and not Path(path).exists():
        raise InputError(f"source '{spec}' is not camera, sample or an existing video file",
                         "use --source camera, --source sample or --source PATH.mp4")
    src = registry.sources.create("file", path=path, loop=True, realtime=True)
    label = "sample clip" if spec == "sample" else Path(path).name
    return src, size, f"{label} at real pace, looping, as {size[0]}x{size[1]} @ {src.fps:g} fps"


def _background_list(background: str, folder: str | None) -> list[str]:
    from ..live import backgrounds_in
    if folder:
        items = backgrounds_in(folder)
        if not items:
            from ..errors import InputError
            raise InputError(f"no images or videos in '{folder}'", "give a folder of backgrounds")
        return items
    p = Path(background).expanduser()
    if p.is_file():
        return backgrounds_in(p.parent)
    from .. import assets
    return [str(assets.path(n, fetch=False)) for n in assets.assets_in(["core", "backgrounds"])
            if n.startswith(("bg-", "sample-background")) and assets.is_cached(n)]
