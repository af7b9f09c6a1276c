"""Loaders read only what is used and leave no worker processes behind (issue 19, item 5)."""

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

import crysk.datasets.dataset as dataset_module
from crysk import load_cgcnn_folder, load_table


@pytest.fixture(scope="module")
def table(tmp_path_factory, eform_records):
    """A JSON-lines table of 30 records whose 31st line is broken: reading it would fail."""
    path = tmp_path_factory.mktemp("t") / "t.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in eform_records[:30]:
            fh.write(json.dumps(r) + "\n")
        fh.write("{not json\n")
    return path, [r["id"] for r in eform_records[:30]]


def test_nrows_stops_reading_early(table):
    path, ids = table
    data = load_table(path, target_cols="formation_energy_per_atom", nrows=12)
    assert data.ids == ids[:12]
    with pytest.raises(ValueError, match="line 31 is not valid JSON"):
        load_table(path, target_cols="formation_energy_per_atom")


def test_ids_select_in_given_order_and_stop_early(table):
    path, ids = table
    pick = [ids[7], ids[2], ids[29]]
    data = load_table(path, target_cols="formation_energy_per_atom", ids=pick)
    assert data.ids == pick and len(data.structures) == 3


def test_csv_selection(tmp_path, eform_records):
    path = tmp_path / "t.csv"
    import pandas as pd

    pd.DataFrame(eform_records[:20]).to_csv(path, index=False)
    assert len(load_table(path, target_cols="formation_energy_per_atom", nrows=5)) == 5
    pick = [eform_records[15]["id"], eform_records[3]["id"]]
    assert load_table(path, target_cols="formation_energy_per_atom", ids=pick).ids == pick
    with pytest.raises(ValueError, match=r"has no records with ids \['mp-nope'\]"):
        load_table(path, target_cols="formation_energy_per_atom", ids=[pick[0], "mp-nope"])


def test_bad_selection_arguments(table):
    path, ids = table
    with pytest.raises(ValueError, match="nrows or ids, not both"):
        load_table(path, nrows=3, ids=ids[:2])
    with pytest.raises(ValueError, match="single string"):
        load_table(path, ids=ids[0])
    with pytest.raises(FileNotFoundError, match="is a folder.*load_cgcnn_folder"):
        load_table(path.parent)


def test_cgcnn_folder_selection_opens_only_selected_files(tmp_path, data_path):
    src = data_path / "cgcnn_format_sample"
    rows = (src / "id_prop.csv").read_text().splitlines()[:10]
    (tmp_path / "id_prop.csv").write_text("\n".join(rows) + "\n")
    ids = [r.split(",")[0] for r in rows]
    for i in ids[:4] + ids[6:7]:
        shutil.copy(src / f"{i}.cif", tmp_path)
    # the other CIF files are absent: loading them would raise
    assert load_cgcnn_folder(tmp_path, nrows=4).ids == ids[:4]
    assert load_cgcnn_folder(tmp_path, ids=[ids[6], ids[1]]).ids == [ids[6], ids[1]]


def _children() -> set[int]:
    """Child processes but the resource trackers (tiny helpers of multiprocessing that end with us)."""
    out = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        out.update(int(c) for c in (task / "children").read_text().split())
    return {c for c in out if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_parallel_loading_leaves_no_worker_processes(table, monkeypatch):
    path, ids = table
    monkeypatch.setattr(dataset_module, "_MIN_PARALLEL", 10)
    before = _children()
    data = load_table(path, target_cols="formation_energy_per_atom", nrows=30, n_jobs=2)
    assert len(data) == 30
    assert _children() - before == set()
