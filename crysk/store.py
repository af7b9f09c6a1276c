"""Crystal graphs on disk: the graph-store format and featurizing straight to it.

A **graph store** is a directory::

    header.json          format name and version, sizes, featurizer settings, array list
    atomic_numbers.npy   uint8   (n_atoms,)
    degrees.npy          uint16  (n_atoms,)
    neighbors.npy        int32   (n_edges,)
    distances.npy        float32 (n_edges,)
    atom_offsets.npy     int64   (n_crystals + 1,)
    edge_offsets.npy     int64   (n_crystals + 1,)
    ids.npy              int64 or fixed-width unicode (n_crystals,), only when the graphs have ids

Every array is a plain little-endian ``.npy`` file (numpy's documented
format, readable from any language and memory-mappable; no pickled object
anywhere), so a store written on one machine loads on another and a
training run can read batches straight from the page cache
(``CrystalGraphs.load(path, mmap=True)``). This module is the format alone (it knows
nothing of ``CrystalGraphs``, which builds on it). ``edge_offsets`` is derived data
kept on disk so that opening a store costs ``O(n_crystals)``, not a pass over
every atom. ``header.json`` is written last: a directory without it is an
unfinished store and is never read as a finished one.

:func:`crysk.featurizer.featurize_to_disk` featurizes inputs larger than memory chunk by
chunk into such a store; each finished chunk is itself a small store under
``<path>/_chunks/``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import numbers
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_open
from ._version import __version__

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "write_store", "read_arrays", "read_header", "is_store", "settings_differences"]

#: The ``format`` field of ``header.json``.
FORMAT_NAME = "crysk-graphs"
#: The layout version this crysk writes; readers refuse newer versions.
FORMAT_VERSION = 1

_HEADER = "header.json"
_CHUNKS = "_chunks"
# name -> on-disk dtype (explicitly little-endian, so stores are portable across machines)
_LAYOUT = {
    "atomic_numbers": np.dtype("|u1"),
    "degrees": np.dtype("<u2"),
    "neighbors": np.dtype("<i4"),
    "distances": np.dtype("<f4"),
    "atom_offsets": np.dtype("<i8"),
    "edge_offsets": np.dtype("<i8"),
}
_SETTINGS_KEYS = ("radius", "max_num_nbr", "element_table")


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a finished graph store (a directory with a ``header.json``).

    Parameters
    ----------
    path : str or os.PathLike
        Any path.

    Returns
    -------
    bool
    """
    return (Path(path) / _HEADER).is_file()


def _ids_array(ids: Any) -> np.ndarray | None:
    """Ids as an array ``np.save`` writes without pickle: int64 when all are integers, else text."""
    if ids is None:
        return None
    ids = list(ids)
    if all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids):
        return np.array(ids, dtype="<i8")
    text = [str(i) for i in ids]
    width = max((len(t) for t in text), default=1)
    return np.array(text, dtype=f"<U{max(width, 1)}")


def _write_npy(path: Path, chunks: Iterable[np.ndarray], dtype: np.dtype, length: int) -> None:
    """Write a 1-D ``.npy`` file from pieces, holding one piece in memory at a time."""
    with open(path, "wb") as fh:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (int(length),)}
        np.lib.format.write_array_header_2_0(fh, header)
        written = 0
        for piece in chunks:
            piece = np.ascontiguousarray(piece, dtype=dtype)
            fh.write(memoryview(piece).cast("B"))
            written += len(piece)
        if written != length:  # pragma: no cover - a bug in the caller, never user input
            raise RuntimeError(f"{path.name}: wrote {written} of {length} items")
        fh.flush()
        os.fsync(fh.fileno())


def _header(graphs: Any, ids: np.ndarray | None, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    arrays = {name: {"dtype": dtype.str, "shape": [0]} for name, dtype in _LAYOUT.items()}
    arrays["atomic_numbers"]["shape"] = arrays["degrees"]["shape"] = [len(graphs.atomic_numbers)]
    arrays["neighbors"]["shape"] = arrays["distances"]["shape"] = [len(graphs.neighbors)]
    arrays["atom_offsets"]["shape"] = arrays["edge_offsets"]["shape"] = [len(graphs) + 1]
    if ids is not None:
        arrays["ids"] = {"dtype": ids.dtype.str, "shape": [len(ids)]}
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "n_crystals": len(graphs),
        "n_atoms": len(graphs.atomic_numbers),
        "n_edges": len(graphs.neighbors),
        "settings": dict(graphs.settings),
        "arrays": arrays,
        "written_by": f"crysk {__version__}",
    }
    header.update(extra or {})
    return header


