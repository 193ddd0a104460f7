"""Atomic file writes: write a temporary file next to the target, then ``os.replace`` it."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_open", "new_file_mode"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def new_file_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` gives a new file: ``0o666 & ~umask``.

    For files written by other libraries with a mode of their own (``safetensors`` writes
    ``0o600``), to be set with ``os.chmod`` afterwards. The umask is read from
    ``/proc/self/status`` where there is one; elsewhere it is set and restored, which is
    visible to other threads for that instant."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file beside ``path``: ``(fd, its path)``.

    Created with mode ``0o666`` like ``open()`` does, so the process umask (and a directory's
    default ACL) applies; ``tempfile.mkstemp`` would create it ``0o600`` whatever the umask,
    and the rename would keep that."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _keep(path: Path, previous: Path) -> None:
    """Make ``previous`` a copy of ``path`` (a hard link where the file system allows) without
    a moment in which ``path`` is missing."""
    if not path.is_file():
        return
    link = previous.with_name(f".{previous.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(path, link)
    except OSError:  # no hard links here: copy
        import shutil

        shutil.copyfile(path, link)
    os.replace(link, previous)


@contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    keep_previous: str | os.PathLike[str] | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only once the block finishes without error.

    A crash or a concurrent reader never sees a partial file; the temporary file is removed
    on failure. A new file gets the permissions ``open()`` would give it (``0o666`` less the
    umask); a replaced file keeps its own.

    ``verify(tmp)`` is called on the written (and synced) temporary file before it replaces
    ``path``; it raises to abort. With ``keep_previous``, the file being replaced stays there
    (a checkpoint's previous good copy), so some readable version always exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            pass
        else:
            os.chmod(tmp, mode)
        if verify is not None:
            verify(tmp)
        if keep_previous is not None:
            _keep(path, Path(keep_previous))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
