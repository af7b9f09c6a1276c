"""How many threads torch may use during one fit or predict, restored afterwards.

torch runs its CPU kernels on an OpenMP pool sized to the physical cores.
When other processes use those cores, OpenMP threads that wait for a
descheduled sibling spin and then sleep at every parallel region, and a fit
slows down far more than the lost share of the CPU (measured on 2 cores
beside one busy process: 3.6x the idle time with 2 threads, 1.1x with 1; see
``benchmarks/contention.py``). So each fit and predict sizes the pool to the
cores that other processes leave free when it starts (its own threads do not
count against it), and gives torch's setting back afterwards.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import statistics
import time
from collections.abc import Iterator

__all__ = ["free_cores", "resolve_n_threads", "torch_threads"]

_SAMPLES = 5
_SAMPLE_GAP_S = 0.001
_CACHE_S = 0.5
_LOADAVG = "/proc/loadavg"
_cached: tuple[float, int] | None = None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _runnable_elsewhere() -> float | None:
    """Threads of other processes that are running or ready to run now (Linux), or None where unknown.

    The kernel's count of runnable threads (4th field of ``/proc/loadavg``)
    includes this process's own threads, so those in state ``R`` are
    subtracted: a process that has just trained on every core must not see
    its own recent work as a neighbour's (the 1-minute load average does, and
    made back-to-back fits on an idle machine drop to one thread). The count
    is instantaneous, so a few samples a millisecond apart are taken and the
    median kept, which ignores a neighbour's brief wake-ups.
    """
    samples = []
    try:
        for i in range(_SAMPLES):
            if i:
                time.sleep(_SAMPLE_GAP_S)
            with open(_LOADAVG) as f:
                running = int(f.read().split()[3].split("/")[0])
            samples.append(max(0, running - _own_running_threads()))
    except (OSError, ValueError, IndexError):
        return None
    return statistics.median(samples)


def _own_running_threads() -> int:
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                # The state follows the command name, which is in parentheses and may hold spaces.
                if f.read().rpartition(")")[2].split()[0] == "R":
                    count += 1
        except (OSError, IndexError):  # the thread ended between listdir and open
            continue
    return count


def free_cores() -> int:
    """Cores not used by other processes when the call is made.

    On Linux: the cores this process may use minus the threads of *other*
    processes that are running or waiting to run (the median of a few
    samples a millisecond apart, see ``/proc/loadavg``). Elsewhere: the cores
    minus the 1-minute load average. The answer is kept for half a second so
    that many short predicts do not sample each time.

    Returns
    -------
    int
        At least 1.
    """
    global _cached
    now = time.monotonic()
    if _cached is not None and now - _cached[0] < _CACHE_S:
        return _cached[1]
    busy = _runnable_elsewhere()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            busy = 0.0
    free = max(1, int(_cpu_count() - busy + 0.5))
    _cached = (now, free)
    return free


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
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        # the block may have changed it again (a fit re-checks the free cores at each epoch)
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
