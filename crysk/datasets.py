"""Loaders for crystal data sets: CGCNN folders, tables of CIF text, Matbench.

Every loader returns a :class:`Dataset`: validated pymatgen structures and
their targets, both indexed by the record id, plus the records that could not
be used. Structures are parsed by :func:`crysk.structures.as_structure`, so a
data set that loads is one the featurizer and the estimators accept.

A broken record raises a :class:`~crysk.structures.CrystalInputError` that
names its id. With ``errors="skip"`` it is left out, listed in
:attr:`Dataset.skipped` and reported in a warning; records are never dropped
silently. Targets are loaded as they are: a missing target stays ``NaN``
(the estimators refuse NaN targets, see :meth:`Dataset.dropna`).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
import json
import logging
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, effective_n_jobs

from .structures import CrystalInputError, as_structure

__all__ = ["Dataset", "load_cgcnn_folder", "load_experimental_formation_enthalpy", "load_matbench", "load_table"]

logger = logging.getLogger(__name__)

_ERRORS = ("raise", "skip")
# below this many records, starting worker processes costs more than it saves
_MIN_PARALLEL = 1000


@dataclass
class Dataset:
    """Crystal structures with their targets, indexed by record id.

    Parameters
    ----------
    structures : pandas.Series
        One validated :class:`pymatgen.core.Structure` per record; the index
        (named ``"id"``) holds the record ids.
    targets : pandas.DataFrame
        One column per target, same index as ``structures``. Missing values
        are kept as ``NaN``.
    skipped : list of CrystalInputError
        Records left out with ``errors="skip"``; each error carries the
        record's ``id``, its position ``index`` in the source and the
        ``reason``. Empty when every record loaded.
    metadata : pandas.DataFrame, optional
        Other columns of the source table that are neither id, structure
        nor target (e.g. a formula), same index.
    source : str, optional
        Where the data came from (a path or a Matbench name).

    Examples
    --------
    >>> data = load_cgcnn_folder("cgcnn_format_sample")  # doctest: +SKIP
    >>> model.fit(data.X, data.y)                        # doctest: +SKIP
    """

    structures: pd.Series
    targets: pd.DataFrame
    skipped: list = field(default_factory=list)
    metadata: pd.DataFrame | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.structures.index.equals(self.targets.index):
            raise ValueError("structures and targets must have the same index (the record ids)")

    def __len__(self) -> int:
        return len(self.structures)

    def __repr__(self) -> str:
        return (
            f"Dataset({len(self)} structures, targets={list(self.targets.columns)}, "
            f"skipped={len(self.skipped)}, source={self.source!r})"
        )

    @property
    def ids(self) -> list:
        """The record ids, in order."""
        return list(self.structures.index)

    @property
    def X(self) -> pd.Series:
        """The structures, ready for ``fit``/``transform`` (ids name them in errors)."""
        return self.structures

    @property
    def y(self) -> pd.Series | pd.DataFrame:
        """The targets: a Series for one target, else the DataFrame."""
        if self.targets.shape[1] == 1:
            return self.targets.iloc[:, 0]
        return self.targets

    def dropna(self) -> Dataset:
        """The records whose targets are all finite.

        Returns
        -------
        Dataset
            A new data set; ``skipped`` is carried over unchanged.
        """
        keep = np.isfinite(self.targets.to_numpy(dtype=np.float64)).all(axis=1)
        return self.subset(keep)

    def subset(self, key: Any) -> Dataset:
        """Select records by position or boolean mask.

        Parameters
        ----------
        key : array of int or bool

        Returns
        -------
        Dataset
        """
        return Dataset(
            self.structures.iloc[key],
            self.targets.iloc[key],
            list(self.skipped),
            None if self.metadata is None else self.metadata.iloc[key],
            self.source,
        )


# ----------------------------------------------------------------------------- parsing


def _check_errors(errors: str) -> None:
    if errors not in _ERRORS:
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")


def _coerce_cell(value: Any, column: str, index: int, id: Any) -> Any:
    """Turn one table cell into something :func:`as_structure` accepts."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise CrystalInputError(
            f"the record has no structure in column {column!r}; fill it in or drop the record", index, id
        )
    if isinstance(value, str) and value.lstrip().startswith("{"):
        # a Structure dict stored as JSON text (e.g. a CSV export)
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise CrystalInputError(
                f"column {column!r} holds text starting with '{{' that is not valid JSON ({exc})", index, id
            ) from exc
    return value


