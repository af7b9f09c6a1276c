"""Measured formation enthalpies shipped with pymatgen, joined with the user's structures."""

from __future__ import annotations

import gzip
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..structures import CrystalInputError
from .dataset import Dataset, _check_errors, _check_unique, _parse_all, logger

__all__ = ["load_experimental_formation_enthalpy"]

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
    Kingsbury, R., Rosen, A. S., Gupta, A. S., Munro, J. M., Ong, S. P., Jain, A.,
    Dwaraknath, S., Horton, M. K. and Persson, K. A., "A flexible and scalable
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


