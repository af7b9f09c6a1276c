"""The memory-saving CPU training path: its private torch APIs and the per-model buffer pool.

:data:`USE_PRIVATE_APIS` is the one switch for every private torch call crysk
makes (ATen kernels through ``torch.ops.aten`` with ``out=`` buffers, and
``torch._C._storage_Use_Count``); :class:`Workspace` is the pool of per-edge
buffers each model hands from one training step to the next.
"""

from __future__ import annotations

import threading

import torch

__all__ = ["USE_PRIVATE_APIS", "Workspace", "new_empty"]


def _private_apis_available() -> bool:
    """Whether the torch internals of the memory-saving training path exist in this torch.

    The path uses ATen operators through ``torch.ops.aten`` with ``out=``
    buffers (batch norm, softplus and their backward kernels) and
    ``torch._C._storage_Use_Count`` to know when a reused buffer is free.
    None of these is a stable API; when one is missing, training takes the
    plain autograd path (same results within float rounding, more memory).
    """
    aten = torch.ops.aten
    try:
        ops = (aten.native_batch_norm, aten.native_batch_norm_backward, aten.softplus, aten.softplus_backward,
               aten.sigmoid_backward)
    except (AttributeError, RuntimeError):
        return False
    return hasattr(torch._C, "_storage_Use_Count") and all(op is not None for op in ops)


#: Checked at every use, so tests can switch to the public path. What the private path buys, measured with
#: benchmarks/train.py --n 2000 (2 cores under load 8-10, so the speeds are not comparable): peak RSS 846 MB
#: with it, 1,428 MB without (benchmarks/RESULTS.md).
USE_PRIVATE_APIS = _private_apis_available()


def _storage_refs(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


class Workspace:
    """Per-edge buffers handed from one CPU training step to the next, owned by one model.

    A training step needs about ``2 * n_conv + 2`` tensors of ``n_edges`` rows
    (tens of MB each). Freed to glibc's heap while its mmap is off (see
    ``crysk._malloc``), their blocks get split by the small allocations in
    between, and as the number of edges changes from batch to batch no hole
    fits the next large request: the heap grew to about twice the memory in
    use. Handing the same few buffers to every step keeps the large blocks
    out of the heap's churn.

    A buffer is handed out again only when nothing but the workspace refers
    to its memory, so a tensor saved for a backward pass that has not run
    (or that may run again, with ``retain_graph``) is never overwritten;
    when all fitting buffers are busy, a new one is made. Each
    :class:`~crysk.nn.GraphEncoder` owns one; copies and pickles of a model
    start with an empty one.
    """

    def __init__(self):
        self._bases: dict[tuple, list[tuple[torch.Tensor, int]]] = {}
        self._lock = threading.Lock()

    def __reduce__(self):
        # buffers are scratch memory, not state: a copy of a model gets its own, empty workspace
        return (Workspace, ())

    def __len__(self) -> int:
        return sum(len(b) for b in self._bases.values())

    def empty(
        self, rows: int, cols: int, like: torch.Tensor, dtype: torch.dtype | None = None, tag: int = 0
    ) -> torch.Tensor:
        """An uninitialised ``(rows, cols)`` tensor on ``like``'s device, of its dtype unless given.

        Requests share buffers by ``(tag, cols, dtype)``; requests whose row
        counts differ in kind (all edges, half of them) get different tags,
        so that the larger kind does not take the smaller one's buffers.

        Parameters
        ----------
        rows, cols : int
            Shape of the tensor.
        like : torch.Tensor
            Gives the device (and the dtype unless ``dtype`` is given).
        dtype : torch.dtype, optional
            The tensor's dtype.
        tag : int, default=0
            Kind of request (see above).

        Returns
        -------
        torch.Tensor
            A view of a pooled buffer on the CPU; a fresh tensor elsewhere.
        """
        dtype = like.dtype if dtype is None else dtype
        if not USE_PRIVATE_APIS or like.device.type != "cpu" or _is_compiling():
            # CUDA's caching allocator already reuses blocks
            return like.new_empty((rows, cols), dtype=dtype)
        key = (tag, cols, dtype)
        with self._lock:
            bases = self._bases.setdefault(key, [])
            best = None
            for base, idle in bases:
                if len(base) >= rows and _storage_refs(base) == idle and (best is None or len(base) < len(best)):
                    best = base
            if best is None:
                # idle buffers too small for this request have been outgrown by the batches
                bases[:] = [(b, idle) for b, idle in bases if len(b) >= rows or _storage_refs(b) != idle]
                # rounded up to a power of two, so that larger batches fit too: pages never written
                # are never resident, so the spare rows cost address space, not memory
                best = like.new_empty((1 << max(rows - 1, 1).bit_length(), cols), dtype=dtype)
                bases.append((best, _storage_refs(best)))
            return best[:rows]

    def clear(self) -> None:
        """Drop the buffers; those in use stay alive until their users let go."""
        with self._lock:
            self._bases.clear()


def new_empty(workspace: Workspace | None, rows: int, cols: int, like: torch.Tensor, dtype=None, tag: int = 0):
    """A ``(rows, cols)`` tensor from ``workspace``, or a fresh one without one.

    Parameters
    ----------
    workspace : Workspace or None
        The model's pool (None: allocate).
    rows, cols : int
        Shape of the tensor.
    like : torch.Tensor
        Gives the device (and the dtype unless ``dtype`` is given).
    dtype : torch.dtype, optional
        The tensor's dtype.
    tag : int, default=0
        Kind of request (see :meth:`Workspace.empty`).

    Returns
    -------
    torch.Tensor
        Uninitialised.
    """
    if workspace is None:
        return like.new_empty((rows, cols), dtype=like.dtype if dtype is None else dtype)
    return workspace.empty(rows, cols, like, dtype, tag)
