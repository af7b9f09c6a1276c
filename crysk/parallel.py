"""The one "chunk -> parallel or serial -> collect" helper of crysk.

Featurizing, parsing tables and computing baseline descriptors all cut their
inputs into contiguous chunks, run the chunks in worker processes when there
are enough items to pay for the workers (joblib, so ``n_jobs`` and joblib's
backends, Dask included, work as everywhere in scikit-learn), and put the
results back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from joblib import Parallel, delayed, effective_n_jobs

__all__ = ["map_chunks"]


def map_chunks(
    func: Callable[..., Any],
    n_items: int,
    chunk_args: Callable[[int, int, bool], Sequence[Any]],
    *,
    n_jobs: int | None = None,
    min_parallel: int = 1,
    chunks_per_job: int = 4,
    max_chunk: int | None = None,
    progress: str | None = None,
    progress_chunk: int | None = None,
) -> list[Any]:
    """Run ``func`` over contiguous chunks of ``n_items`` items, in parallel when it pays.

    Parameters
    ----------
    func : callable
        Called as ``func(*chunk_args(start, stop, parallel))`` for each chunk
        ``[start, stop)``; in worker processes it must be picklable (a
        module-level function).
    n_items : int
        Number of items.
    chunk_args : callable
        ``chunk_args(start, stop, parallel)`` returns the arguments for one
        chunk; ``parallel`` says whether they travel to another process (so
        the caller can send lighter objects).
    n_jobs : int, optional
        Worker processes (joblib semantics: ``None`` is 1, ``-1`` all cores).
    min_parallel : int, default=1
        Fewer items than this run in this process: starting workers costs
        more than the work (each caller knows its cost per item).
    chunks_per_job : int, default=4
        Chunks per worker, so that uneven chunks balance out.
    max_chunk : int, optional
        Largest chunk (bounds the memory a worker returns at once).
    progress : str, optional
        Show a tqdm progress bar with this description.
    progress_chunk : int, optional
        Largest chunk when ``progress`` is set, so the bar moves.

    Returns
    -------
    list
        One result per chunk, in input order (empty for no items).
    """
    if n_items <= 0:
        return []
    jobs = effective_n_jobs(n_jobs) if n_items >= min_parallel else 1
    parallel = jobs > 1
    if parallel:
        chunk = -(-n_items // (chunks_per_job * jobs))
        if max_chunk is not None:
            chunk = min(chunk, max_chunk)
    else:
        chunk = n_items
    if progress is not None and progress_chunk is not None:
        chunk = min(chunk, progress_chunk)
    chunk = max(1, chunk)
    starts = range(0, n_items, chunk)
    if parallel:
        tasks = (delayed(func)(*chunk_args(s, min(s + chunk, n_items), True)) for s in starts)
        results = Parallel(n_jobs=jobs, return_as="generator")(tasks)
    else:
        results = (func(*chunk_args(s, min(s + chunk, n_items), False)) for s in starts)
    if progress is not None:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(starts), desc=progress, unit="chunk")
    return list(results)
