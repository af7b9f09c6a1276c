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

from .dataset import Dataset, _build, _check_errors, _check_selection, _order_by_ids

__all__ = ["load_table"]


def _suffixes(path: Path) -> tuple[str, bool]:
    """The format suffix of ``path`` and whether it is gzip-compressed."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    return Path(name).suffix, gz


def _read_records(path: Path, nrows: int | None = None, wanted: list | None = None, id_col: str | None = None
                  ) -> pd.DataFrame:
    """The records of a table file; CSV cells stay text (see :func:`_infer_numeric`).

    With ``nrows``, reading stops after that many records; with ``wanted``
    (ids in ``id_col``), it keeps only those records and stops once all are
    found (JSON lines and CSV; a JSON list is read whole).
    """
    fmt, gz = _suffixes(path)
    opener = gzip.open if gz else open
    wanted_set = None if wanted is None else set(wanted) | {str(i) for i in wanted}

    def keep(record_id) -> bool:
        return record_id in wanted_set or str(record_id) in wanted_set

    if fmt == ".csv":
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            if wanted is None:
                return pd.read_csv(fh, dtype=str, keep_default_na=False, nrows=nrows)
            found, parts = set(), []
            for chunk in pd.read_csv(fh, dtype=str, keep_default_na=False, chunksize=2000):
                if id_col not in chunk.columns:
                    return chunk  # load_table reports the missing column
                hit = chunk[chunk[id_col].map(keep)]
                parts.append(hit)
                found.update(hit[id_col])
                if len(found) >= len(wanted):
                    break
            return pd.concat(parts, ignore_index=True)
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
            if nrows is not None:
                records = records[:nrows]
            elif wanted is not None:
                records = [r for r in records if not isinstance(r, dict) or keep(r.get(id_col))]
        else:
            records, found = [], 0
            # JSON lines: the character already read belongs to the first line
            for line_no, line in enumerate(itertools.chain([first + fh.readline()], fh), start=1):
                if nrows is not None and len(records) >= nrows:
                    break  # stop reading: the rest of the file is never decompressed
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{str(path)!r} line {line_no} is not valid JSON ({exc})") from exc
                if wanted is not None:
                    if not isinstance(record, dict) or not keep(record.get(id_col)):
                        continue
                    found += 1
                records.append(record)
                if wanted is not None and found >= len(wanted):
                    break
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
    nrows: int | None = None,
    ids: Sequence | None = None,
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

    nrows : int, optional
        Load only the first ``nrows`` records: reading stops there, so a
        large (compressed) file costs only what is used.
    ids : sequence, optional
        Load only the records with these ids (values of ``id_col``), in this
        order; reading of a JSON-lines or CSV file stops once all are found.
        An id that is not in the file raises.

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
    wanted = _check_selection(nrows, ids)
    if wanted is not None and id_col is None:
        raise ValueError("ids= selects records by their id column: give id_col")
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"{str(path)!r} is a folder, not a table file; for a CGCNN folder (id_prop.csv and CIFs) use load_cgcnn_folder"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    df = _read_records(path, nrows, wanted, id_col)
    if _suffixes(path)[0] == ".csv":
        df = _infer_numeric(df, {structure_col, id_col})
    columns = list(df.columns)

    def need(col: str, what: str) -> None:
        if col not in df.columns:
            raise ValueError(f"{str(path)!r} has no {what} column {col!r}; its columns are {columns}")

    need(structure_col, "structure")
    if id_col is not None:
        need(id_col, "id")
        if wanted is not None:
            df = _order_by_ids(df, df[id_col].tolist(), wanted, repr(str(path)))
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
