"""Output paths: one exclusive, atomic temporary per job (:class:`OutputClaim`), output folders
proven writable, and the input never taken for the output."""
from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path

from ..errors import OutputError

log = logging.getLogger("vidharm.video")

#: Output file suffixes accepted for ``-o`` (the container is always MP4).
MP4_SUFFIXES = (".mp4", ".m4v")


def temp_path_for(final: str | os.PathLike) -> Path:
    """The hidden temporary name beside ``final`` that a job writes to: ``.NAME.partial.mp4``.

    One name per output, so the temporary itself is the job's claim on the output (see
    :class:`OutputClaim`) and a leftover from a killed run is found and removed by the next.
    """
    final = Path(final)
    return final.with_name(f".{final.name}.partial.mp4")


def _try_lock(fd: int) -> bool:
    """An exclusive, non-blocking lock on an open file; the kernel drops it when the process
    dies (SIGKILL included), which is how a live job is told from a dead one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: exclusive creation is the only guard
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class OutputClaim:
    """One exclusive, atomic output path per job.

    ``claim = OutputClaim(final)`` creates ``.NAME.partial.mp4`` beside ``final`` and holds an
    exclusive lock on it for the job's life. The temporary appears under its name only
    already locked (it is made under a random name, locked, then hard-linked into place,
    which fails if the name exists), so:

    - a second job for the same output finds the temporary locked and stops with one line
      (instead of both writing and one silently replacing the other);
    - a temporary that is not locked belongs to a run that was killed (SIGKILL, power loss):
      it is removed and the output claimed, so leftovers never accumulate; older random-named
      ``.NAME.<hex>.partial.mp4`` files are removed then too;
    - :meth:`commit` moves the finished file onto ``final``: ``os.replace`` when overwriting
      is allowed, otherwise ``os.link``, which refuses a file that appeared meanwhile;
      :meth:`release` (on any error, Ctrl-C, SIGTERM) deletes the temporary.
    """

    def __init__(self, final: str | os.PathLike):
        self.final = Path(final)
        self.path = temp_path_for(self.final)
        self.fd: int | None = None
        self.removed_stale: list[str] = []
        self._claim()

    def _claim(self) -> None:
        d = self.path.parent
        mine = d / f".{self.final.name}.{secrets.token_hex(6)}.claim"
        try:
            fd = os.open(mine, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        except OSError as exc:
            raise OutputError(f"cannot create output '{self.final}' ({exc.strerror or exc})",
                              "check the output folder's permissions and free space") from None
        try:
            _try_lock(fd)
            for _ in range(20):
                try:
                    os.link(mine, self.path)
                    break
                except FileExistsError:
                    self._remove_if_stale()
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise OutputError(f"cannot create output '{self.final}' "
                                          f"({exc.strerror or exc})",
                                          "check the output folder's permissions") from None
                    try:                       # no hard links here: exclusive creation
                        fd2 = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
                    except FileExistsError:
                        self._remove_if_stale()
                        continue
                    os.close(fd)
                    fd = fd2
                    _try_lock(fd)
                    break
            else:
                raise OutputError(f"cannot claim output '{self.final}'", "try again")
        except BaseException:
            os.close(fd)
            mine.unlink(missing_ok=True)
            raise
        mine.unlink(missing_ok=True)
        self.fd = fd
        self._remove_old_partials()

    def _remove_if_stale(self) -> None:
        """The temporary exists: another live job's (locked: refuse) or a dead one's."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return                             # gone meanwhile: try again
        try:
            if not _try_lock(fd):
                raise OutputError(f"another vidharm job is writing '{self.final}' right now",
                                  "wait for it to finish, or choose another output name")
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:                           # unlocked: its writer was killed
                os.unlink(self.path)
                self.removed_stale.append(str(self.path))
                log.info("removed %s, left by a run that was killed", self.path)
        finally:
            os.close(fd)

    def _remove_old_partials(self) -> None:
        for old in self.path.parent.glob(f".{_glob_escape(self.final.name)}.*"):
            if old == self.path or not old.name.endswith((".partial.mp4", ".claim")):
                continue
            try:
                fd = os.open(old, os.O_RDWR)
            except OSError:
                continue
            try:
                if _try_lock(fd):              # nobody's: a killed run's leftover
                    old.unlink(missing_ok=True)
                    self.removed_stale.append(str(old))
            finally:
                os.close(fd)

    def commit(self, overwrite: bool) -> Path:
        """Move the finished temporary onto the final name (fsync'd by the caller)."""
        if overwrite:
            os.replace(self.path, self.final)
        else:
            try:
                os.link(self.path, self.final)
            except FileExistsError:
                raise OutputError(f"output '{self.final}' appeared while this job was writing it",
                                  "another program wrote it meanwhile; use --overwrite to "
                                  "replace it, or choose another name") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                if self.final.exists():
                    raise OutputError(f"output '{self.final}' appeared while this job was "
                                      f"writing it", "use --overwrite or another name") from None
                os.replace(self.path, self.final)
            else:
                os.unlink(self.path)
        _fsync_dir(self.final.parent)
        self._close()
        return self.final

    def release(self) -> None:
        """Give the output up: delete the temporary (if still ours) and unlock."""
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover
            log.warning("could not remove temporary file %s: %s", self.path, exc)
        self._close()

    def _close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


def _glob_escape(name: str) -> str:
    import glob
    return glob.escape(name)


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it is writable, or raise :class:`OutputError`."""
    d = Path(folder) if str(folder) else Path(".")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"output folder '{d}' cannot be created: a file is in the way",
                          "choose another output location") from None
    except PermissionError:
        raise OutputError(f"output folder '{d}' cannot be created (permission denied)",
                          "choose a folder you can write to") from None
    except OSError as exc:
        raise OutputError(f"output folder '{d}' cannot be created ({exc.strerror or exc})",
                          "choose another output location") from None
    if not d.is_dir():
        raise OutputError(f"output location '{d}' is not a folder", "choose a folder")
    probe_file = d / f".vidharm-write-test-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe_file)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        raise OutputError(f"cannot write to output folder '{d}' ({reason})",
                          "choose a folder you can write to, or fix its permissions") from None
    return d


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (following links; b may not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
