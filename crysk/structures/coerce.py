"""Coercion of every input form into a validated pymatgen Structure (as_structure and friends)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from ..elements import MAX_ATOMIC_NUMBER
from .errors import CrystalInputError, MIN_DISTANCE
from .cif import _gemmi_cif_arrays, _looks_like_cif

__all__ = ["as_structure", "as_structure_list", "as_sequence", "atomic_numbers", "too_close_error", "quiet_warnings"]

#: Smallest spacing between lattice planes (Å) of an accepted cell. A reduced cell with planes
#: closer than this would put an atom this close to its own image; an unreduced one must be
#: reduced first, since neighbour searches over such a cell need millions of periodic images.
MIN_PLANE_SPACING = 0.5
#: Largest accepted cell volume (Å^3): neighbour searches bin the cell into radius-sized boxes,
#: so their memory grows with the volume (found by fuzzing: a 3e12 Å^3 cell asked for 375 GB).
MAX_CELL_VOLUME = 1e8


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Silence warnings (pymatgen's coordinate snapping, missing element data) in the main thread.

    ``warnings.catch_warnings`` swaps the process-wide filter list and puts
    it back on exit; two threads doing that at once can leave the filters
    of one installed for good. Only the main thread silences; in other
    threads (a threading joblib backend, a web server's workers) the block
    runs with the filters as they are, so warnings may show but no state
    is corrupted.

    Yields
    ------
    None
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _parse_text(text: str, fmt: str | None, index, id) -> Structure:
    if fmt is None:
        fmt = "cif" if _looks_like_cif(text) else "poscar"
    if fmt == "cif":
        parsed = _gemmi_cif_arrays(text)
        if parsed is not None:
            symbols, params, frac = parsed
            from pymatgen.core import Lattice

            # Lattice.from_parameters orients the cell as pymatgen's CIF parser does
            return Structure(Lattice.from_parameters(*params), symbols, frac)
    try:
        # pymatgen warns when it snaps coordinates to special positions and
        # when an element lacks some property; neither affects the graph.
        with quiet_warnings():
            if fmt == "cif":
                from pymatgen.io.cif import CifParser

                parsed = CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")
                if not parsed:
                    raise ValueError("the CIF holds no structure")
                return parsed[0]
            return Structure.from_str(text, fmt=fmt)
    except CrystalInputError:
        raise
    except Exception as exc:  # pymatgen raises many types for bad text
        raise CrystalInputError(
            f"could not parse the {fmt.upper()} text ({type(exc).__name__}: {exc}). "
            "Check the file, or pass a pymatgen Structure.",
            index,
            id,
        ) from exc


# an element symbol with an optional count, repeated: "NaCl", "Fe2O3", "LiFePO4"
_FORMULA = re.compile(r"^(?:[A-Z][a-z]?\d*(?:\.\d+)?)+$")


def _from_path(path: Path, index, id) -> Structure:
    if path.is_dir():
        raise CrystalInputError(
            f"{str(path)!r} is a folder, not a structure file: pass the CIF files in it "
            "(e.g. sorted(Path(folder).glob('*.cif'))) or load it with crysk.load_cgcnn_folder",
            index,
            id,
        )
    if not path.is_file():
        text = str(path)
        if _FORMULA.match(text) and not path.suffix:
            raise CrystalInputError(
                f"{text!r} looks like a chemical formula, not a structure: crysk needs atom positions and a "
                "cell. Pass a CIF/POSCAR file, CIF text, a pymatgen Structure or an ASE Atoms",
                index,
                id,
            )
        raise CrystalInputError(f"file {text!r} does not exist", index, id)
    name = path.name.lower()
    if name.endswith(".cif") or name.endswith(".cif.gz"):
        import gzip

        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            return _parse_text(fh.read(), "cif", index, id if id is not None else path.name)
    try:
        with quiet_warnings():
            return Structure.from_file(str(path))
    except Exception as exc:
        raise CrystalInputError(
            f"could not read {str(path)!r} ({type(exc).__name__}: {exc}); "
            "crysk reads CIF, POSCAR/CONTCAR and other formats pymatgen knows by file name",
            index,
            id,
        ) from exc


def _is_ase_atoms(obj: Any) -> bool:
    ase = sys.modules.get("ase")  # an Atoms object can only exist if ase was imported
    return ase is not None and isinstance(obj, ase.Atoms)


def _coerce(obj: Any, index, id) -> Structure:
    if isinstance(obj, Structure):
        return obj
    cls = type(obj).__name__
    module = type(obj).__module__
    if _is_ase_atoms(obj):
        pbc = np.asarray(obj.get_pbc(), dtype=bool)
        if not pbc.all():
            raise CrystalInputError(
                f"the ASE Atoms object is not periodic in all three directions (pbc={pbc.tolist()}); "
                "crystal graphs need a 3-D periodic cell: set atoms.pbc = True and a cell",
                index,
                id,
            )
        from pymatgen.io.ase import AseAtomsAdaptor

        try:
            return AseAtomsAdaptor.get_structure(obj)
        except Exception as exc:
            raise CrystalInputError(f"could not convert the ASE Atoms ({exc})", index, id) from exc
    if cls in ("Molecule", "IMolecule") or (isinstance(obj, dict) and obj.get("@class") == "Molecule"):
        raise CrystalInputError(
            "got a molecule, which is not periodic; crysk needs a crystal (a lattice and sites). "
            "Put the molecule in a box with Molecule.get_boxed_structure if you mean a periodic cell",
            index,
            id,
        )
    if isinstance(obj, dict):
        if "lattice" not in obj or "sites" not in obj:
            raise CrystalInputError(
                "the dict is not a pymatgen Structure dict (it needs 'lattice' and 'sites' keys, "
                "as made by Structure.as_dict())",
                index,
                id,
            )
        try:
            return Structure.from_dict(obj)
        except Exception as exc:
            raise CrystalInputError(
                f"could not build a Structure from the dict ({type(exc).__name__}: {exc})", index, id
            ) from exc
    if isinstance(obj, os.PathLike):
        return _from_path(Path(obj), index, id)
    if isinstance(obj, bytes):
        obj = obj.decode("utf-8", errors="replace")
    if isinstance(obj, str):
        if "\n" in obj:
            return _parse_text(obj, None, index, id)
        if not obj.strip():
            raise CrystalInputError("got an empty string instead of a structure", index, id)
        return _from_path(Path(obj), index, id)
    raise CrystalInputError(
        f"cannot make a crystal structure from an object of type {module}.{cls}; pass a pymatgen "
        "Structure, an ASE Atoms, CIF text, a path to a CIF/POSCAR file or a Structure dict",
        index,
        id,
    )


def _disordered_site_error(s: Structure, index, id) -> CrystalInputError:
    for i, site in enumerate(s):
        if not site.is_ordered:
            return CrystalInputError(
                f"site {i} has partial occupancy ({site.species_string}); crysk needs ordered "
                "structures: choose an ordered approximant (e.g. pymatgen's "
                "OrderDisorderedStructureTransformation) or drop this structure",
                index,
                id,
            )
    return CrystalInputError("the structure is disordered", index, id)


def too_close_error(
    s: Structure, i: int, j: int, distance: float, index=None, id=None, min_distance: float = MIN_DISTANCE
) -> CrystalInputError:
    """Build the error for two sites closer than ``min_distance``.

    Parameters
    ----------
    s : Structure
        The structure.
    i, j : int
        The two sites.
    distance : float
        Their distance in Å.
    index, id : optional
        Name of the structure.
    min_distance : float
        The threshold that was violated.

    Returns
    -------
    CrystalInputError
    """
    return CrystalInputError(
        f"sites {i} ({s[i].species_string}) and {j} ({s[j].species_string}) are {distance:.3f} Å apart, "
        f"closer than {min_distance} Å: the structure is probably broken (duplicate or overlapping "
        "sites); fix or drop it",
        index,
        id,
    )


def atomic_numbers(s: Structure, index=None, id=None) -> np.ndarray:
    """Atomic numbers of an ordered structure, checking each has features.

    Parameters
    ----------
    s : Structure
        The structure.
    index, id : optional
        Name of the structure for error messages.

    Returns
    -------
    numpy.ndarray of uint8

    Raises
    ------
    CrystalInputError
        For a disordered site or a species with no CGCNN feature vector.
    """
    try:
        species = s.species  # raises AttributeError on a partially occupied site
    except AttributeError:
        raise _disordered_site_error(s, index, id) from None
    z = np.fromiter((getattr(sp, "Z", 0) or 0 for sp in species), dtype=np.int64, count=len(species))
    bad = np.flatnonzero((z < 1) | (z > MAX_ATOMIC_NUMBER))
    if len(bad):
        i = int(bad[0])
        raise CrystalInputError(
            f"site {i} holds {species[i]!s}, which has no CGCNN feature vector (the table covers real "
            f"elements Z = 1-{MAX_ATOMIC_NUMBER}); replace or remove that species",
            index,
            id,
        )
    return z.astype(np.uint8)


def _validate(s: Structure, index, id, min_distance: float) -> np.ndarray:
    if len(s) == 0:
        raise CrystalInputError("the structure has no sites", index, id)
    z = atomic_numbers(s, index, id)
    lattice = s.lattice.matrix
    if not np.all(np.isfinite(lattice)):
        raise CrystalInputError("the lattice contains NaN or inf", index, id)
    if not np.isfinite(s.volume) or s.volume <= 1e-8:
        raise CrystalInputError(f"the lattice has zero volume ({s.volume}); it is not 3-D periodic", index, id)
    if s.volume > MAX_CELL_VOLUME:
        raise CrystalInputError(
            f"the cell is huge ({s.volume:.3g} Å^3, more than {MAX_CELL_VOLUME:.0e}); the neighbour search would need "
            "more memory than any machine has. Check the lattice's units (Å, not pm or bohr) and values",
            index,
            id,
        )
    # spacing between lattice planes: a neighbour search visits ~radius/spacing images per axis,
    # so a cell that is nearly flat along one direction costs unbounded memory (found by fuzzing)
    cross = np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]])
    spacing = abs(float(s.lattice.volume)) / np.linalg.norm(cross, axis=1)
    if spacing.min() < MIN_PLANE_SPACING:
        axis = "abc"[int(np.argmin(spacing))]
        raise CrystalInputError(
            f"the cell is nearly flat: its lattice planes are {spacing.min():.3g} Å apart across the {axis} axis "
            f"(at least {MIN_PLANE_SPACING} Å needed). Check the lattice, or reduce the cell first "
            "(structure.get_reduced_structure())",
            index,
            id,
        )
    frac = s.frac_coords
    if not np.all(np.isfinite(frac)):
        bad = int(np.nonzero(~np.isfinite(frac).all(axis=1))[0][0])
        raise CrystalInputError(f"site {bad} has NaN or inf coordinates", index, id)
    if min_distance > 0:
        centers, points, images, dist = s.get_neighbor_list(min_distance, exclude_self=False)
        # the only legitimate hit is an atom with itself in its own cell
        clash = ~((centers == points) & np.all(images == 0, axis=1))
        if clash.any():
            k = int(np.argmin(np.where(clash, dist, np.inf)))
            raise too_close_error(s, int(centers[k]), int(points[k]), float(dist[k]), index, id, min_distance)
    return z


def structure_and_numbers(obj: Any, index=None, id=None) -> tuple[Structure, np.ndarray]:
    """Coerce and validate one input, returning its atomic numbers as well.

    The interatomic-distance check is left to the caller, which is expected
    to compute a neighbour list anyway (see :func:`too_close_error`).

    Parameters
    ----------
    obj : object
        Anything :func:`as_structure` accepts.
    index, id : optional
        Name of the structure for error messages.

    Returns
    -------
    structure : Structure
    atomic_numbers : numpy.ndarray of uint8
    """
    s = _coerce(obj, index, id)
    return s, _validate(s, index, id, 0.0)


def as_structure(
    obj: Any,
    *,
    index: int | None = None,
    id: Any = None,
    validate: bool = True,
    min_distance: float = MIN_DISTANCE,
) -> Structure:
    """Turn one crystal input into a validated pymatgen ``Structure``.

    Parameters
    ----------
    obj : Structure, ase.Atoms, str, os.PathLike or dict
        A pymatgen ``Structure``; an ASE ``Atoms`` periodic in 3-D; CIF text
        (or POSCAR text); a path to a CIF/POSCAR or other file pymatgen can
        read; or a ``Structure.as_dict()`` dictionary.
    index : int, optional
        Position of the input in its collection, used in error messages.
    id : object, optional
        Identifier of the input, used in error messages.
    validate : bool, default=True
        Run the checks listed under Raises.
    min_distance : float, default=0.5
        Smallest allowed interatomic distance in Å (0 turns the check off;
        the featurizer does so and checks distances from its neighbour list,
        which costs nothing extra).

    Returns
    -------
    pymatgen.core.Structure

    Raises
    ------
    CrystalInputError
        For text that does not parse, a missing file, an empty structure, a
        partially occupied (disordered) site, an element with no feature
        vector, non-periodic input, NaN coordinates, or two atoms closer than
        ``min_distance``. The message names the structure by ``index``/``id``.
    """
    s = _coerce(obj, index, id)
    if validate:
        _validate(s, index, id, min_distance)
    return s


def as_sequence(X: Any) -> Sequence:
    """Turn a collection of crystal inputs into an indexable sequence.

    Parameters
    ----------
    X : list, tuple, numpy array, pandas Series or single-column DataFrame
        The collection. A single structure (or a string) is refused, since a
        collection is expected.

    Returns
    -------
    sequence
        Supports ``len`` and integer indexing by position.
    """
    if isinstance(X, (Structure, str, bytes, dict)) or _is_ase_atoms(X):
        raise TypeError(
            "expected a collection of structures (list, array, Series or one DataFrame column), "
            "got a single structure; wrap it in a list"
        )
    if hasattr(X, "iloc"):
        if getattr(X, "ndim", 1) == 2:
            if X.shape[1] != 1:
                raise ValueError(
                    f"got a DataFrame with {X.shape[1]} columns; pass the single column that holds "
                    "the structures (e.g. df['structure'] or df[['structure']])"
                )
            X = X.iloc[:, 0]
        return list(X.to_numpy())
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"expected a 1-D collection of structures, got an array of shape {X.shape}")
        return X
    if isinstance(X, Sequence):
        return X
    if isinstance(X, Iterable):
        return list(X)
    raise TypeError(f"expected a collection of structures, got {type(X).__name__}")


def input_ids(X: Any) -> list | None:
    """Return the ids of a pandas-indexed collection, if any.

    Parameters
    ----------
    X : object
        The collection given by the user.

    Returns
    -------
    list or None
        The pandas index as a list when ``X`` is a Series/DataFrame with a
        non-default index, else ``None``.
    """
    index = getattr(X, "index", None)
    if index is None or not hasattr(X, "iloc"):
        return None
    import pandas as pd

    if isinstance(index, pd.RangeIndex):
        return None
    return list(index)


def as_structure_list(X: Any, ids: Sequence | None = None, **kwargs) -> list[Structure]:
    """Coerce and validate every item of a collection.

    Parameters
    ----------
    X : collection
        Anything :func:`as_sequence` accepts.
    ids : sequence, optional
        Identifiers used in error messages (by default the pandas index).
    **kwargs
        Passed to :func:`as_structure`.

    Returns
    -------
    list of Structure
    """
    seq = as_sequence(X)
    if ids is None:
        ids = input_ids(X)
    return [as_structure(x, index=i, id=None if ids is None else ids[i], **kwargs) for i, x in enumerate(seq)]