@contextlib.contextmanager
def _quiet():
    """Silence pymatgen's warnings (coordinate snapping, missing element data).

    ``catch_warnings`` swaps process-wide state, so it is only safe in the
    main thread: under a threading joblib backend the workers leave it alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _parse_chunk(items: Sequence, ids: Sequence, start: int, column: str, errors: str):
    structures, kept, failed = [], [], []
    for k, (item, sid) in enumerate(zip(items, ids)):
        try:
            with _quiet():
                structures.append(as_structure(_coerce_cell(item, column, start + k, sid), index=start + k, id=sid))
        except CrystalInputError as exc:
            if errors == "raise":
                raise
            failed.append(exc)
            continue
        kept.append(k)
    return structures, [start + k for k in kept], failed


def _parse_all(
    items: Sequence, ids: Sequence, column: str, n_jobs: int | None, errors: str, verbose: bool
) -> tuple[list, list[int], list[CrystalInputError]]:
    """Parse every item, in parallel for large inputs; keeps input order."""
    n = len(items)
    n_jobs = effective_n_jobs(n_jobs) if n >= _MIN_PARALLEL else 1
    chunk = max(1, min(500, -(-n // (8 * n_jobs)))) if (n_jobs > 1 or verbose) else max(n, 1)
    starts = range(0, n, chunk)
    tasks = [
        (items[s : s + chunk], ids[s : s + chunk], s, column, errors) for s in starts
    ]
    if n_jobs == 1:
        parts = (_parse_chunk(*t) for t in tasks)
    else:
        parts = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_parse_chunk)(*t) for t in tasks)
    if verbose:
        from tqdm.auto import tqdm

        parts = tqdm(parts, total=len(tasks), desc="parsing structures", unit="chunk")
    structures, kept, failed = [], [], []
    for s, k, f in parts:
        structures.extend(s)
        kept.extend(k)
        failed.extend(f)
    if failed:
        warnings.warn(
            f"left out {len(failed)} of {n} records that could not be used (see Dataset.skipped); "
            f"first: {failed[0]}",
            UserWarning,
            stacklevel=3,
        )
    return structures, kept, failed


def _check_unique(ids: Sequence, where: str) -> None:
    index = pd.Index(ids)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"{where} has duplicate ids {dup}; each record needs its own id")


def _build(
    items: Sequence,
    ids: Sequence,
    targets: pd.DataFrame,
    metadata: pd.DataFrame | None,
    column: str,
    source: str,
    n_jobs: int | None,
    errors: str,
    verbose: bool,
) -> Dataset:
    _check_unique(ids, source)
    structures, kept, failed = _parse_all(items, list(ids), column, n_jobs, errors, verbose)
    index = pd.Index([ids[k] for k in kept], name="id")
    targets = targets.iloc[kept].set_axis(index)
    if metadata is not None:
        metadata = metadata.iloc[kept].set_axis(index)
    return Dataset(pd.Series(structures, index=index, dtype=object, name="structure"), targets, failed, metadata, source)


# ----------------------------------------------------------------------------- CGCNN folder


def _read_id_prop(path: Path) -> tuple[list[str], pd.DataFrame]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} not found: a CGCNN data folder holds id_prop.csv (no header; id, target(s)) "
            "and one <id>.cif per crystal"
        )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{str(path)!r} is empty")
    width = len(rows[0])
    if width < 2:
        raise ValueError(f"{str(path)!r}: each line needs an id and at least one target, got {rows[0]!r}")
    ids, values = [], []
    for line, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"{str(path)!r} line {line} (id {row[0]!r}) has {len(row)} fields, the first line {width}")
        ids.append(row[0].strip())
        try:
            values.append([float(cell) if cell.strip() else np.nan for cell in row[1:]])
        except ValueError:
            hint = " (id_prop.csv has no header line; remove it)" if line == 1 else ""
            raise ValueError(
                f"{str(path)!r} line {line} (id {row[0]!r}): target {row[1:]!r} is not a number{hint}"
            ) from None
    n_targets = width - 1
    columns = ["target"] if n_targets == 1 else [f"target_{j}" for j in range(n_targets)]
    return ids, pd.DataFrame(np.array(values, dtype=np.float64).reshape(len(ids), n_targets), columns=columns)


def load_cgcnn_folder(
    path: str | os.PathLike,
    *,
    n_jobs: int | None = 1,
    errors: str = "raise",
    verbose: bool = False,
) -> Dataset:
    """Load a data folder in the classic CGCNN layout.

    The folder holds ``id_prop.csv`` (no header; one ``id,target[,target...]``
    line per crystal) and one ``<id>.cif`` per crystal. An ``atom_init.json``
    there is ignored with a warning: crysk uses its own element table (the same
    92 CGCNN features).

    Parameters
    ----------
    path : str or os.PathLike
        The folder.
    n_jobs : int, optional
        Processes parsing CIF files (joblib semantics; used from 1000 files on).
    errors : {"raise", "skip"}, default="raise"
        A CIF that is missing or unusable raises a ``CrystalInputError``
        naming its id, or with ``"skip"`` is left out, warned about and
        listed in :attr:`Dataset.skipped`.
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    Dataset
        Targets in column ``"target"`` (or ``"target_0"``, ``"target_1"``,
        ... for several), ids as in ``id_prop.csv`` (strings), in file order.

    Raises
    ------
    FileNotFoundError
        If the folder or its ``id_prop.csv`` is missing.
    ValueError
        For a malformed ``id_prop.csv`` or duplicate ids (naming the line).
    CrystalInputError
        For a missing or broken CIF (``errors="raise"``), naming its id.
    """
    _check_errors(errors)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder")
    if (folder / "atom_init.json").exists():
        msg = (
            f"ignoring {str(folder / 'atom_init.json')!r}: crysk uses its own element table "
            "(CGCNN's 92 atom features), so a custom atom_init.json has no effect"
        )
        logger.info(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    ids, targets = _read_id_prop(folder / "id_prop.csv")
    paths = [folder / f"{i}.cif" for i in ids]
    return _build(paths, ids, targets, None, "cif", str(folder), n_jobs, errors, verbose)


# ----------------------------------------------------------------------------- tables


def _suffixes(path: Path) -> tuple[str, bool]:
    """The format suffix of ``path`` and whether it is gzip-compressed."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    return Path(name).suffix, gz


