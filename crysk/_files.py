"""Writing files atomically with the permissions the user's umask asks for."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_open"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; rename it over ``path`` on success.

    A failure or an interruption midway leaves any previous file at ``path``
    intact and removes the temporary file. The temporary file is created with
    mode ``0o666`` filtered by the process umask, like ``open(path, "wb")``
    would: ``tempfile.mkstemp`` creates ``0o600`` files, and that mode would
    survive the rename, so a checkpoint shared on a cluster could not be read
    by the user's group.

    Parameters
    ----------
    path : str or os.PathLike
        The final file; its folder is created if missing.

    Yields
    ------
    file object
        Opened for binary writing; flushed and synced to disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # the kernel applies the umask to 0o666, as for any new file
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits collide
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
