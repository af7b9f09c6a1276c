"""Packed crystal graphs and their conversion into torch batches.

A :class:`CrystalGraphs` holds many crystals in a handful of flat arrays:

* ``atomic_numbers`` (uint8, one per atom),
* ``degrees`` (uint16, number of outgoing edges per atom),
* ``neighbors`` (int32, one per edge: the target atom, numbered inside its crystal),
* ``distances`` (float32, one per edge, in Å),
* ``atom_offsets`` (int64, ``n_crystals + 1``): crystal ``i`` owns atoms
  ``atom_offsets[i]:atom_offsets[i+1]``.

Edges are stored grouped by their source atom, in atom order, so the source
index of each edge follows from ``degrees`` and needs no storage. Atom
features and the Gaussian distance expansion are computed inside the model,
so an average Materials Project crystal (30 atoms x 12 edges) takes under 3 KB.
"""

from __future__ import annotations

import mmap as _mmap
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: featurizing never needs it
    from pathlib import Path

    import torch

__all__ = ["CrystalGraphs", "GraphTensors", "concatenate"]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for every (s, n) pair, without a loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)


def _is_mapped(array: np.ndarray) -> bool:
    """Whether ``array`` (or what it views) is a memory map."""
    while array is not None:
        if isinstance(array, (np.memmap, _mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def _torch_ranges(starts: torch.Tensor, lengths: torch.Tensor, total: int) -> torch.Tensor:
    import torch

    shift = starts - (torch.cumsum(lengths, 0) - lengths)
    return torch.repeat_interleave(shift, lengths, output_size=total) + torch.arange(
        total, device=starts.device
    )


class CrystalGraphs:
    """Crystal graphs of many structures, packed into flat arrays.

    Made by :class:`crysk.CrystalGraphFeaturizer`; rarely built by hand.
    Behaves like a 1-D array of crystals: ``len()``, integer, slice, boolean
    mask and integer-array indexing (all returning ``CrystalGraphs``),
    :func:`concatenate`, pickling, and scikit-learn's splitters
    (``train_test_split``, ``KFold``, ``cross_val_score``).

    Parameters
    ----------
    atomic_numbers : array of int, shape (n_atoms,)
        Atomic number of every atom, crystal after crystal.
    degrees : array of int, shape (n_atoms,)
        Outgoing edges per atom.
    neighbors : array of int, shape (n_edges,)
        Target atom of each edge, numbered from 0 inside its crystal; edges are
        grouped by source atom in atom order.
    distances : array of float, shape (n_edges,)
        Edge lengths in Å.
    atom_offsets : array of int, shape (n_crystals + 1,)
        Where each crystal's atoms start (``n_crystals + 1`` entries, the last is the total).
    settings : mapping
        Featurizer settings the graphs were made with (``radius``,
        ``max_num_nbr``, ``element_table``); models refuse graphs made with
        other settings.
    ids : sequence, optional
        One identifier per crystal, carried along through indexing and used
        in error messages.
    """

    def __init__(
        self,
        atomic_numbers: np.ndarray,
        degrees: np.ndarray,
        neighbors: np.ndarray,
        distances: np.ndarray,
        atom_offsets: np.ndarray,
        settings: Mapping[str, Any],
        ids: Sequence | None = None,
    ):
        self.atomic_numbers = np.ascontiguousarray(atomic_numbers, dtype=np.uint8)
        self.degrees = np.ascontiguousarray(degrees, dtype=np.uint16)
        self.neighbors = np.ascontiguousarray(neighbors, dtype=np.int32)
        self.distances = np.ascontiguousarray(distances, dtype=np.float32)
        self.atom_offsets = np.ascontiguousarray(atom_offsets, dtype=np.int64)
        self.settings = dict(settings)
        self.ids = None if ids is None else np.asarray(ids, dtype=object)
        n = len(self.atom_offsets) - 1
        if n < 0 or self.atom_offsets[0] != 0 or self.atom_offsets[-1] != len(self.atomic_numbers):
            raise ValueError("atom_offsets must start at 0 and end at the number of atoms")
        if len(self.degrees) != len(self.atomic_numbers):
            raise ValueError("degrees must have one entry per atom")
        if int(self.degrees.sum(dtype=np.int64)) != len(self.neighbors) or len(self.neighbors) != len(
            self.distances
        ):
            raise ValueError("degrees must sum to the number of edges, one neighbour and distance each")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"got {len(self.ids)} ids for {n} crystals")
        self._edge_offsets = None

    # -- sizes -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.atom_offsets) - 1

    @property
    def shape(self) -> tuple[int]:
        """``(n_crystals,)``, so scikit-learn treats the container as an array."""
        return (len(self),)

    @property
    def ndim(self) -> int:
        """Always 1."""
        return 1

    @property
    def n_atoms(self) -> np.ndarray:
        """Number of atoms of each crystal."""
        return np.diff(self.atom_offsets)

    @property
    def edge_offsets(self) -> np.ndarray:
        """``(n_crystals + 1,)`` offsets of each crystal's edges."""
        if self._edge_offsets is None:
            atom_edge = np.zeros(len(self.atomic_numbers) + 1, dtype=np.int64)
            np.cumsum(self.degrees, out=atom_edge[1:])
            self._edge_offsets = atom_edge[self.atom_offsets]
        return self._edge_offsets

    @property
    def n_edges(self) -> np.ndarray:
        """Number of edges of each crystal."""
        return np.diff(self.edge_offsets)

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed arrays."""
        return sum(
            a.nbytes
            for a in (self.atomic_numbers, self.degrees, self.neighbors, self.distances, self.atom_offsets)
        )

    def __repr__(self) -> str:
        return (
            f"CrystalGraphs(n_crystals={len(self)}, n_atoms={len(self.atomic_numbers)}, "
            f"n_edges={len(self.neighbors)}, settings={self.settings})"
        )

    # -- indexing ----------------------------------------------------------------
    def _normalize_key(self, key) -> np.ndarray | slice:
        if isinstance(key, tuple):
            # scikit-learn's _safe_indexing calls X[key, ...]
            rest = [k for k in key[1:] if k is not Ellipsis]
            if len(key) < 1 or rest:
                raise IndexError("CrystalGraphs is 1-D: index it with one key")
            key = key[0]
        n = len(self)
        if isinstance(key, numbers.Integral):
            k = int(key)
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of range for {n} crystals")
            return np.array([k % n], dtype=np.int64)
        if isinstance(key, slice):
            return key
        arr = np.asarray(key)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"boolean mask of shape {arr.shape} does not match {n} crystals")
            return np.flatnonzero(arr)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise IndexError(f"cannot index CrystalGraphs with {arr.dtype} values")
        arr = arr.astype(np.int64).ravel()
        if arr.min() < -n or arr.max() >= n:
            raise IndexError(f"index out of range for {n} crystals")
        return np.where(arr < 0, arr + n, arr)

    def __getitem__(self, key) -> "CrystalGraphs":
        key = self._normalize_key(key)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                stop = max(start, stop)
                a0, a1 = self.atom_offsets[start], self.atom_offsets[stop]
                e0, e1 = self.edge_offsets[start], self.edge_offsets[stop]
                out = CrystalGraphs(
                    self.atomic_numbers[a0:a1],
                    self.degrees[a0:a1],
                    self.neighbors[e0:e1],
                    self.distances[e0:e1],
                    self.atom_offsets[start : stop + 1] - a0,
                    self.settings,
                    None if self.ids is None else self.ids[start:stop],
                )
                # known already: recomputing it would read every degree (all of a memory map)
                out._edge_offsets = self.edge_offsets[start : stop + 1] - e0
                return out
            key = np.arange(start, stop, step, dtype=np.int64)
        return self.take(key)

    def take(self, indices: np.ndarray) -> "CrystalGraphs":
        """Select crystals by position.

        Parameters
        ----------
        indices : array of int
            Positions (or a boolean mask) of the crystals to keep.

        Returns
        -------
        CrystalGraphs
        """
        idx = np.asarray(indices, dtype=np.int64)
        n_atoms = self.n_atoms[idx]
        atom_idx = _ranges(self.atom_offsets[idx], n_atoms)
        edge_idx = _ranges(self.edge_offsets[idx], self.n_edges[idx])
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(n_atoms, out=offsets[1:])
        return CrystalGraphs(
            self.atomic_numbers[atom_idx],
            self.degrees[atom_idx],
            self.neighbors[edge_idx],
            self.distances[edge_idx],
            offsets,
            self.settings,
            None if self.ids is None else self.ids[idx],
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- pickling: drop the derived cache -------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_edge_offsets"] = None
        return state

    # -- files -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> "Path":
        """Write the graphs to disk (numpy arrays only, never pickled objects).

        A path ending in ``.npz`` gets one numpy ``.npz`` file (compact, read
        whole). Any other path becomes a **graph store**: a directory of
        ``.npy`` files and a ``header.json`` with the format version and the
        featurizer settings (described in :mod:`crysk.store`), which
        :meth:`load` can memory-map. Both round-trip bit for bit.

        Parameters
        ----------
        path : str or os.PathLike
            Written atomically, with the umask's permissions. An existing
            store at ``path`` is replaced.

        Returns
        -------
        pathlib.Path
        """
        from pathlib import Path

        path = Path(path)
        if path.suffix.lower() != ".npz":
            from .store import write_store

            return write_store(self, path)
        import json

        from ._files import atomic_open

        arrays = {
            "atomic_numbers": self.atomic_numbers, "degrees": self.degrees, "neighbors": self.neighbors,
            "distances": self.distances, "atom_offsets": self.atom_offsets,
            "settings": np.array(json.dumps(self.settings)),
        }
        if self.ids is not None:
            ids = list(self.ids)
            # ids keep their type when they are all integers; anything else is stored as text
            numeric = all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids)
            arrays["ids"] = np.array(ids, dtype=np.int64) if numeric else np.array([str(i) for i in ids], dtype=str)
        with atomic_open(path) as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, mmap: bool = True, expected_settings: Mapping[str, Any] | None = None
    ) -> "CrystalGraphs":
        """Read graphs written by :meth:`save` (never unpickles objects).

        Parameters
        ----------
        path : str or os.PathLike
            A graph-store directory or a ``.npz`` file.
        mmap : bool, default=True
            For a graph store: memory-map the arrays read-only instead of
            reading them, so only the offsets and ids take memory and
            training gathers each batch from the map. A ``.npz`` file is
            always read whole.
        expected_settings : mapping, optional
            Featurizer settings the graphs must have (e.g.
            ``CrystalGraphFeaturizer().settings``); a mismatch raises.

        Returns
        -------
        CrystalGraphs

        Raises
        ------
        ValueError
            If the path is not a graphs file or store written by
            :meth:`save`, is of a newer format version, is damaged, or holds
            graphs made with other settings than ``expected_settings``.
        """
        import json
        import os
        import zipfile

        if os.path.isdir(path):
            from .store import read_arrays

            arrays, header = read_arrays(path, mmap=mmap, expected_settings=expected_settings)
            ids = arrays.get("ids")
            graphs = cls(
                *(arrays[k] for k in ("atomic_numbers", "degrees", "neighbors", "distances", "atom_offsets")),
                header["settings"],
                None if ids is None else ids.tolist(),
            )
            # derived, but on disk: computing it would read every atom's degree
            graphs._edge_offsets = np.asarray(arrays["edge_offsets"])
            return graphs
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{str(path)!r} is not a crystal graphs file written by CrystalGraphs.save ({exc})") from exc
        needed = ("atomic_numbers", "degrees", "neighbors", "distances", "atom_offsets", "settings")
        missing = [k for k in needed if k not in arrays]
        if missing:
            raise ValueError(f"{str(path)!r} is not a crystal graphs file written by CrystalGraphs.save (no {missing})")
        ids = arrays.get("ids")
        graphs = cls(
            *(arrays[k] for k in needed[:5]),
            json.loads(str(arrays["settings"])),
            None if ids is None else ids.tolist(),
        )
        if expected_settings is not None:
            from .store import settings_differences

            diffs = settings_differences(graphs.settings, dict(expected_settings))
            if diffs:
                raise ValueError(f"the graphs in {str(path)!r} were made with other settings: {', '.join(diffs)}")
        return graphs

    @property
    def is_mapped(self) -> bool:
        """Whether the atom and edge arrays are memory-mapped from a graph store (not in memory)."""
        return _is_mapped(self.neighbors) or _is_mapped(self.distances)

    # -- per-crystal views ---------------------------------------------------------
    def element_counts(self) -> list[dict[int, int]]:
        """Atoms of each element in each crystal (its composition), as ``{Z: count}``.

        Returns
        -------
        list of dict
            One dict per crystal, keys in increasing atomic number.
        """
        out = []
        for i in range(len(self)):
            counts = np.bincount(self.atomic_numbers[self.atom_offsets[i] : self.atom_offsets[i + 1]])
            out.append({int(z): int(counts[z]) for z in np.flatnonzero(counts)})
        return out

    def graph(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of one crystal, with explicit edge sources.

        Parameters
        ----------
        i : int
            Position of the crystal.

        Returns
        -------
        dict
            ``atomic_numbers``, ``source``, ``target`` and ``distances``, all
            numbered inside the crystal.
        """
        a0, a1 = self.atom_offsets[i], self.atom_offsets[i + 1]
        e0, e1 = self.edge_offsets[i], self.edge_offsets[i + 1]
        deg = self.degrees[a0:a1].astype(np.int64)
        return {
            "atomic_numbers": self.atomic_numbers[a0:a1].astype(np.int64),
            "source": np.repeat(np.arange(a1 - a0), deg),
            "target": self.neighbors[e0:e1].astype(np.int64),
            "distances": self.distances[e0:e1],
        }

    def to_tensors(self, device: str | torch.device = "cpu") -> "GraphTensors":
        """Move the packed arrays to ``device`` once, for fast batching.

        Parameters
        ----------
        device : str or torch.device, default="cpu"
            Torch device to move the arrays to.

        Returns
        -------
        GraphTensors
        """
        return GraphTensors(self, device)

    def batch(self, indices=None, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Turn a selection of crystals into one batch of torch tensors.

        Parameters
        ----------
        indices : array of int, optional
            Crystals to include (default: all).
        device : str or torch.device, default="cpu"
            Torch device of the tensors.

        Returns
        -------
        dict of torch.Tensor
            See :meth:`GraphTensors.batch`.
        """
        graphs = self if indices is None else self.take(indices)
        return graphs.to_tensors(device).batch(None)


def concatenate(parts: Sequence[CrystalGraphs]) -> CrystalGraphs:
    """Join several ``CrystalGraphs`` made with the same settings.

    Parameters
    ----------
    parts : sequence of CrystalGraphs
        Graphs made with the same settings.

    Returns
    -------
    CrystalGraphs
    """
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to concatenate")
    settings = parts[0].settings
    for p in parts[1:]:
        if p.settings != settings:
            raise ValueError(f"cannot join graphs made with different settings: {settings} vs {p.settings}")
    sizes = np.array([len(p.atomic_numbers) for p in parts], dtype=np.int64)
    shifts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = np.concatenate([[0]] + [p.atom_offsets[1:] + s for p, s in zip(parts, shifts)])
    has_ids = [p.ids is not None for p in parts]
    ids = None
    if any(has_ids):
        ids = np.concatenate([p.ids if p.ids is not None else np.full(len(p), None, object) for p in parts])
    return CrystalGraphs(
        np.concatenate([p.atomic_numbers for p in parts]),
        np.concatenate([p.degrees for p in parts]),
        np.concatenate([p.neighbors for p in parts]),
        np.concatenate([p.distances for p in parts]),
        offsets,
        settings,
        ids,
    )


def _tensor(array: np.ndarray, device: torch.device, dtype=None) -> torch.Tensor:
    import torch

    """``array`` as a tensor on ``device``, sharing its memory on the CPU when the dtype allows."""
    array = array if dtype is None else array.astype(dtype, copy=False)
    if device.type == "cpu" and array.flags.writeable:
        return torch.from_numpy(array)
    return torch.tensor(array, device=device)


class GraphTensors:
    """The arrays of a :class:`CrystalGraphs` as torch tensors on one device.

    Batches are gathered with a few vectorised index operations on the device,
    with no per-crystal Python loop. The arrays keep their compact dtypes
    (indices are widened per batch), and on the CPU they share memory with
    the ``CrystalGraphs``, so the training set is not held twice.

    Graphs memory-mapped from a graph store (``CrystalGraphs.load(path,
    mmap=True)``) are not moved: only the per-crystal offsets are, and each
    batch is gathered from the map on the host (reading just its pages) and
    sent to the device. Memory then stays at a batch plus what the page
    cache holds, whatever the size of the store.

    Parameters
    ----------
    graphs : CrystalGraphs
        The crystals to move.
    device : str or torch.device
        Torch device to hold them.
    resident : bool, optional
        Hold the atoms and edges on the device (True) or gather each batch
        from the host arrays (False). Default: resident unless the graphs
        are memory-mapped.
    """

    def __init__(self, graphs: CrystalGraphs, device: str | torch.device = "cpu", resident: bool | None = None):
        import torch

        dev = torch.device(device)
        self.device = dev
        self.n_crystals = len(graphs)
        self.resident = (not graphs.is_mapped) if resident is None else bool(resident)
        # host copies of the sizes give output sizes without a device sync
        self._n_atoms_host = graphs.n_atoms
        self._n_edges_host = graphs.n_edges
        if not self.resident:
            self._graphs = graphs
            return
        self.atomic_numbers = _tensor(graphs.atomic_numbers, dev)
        self.degrees = _tensor(graphs.degrees, dev, np.int32)  # uint16 has no repeat_interleave
        self.neighbors = _tensor(graphs.neighbors, dev)
        self.distances = _tensor(graphs.distances, dev)
        self.atom_offsets = _tensor(graphs.atom_offsets, dev)
        self.edge_offsets = _tensor(graphs.edge_offsets, dev)
        self.n_atoms = self.atom_offsets[1:] - self.atom_offsets[:-1]
        self.n_edges = self.edge_offsets[1:] - self.edge_offsets[:-1]

    def __len__(self) -> int:
        return self.n_crystals

    def _gather_host(self, indices) -> tuple:
        """A batch's arrays gathered from the host (memory-mapped) graphs, then moved to the device."""
        import torch

        g = self._graphs
        if indices is None:
            idx_host = np.arange(self.n_crystals, dtype=np.int64)
        else:
            idx_host = np.asarray(indices, dtype=np.int64)
        n_atoms = self._n_atoms_host[idx_host]
        n_edges = self._n_edges_host[idx_host]
        atom_idx = _ranges(g.atom_offsets[idx_host], n_atoms)
        edge_idx = _ranges(g.edge_offsets[idx_host], n_edges)
        dev = self.device
        return (
            torch.from_numpy(g.atomic_numbers[atom_idx]).to(dev),
            torch.from_numpy(g.degrees[atom_idx].astype(np.int32)).to(dev),
            torch.from_numpy(g.neighbors[edge_idx]).to(dev),
            torch.from_numpy(g.distances[edge_idx]).to(dev),
            torch.from_numpy(n_atoms).to(dev),
            torch.from_numpy(n_edges).to(dev),
            int(n_atoms.sum()),
            int(n_edges.sum()),
        )

    def batch(self, indices=None) -> dict[str, torch.Tensor]:
        """Gather crystals into one disjoint-union graph.

        Parameters
        ----------
        indices : array-like of int, optional
            Crystals to gather, in order (default: all).

        Returns
        -------
        dict of torch.Tensor
            ``atomic_numbers`` (n_atoms,), ``edge_src`` and ``edge_dst``
            (n_edges,) numbered inside the batch, ``distances`` (n_edges,),
            ``crystal_index`` (n_atoms,) giving each atom's crystal in the
            batch, and ``n_atoms`` (n_crystals,).
        """
        import torch

        if not self.resident:
            atoms, deg, nbr, dist, n_atoms, n_edges, total_atoms, total_edges = self._gather_host(indices)
        elif indices is None:
            atoms = self.atomic_numbers
            deg = self.degrees
            nbr = self.neighbors
            dist = self.distances
            n_atoms = self.n_atoms
            n_edges = self.n_edges
            total_atoms, total_edges = len(atoms), len(nbr)
        else:
            idx_host = np.asarray(indices, dtype=np.int64)
            total_atoms = int(self._n_atoms_host[idx_host].sum())
            total_edges = int(self._n_edges_host[idx_host].sum())
            idx = torch.as_tensor(idx_host, device=self.device)
            n_atoms = self.n_atoms[idx]
            n_edges = self.n_edges[idx]
            atom_idx = _torch_ranges(self.atom_offsets[idx], n_atoms, total_atoms)
            edge_idx = _torch_ranges(self.edge_offsets[idx], n_edges, total_edges)
            atoms = self.atomic_numbers[atom_idx]
            deg = self.degrees[atom_idx]
            nbr = self.neighbors[edge_idx]
            dist = self.distances[edge_idx]
        n_crystals = len(n_atoms)
        arange_atoms = torch.arange(total_atoms, device=self.device)
        edge_src = torch.repeat_interleave(arange_atoms, deg, output_size=total_edges)
        first_atom = torch.cumsum(n_atoms, 0) - n_atoms
        edge_dst = nbr + torch.repeat_interleave(first_atom, n_edges, output_size=total_edges)
        crystal_index = torch.repeat_interleave(
            torch.arange(n_crystals, device=self.device), n_atoms, output_size=total_atoms
        )
        return {
            "atomic_numbers": atoms.long(),
            "edge_src": edge_src,
            "edge_dst": edge_dst,
            "distances": dist,
            "crystal_index": crystal_index,
            "n_atoms": n_atoms,
        }