def _read_records(path: Path) -> pd.DataFrame:
    """The records of a table file; CSV cells stay text (see :func:`_infer_numeric`)."""
    fmt, gz = _suffixes(path)
    opener = gzip.open if gz else open
    if fmt == ".csv":
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            return pd.read_csv(fh, dtype=str, keep_default_na=False)
    if fmt not in (".jsonl", ".ndjson", ".json"):
        raise ValueError(
            f"cannot tell the format of {str(path)!r}: use a .csv, .jsonl/.ndjson (JSON lines) or .json "
            "(a JSON list of records) file, optionally gzip-compressed (.gz)"
        )
    with opener(path, "rt", encoding="utf-8") as fh:
        first = fh.read(1)
        while first.isspace():
            first = fh.read(1)
        if first == "[":
            records = json.loads(first + fh.read())
        else:
            records = []
            # JSON lines: the character already read belongs to the first line
            for line_no, line in enumerate(itertools.chain([first + fh.readline()], fh), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{str(path)!r} line {line_no} is not valid JSON ({exc})") from exc
    if not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{str(path)!r}: expected JSON objects (one per record), got other values")
    return pd.DataFrame.from_records(records)


def _infer_numeric(df: pd.DataFrame, skip: set) -> pd.DataFrame:
    """CSV columns (but those in ``skip``) that hold only numbers become floats.

    Ids are skipped so that ``"0001"`` stays ``"0001"``. Empty cells become
    NaN in numeric columns and None elsewhere.
    """
    out = df.copy()
    for col in out.columns:
        if col in skip:
            out[col] = out[col].where(out[col] != "", None)
            continue
        values = out[col].replace("", np.nan)
        converted = pd.to_numeric(values, errors="coerce")
        if values.notna().any() and converted.notna().sum() == values.notna().sum():
            out[col] = converted.astype(np.float64)
        else:
            out[col] = out[col].where(out[col] != "", None)
    return out


def _target_frame(df: pd.DataFrame, target_cols: list[str], path: Path) -> pd.DataFrame:
    out = {}
    for col in target_cols:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{str(path)!r}: target column {col!r} holds a non-number ({df[col].iloc[first]!r}) at record "
                f"#{first}; give only numeric target columns in target_cols"
            )
        out[col] = values.astype(np.float64).to_numpy()
    return pd.DataFrame(out, index=df.index)


