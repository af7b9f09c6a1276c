"""CrystalGraphFeaturizer: structures in, packed crystal graphs out."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure
from pymatgen.optimization.neighbors import find_points_in_spheres
from sklearn.base import BaseEstimator, TransformerMixin

from ._files import atomic_open
from ._validation import check_number, check_option
from .elements import element_table_id
from .graphs import CrystalGraphs, concatenate
from .parallel import map_chunks
from .store import FORMAT_VERSION, assemble_chunks, is_store, read_header, settings_differences, write_store
from .structures import (
    MIN_DISTANCE,
    CrystalInputError,
    as_sequence,
    input_ids,
    structure_and_numbers,
)

_CHUNKS = "_chunks"

__all__ = ["CrystalGraphFeaturizer", "featurize_to_disk", "graph_settings", "check_settings", "settings_differences"]

_PBC = np.ones(3, dtype=np.int64)


def graph_settings(radius: float, max_num_nbr: int) -> dict[str, Any]:
    """The settings stored with graphs and checked by models.

    Parameters
    ----------
    radius : float
        Neighbour cut-off (Å).
    max_num_nbr : int
        Nearest neighbours per atom.

    Returns
    -------
    dict
    """
    return {"radius": float(radius), "max_num_nbr": int(max_num_nbr), "element_table": element_table_id()}


def check_settings(graphs: CrystalGraphs, expected: dict[str, Any], what: str = "this model") -> None:
    """Raise if ``graphs`` were made with settings other than ``expected``.

    Parameters
    ----------
    graphs : CrystalGraphs
        Graphs to check.
    expected : dict
        As returned by :func:`graph_settings`.
    what : str
        Who expects them, for the message.

    Raises
    ------
    ValueError
        Naming each setting that differs.
    """
    diffs = settings_differences(graphs.settings, expected)
    if diffs:
        raise ValueError(
            f"the crystal graphs were made with other settings than {what} uses: {', '.join(diffs)}. "
            "Featurize with the same radius/max_num_nbr as the model, or pass structures and let "
            "the model featurize them"
        )


def _neighbor_pairs(cart: np.ndarray, lattice: np.ndarray, r: float):
    centers, points, _, dist = find_points_in_spheres(cart, cart, r=float(r), pbc=_PBC, lattice=lattice, tol=1e-8)
    not_self = (centers != points) | (dist > 1e-8)
    return centers[not_self], points[not_self], dist[not_self]


def _sorted_pairs(centers, points, dist):
    # A stable sort on the raw float64 distance: equally distant neighbours
    # keep the search's output order, as in the reference rule (pymatgen's
    # get_all_neighbors, then Python's stable sorted(key=distance)).
    order = np.lexsort((dist, centers))
    return centers[order], points[order], dist[order]


def _cut_is_clear(centers, dist, n, max_num_nbr):
    """Whether a small-sphere search settles every atom's neighbour set.

    It does when every atom has more than ``max_num_nbr`` neighbours in the
    sphere and its last kept neighbour is strictly nearer than its first
    dropped one. At an exact tie the kept atoms depend on the search's output
    order, which depends on the search radius, so the reference's choice is
    only reproduced by searching the full radius.
    """
    counts = np.bincount(centers, minlength=n)
    if counts.min() <= max_num_nbr:
        return False
    starts = np.cumsum(counts) - counts
    return not np.any(dist[starts + max_num_nbr - 1] == dist[starts + max_num_nbr])


def _light(structure: Structure, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three arrays a graph needs; cheap to send to another process."""
    return (
        z,
        np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64),
        np.ascontiguousarray(structure.cart_coords, dtype=np.float64),
    )


def _symbol(z: int) -> str:
    from pymatgen.core import Element

    return Element.from_Z(int(z)).symbol


