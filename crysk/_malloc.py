"""Keep freed memory inside the process on glibc while a CPU fit runs, and give it back afterwards.

A CGCNN step on the CPU allocates and frees large (>32 MB) per-edge tensors.
glibc serves each from a fresh ``mmap`` and returns it on free, so every step
page-faults and zero-fills them again. Telling malloc not to use ``mmap`` and
not to trim the heap lets those blocks be reused (the figures are in
``benchmarks/RESULTS.md``, measured with ``benchmarks/train.py``).

The settings are process-wide, so :func:`malloc_tuning` applies them only
while training runs and then restores glibc's values and hands the memory
kept meanwhile back to the system. glibc has no call that reads the current
settings: "restore" means the values from ``GLIBC_TUNABLES``/``MALLOC_*_``
environment variables, else glibc's defaults. One glibc behaviour cannot be
restored: after any ``mallopt`` of these settings, glibc stops growing its
mmap threshold by itself (it stays where it was, 128 KiB unless it grew).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["malloc_tuning"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc's defaults (malloc.c: DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_libc = None
_lock = threading.Lock()
_depth = 0  # fits in progress (threads, nested calls): the outermost one applies and restores


def _glibc():
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            libc = False
        _libc = libc
    return _libc


def _configured(tunable: str, env: str, default: int) -> int:
    """The value glibc started with: ``GLIBC_TUNABLES``, then the ``MALLOC_*_`` variable, then the default."""
    for item in os.environ.get("GLIBC_TUNABLES", "").replace(":", " ").split():
        key, _, value = item.partition("=")
        if key == f"glibc.malloc.{tunable}":
            try:
                return int(value, 0)
            except ValueError:
                break
    try:
        return int(os.environ[env], 0)
    except (KeyError, ValueError):
        return default


@contextlib.contextmanager
def malloc_tuning(enabled: bool = True) -> Iterator[bool]:
    """Keep freed memory in the process while the block runs (glibc Linux only).

    On entry, memory freed before (e.g. by featurizing) is returned to the
    system, ``mmap`` is switched off and heap trimming postponed; on exit
    the start-up values are restored and the memory kept meanwhile is
    returned. Calls may nest and run in several threads: the first entry
    applies the settings, the last exit restores them.

    Parameters
    ----------
    enabled : bool, default=True
        False makes this a no-op (the estimators' ``malloc_tuning=False``).

    Yields
    ------
    bool
        Whether the settings are in force.
    """
    global _depth
    libc = _glibc() if enabled and sys.platform.startswith("linux") else False
    if not libc:
        yield False
        return
    with _lock:
        if _depth == 0:
            libc.malloc_trim(0)
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _configured("mmap_max", "MALLOC_MMAP_MAX_", _DEFAULT_MMAP_MAX))
                libc.mallopt(
                    _M_TRIM_THRESHOLD,
                    _configured("trim_threshold", "MALLOC_TRIM_THRESHOLD_", _DEFAULT_TRIM_THRESHOLD),
                )
                libc.malloc_trim(0)