def load_table(
    path: str | os.PathLike,
    structure_col: str = "cif",
    target_cols: str | Sequence[str] | None = None,
    id_col: str | None = "id",
    *,
    n_jobs: int | None = 1,
    errors: str = "raise",
    verbose: bool = False,
) -> Dataset:
    """Load a table of structures and targets.

    The format follows the file name: ``.csv``, ``.jsonl``/``.ndjson``
    (JSON lines, one object per record) or ``.json`` (a JSON list of
    objects, or JSON lines), each optionally gzip-compressed (``.gz``).

    Parameters
    ----------
    path : str or os.PathLike
    structure_col : str, default="cif"
        Column holding the structures: CIF (or POSCAR) text, a pymatgen
        ``Structure.as_dict()`` dict (or that dict as JSON text in a CSV),
        or a path to a structure file.
    target_cols : str or sequence of str, optional
        Target column(s). By default every numeric column other than the id
        and structure columns.
    id_col : str or None, default="id"
        Column holding unique record ids; ``None`` numbers records from 0.
    n_jobs : int, optional
        Processes parsing structures (joblib semantics; used from 1000
        records on). Parsing costs ~1-10 ms per structure.
    errors : {"raise", "skip"}, default="raise"
        A record whose structure cannot be used raises a
        ``CrystalInputError`` naming its id, or with ``"skip"`` is left out,
        warned about and listed in :attr:`Dataset.skipped`.
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    Dataset
        Targets loaded as they are (missing ones as NaN); other non-numeric
        columns go to :attr:`Dataset.metadata`.

    Raises
    ------
    ValueError
        For an unknown format, a missing column (the message lists those
        present), duplicate ids or a non-numeric target column.
    CrystalInputError
        For an unusable structure (``errors="raise"``), naming its id.

    Examples
    --------
    >>> load_table("mp_elastic_binary.pymatgen.json.gz", structure_col="structure",
    ...            target_cols=["bulk_modulus_vrh"], id_col="mp_id")  # doctest: +SKIP
    """
    _check_errors(errors)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    df = _read_records(path)
    if _suffixes(path)[0] == ".csv":
        df = _infer_numeric(df, {structure_col, id_col})
    columns = list(df.columns)

    def need(col: str, what: str) -> None:
        if col not in df.columns:
            raise ValueError(f"{str(path)!r} has no {what} column {col!r}; its columns are {columns}")

    need(structure_col, "structure")
    if id_col is not None:
        need(id_col, "id")
        if df[id_col].isna().any():
            first = int(np.flatnonzero(df[id_col].isna().to_numpy())[0])
            raise ValueError(f"{str(path)!r}: record #{first} has no id in column {id_col!r}")
        ids = df[id_col].tolist()
    else:
        ids = list(range(len(df)))
    used = {structure_col} | ({id_col} if id_col is not None else set())
    if target_cols is None:
        target_cols = [c for c in columns if c not in used and pd.api.types.is_numeric_dtype(df[c])]
    elif isinstance(target_cols, str):
        target_cols = [target_cols]
    else:
        target_cols = list(target_cols)
    for col in target_cols:
        need(col, "target")
    targets = _target_frame(df, target_cols, path)
    rest = [c for c in columns if c not in used and c not in target_cols]
    metadata = df[rest] if rest else None
    return _build(
        df[structure_col].tolist(), ids, targets, metadata, structure_col, str(path), n_jobs, errors, verbose
    )


# ----------------------------------------------------------------------------- experimental enthalpies

#: Where pymatgen has shipped the Kingsbury et al. (2022) data, newest layout first; each is
#: (package, file name) for importlib.resources, so the file is found wherever pymatgen is installed.
_EXP_COMPOUNDS_LOCATIONS = (
    ("pymatgen.analysis.compatibility", "exp_compounds.json.gz"),
    ("pymatgen.entries", "exp_compounds.json.gz"),
)
_EV_PER_ATOM = "formation_enthalpy_per_atom"