def _graph_from_arrays(arrays, radius, max_num_nbr, index=None, id=None, min_distance=MIN_DISTANCE):
    z, lattice, cart = arrays
    n = len(z)
    volume = abs(float(np.linalg.det(lattice)))
    # Search a smaller sphere first, sized to hold ~3x max_num_nbr atoms at the
    # cell's mean density: most atoms then have all their nearest neighbours in
    # it, and the full radius is searched only when some atom does not.
    r_small = (3.0 * 3 * max_num_nbr * volume / (4.0 * np.pi * n)) ** (1.0 / 3.0) + 0.5
    found = None
    if r_small < radius:
        found = _sorted_pairs(*_neighbor_pairs(cart, lattice, r_small))
        if not _cut_is_clear(found[0], found[2], n, max_num_nbr):
            found = None
    if found is None:
        found = _sorted_pairs(*_neighbor_pairs(cart, lattice, radius))
    centers, points, dist = found
    counts = np.bincount(centers, minlength=n)
    if (counts == 0).any():
        lonely = int(np.argmin(counts))
        raise CrystalInputError(
            f"atom {lonely} ({_symbol(z[lonely])}) has no neighbour within radius={radius} Å; use a "
            "larger radius (CrystalGraphFeaturizer(radius=...)) or check the lattice",
            index,
            id,
        )
    starts = np.cumsum(counts) - counts
    # the nearest neighbour of every atom comes first in its group
    if min_distance > 0 and dist[starts].min() < min_distance:
        k = int(starts[np.argmin(dist[starts])])
        i, j = int(centers[k]), int(points[k])
        raise CrystalInputError(
            f"sites {i} ({_symbol(z[i])}) and {j} ({_symbol(z[j])}) are {dist[k]:.3f} Å apart, closer "
            f"than {min_distance} Å: the structure is probably broken (duplicate or overlapping sites); "
            "fix or drop it",
            index,
            id,
        )
    rank = np.arange(len(centers)) - np.repeat(starts, counts)
    keep = rank < max_num_nbr
    return (
        np.asarray(z, dtype=np.uint8),
        np.minimum(counts, max_num_nbr),
        points[keep].astype(np.int32),
        dist[keep].astype(np.float32),
    )


def _pack(results, settings, ids) -> CrystalGraphs:
    if not results:
        return CrystalGraphs(
            np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(1), settings, ids
        )
    z, deg, nbr, dist = zip(*results)
    offsets = np.zeros(len(z) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in z], out=offsets[1:])
    return CrystalGraphs(
        np.concatenate(z), np.concatenate(deg), np.concatenate(nbr), np.concatenate(dist), offsets, settings, ids
    )


class _Light(tuple):
    """A validated structure reduced to (atomic numbers, lattice, Cartesian coordinates)."""


def _prepare(items, start, ids, errors):
    # Structures are slow to pickle (~1 ms each): validate them here and send
    # only their arrays to the worker processes.
    out = []
    for k, item in enumerate(items):
        if isinstance(item, Structure):
            try:
                item = _Light(_light(*structure_and_numbers(item, start + k, None if ids is None else ids[k])))
            except CrystalInputError:
                if errors == "raise":
                    raise
                # leave it as is: the worker reports it with the others
        out.append(item)
    return out


def _featurize_chunk(items, start, ids, radius, max_num_nbr, settings, errors="raise"):
    results, kept, failed = [], [], []
    for k, item in enumerate(items):
        i = start + k
        sid = None if ids is None else ids[k]
        try:
            if not isinstance(item, _Light):
                s, z = structure_and_numbers(item, index=i, id=sid)
                item = _light(s, z)
            results.append(_graph_from_arrays(item, radius, max_num_nbr, i, sid))
        except CrystalInputError as exc:
            if errors == "raise":
                raise
            failed.append(exc)
            continue
        kept.append(k)
    kept_ids = None if ids is None else [ids[k] for k in kept]
    return _pack(results, settings, kept_ids), failed


