"""Dataset: validated structures, targets and skipped records; the parsing every loader shares."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import effective_n_jobs

from ..parallel import map_chunks
from ..structures import CrystalInputError, as_structure, quiet_warnings

__all__ = ["Dataset"]


logger = logging.getLogger("crysk.datasets")

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
            Positions or a boolean mask of the records to keep.

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


def _parse_chunk(items: Sequence, ids: Sequence, start: int, column: str, errors: str):
    structures, kept, failed = [], [], []
    for k, (item, sid) in enumerate(zip(items, ids)):
        try:
            with quiet_warnings():
                structures.append(as_structure(_coerce_cell(item, column, start + k, sid), index=start + k, id=sid))
        except CrystalInputError as exc:
            if errors == "raise":
                raise
            failed.append(exc)
            continue
        kept.append(k)
    return structures, [start + k for k in kept], failed


def _shutdown_workers() -> None:
    """Stop joblib's reusable worker processes (loky) and wait until they are gone."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True, kill_workers=True)


def _parse_all(
    items: Sequence, ids: Sequence, column: str, n_jobs: int | None, errors: str, verbose: bool
) -> tuple[list, list[int], list[CrystalInputError]]:
    """Parse every item, in parallel for large inputs; keeps input order."""
    n = len(items)
    n_workers = effective_n_jobs(n_jobs) if n >= _MIN_PARALLEL else 1
    parts = map_chunks(
        _parse_chunk,
        n,
        lambda start, stop, parallel: (items[start:stop], ids[start:stop], start, column, errors),
        n_jobs=n_jobs,
        min_parallel=_MIN_PARALLEL,
        chunks_per_job=8,
        max_chunk=500,
        progress="parsing structures" if verbose else None,
        progress_chunk=max(1, min(500, -(-n // 8))),
    )
    structures, kept, failed = [], [], []
    try:
        for s, k, f in parts:
            structures.extend(s)
            kept.extend(k)
            failed.extend(f)
    finally:
        if n_workers > 1:
            # the workers hold parsed structures (gigabytes for a large table), so
            # none may outlive the call: shut joblib's worker pool down on leaving
            _shutdown_workers()
    if failed:
        warnings.warn(
            f"left out {len(failed)} of {n} records that could not be used (see Dataset.skipped); "
            f"first: {failed[0]}",
            UserWarning,
            stacklevel=3,
        )
    return structures, kept, failed


def _check_selection(nrows: int | None, ids: Sequence | None) -> list | None:
    """Check ``nrows``/``ids`` of a loader; return the wanted ids as a list (or None)."""
    if nrows is not None and ids is not None:
        raise ValueError("give nrows or ids, not both")
    if nrows is not None and (not isinstance(nrows, (int, np.integer)) or isinstance(nrows, bool) or nrows < 0):
        raise ValueError(f"nrows must be a non-negative integer, got {nrows!r}")
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"ids must be a list of record ids, got the single string {ids!r}; wrap it in a list")
    wanted = list(ids)
    _check_unique(wanted, "ids")
    return wanted


def _order_by_ids(df: pd.DataFrame, id_values: Sequence, wanted: list, where: str) -> pd.DataFrame:
    """The rows of ``df`` whose id is in ``wanted``, in the order of ``wanted``."""
    position = {}
    for k, value in enumerate(id_values):
        position.setdefault(value, k)
        position.setdefault(str(value), k)  # "123" in ids finds the integer id 123 of a JSON file
    missing = [i for i in wanted if i not in position and str(i) not in position]
    if missing:
        raise ValueError(f"{where} has no records with ids {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    rows = [position[i] if i in position else position[str(i)] for i in wanted]
    return df.iloc[rows].reset_index(drop=True)


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