def _exp_compounds_file(path: str | os.PathLike | None) -> Any:
    """The experimental-enthalpy file: ``path`` if given, else the first packaged copy found."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{str(path)!r} does not exist")
        return Path(path)
    from importlib import resources

    for package, name in _EXP_COMPOUNDS_LOCATIONS:
        try:
            candidate = resources.files(package) / name
        except ModuleNotFoundError:
            continue
        if candidate.is_file():
            return candidate
    try:
        from importlib.metadata import version

        have = f"pymatgen {version('pymatgen')}"
    except Exception:  # pymatgen not installed at all, or without metadata
        have = "this environment's pymatgen"
    looked = ", ".join(f"{pkg}/{name}" for pkg, name in _EXP_COMPOUNDS_LOCATIONS)
    raise FileNotFoundError(
        f"{have} does not ship exp_compounds.json.gz (looked in {looked}). Install a pymatgen that does "
        "(pip install -U pymatgen; it is the fit data of MaterialsProject2020Compatibility), or pass "
        "path= to a copy of the file"
    )


def _read_exp_compounds(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The measured formation enthalpies, one row per compound, per formula unit and per atom.

    Returns
    -------
    pandas.DataFrame
        Columns ``formula``, ``mpid`` (None where the file gives none),
        ``n_atoms`` (atoms in ``formula``), ``formation_enthalpy_per_fu`` and
        ``uncertainty_per_fu`` (eV per formula unit, as in the file),
        ``formation_enthalpy_per_atom`` and ``uncertainty_per_atom`` (eV/atom).
    """
    from pymatgen.core import Composition

    source = _exp_compounds_file(path)
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        records = json.load(fh)
    expected = {"formula", "exp energy", "uncertainty", "mpid"}
    if not isinstance(records, list) or not records or not expected <= set(records[0]):
        raise ValueError(
            f"{source} is not the list of {sorted(expected)} records crysk knows; pymatgen changed its "
            "format, so pass path= to a file of the old format"
        )
    df = pd.DataFrame.from_records(records)
    # the file's energies are per formula unit as written (NaCl: -4.26 eV = -411 kJ/mol), not per atom
    n_atoms = np.array([Composition(f).num_atoms for f in df["formula"]], dtype=np.float64)
    per_fu = df["exp energy"].astype(np.float64).to_numpy()
    unc = pd.to_numeric(df["uncertainty"], errors="coerce").astype(np.float64).to_numpy()
    mpid = df["mpid"].where(df["mpid"].notna() & (df["mpid"] != ""), None)
    return pd.DataFrame({
        "formula": df["formula"], "mpid": mpid, "n_atoms": n_atoms,
        "formation_enthalpy_per_fu": per_fu, "uncertainty_per_fu": unc,
        _EV_PER_ATOM: per_fu / n_atoms, "uncertainty_per_atom": unc / n_atoms,
    })