class CrystalGraphFeaturizer(TransformerMixin, BaseEstimator):
    """Turn crystal structures into packed crystal graphs (CGCNN style).

    Parameters
    ----------
    radius : float, default=8.0
        Neighbour cut-off in Å.
    max_num_nbr : int, default=12
        Keep at most this many nearest neighbours per atom. Atoms with fewer
        neighbours in range keep the ones they have (no padding edges).
    n_jobs : int, optional
        Processes for featurizing in parallel (joblib semantics: ``None`` is
        1, ``-1`` all cores).
    verbose : bool, default=False
        Show a progress bar for large inputs.
    errors : {"raise", "skip"}, default="raise"
        What to do with a structure that cannot be used. ``"raise"`` raises
        its :class:`~crysk.structures.CrystalInputError`. ``"skip"`` leaves it
        out and warns; :meth:`transform_with_skipped` lists them (the output has fewer
        crystals than the input: only for standalone use, never inside a
        pipeline that must keep X and y aligned).

    Notes
    -----
    **Ties.** Where several neighbours are equally far away at the
    ``max_num_nbr``-th place (symmetric shells are common: about 3 in 10
    Materials Project crystals have such a tie at some atom), which of them are
    kept changes the graph and a trained model's prediction. crysk keeps the
    ones the reference rule keeps, the rule of the original CGCNN and CrysXPP
    ``CIFData``: pymatgen's ``Structure.get_all_neighbors(radius)``, each atom's
    list sorted with a stable sort on the float64 distance, the first
    ``max_num_nbr`` kept. Equal distances then keep the order of pymatgen's
    neighbour search (``find_points_in_spheres`` over the full radius), which
    depends on the site order and the exact coordinates. crysk searches a
    small sphere first (fast) and repeats the search over the full radius for
    any structure where an atom has an exact float64 tie at the cut, so the
    kept set is the reference's in every case. From CIF text the fast reader
    (gemmi, P1 files) reproduces pymatgen's coordinates bit for bit (it snaps
    fractions near 1/3 and 2/3 as pymatgen does) and pymatgen's site order;
    symmetrised CIFs are read by pymatgen itself. Checked with pymatgen
    2026.10 over all 106,113 ``mp_gap`` and 36,737 ``mp_eform`` structures
    (``benchmarks/neighbour_parity.py``). The same crystal reached by another
    route (rotated, from ASE, re-ordered sites) can break an exact tie the
    other way, as the reference would for that input.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"],
    ...                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> graphs = CrystalGraphFeaturizer().fit_transform([nacl])
    >>> len(graphs), graphs.n_atoms[0], graphs.n_edges[0]
    (1, 8, 96)
    """

    def __init__(
        self,
        radius: float = 8.0,
        max_num_nbr: int = 12,
        n_jobs: int | None = None, verbose: bool = False,
        errors: str = "raise",
    ):
        self.radius = radius
        self.max_num_nbr = max_num_nbr
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.errors = errors

    def _validate_params(self) -> None:
        check_number("radius", self.radius, low=0, low_open=True, hint=" (Å)")
        check_number("max_num_nbr", self.max_num_nbr, integer=True, low=1)
        check_option("errors", self.errors, ["raise", "skip"])

    @property
    def settings(self) -> dict[str, Any]:
        """The graph settings this featurizer produces (see :func:`graph_settings`)."""
        return graph_settings(self.radius, self.max_num_nbr)

    def fit(self, X: Any = None, y: Any = None) -> "CrystalGraphFeaturizer":
        """Check the parameters; the featurizer learns nothing (it is stateless).

        Parameters
        ----------
        X : ignored
            Accepted for Pipeline compatibility.
        y : ignored
            Accepted for Pipeline compatibility.

        Returns
        -------
        self
        """
        self._validate_params()
        return self

    def transform(self, X: Any, ids: Any = None) -> CrystalGraphs:
        """Featurize structures (no fitting needed: the featurizer is stateless).

        Parameters
        ----------
        X : collection of structure inputs, or CrystalGraphs
            A list, numpy object array, pandas Series or single-column
            DataFrame of anything :func:`crysk.structures.as_structure`
            accepts. ``CrystalGraphs`` made with the same settings pass
            through unchanged.
        ids : sequence, optional
            Identifiers for error messages (default: the pandas index).

        Returns
        -------
        CrystalGraphs
            One graph per structure (with ``errors="skip"``, per usable
            structure; see :meth:`transform_with_skipped`).
        """
        return self.transform_with_skipped(X, ids)[0]

    def transform_with_skipped(self, X: Any, ids: Any = None) -> tuple[CrystalGraphs, list[CrystalInputError]]:
        """Featurize structures and say which ones were left out (``errors="skip"``).

        Parameters
        ----------
        X : collection of structure inputs, or CrystalGraphs
            As for :meth:`transform`.
        ids : sequence, optional
            Identifiers for error messages (default: the pandas index).

        Returns
        -------
        graphs : CrystalGraphs
            The usable structures' graphs, in input order.
        skipped : list of CrystalInputError
            The structures left out, each with ``index``, ``id`` and
            ``reason`` (empty with ``errors="raise"``, which raises instead).
        """
        self._validate_params()
        settings = self.settings
        if isinstance(X, CrystalGraphs):
            check_settings(X, settings, "this featurizer")
            return X, []
        seq = as_sequence(X)
        if ids is None:
            ids = input_ids(X)
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(seq):
                raise ValueError(f"got {len(ids)} ids for {len(seq)} structures")
        n = len(seq)

        def chunk_args(start: int, stop: int, parallel: bool) -> tuple:
            items = [seq[i] for i in range(start, stop)]
            chunk_ids = None if ids is None else ids[start:stop]
            if parallel:  # Structures are slow to pickle: send their arrays
                items = _prepare(items, start, chunk_ids, self.errors)
            return items, start, chunk_ids, self.radius, self.max_num_nbr, settings, self.errors

        show = bool(self.verbose) and n >= 500
        parts = map_chunks(
            _featurize_chunk,
            n,
            chunk_args,
            n_jobs=self.n_jobs,
            min_parallel=64,
            max_chunk=1000,
            progress="featurizing" if show else None,
            progress_chunk=max(50, n // 100),
        )
        skipped = [exc for _, failed in parts for exc in failed]
        if skipped:
            warnings.warn(
                f"left out {len(skipped)} of {n} structures; first: {skipped[0]}. "
                "transform_with_skipped lists them all",
                UserWarning,
                stacklevel=3,
            )
        graphs = [g for g, _ in parts if len(g)]
        if not graphs:
            return _pack([], settings, [] if ids is not None else None), skipped
        return (concatenate(graphs) if len(graphs) > 1 else graphs[0]), skipped

    def transform_to_disk(
        self, X: Any, path: Any, chunk_size: int = 10_000, ids: Any = None, **kwargs: Any
    ) -> CrystalGraphs:
        """Featurize a collection too large for memory into a graph store, resumably.

        Same as :func:`crysk.store.featurize_to_disk` with this featurizer.

        Parameters
        ----------
        X : str, os.PathLike or iterable
            A folder of CIF files, a JSON-lines or CSV table, or any iterable
            of structure inputs (see :func:`~crysk.store.featurize_to_disk`).
        path : str or os.PathLike
            The store directory to write.
        chunk_size : int, default=10000
            Structures per chunk (memory, and the unit of resumption).
        ids : iterable, optional
            One id per structure.
        **kwargs
            ``structure_col``, ``id_col``, ``mmap``, ``verbose``.

        Returns
        -------
        CrystalGraphs
            The finished store, memory-mapped unless ``mmap=False``.
        """
        return featurize_to_disk(X, path, chunk_size=chunk_size, featurizer=self, ids=ids, **kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # stateless: transform needs no fit, and inputs are structures, not a 2-D array
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


# ---------------------------------------------------------------------------- featurize_to_disk
def _jsonl_records(path: Path) -> Iterator[dict]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _iter_source(
    source: Any, ids: Iterable | None, structure_col: str, id_col: str | None, chunk_size: int
) -> Iterator[tuple[Any, Any]]:
    """``(id, structure input)`` pairs of ``source``, read lazily; ids default to positions."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.glob("*.cif"))
            if not files:
                raise ValueError(f"{str(path)!r} holds no .cif files")
            pairs = ((f.stem, f.read_text(encoding="utf-8", errors="replace")) for f in files)
            yield from pairs if ids is None else zip(ids, (item for _, item in pairs))
            return
        name = path.name.lower().removesuffix(".gz")
        if name.endswith((".jsonl", ".ndjson", ".json")):
            records = _jsonl_records(path)
        elif name.endswith(".csv"):
            import pandas as pd

            usecols = [structure_col] + ([id_col] if id_col else [])
            frames = pd.read_csv(path, usecols=usecols, chunksize=chunk_size)
            records = (row for frame in frames for row in frame.to_dict("records"))
        else:
            raise ValueError(
                f"cannot stream {str(path)!r}: featurize_to_disk reads a folder of .cif files, JSON lines "
                "(.jsonl/.jsonl.gz) or CSV (.csv/.csv.gz); pass anything else as an iterable of structures"
            )
        positions = itertools.count()
        for record in records:
            try:
                item = record[structure_col]
            except KeyError:
                raise ValueError(f"{str(path)!r}: a record has no {structure_col!r} field (set structure_col=)") from None
            rid = record[id_col] if id_col else next(positions)
            yield rid, item
        return
    if hasattr(source, "iloc") or isinstance(source, (list, tuple, np.ndarray)):
        seq = as_sequence(source)
        ids = ids if ids is not None else input_ids(source)
        items = (seq[i] for i in range(len(seq)))
    else:
        items = iter(source)
    yield from zip(itertools.count() if ids is None else ids, items)


def _chunk_paths(path: Path) -> Path:
    return path / _CHUNKS


def _check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Start a chunk folder, or check that an existing one belongs to the same run."""
    file = folder / "manifest.json"
    if file.is_file():
        old = json.loads(file.read_text(encoding="utf-8"))
        differ = [k for k in manifest if old.get(k) != manifest[k]]
        if differ:
            raise ValueError(
                f"{str(folder.parent)!r} holds chunks of an unfinished run with other {differ} "
                f"({ {k: old.get(k) for k in differ} } vs { {k: manifest[k] for k in differ} }); "
                "rerun with the same arguments to resume, or choose a new path"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(file) as fh:
        fh.write(json.dumps(manifest).encode("utf-8"))


def featurize_to_disk(
    source: Any,
    path: str | os.PathLike,
    *,
    chunk_size: int = 10_000,
    featurizer: Any = None,
    ids: Iterable | None = None,
    structure_col: str = "cif",
    id_col: str | None = None,
    mmap: bool = True,
    verbose: bool = False,
) -> CrystalGraphs:
    """Featurize a collection too large for memory into a graph store, chunk by chunk, resumably.

    Inputs are read lazily and featurized ``chunk_size`` at a time (each
    chunk with the featurizer's ``n_jobs`` processes); each finished chunk is
    written to ``<path>/_chunks/`` at once. Memory stays bounded by about one
    chunk's inputs and graphs, whatever the total. When every chunk is done
    they are joined into one store at ``path`` (streamed, one chunk in memory
    at a time) and the chunk folder is removed.

    Rerunning after an interruption (crash, Ctrl-C, a killed job) keeps the
    finished chunks and featurizes only the rest: the source must yield the
    same items in the same order (a file, a folder or a list does; make a
    generator repeatable). A rerun with other settings or ``chunk_size``
    refuses to mix chunks. If ``path`` already holds a finished store made
    with the same settings, it is opened and returned.

    Parameters
    ----------
    source : str, os.PathLike or iterable
        A folder of ``.cif`` files (ids: file names without ``.cif``, in
        sorted order), a JSON-lines (``.jsonl``/``.jsonl.gz``) or CSV
        (``.csv``/``.csv.gz``) table with structures in ``structure_col``,
        or any iterable of structure inputs (list, pandas Series, generator
        of CIF text or pymatgen Structures, ...).
    path : str or os.PathLike
        The store directory to create.
    chunk_size : int, default=10000
        Structures per chunk: the unit of memory, of progress kept after an
        interruption, and of work lost by one.
    featurizer : CrystalGraphFeaturizer, optional
        Its ``radius``, ``max_num_nbr``, ``n_jobs`` and ``errors`` are used
        (default: ``CrystalGraphFeaturizer()``). With ``errors="skip"``
        unusable structures are left out and listed in the header under
        ``"skipped"``.
    ids : iterable, optional
        One id per structure (default: the folder's file names, the table's
        ``id_col``, a pandas index, or else the position in the source).
    structure_col : str, default="cif"
        Field or column of a table that holds the structures.
    id_col : str, optional
        Field or column of a table that holds the ids.
    mmap : bool, default=True
        Return the store memory-mapped (see ``CrystalGraphs.load``).
    verbose : bool, default=False
        Print one line per chunk (to stderr).

    Returns
    -------
    CrystalGraphs
        The finished store, opened with ``CrystalGraphs.load``.

    Raises
    ------
    CrystalInputError
        With ``errors="raise"``, for the first unusable structure (its
        position counts from the start of the source); the chunks finished
        before it are kept.
    ValueError
        For a bad ``chunk_size``, an unreadable source, or a path holding
        something else.
    """
    import sys

    check_number("chunk_size", chunk_size, integer=True, low=1)
    featurizer = CrystalGraphFeaturizer() if featurizer is None else featurizer
    featurizer.fit()  # checks its parameters
    settings = featurizer.settings
    path = Path(path)
    if is_store(path):
        return CrystalGraphs.load(path, mmap=mmap, expected_settings=settings)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file; featurize_to_disk writes a directory")
    if path.exists() and any(p.name != _CHUNKS for p in path.iterdir()) and not _chunk_paths(path).is_dir():
        raise ValueError(f"{str(path)!r} exists and is neither a graph store nor an unfinished one; choose a new path")
    folder = _chunk_paths(path)
    _check_manifest(folder, {"settings": settings, "chunk_size": int(chunk_size), "format_version": FORMAT_VERSION})

    pairs = _iter_source(source, ids, structure_col, id_col, chunk_size)
    done = []
    for k in itertools.count():
        block = list(itertools.islice(pairs, chunk_size))
        if not block:
            break
        chunk = folder / f"chunk-{k:06d}"
        done.append(chunk)
        if is_store(chunk):
            continue  # finished by an earlier run
        start = k * chunk_size
        chunk_ids, items = zip(*block)
        try:
            with warnings.catch_warnings():
                # the chunk's warning would count positions inside the chunk; one warning at the end instead
                warnings.filterwarnings("ignore", message="left out", category=UserWarning)
                graphs, skipped = featurizer.transform_with_skipped(list(items), ids=list(chunk_ids))
        except CrystalInputError as exc:
            # positions inside the chunk -> positions in the source
            raise CrystalInputError(exc.reason, None if exc.index is None else exc.index + start, exc.id) from exc
        del block, items
        extra = {
            "first": start,
            "n_inputs": len(chunk_ids),
            "skipped": [
                {"index": None if e.index is None else e.index + start, "id": e.id, "reason": e.reason}
                for e in skipped
            ],
        }
        write_store(graphs, chunk, extra)
        if verbose:
            print(f"featurize_to_disk: chunk {k} ({start + len(chunk_ids):,} structures read) written", file=sys.stderr)
    assemble_chunks(done, path, settings)
    shutil.rmtree(folder, ignore_errors=True)
    skipped = read_header(path).get("skipped", [])
    if skipped:
        first = skipped[0]
        warnings.warn(
            f"left out {len(skipped)} structures; first: #{first['index']} (id {first['id']!r}): {first['reason']}. "
            f"The header of {str(path)!r} lists them all under 'skipped'",
            UserWarning,
            stacklevel=2,
        )
    return CrystalGraphs.load(path, mmap=mmap, expected_settings=settings)
