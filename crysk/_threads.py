"""How many threads torch may use during one fit or predict, restored afterwards.

torch runs its CPU kernels on an OpenMP pool sized to the physical cores.
When other processes use those cores, OpenMP threads that wait for a
descheduled sibling spin and then sleep at every parallel region, and a fit
slows down far more than the lost share of the CPU (measured on 2 cores
beside one busy process: 3.6x the idle time with 2 threads, 1.1x with 1; see
``benchmarks/contention.py``). So each fit and predict sizes the pool to the
cores that are free when it starts, and gives torch's setting back afterwards.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator

__all__ = ["free_cores", "resolve_n_threads", "torch_threads"]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores() -> int:
    """Cores not used by other processes: the cores this process may use minus the 1-minute load average.

    Returns
    -------
    int
        At least 1.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return _cpu_count()
    return max(1, int(_cpu_count() - load + 0.5))


def resolve_n_threads(n_threads: int | None) -> int:
    """The torch thread count for a fit or predict.

    Parameters
    ----------
    n_threads : int or None
        A positive count is used as given (never more than torch would use
        by itself); ``-1`` means torch's own setting; ``None`` (the
        default of the estimators) takes the free cores (see
        :func:`free_cores`), at most torch's own setting.

    Returns
    -------
    int
    """
    import torch

    own = torch.get_num_threads()
    if n_threads is None:
        return max(1, min(own, free_cores()))
    if n_threads == -1:
        return own
    if not isinstance(n_threads, numbers.Integral) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, -1 (torch's setting) or None (auto), got {n_threads!r}")
    return int(n_threads)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``n``, then restore it.

    Parameters
    ----------
    n : int
        Threads for the block (as returned by :func:`resolve_n_threads`).
    """
    import torch

    previous = torch.get_num_threads()
    if n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