def load_experimental_formation_enthalpy(
    structures: Dataset | Mapping[str, Any] | pd.Series,
    *,
    path: str | os.PathLike | None = None,
    check_formula: bool = True,
    n_jobs: int | None = 1,
    errors: str = "raise",
) -> Dataset:
    """Measured formation enthalpies (pymatgen's packaged set) joined with your structures.

    pymatgen ships 2,135 experimental standard formation enthalpies
    (298 K), the data to which the Materials Project's 2020 energy
    corrections were fitted (Kingsbury et al. 2022). 1,580 of them name the
    Materials Project entry (``mp-...`` id) of their compound, but the file
    holds no structures: this loader joins them by id with structures you
    supply, e.g. a Materials Project table loaded with :func:`load_table`,
    and converts the energies from eV per formula unit to eV per atom (the
    unit of DFT formation energies per atom; negative = stable).

    Parameters
    ----------
    structures : Dataset, mapping or pandas.Series
        Structures keyed by Materials Project id: a :class:`Dataset` (as
        from ``load_table(..., id_col="id")``), a dict ``{mp_id:
        structure}`` or a Series indexed by id. Values may be anything
        :func:`crysk.structures.as_structure` accepts (only the joined ones
        are parsed). A Dataset's targets (e.g. the DFT formation energy)
        are carried over as metadata columns, ready to serve as the
        baseline of :class:`crysk.correction.ResidualRegressor`.
    path : str or os.PathLike, optional
        A copy of ``exp_compounds.json.gz`` to read instead of pymatgen's.
    check_formula : bool, default=True
        Leave out (and report) entries whose structure has another reduced
        formula than the measured compound: the id then points to another
        material.
    n_jobs : int, optional
        Processes parsing structures given as text or paths (joblib semantics).
    errors : {"raise", "skip"}, default="raise"
        What to do with a supplied structure that cannot be used, as in
        :func:`load_table`.

    Returns
    -------
    Dataset
        One record per measured compound with a structure, indexed by MP id,
        in file order. Target column ``"formation_enthalpy_per_atom"``
        (eV/atom). Metadata: ``formula``, ``n_atoms``,
        ``formation_enthalpy_per_fu``, ``uncertainty_per_fu`` and
        ``uncertainty_per_atom`` (eV; NaN where the file gives none) and the
        targets of a ``structures`` Dataset. :attr:`Dataset.skipped` lists
        every measured compound left out, each with its reason: no MP id in
        the file, no structure supplied for its id, a formula mismatch, or an
        unusable structure (``errors="skip"``); a warning gives the counts.

    Raises
    ------
    FileNotFoundError
        When the installed pymatgen does not ship the file (the message says
        what to install) or ``path`` does not exist.
    TypeError
        For ``structures`` of another kind.

    References
    ----------
    R. Kingsbury, A. S. Rosen, A. S. Gupta, J. M. Munro, S. P. Ong, A. Jain,
    S. Dwaraknath, M. K. Horton and K. A. Persson, "A flexible and scalable
    scheme for mixing computed formation energies from different levels of
    theory", *npj Computational Materials* 8, 195 (2022).

    Examples
    --------
    >>> mp = load_table("mp_eform.jsonl.gz", target_cols="formation_energy_per_atom")  # doctest: +SKIP
    >>> exp = load_experimental_formation_enthalpy(mp)                                  # doctest: +SKIP
    >>> dft, measured = exp.metadata["formation_energy_per_atom"], exp.y                # doctest: +SKIP
    """
    _check_errors(errors)
    extra = None
    if isinstance(structures, Dataset):
        supplied, extra = structures.structures, structures.targets
    elif isinstance(structures, pd.Series):
        supplied = structures
    elif isinstance(structures, Mapping):
        supplied = pd.Series(dict(structures), dtype=object)
    else:
        raise TypeError(
            "structures must be a crysk Dataset (e.g. from load_table), a dict {mp_id: structure} or a "
            f"pandas Series indexed by MP id, got {type(structures).__name__}"
        )
    _check_unique(list(supplied.index), "structures")
    table = _read_exp_compounds(path)
    lookup = pd.Index(supplied.index)
    left_out: list[CrystalInputError] = []
    rows = []
    for pos, (formula, mpid) in enumerate(zip(table["formula"], table["mpid"])):
        if mpid is None:
            left_out.append(CrystalInputError(f"{formula}: the file names no Materials Project id", pos, None))
        elif mpid not in lookup:
            left_out.append(CrystalInputError(f"{formula}: no structure supplied for this id", pos, mpid))
        else:
            rows.append(pos)
    n_missing = len(left_out)
    joined = table.iloc[rows]
    ids = joined["mpid"].tolist()
    items = supplied.loc[ids].tolist()
    structs, kept, failed = _parse_all(items, ids, "structures", n_jobs, errors, False)
    left_out += [CrystalInputError(exc.reason, rows[exc.index], exc.id) for exc in failed]
    joined, ids = joined.iloc[kept], [ids[k] for k in kept]
    n_mismatch = 0
    if check_formula:
        from pymatgen.core import Composition

        same = []
        for s, formula, mpid, pos in zip(structs, joined["formula"], ids, joined.index):
            ok = s.composition.reduced_formula == Composition(formula).reduced_formula
            same.append(ok)
            if not ok:
                left_out.append(CrystalInputError(
                    f"{formula}: the structure supplied for this id is {s.composition.reduced_formula}", pos, mpid
                ))
        n_mismatch = len(same) - int(sum(same))
        structs = [s for s, ok in zip(structs, same) if ok]
        joined, ids = joined[np.array(same, dtype=bool)], [i for i, ok in zip(ids, same) if ok]
    index = pd.Index(ids, name="id")
    metadata = joined.drop(columns=["mpid", _EV_PER_ATOM]).set_axis(index)
    if extra is not None:
        metadata = pd.concat([metadata, extra.loc[ids].set_axis(index)], axis=1)
    msg = (
        f"{len(index)} of {len(table)} measured formation enthalpies have a structure; left out "
        f"{n_missing} without one ({int(table['mpid'].isna().sum())} of them have no MP id in the file)"
        + (f", {n_mismatch} whose structure has another formula" if n_mismatch else "")
        + (f", {len(failed)} with an unusable structure" if failed else "")
        + " (see Dataset.skipped)"
    )
    logger.info(msg)
    if left_out:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return Dataset(
        pd.Series(structs, index=index, dtype=object, name="structure"),
        joined[[_EV_PER_ATOM]].set_axis(index),
        left_out,
        metadata,
        f"pymatgen exp_compounds.json.gz (Kingsbury et al. 2022) joined with {len(supplied)} structures",
    )


