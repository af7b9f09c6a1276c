"""Data plumbing between packed graphs and skorch's training loop.

The whole training set lives on the device as one :class:`~crysk.graphs.GraphTensors`;
a batch is a handful of vectorised gathers on it, with no per-crystal Python
loop and no DataLoader worker processes.
"""

from __future__ import annotations

import numpy as np
import torch

from typing import Any

from ..graphs import CrystalGraphs, GraphTensors

__all__ = ["GraphBatch", "GraphDataset", "GraphBatchIterator", "GraphDataMixin", "as_graph_dataset", "auto_batch_size"]

#: ``batch_size="auto"`` aims at about this many optimiser steps per epoch
AUTO_STEPS_PER_EPOCH = 32
#: and never goes below this batch size (smaller batches give noisy batch-norm statistics and slow CPU epochs)
AUTO_MIN_BATCH = 16


def auto_batch_size(n_train: int, cap: int) -> int:
    """The batch size ``batch_size="auto"`` gives for ``n_train`` training crystals.

    The power of two nearest to ``n_train / 32`` (about 32 optimiser steps
    per epoch), at least 16 and at most ``cap`` (the paper's batch size):
    16 up to ~700 crystals, 32 at 1,000, 128 at 4,000, and the paper's
    setting (256 for CGCNN, 512 for CrysXPP and CrysAE) from ~6,000 / ~12,000
    crystals on. With a fixed large batch a few hundred crystals give one or
    two steps per epoch, too few for SGD to get anywhere in a normal number
    of epochs (learning curve in ``benchmarks/RESULTS.md``).

    Parameters
    ----------
    n_train : int
        Crystals in the training set (the validation part excluded).
    cap : int
        The largest batch size to return.

    Returns
    -------
    int
    """
    if n_train <= 0:
        return max(1, min(AUTO_MIN_BATCH, cap))
    size = 2 ** int(round(np.log2(max(n_train / AUTO_STEPS_PER_EPOCH, 1.0))))
    return int(min(max(size, AUTO_MIN_BATCH), cap))


class GraphBatch:
    """One batch of crystals as a dict of tensors (see ``GraphTensors.batch``).

    A thin wrapper so that skorch counts crystals (``len``) instead of trying
    to line up tensors of different lengths.

    Parameters
    ----------
    tensors : dict of torch.Tensor
        The batch's tensors, as made by ``GraphTensors.batch``.
    """

    __slots__ = ("tensors",)

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["n_atoms"])