def _write_header(path: Path, header: Mapping[str, Any]) -> None:
    with atomic_open(path / _HEADER) as fh:
        fh.write(json.dumps(header, indent=1, default=_json_default).encode("utf-8"))


def _json_default(value: Any) -> Any:
    # numpy scalars in settings or skipped-structure ids
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, replacing an existing store there."""
    if path.exists():
        if not is_store(path):
            raise ValueError(
                f"{str(path)!r} exists and is not a crysk graph store; refusing to replace it (choose a new path)"
            )
        trash = path.parent / f".{path.name}.{secrets.token_hex(4)}.old"
        os.replace(path, trash)
        os.replace(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, path)


def write_store(
    graphs: Any, path: str | os.PathLike, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``graphs`` as a graph store (a directory of ``.npy`` files and ``header.json``).

    The store is built in a temporary directory beside ``path`` and moved in
    place when complete, so a reader never sees half of it; an existing
    store at ``path`` is replaced, anything else there is left alone.

    Parameters
    ----------
    graphs : CrystalGraphs
        The graphs to write (in memory or memory-mapped; anything with their
        array attributes, ``settings`` and ``ids``).
    path : str or os.PathLike
        The directory to create.
    extra : mapping, optional
        More JSON-serialisable fields for the header (e.g. structures left out).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``path`` exists and is not a graph store.
    """
    path = Path(path)
    if path.exists() and not is_store(path):
        raise ValueError(f"{str(path)!r} exists and is not a crysk graph store; refusing to replace it (choose a new path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        _write_arrays(graphs, tmp, extra)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_arrays(graphs: Any, folder: Path, extra: Mapping[str, Any] | None) -> None:
    ids = _ids_array(graphs.ids)
    for name, dtype in _LAYOUT.items():
        array = getattr(graphs, name)
        _write_npy(folder / f"{name}.npy", [array], dtype, len(array))
    if ids is not None:
        _write_npy(folder / "ids.npy", [ids], ids.dtype, len(ids))
    _write_header(folder, _header(graphs, ids, extra))


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the ``header.json`` of a graph store.

    Parameters
    ----------
    path : str or os.PathLike
        The store's directory.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        If the directory is not a finished store, or was written by a newer
        format version than this crysk reads.
    """
    path = Path(path)
    try:
        header = json.loads((path / _HEADER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{str(path)!r} is not a crysk graph store: no {_HEADER} (an unfinished featurize_to_disk run? "
            "run it again to resume)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{str(path)!r}: unreadable {_HEADER} ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"{str(path)!r} is not a crysk graph store (format {header.get('format')!r})")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} is a graph store of format version {version!r}; this crysk reads versions up to "
            f"{FORMAT_VERSION}: upgrade crysk"
        )
    settings = header.get("settings")
    if not isinstance(settings, dict) or any(k not in settings for k in _SETTINGS_KEYS):
        raise ValueError(f"{str(path)!r}: the header lacks the featurizer settings {list(_SETTINGS_KEYS)}")
    return header


def settings_differences(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Describe each setting of ``expected`` that ``actual`` does not share.

    Parameters
    ----------
    actual, expected : mapping
        Featurizer settings (``radius``, ``max_num_nbr``, ``element_table``).

    Returns
    -------
    list of str
        e.g. ``["radius=6.0 (expected 8.0)"]``; empty when they agree.
    """
    return [f"{k}={actual.get(k)!r} (expected {v!r})" for k, v in expected.items() if actual.get(k) != v]


def read_arrays(
    path: str | os.PathLike, mmap: bool = True, expected_settings: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Open the arrays of a graph store written by :func:`write_store` (``CrystalGraphs.load`` builds on it).

    Parameters
    ----------
    path : str or os.PathLike
        The store's directory.
    mmap : bool, default=True
        Memory-map the arrays (read-only) instead of reading them: the atoms
        and edges are then paged in as they are touched.
    expected_settings : mapping, optional
        Featurizer settings the graphs must have been made with (e.g.
        ``CrystalGraphFeaturizer().settings``); a mismatch raises.

    Returns
    -------
    arrays : dict of numpy.ndarray
        By name (see the module description).
    header : dict
        The checked ``header.json``.

    Raises
    ------
    ValueError
        If the store is unfinished, of a newer version, damaged (an array's
        dtype or length differs from the header), or made with other
        settings than ``expected_settings``.
    """
    path = Path(path)
    header = read_header(path)
    if expected_settings is not None:
        diffs = settings_differences(header["settings"], dict(expected_settings))
        if diffs:
            raise ValueError(f"the graph store {str(path)!r} was made with other settings: {', '.join(diffs)}")
    arrays = {}
    for name, spec in header["arrays"].items():
        try:
            array = np.load(path / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{str(path)!r}: cannot read {name}.npy ({exc})") from exc
        if array.dtype.str != spec["dtype"] or list(array.shape) != list(spec["shape"]):
            raise ValueError(
                f"{str(path)!r}: {name}.npy holds {array.dtype.str} {list(array.shape)}, the header says "
                f"{spec['dtype']} {spec['shape']}: the store is damaged"
            )
        arrays[name] = array
    missing = [k for k in _LAYOUT if k not in arrays]
    if missing:
        raise ValueError(f"{str(path)!r}: the store has no {missing}")
    edge_offsets = arrays["edge_offsets"]
    if len(edge_offsets) and (edge_offsets[0] != 0 or edge_offsets[-1] != len(arrays["neighbors"])):
        raise ValueError(f"{str(path)!r}: edge_offsets do not span the edges: the store is damaged")
    return arrays, header


def assemble_chunks(chunks: list[Path], path: Path, settings: dict[str, Any]) -> None:
    """Join chunk stores into one store at ``path``, streaming: one chunk's arrays in memory at a time.

    Parameters
    ----------
    chunks : list of pathlib.Path
        Finished stores, in order.
    path : pathlib.Path
        The store to write; its ``header.json`` is written last.
    settings : dict
        The featurizer settings of every chunk.
    """
    headers = [read_header(c) for c in chunks]
    n_atoms = [h["n_atoms"] for h in headers]
    n_edges = [h["n_edges"] for h in headers]
    n_crystals = [h["n_crystals"] for h in headers]
    id_specs = [h["arrays"].get("ids") for h in headers if h["n_crystals"]]
    has_ids = bool(id_specs) and all(s is not None for s in id_specs)
    # a text id anywhere makes every id text (the width is the widest chunk's)
    text_ids = has_ids and any(np.dtype(s["dtype"]).kind == "U" for s in id_specs)
    if text_ids:
        width = max(np.dtype(s["dtype"]).itemsize // 4 if np.dtype(s["dtype"]).kind == "U" else 20 for s in id_specs)
        id_dtype = np.dtype(f"<U{max(width, 1)}")
    else:
        id_dtype = np.dtype("<i8")

    def pieces(name: str, shift_by: list[int] | None = None) -> Iterator[np.ndarray]:
        shift = 0
        for i, chunk in enumerate(chunks):
            if name == "ids" and not n_crystals[i]:
                continue
            array = np.load(chunk / f"{name}.npy", allow_pickle=False)
            if shift_by is not None:
                # every chunk's offsets start at 0; drop the leading 0 of all but the first
                array = array[1:] + shift if i else array
                shift += shift_by[i]
            elif name == "ids" and text_ids:
                array = array.astype(str)
            yield array

    path.mkdir(parents=True, exist_ok=True)
    total_atoms, total_edges, total_crystals = sum(n_atoms), sum(n_edges), sum(n_crystals)
    lengths = {
        "atomic_numbers": total_atoms, "degrees": total_atoms, "neighbors": total_edges,
        "distances": total_edges, "atom_offsets": total_crystals + 1, "edge_offsets": total_crystals + 1,
    }
    for name, dtype in _LAYOUT.items():
        shift_by = n_atoms if name == "atom_offsets" else n_edges if name == "edge_offsets" else None
        _write_npy(path / f"{name}.npy", pieces(name, shift_by), dtype, lengths[name])
    arrays = {name: {"dtype": dtype.str, "shape": [lengths[name]]} for name, dtype in _LAYOUT.items()}
    if has_ids:
        _write_npy(path / "ids.npy", pieces("ids"), id_dtype, total_crystals)
        arrays["ids"] = {"dtype": id_dtype.str, "shape": [total_crystals]}
    else:
        stale = path / "ids.npy"
        if stale.exists():
            stale.unlink()
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "n_crystals": total_crystals,
        "n_atoms": total_atoms,
        "n_edges": total_edges,
        "settings": settings,
        "arrays": arrays,
        "written_by": f"crysk {__version__}",
        "n_inputs": sum(h.get("n_inputs", h["n_crystals"]) for h in headers),
        "skipped": [s for h in headers for s in h.get("skipped", [])],
    }
    # last: only now is the directory a store
    _write_header(path, header)