# ----------------------------------------------------------------------------- Matbench


def _matbench_name(name: str) -> str:
    full = name if name.startswith("matbench_") else f"matbench_{name}"
    from matminer.datasets.utils import _load_dataset_dict

    known = sorted(k for k in _load_dataset_dict() if k.startswith("matbench_"))
    if full not in known:
        raise ValueError(f"unknown Matbench data set {name!r}; choose one of {known} (the 'matbench_' prefix is optional)")
    return full


def _reachable(url: str, timeout: float) -> str | None:
    """``None`` if a TCP connection to the host of ``url`` opens, else why not."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _offline_error(name: str, url: str, why: str) -> ConnectionError:
    return ConnectionError(
        f"load_matbench({name!r}) needs network access to download {url} ({why}). Download that file "
        "on a machine with internet access and pass its folder as data_home=, or load a local copy of "
        "the data with crysk.datasets.load_table (e.g. a JSON-lines file with a 'cif' column)"
    )


def load_matbench(
    name: str,
    *,
    data_home: str | os.PathLike | None = None,
    timeout: float = 5.0,
    n_jobs: int | None = 1,
    errors: str = "raise",
    verbose: bool = False,
) -> Dataset:
    """Load a Matbench v0.1 structure task through matminer.

    matminer downloads the data set on first use (into ``data_home``, by
    default its own package folder) and reuses the file afterwards. When the
    file is not there and the download server cannot be reached, this fails
    at once instead of waiting on the network.

    Parameters
    ----------
    name : str
        e.g. ``"matbench_mp_gap"`` or just ``"mp_gap"``.
    data_home : str or os.PathLike, optional
        Folder holding (or receiving) matminer's data file.
    timeout : float, default=5.0
        Seconds to wait when checking that the download server is reachable.
    n_jobs, errors, verbose
        As in :func:`load_table`.

    Returns
    -------
    Dataset
        Ids follow Matbench's scheme, ``mb-<task>-<row number from 1>`` zero
        padded to the width of the data set size (``mb-mp-gap-000001``);
        the target column keeps matminer's name (e.g. ``"gap pbe"``).

    Raises
    ------
    ValueError
        For an unknown name, or a composition-only task (no structures).
    ConnectionError
        When the data must be downloaded and the network is unreachable.
    """
    _check_errors(errors)
    full = _matbench_name(name)
    from matminer.datasets.utils import _get_data_home, _load_dataset_dict

    meta = _load_dataset_dict()[full]
    if "structure" not in meta["columns"]:
        raise ValueError(
            f"{full} gives compositions, not structures; crysk's graph models need structures. Use "
            "matminer.datasets.load_dataset directly (crysk.baselines.ElementDescriptor accepts compositions)"
        )
    home = _get_data_home(None if data_home is None else str(data_home))
    local = Path(home) / f"{full}.{meta['file_type']}"
    if not local.is_file():
        why = _reachable(meta["url"], timeout)
        if why is not None:
            raise _offline_error(name, meta["url"], why)
    from matminer.datasets import load_dataset

    try:
        df = load_dataset(full, data_home=None if data_home is None else str(data_home))
    except (OSError, ConnectionError) as exc:  # requests' errors derive from OSError
        raise _offline_error(name, meta["url"], f"{type(exc).__name__}: {exc}") from exc
    target_cols = [c for c in df.columns if c != "structure"]
    width = len(str(len(df)))
    task = full[len("matbench_") :].replace("_", "-")
    ids = [f"mb-{task}-{i + 1:0{width}d}" for i in range(len(df))]
    targets = pd.DataFrame({c: pd.to_numeric(df[c]).astype(np.float64).to_numpy() for c in target_cols})
    return _build(df["structure"].tolist(), ids, targets, None, "structure", full, n_jobs, errors, verbose)
