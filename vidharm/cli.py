"""The ``vidharm`` command line: the group, its error handling and logging; the commands
themselves live in :mod:`vidharm.commands`.

Every user error is printed as ONE line (``error: what is wrong -- what to do``) with a
non-zero exit; ``--debug`` (or ``VIDHARM_DEBUG=1``) shows tracebacks for bug reports.
Heavy libraries (torch, MediaPipe, PyAV) are imported inside the commands, so ``--help`` is
instant.
"""
from __future__ import annotations

import logging
import os
import sys

import click

from .commands.common import echo_err
from .errors import VidharmError

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143     # 128 + SIGTERM, as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every ``except BaseException`` cleanup (partial
    outputs, lock files, threads) runs exactly as for Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


class VidharmGroup(click.Group):
    """Turns VidharmError into one line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VidharmError as exc:
            if os.environ.get("VIDHARM_DEBUG"):
                raise
            echo_err(f"error: {exc.one_line()}")
            ctx.exit(exc.exit_code)
        except Terminated:
            echo_err("terminated (SIGTERM): stopped; nothing half-written was kept")
            ctx.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            echo_err("interrupted: nothing half-written was kept")
            ctx.exit(EXIT_INTERRUPTED)
        except click.UsageError as exc:      # bad flag value: one line too, not click's three
            if os.environ.get("VIDHARM_DEBUG"):
                raise
            where = exc.ctx.command_path if exc.ctx is not None else "vidharm"
            echo_err(f"error: {' '.join(exc.format_message().split())} -- see '{where} --help'")
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # a bug: still one line, traceback on request
            if os.environ.get("VIDHARM_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            echo_err(f"internal error: {type(exc).__name__}: {first} -- rerun with --debug "
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


# ---------------------------------------------------------------- the commands
def _attach_commands() -> None:
    """Every command lives in :mod:`vidharm.commands`; the group only attaches them."""
    from .commands import assets, bench, demo, doctor, evaluate, info, run, stills, train, transcode
    for cmd in (transcode.command, stills.composite, stills.harmonize, assets.command,
                info.plugins, info.profiles, demo.command, bench.command, train.command,
                evaluate.command, run.command, doctor.command):
        main.add_command(cmd)


_attach_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
