"""Shared fixtures: small real data sets from the shared data folder."""

from __future__ import annotations

import csv
import gzip
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest


def data_dir() -> Path:
    env = os.environ.get("CRYSK_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"data folder {path} not found: set CRYSK_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session")
def data_path() -> Path:
    return data_dir()


def _read_jsonl(name: str, limit: int) -> list[dict]:
    out = []
    with gzip.open(data_dir() / name, "rt", encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line))
            if len(out) >= limit:
                break
    return out


@pytest.fixture(scope="session")
def eform_sample() -> tuple[list, np.ndarray, list[str]]:
    """The 200 CGCNN-folder structures (CIF paths), formation energies, ids."""
    folder = data_dir() / "cgcnn_format_sample"
    with open(folder / "id_prop.csv") as fh:
        rows = list(csv.reader(fh))
    ids = [r[0] for r in rows]
    y = np.array([float(r[1]) for r in rows])
    return [folder / f"{i}.cif" for i in ids], y, ids


@pytest.fixture(scope="session")
def eform_structures(eform_sample):
    from crysk import as_structure

    paths, y, ids = eform_sample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [as_structure(p) for p in paths], y, ids


@pytest.fixture(scope="session")
def eform_records():
    """600 random records of mp_eform.jsonl.gz (CIF text); the file is sorted by id."""
    records = _read_jsonl("mp_eform.jsonl.gz", 10**6)
    picked = np.random.default_rng(1).permutation(len(records))[:600]
    return [records[i] for i in picked]


@pytest.fixture(scope="session")
def elastic_dicts():
    """The first 50 records of the elastic data as pymatgen Structure dicts."""
    with gzip.open(data_dir() / "mp_elastic_binary.pymatgen.json.gz", "rt") as fh:
        return json.load(fh)[:50]


@pytest.fixture(scope="session")
def eform_graphs(eform_records):
    """Crystal graphs (default settings) and formation energies of the 600 ``eform_records``."""
    from crysk import CrystalGraphFeaturizer

    graphs = CrystalGraphFeaturizer().transform(
        [r["cif"] for r in eform_records], ids=[r["id"] for r in eform_records]
    )
    return graphs, np.array([r["formation_energy_per_atom"] for r in eform_records])


@pytest.fixture(autouse=True, scope="session")
def _fixed_torch_threads():
    """Give every fit with the default ``n_threads=None`` one torch thread.

    The default takes the cores that other processes leave free when a fit
    starts, so on a shared machine two fits in one test could run on different
    thread counts and differ in the last bits of their float sums; tests that
    compare fits bit for bit must not depend on the neighbours' load.
    ``tests/test_threads.py`` tests the automatic choice itself.
    """
    import crysk._threads as threads

    original = threads.free_cores
    threads.free_cores = lambda: 1
    yield
    threads.free_cores = original