class GraphDataset(torch.utils.data.Dataset):
    """Crystals (as device tensors) and optional targets, restricted to some rows.

    Parameters
    ----------
    tensors : GraphTensors
        All crystals, already on the device.
    y : torch.Tensor of shape (n_crystals, n_outputs), optional
        Scaled targets on the same device.
    indices : numpy.ndarray of int, optional
        The crystals this dataset covers (default: all).
    """

    def __init__(self, tensors: GraphTensors, y: torch.Tensor | None = None, indices: np.ndarray | None = None):
        self.tensors = tensors
        self.y = y
        self.indices = np.arange(len(tensors)) if indices is None else np.asarray(indices, dtype=np.int64)

    @classmethod
    def from_graphs(cls, graphs: CrystalGraphs, y: np.ndarray | None, device) -> "GraphDataset":
        """Move graphs (and targets) to ``device`` once.

        Integer targets (class indices) stay integers, as losses over classes
        need; any other targets become float32.
        """
        y_t = None
        if y is not None:
            y = np.asarray(y)
            dtype = np.int64 if np.issubdtype(y.dtype, np.integer) else np.float32
            y_t = torch.as_tensor(y.astype(dtype, copy=False), device=device)
        return cls(graphs.to_tensors(device), y_t)

    def subset(self, indices: np.ndarray) -> "GraphDataset":
        """The rows ``indices`` (positions within this dataset).

        Parameters
        ----------
        indices : numpy.ndarray of int
            Positions within this dataset.
        """
        return GraphDataset(self.tensors, self.y, self.indices[np.asarray(indices, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.batch(np.atleast_1d(i))

    def batch(self, positions: np.ndarray) -> tuple[GraphBatch, torch.Tensor | None]:
        """Gather the crystals at ``positions`` (within this dataset) and their targets.

        Parameters
        ----------
        positions : numpy.ndarray of int
            Positions within this dataset.
        """
        rows = self.indices[positions]
        xb = GraphBatch(self.tensors.batch(rows))
        yb = None
        if self.y is not None:
            yb = self.y.index_select(0, torch.as_tensor(rows, device=self.y.device))
        return xb, yb


class GraphBatchIterator:
    """Iterate over a :class:`GraphDataset` in batches, shuffling if asked.

    Used by the estimators as skorch's ``iterator_train``/``iterator_valid``.

    Parameters
    ----------
    dataset : GraphDataset
        The crystals to iterate over.
    batch_size : int
        Crystals per batch (the last batch may be smaller).
    shuffle : bool, default=False
        Draw a new order for every pass (training) or keep the dataset's order.
    generator : numpy.random.Generator, optional
        Source of the shuffling order (for repeatable runs).
    shard : tuple of int, optional
        ``(rank, world_size)`` for data-parallel training: ``batch_size`` is
        then the global batch, every rank draws the same order and gets its
        share of each batch (see :func:`crysk.distributed.shard_rows`); a
        last batch smaller than ``world_size`` is dropped, so that every rank
        takes the same number of steps.
    """

    def __init__(self, dataset: GraphDataset, batch_size: int, shuffle: bool = False, generator=None, shard=None):
        self.dataset = dataset
        self.batch_size = max(1, int(batch_size))
        self.shuffle = shuffle
        self.generator = generator if generator is not None else np.random.default_rng()
        self.shard = shard

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.shard is not None:
            world = self.shard[1]
            return n // self.batch_size + (n % self.batch_size >= world)
        return -(-n // self.batch_size)

    def __iter__(self):
        from ..distributed import shard_rows

        n = len(self.dataset)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            rows = order[start : start + self.batch_size]
            if self.shard is not None:
                rank, world = self.shard
                if len(rows) < world:
                    break  # some rank would get nothing: every rank must step together
                rows = shard_rows(rows, rank, world)
            yield self.dataset.batch(rows)


def as_graph_dataset(dataset) -> GraphDataset:
    """A :class:`GraphDataset` for ``dataset``, which may be a torch ``Subset`` of one.

    skorch's ``train_split`` helpers (``ValidSplit``, ``predefined_split``)
    return ``torch.utils.data.Subset`` objects; batching needs the rows.

    Parameters
    ----------
    dataset : GraphDataset or torch.utils.data.Subset
        What skorch or a ``train_split`` hands over.

    Returns
    -------
    GraphDataset

    Raises
    ------
    TypeError
        For any other dataset.
    """
    if isinstance(dataset, GraphDataset):
        return dataset
    if isinstance(dataset, torch.utils.data.Subset):
        return as_graph_dataset(dataset.dataset).subset(np.asarray(dataset.indices, dtype=np.int64))
    raise TypeError(
        f"crysk estimators train on GraphDataset objects (made by get_dataset), got {type(dataset).__name__}; "
        "a train_split must return subsets of the dataset it is given"
    )


def _stratified_pick(labels: np.ndarray, n_pick: int, rng: np.random.Generator) -> np.ndarray:
    """``n_pick`` positions, each class represented in proportion to its size (sorted positions).

    Every class gets ``round(n_pick * share)`` picks by largest remainders, and
    never all of its members, so the training set keeps each class too.
    """
    classes, index = np.unique(labels, return_inverse=True)
    counts = np.bincount(index)
    quota = n_pick * counts / len(labels)
    take = np.floor(quota).astype(int)
    for k in np.argsort(-(quota - take))[: n_pick - take.sum()]:
        take[k] += 1
    take = np.minimum(take, counts - 1)
    picked = [rng.permutation(np.flatnonzero(index == k))[: take[k]] for k in range(len(classes))]
    return np.sort(np.concatenate(picked))


class GraphDataMixin:
    """skorch's data hooks for packed crystal graphs (put it before ``NeuralNet`` in the bases).

    Datasets are device-resident :class:`GraphDataset` objects, batches are
    gathered from them (training batches in a seeded order), and the
    validation set comes from the fit parameters, ``train_split`` or
    ``validation_fraction``. The host class provides ``_shuffle_rng`` (set in
    ``initialize``), ``_seeds()`` and the skorch/crysk parameters read here.
    """

    #: the largest batch ``batch_size="auto"`` picks: the paper's batch size of the model
    _auto_batch_cap = 256

    def get_dataset(self, X: Any, y: Any = None) -> GraphDataset:
        """Wrap graphs (already featurized) into a device-resident dataset.

        Parameters
        ----------
        X : CrystalGraphs or GraphDataset
            Featurized crystals (or an already built dataset, returned as is).
        y : numpy.ndarray, optional
            Scaled targets.

        Returns
        -------
        GraphDataset
        """
        if isinstance(X, GraphDataset):
            return X
        return GraphDataset.from_graphs(X, y, self.device)

    def get_split_datasets(
        self, X: Any, y: Any = None, X_valid: Any = None, y_valid: Any = None, **fit_params: Any
    ) -> tuple[GraphDataset, GraphDataset | None]:
        """Training and validation datasets.

        The validation set is, in this order: ``X_valid``/``y_valid`` given to
        ``fit`` or ``partial_fit``; what ``train_split`` returns, if set;
        else a seeded ``validation_fraction`` of ``X`` (stratified by class
        for classifiers, which set ``_stratified_split``).

        Parameters
        ----------
        X : CrystalGraphs or GraphDataset
            Featurized crystals (or an already built dataset).
        y : numpy.ndarray, optional
            Scaled targets.
        X_valid : CrystalGraphs or GraphDataset, optional
            Featurized validation crystals given to ``fit``/``partial_fit``.
        y_valid : numpy.ndarray, optional
            Scaled validation targets.
        **fit_params
            Passed to ``train_split``.

        Returns
        -------
        dataset_train, dataset_valid : GraphDataset, GraphDataset or None
        """
        dataset = self.get_dataset(X, y)
        if X_valid is not None:
            return dataset, self.get_dataset(X_valid, y_valid)
        if self.train_split is not None:
            fit_params.pop("_routing_method", None)
            train, valid = self.train_split(dataset, y, **fit_params)
            return as_graph_dataset(train), None if valid is None else as_graph_dataset(valid)
        vf = self.validation_fraction
        n = len(dataset)
        n_valid = int(round(n * vf)) if vf else 0
        if n_valid == 0:
            return dataset, None
        if n - n_valid < 1:
            raise ValueError(f"validation_fraction={vf} leaves no training crystals out of {n}")
        rng = np.random.default_rng(int(self._seeds()[1]))
        if getattr(self, "_stratified_split", False) and y is not None:
            valid = _stratified_pick(np.asarray(y), n_valid, rng)
            return dataset.subset(np.setdiff1d(np.arange(n), valid)), dataset.subset(valid)
        order = rng.permutation(n)
        return dataset.subset(np.sort(order[n_valid:])), dataset.subset(np.sort(order[:n_valid]))

    def get_iterator(self, dataset: Any, training: bool = False) -> GraphBatchIterator:
        """Batches gathered on the device; training batches are shuffled with the seeded RNG.

        Parameters
        ----------
        dataset : GraphDataset (or a torch ``Subset`` of one)
            The crystals to iterate over.
        training : bool, default=False
            Shuffle with the seeded generator (training) or keep the order.

        Returns
        -------
        GraphBatchIterator
        """
        dataset = as_graph_dataset(dataset)
        if self.batch_size == -1:
            batch_size = len(dataset)
        elif self.batch_size == "auto":
            # resolved on the training set at each fit (batch_size_); evaluation reuses it, since any batch
            # size gives the same outputs in evaluation mode
            resolved = getattr(self, "batch_size_", None)
            if training or resolved is None:
                resolved = auto_batch_size(len(dataset), self._auto_batch_cap)
            batch_size = resolved
        else:
            batch_size = self.batch_size
        if training:
            self.batch_size_ = batch_size
            ddp = getattr(self, "_ddp", None)
            if ddp is not None:
                # data-parallel: batch_size crystals per rank, each rank its share of the global batch
                from ..distributed import rank, world_size

                world = world_size()
                return GraphBatchIterator(
                    dataset, batch_size * world, shuffle=True, generator=self._shuffle_rng, shard=(rank(), world)
                )
            return GraphBatchIterator(dataset, batch_size, shuffle=True, generator=self._shuffle_rng)
        if getattr(self, "_ddp", None) is not None:
            from ..distributed import broadcast_buffers

            broadcast_buffers(self.module_)  # every rank validates with the same running statistics
        return GraphBatchIterator(dataset, batch_size, shuffle=False)

    def infer(self, x: Any, **fit_params: Any) -> Any:
        """Run the module on a :class:`GraphBatch`.

        Parameters
        ----------
        x : GraphBatch
            One batch of crystals.
        **fit_params
            The validation set (``X_valid``/``y_valid``) travels with skorch's
            fit parameters and is not the module's business.

        Returns
        -------
        torch.Tensor or tuple of torch.Tensor
        """
        if isinstance(x, GraphBatch):
            return self._forward_module()(**x.tensors)
        return super().infer(x, **fit_params)

    def _forward_module(self) -> Any:
        """What runs a batch: the DDP wrapper while training data-parallel, the compiled module with
        ``compile=True``, else the module."""
        ddp = getattr(self, "_ddp", None)
        if ddp is not None and self.module_.training:
            return ddp
        if getattr(self, "compile", False):
            compiled = self.__dict__.get("_compiled")
            if compiled is None or compiled[0] is not self.module_:
                import torch

                # dynamic shapes: every batch has other numbers of atoms and edges, and compiling once per
                # shape would recompile at nearly every step. compile__* parameters override the defaults
                options = {"dynamic": True, **self.get_params_for("compile")}
                compiled = (self.module_, torch.compile(self.module_, **options))
                # kept outside skorch's module registry (and out of pickles, see CrystalNet.__getstate__): the
                # compiled wrapper shares module_'s parameters, and checkpoints keep module_'s names
                self.__dict__["_compiled"] = compiled
            return compiled[1]
        return self.module_

    def check_data(self, X: Any, y: Any) -> None:
        """Nothing to do: ``fit`` checks inputs and targets before featurizing.

        Parameters
        ----------
        X, y : ignored
            Ignored.
        """

