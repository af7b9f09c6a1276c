"""load_table: CSV or JSON-lines tables with CIF text or pymatgen dicts in a column."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import Dataset, _build, _check_errors

__all__ = ["load_table"]


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
        A CSV or JSON-lines file (``.gz`` compressed or not).
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
