"""Data-parallel training across processes with torch ``DistributedDataParallel``.

A crysk estimator trains data-parallel when it is fitted in every process of
an initialised default process group of more than one process (``torchrun``,
or ``torch.distributed.init_process_group`` by hand): nothing else changes
in the user's code. Every rank holds the whole training set (on its device,
or memory-mapped from a graph store and shared through the page cache),
draws the same seeded batch order, and takes its own share of each global
batch of ``world_size x batch_size`` crystals; DDP averages the gradients,
so one step follows the mean loss over the global batch, as a single
process with that batch size would. Validation and prediction run whole on
every rank (identical weights give identical results, so the best epoch is
the same everywhere), and only rank 0 writes checkpoint files.

Batch-norm layers in training mode normalise with the statistics of the
whole global batch: while a data-parallel fit runs, crysk sums each layer's
per-channel sums and squared deviations over the ranks with differentiable
all-reduces (:func:`crysk.nn.layers.normalize`; the edge convolutions do
the same inside their fused CPU kernel), so a step equals the
single-process step on the global batch within float rounding, on any
backend (gloo on CPUs included; PyTorch's ``SyncBatchNorm`` runs on GPUs
only). Running statistics then agree on every rank too; crysk still
broadcasts rank 0's buffers before each validation pass and at the end of
``fit``, so all ranks validate and predict alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_distributed", "rank", "world_size", "shard_rows", "wrap_module", "broadcast_buffers"]


def is_distributed() -> bool:
    """Whether this process belongs to an initialised process group of more than one process.

    Returns
    -------
    bool
    """
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default process group (0 without one).

    Returns
    -------
    int
    """
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the default process group (1 without one).

    Returns
    -------
    int
    """
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shard_rows(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of one global batch: contiguous, sizes differing by at most one.

    Parameters
    ----------
    rows : numpy.ndarray
        The crystals of the global batch, in batch order.
    rank, world : int
        This process's rank and the number of processes.

    Returns
    -------
    numpy.ndarray
    """
    bounds = (np.arange(world + 1) * len(rows)) // world
    return rows[bounds[rank] : bounds[rank + 1]]


def wrap_module(module: Any, device: Any) -> Any:
    """``module`` wrapped in ``DistributedDataParallel`` for training on ``device``.

    The wrapper broadcasts rank 0's weights and buffers to every rank when it
    is made and its buffers at every forward pass, and averages gradients in
    the backward pass. The estimator keeps the plain module as ``module_``
    (checkpoints keep their parameter names) and trains through the wrapper.

    Parameters
    ----------
    module : torch.nn.Module
        The network, already on ``device``.
    device : str or torch.device
        Its device: a CUDA device gets ``device_ids=[index]``.

    Returns
    -------
    torch.nn.parallel.DistributedDataParallel
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def broadcast_buffers(module: Any) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics); a collective call.

    DDP broadcasts them at the start of each training forward pass, so after
    the last step each rank holds its own update; validation and prediction
    must use the same statistics on every rank.

    Parameters
    ----------
    module : torch.nn.Module
        The plain (unwrapped) network.
    """
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
