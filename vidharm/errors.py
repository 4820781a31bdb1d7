"""User-facing errors.

Every problem a user can cause (missing file, corrupt video, unknown profile...) is raised as a
:class:`VidharmError`. The CLI prints it as ONE line, ``error: <what is wrong> (<what to do>)``,
and exits non-zero; it never shows a traceback for these.
"""
from __future__ import annotations


class VidharmError(Exception):
    """An error the user can act on: ``what`` went wrong, ``hint`` says what to do."""

    exit_code = 2

    def __init__(self, what: str, hint: str | None = None):
        super().__init__(what)
        self.what = what
        self.hint = hint

    def one_line(self) -> str:
        text = self.what.rstrip(".")
        if self.hint:
            text += f" -- {self.hint.rstrip('.')}"
        return " ".join(text.split())  # guarantee a single line

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.one_line()


class InputError(VidharmError):
    """Bad input file: missing, unreadable, corrupt, wrong kind, too big."""


class ConfigError(VidharmError):
    """Bad profile, unknown key, unknown plugin name."""


class AssetError(VidharmError):
    """An asset could not be fetched or failed verification."""


class OutputError(VidharmError):
    """Output location cannot be written."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, whitespace collapsed, at most 160 characters."""
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split())[:160] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """Any exception as one line for a log or a message: a :class:`VidharmError`'s own
    :meth:`~VidharmError.one_line`, else ``Type: first line``."""
    if isinstance(exc, VidharmError):
        return exc.one_line()
    return f"{type(exc).__name__}: {first_line(exc)}"
