"""load_matbench: Matbench v0.1 structure tasks through matminer (downloaded on first use)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import Dataset, _build, _check_errors

__all__ = ["load_matbench"]


def _matbench_name(name: str) -> str:
    full = name if name.startswith("matbench_") else f"matbench_{name}"
    from matminer.datasets import get_available_datasets

    known = sorted(k for k in get_available_datasets(print_format=None) if k.startswith("matbench_"))
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
    from matminer import datasets as mm

    meta = {key: mm.get_dataset_attribute(full, key) for key in ("columns", "url", "file_type")}
    if "structure" not in meta["columns"]:
        raise ValueError(
            f"{full} gives compositions, not structures; crysk's graph models need structures. Use "
            "matminer.datasets.load_dataset directly (crysk.baselines.ElementDescriptor accepts compositions)"
        )
    # where matminer's load_dataset looks: data_home, else $MATMINER_DATA, else its package folder
    home = data_home if data_home is not None else os.environ.get("MATMINER_DATA", os.path.dirname(mm.__file__))
    local = Path(home).expanduser() / f"{full}.{meta['file_type']}"
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
