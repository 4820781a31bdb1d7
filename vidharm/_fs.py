"""Atomic file writes: nothing half-written is ever left under the final name."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".part", fsync: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` to write to (by path or by ``open``).

    When the block succeeds the file is fsynced and renamed onto ``path`` (``os.replace``,
    atomic on one file system); on any exception, Ctrl-C included, it is removed and the
    exception propagates. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def regular_file_stat(path: str | os.PathLike, what: str = "input") -> os.stat_result:
    """``os.stat`` of an input that must be a plain file, checked before anything opens it.

    A FIFO would block the first ``open`` forever, ``/dev/zero`` or ``/dev/urandom`` would
    be read without end, and a folder is a mistake: each is one :class:`InputError` here.
    """
    import stat as _stat
    from .errors import InputError
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{what} '{p}' does not exist", "check the path and spelling") from None
    except PermissionError:
        raise InputError(f"cannot access {what} '{p}' (permission denied)",
                         "check the permissions of the file and its folders") from None
    except OSError as exc:
        raise InputError(f"cannot access {what} '{p}' ({exc.strerror or exc})", "check the path") from None
    if _stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} '{p}' is a folder, not a file", "give the path of a file")
    if not _stat.S_ISREG(st.st_mode):
        kind = ("a named pipe (FIFO)" if _stat.S_ISFIFO(st.st_mode) else
                "a device" if _stat.S_ISCHR(st.st_mode) or _stat.S_ISBLK(st.st_mode) else
                "a socket" if _stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputError(f"{what} '{p}' is {kind}, not a regular file",
                         "save the data to a file first and give that file")
    return st
