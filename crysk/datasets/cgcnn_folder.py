"""load_cgcnn_folder: the CGCNN layout (id_prop.csv beside one CIF per crystal)."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import Dataset, _build, _check_errors, _check_selection, _order_by_ids, logger

__all__ = ["load_cgcnn_folder"]


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
    nrows: int | None = None,
    ids: Sequence | None = None,
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

    nrows : int, optional
        Load only the first ``nrows`` records of ``id_prop.csv``; the other
        CIF files are never opened.
    ids : sequence, optional
        Load only these records (in this order); the other CIF files are
        never opened. An id that is not in ``id_prop.csv`` raises.

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
    wanted = _check_selection(nrows, ids)
    ids, targets = _read_id_prop(folder / "id_prop.csv")
    if nrows is not None:
        ids, targets = ids[:nrows], targets.iloc[:nrows]
    elif wanted is not None:
        targets = _order_by_ids(targets, ids, wanted, repr(str(folder / "id_prop.csv")))
        ids = [str(i) for i in wanted]
    paths = [folder / f"{i}.cif" for i in ids]
    return _build(paths, ids, targets, None, "cif", str(folder), n_jobs, errors, verbose)
