"""What the commands share: the pipeline options, the config built from flags, the checks
made before any work, one-line error output, the batch report and the process settings of
commands that process frames."""
from __future__ import annotations

from pathlib import Path

import click

#: exit status of a user error (as :attr:`vidharm.errors.VidharmError.exit_code`)
EXIT_USER = 2

#: harmonizers that learn nothing: a weights file means nothing to them
LEARNING_FREE = ("none", "stats", "light")


def echo_err(msg: str) -> None:
    """One line to stderr."""
    click.echo(msg, err=True)


def frame_process_settings(live: bool = False) -> None:
    """Process-wide settings for commands that process frames, made once at their start:
    BLAS and torch on one thread, glibc's malloc tuned for per-frame buffers (see
    :mod:`vidharm._threads`); ``live``: OpenCV's own thread pool off too (the live engine
    runs three threads already; splitting each resize and blend over the cores cost more CPU
    than it saved: phnet-grid at 720p 0.67 -> 0.61 cores). Not for ``vidharm train``, which
    wants its threads."""
    import mediapipe  # noqa: F401  (loads its own OpenBLAS: the pin must reach it too)
    import numpy  # noqa: F401

    from .._threads import one_torch_thread, pin_blas_single_thread, tune_allocator
    one_torch_thread()
    pin_blas_single_thread()
    tune_allocator()
    if live:
        import cv2
        cv2.setNumThreads(1)


def pipeline_options(f):
    """Options shared by commands that build the segmentation/compositing pipeline."""
    opts = [
        click.option("--profile", "-p", metavar="NAME|PATH",
                     help="Built-in preset (`vidharm profiles` lists them: call-cpu, creator-quality, ...) or a .toml file."),
        click.option("--harmonizer", metavar="NAME", help="none | stats | phnet-lite | ... (see `vidharm plugins`)."),
        click.option("--strength", type=float, help="Harmonization strength, 0 (off) .. 1 (full)."),
        click.option("--weights", metavar="PATH", help="Weights file for a learned harmonizer."),
        click.option("--relative/--absolute", default=None,
                     help="Harmonize relative to the person's own frame (default: the transform "
                          "for the new background with the one for their own room undone) or "
                          "from the composite alone."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Device for learned harmonizers."),
        click.option("--segmentation-model", metavar="general|landscape|PATH",
                     help="MediaPipe selfie model, or a .tflite file you already have."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def config_from_flags(profile: str | None, **flags):
    """The profile with the flags given (short names, see
    :data:`vidharm.config.SHORT_NAMES`; ``None`` = not given) applied and checked."""
    from ..config import load_config, overrides_from
    return load_config(profile, overrides_from(flags, "command line"))


def check_plugins(cfg) -> None:
    """Unknown harmonizer/segmenter names and missing model files fail before any work."""
    from ..assets import segmentation_model_path
    from ..registry import registry
    registry.harmonizers.get(cfg.harmonizer.name)
    registry.segmenters.get(cfg.segmentation.segmenter)
    if cfg.segmentation.segmenter == "mediapipe":
        segmentation_model_path(cfg.segmentation.model)
    check_weights(cfg)


def check_weights(cfg) -> None:
    """An unknown harmonizer, a missing --weights file, or weights given to a harmonizer
    that has none fail before any work."""
    from ..errors import ConfigError
    from ..registry import registry
    factory = registry.harmonizers.get(cfg.harmonizer.name)
    w = cfg.harmonizer.weights
    if not w:
        return
    if cfg.harmonizer.name in LEARNING_FREE and getattr(factory, "default_weights", None) is None:
        raise ConfigError(f"--weights '{w}' was given, but harmonizer '{cfg.harmonizer.name}' "
                          f"uses no weights", "drop --weights, or pick a learned harmonizer "
                          "(e.g. --harmonizer phnet-lite)")
    from ..models import shipped_names
    if w not in shipped_names():
        from .._fs import regular_file_stat
        regular_file_stat(Path(w).expanduser(), "weights file")


def check_output(path: str, inputs: tuple = (), flag: str = "-o") -> None:
    """Fail before any work when the output's folder cannot be written, or when the output
    names one of ``inputs`` (an input file is never overwritten)."""
    from ..errors import OutputError
    from ..video import ensure_output_dir, same_file
    for inp in inputs:
        if inp and same_file(Path(inp).expanduser(), Path(path).expanduser()):
            raise OutputError(f"{flag} '{path}' would overwrite '{inp}'",
                              "choose another output name; inputs are never overwritten")
    ensure_output_dir(Path(path).expanduser().resolve().parent)


def report_batch(result) -> None:
    """One line per file; exit non-zero if any failed."""
    for it in result.files:
        if it.status == "failed":
            echo_err(f"error: {it.input}: {it.message}")
        elif it.status == "skipped":
            echo_err(f"skipped: {it.input}: {it.message}")
        else:
            click.echo(f"wrote {it.output} ({it.frames} frames, {it.fps:.1f} fps"
                       f"{', audio ' + it.audio if it.audio else ''})")
    if result.any_failed:
        if len(result.files) > 1:
            echo_err(f"{result.summary()}")
        raise click.exceptions.Exit(EXIT_USER)
