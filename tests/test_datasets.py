import csv
import gzip
import json
import shutil
import socket
import time

import joblib
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure

from crysk import (
    CrystalInputError,
    as_structure,
    datasets,
    load_cgcnn_folder,
    load_matbench,
    load_table,
)


def _same(a: Structure, b: Structure) -> bool:
    return (
        a.composition == b.composition
        and np.allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-6)
        and np.allclose(a.frac_coords % 1.0, b.frac_coords % 1.0, atol=1e-5)
    )


@pytest.fixture
def small_folder(data_path, tmp_path):
    """A tmp CGCNN folder with the first 12 crystals of the shared sample."""
    src = data_path / "cgcnn_format_sample"
    with open(src / "id_prop.csv") as fh:
        rows = list(csv.reader(fh))[:12]
    dst = tmp_path / "folder"
    dst.mkdir()
    with open(dst / "id_prop.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    for r in rows:
        shutil.copy(src / f"{r[0]}.cif", dst / f"{r[0]}.cif")
    return dst, [r[0] for r in rows], np.array([float(r[1]) for r in rows])


# ----------------------------------------------------------------------------- CGCNN folder


def test_cgcnn_folder_has_the_ids_and_targets_of_id_prop(data_path, eform_sample):
    paths, y, ids = eform_sample
    data = load_cgcnn_folder(data_path / "cgcnn_format_sample")
    assert len(data) == 200 and data.ids == ids and data.skipped == []
    assert data.structures.index.name == "id"
    np.testing.assert_array_equal(data.y.to_numpy(), y)
    assert list(data.targets.columns) == ["target"]
    assert data.y.index.equals(data.X.index)
    for k in (0, 57, 199):
        assert _same(data.X.iloc[k], as_structure(paths[k]))
    assert data.X.loc["mp-18271"].composition == as_structure(paths[0]).composition


def test_broken_cif_raises_naming_its_id(small_folder):
    folder, ids, _ = small_folder
    (folder / f"{ids[4]}.cif").write_text("data_broken\n_cell_length_a 3.0\nthis is not a CIF\n")
    with pytest.raises(CrystalInputError) as info:
        load_cgcnn_folder(folder)
    assert info.value.id == ids[4] and ids[4] in str(info.value)


def test_broken_and_missing_cifs_are_skipped_and_reported(small_folder):
    folder, ids, y = small_folder
    (folder / f"{ids[4]}.cif").write_text("garbage\nnot a structure\n")
    (folder / f"{ids[7]}.cif").unlink()
    with pytest.warns(UserWarning, match="left out 2 of 12"):
        data = load_cgcnn_folder(folder, errors="skip")
    assert [e.id for e in data.skipped] == [ids[4], ids[7]]
    assert "does not exist" in data.skipped[1].reason
    keep = [k for k in range(12) if k not in (4, 7)]
    assert data.ids == [ids[k] for k in keep]
    np.testing.assert_array_equal(data.y.to_numpy(), y[keep])


def test_atom_init_json_is_ignored_with_a_warning(small_folder):
    folder, _ids, _ = small_folder
    (folder / "atom_init.json").write_text("{}")
    with pytest.warns(UserWarning, match="atom_init.json"):
        data = load_cgcnn_folder(folder)
    assert len(data) == 12


def test_several_targets_and_malformed_id_prop(small_folder):
    folder, ids, y = small_folder
    with open(folder / "id_prop.csv", "w") as fh:
        fh.writelines(f"{i},{float(v)!r},{float(2 * v)!r}\n" for i, v in zip(ids, y))
    data = load_cgcnn_folder(folder)
    assert list(data.targets.columns) == ["target_0", "target_1"]
    np.testing.assert_array_equal(data.y["target_1"].to_numpy(), 2 * y)
    with open(folder / "id_prop.csv", "w") as fh:
        fh.write("id,target\n" + "".join(f"{i},{float(v)!r}\n" for i, v in zip(ids, y)))
    with pytest.raises(ValueError, match="no header"):
        load_cgcnn_folder(folder)
    with open(folder / "id_prop.csv", "a") as fh:
        fh.write(f"{ids[0]},1.0\n")
    with pytest.raises(ValueError):
        load_cgcnn_folder(folder)


def test_missing_folder_and_bad_errors_argument(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_cgcnn_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="id_prop.csv"):
        load_cgcnn_folder(tmp_path)
    with pytest.raises(ValueError, match="errors"):
        load_cgcnn_folder(tmp_path, errors="ignore")


# ----------------------------------------------------------------------------- tables


def _write_jsonl_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)


def test_jsonl_gz_with_cif_text(eform_records, tmp_path):
    records = eform_records[:30]
    path = tmp_path / "eform.jsonl.gz"
    _write_jsonl_gz(path, records)
    data = load_table(path)
    assert data.ids == [r["id"] for r in records]
    assert list(data.targets.columns) == ["formation_energy_per_atom"]
    np.testing.assert_array_equal(data.y.to_numpy(), [r["formation_energy_per_atom"] for r in records])
    assert _same(data.X.iloc[3], as_structure(records[3]["cif"]))
    assert data.metadata is None and data.source == str(path)


def test_table_record_errors_name_the_id(eform_records, tmp_path):
    records = [dict(r) for r in eform_records[:20]]
    records[6]["cif"] = "data_x\n_cell_length_a 1\nbroken\n"
    records[9]["cif"] = None
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(CrystalInputError) as info:
        load_table(path)
    assert info.value.id == records[6]["id"]
    with pytest.warns(UserWarning, match="left out 2 of 20"):
        data = load_table(path, errors="skip")
    assert [e.id for e in data.skipped] == [records[6]["id"], records[9]["id"]]
    assert "no structure in column 'cif'" in data.skipped[1].reason
    assert len(data) == 18 and records[6]["id"] not in data.ids
    np.testing.assert_array_equal(
        data.y.to_numpy(), [r["formation_energy_per_atom"] for k, r in enumerate(records) if k not in (6, 9)]
    )


def test_json_list_of_pymatgen_dicts(elastic_dicts, tmp_path):
    path = tmp_path / "elastic.pymatgen.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(elastic_dicts[:25], fh)
    data = load_table(path, structure_col="structure", id_col="mp_id")
    assert data.ids == [r["mp_id"] for r in elastic_dicts[:25]]
    assert list(data.targets.columns) == ["bulk_modulus_vrh", "shear_modulus_vrh"]
    assert list(data.metadata.columns) == ["formula"]
    assert data.metadata["formula"].iloc[0] == elastic_dicts[0]["formula"]
    assert _same(data.X.iloc[10], Structure.from_dict(elastic_dicts[10]["structure"]))
    one = load_table(path, structure_col="structure", id_col="mp_id", target_cols="shear_modulus_vrh")
    assert isinstance(one.y, pd.Series) and one.y.name == "shear_modulus_vrh"


def test_csv_keeps_text_ids_nan_targets_and_json_structures(elastic_dicts, eform_records, tmp_path):
    rows = [
        {"id": "0001", "cif": eform_records[0]["cif"], "target": 1.5, "note": "a"},
        {"id": "0002", "cif": json.dumps(elastic_dicts[0]["structure"]), "target": None, "note": "b"},
        {"id": "0003", "cif": eform_records[1]["cif"], "target": -0.25, "note": ""},
    ]
    path = tmp_path / "table.csv.gz"
    pd.DataFrame(rows).to_csv(path, index=False)
    data = load_table(path)
    assert data.ids == ["0001", "0002", "0003"]
    assert list(data.targets.columns) == ["target"]
    assert data.y.iloc[0] == 1.5 and np.isnan(data.y.iloc[1]) and data.y.iloc[2] == -0.25
    assert _same(data.X.iloc[1], Structure.from_dict(elastic_dicts[0]["structure"]))
    assert data.dropna().ids == ["0001", "0003"]
    # no id column: records are numbered
    assert load_table(path, id_col=None, target_cols=["target"]).ids == [0, 1, 2]


def test_table_argument_errors(eform_records, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in eform_records[:3]))
    with pytest.raises(ValueError, match="columns are"):
        load_table(path, structure_col="structure")
    with pytest.raises(ValueError, match="columns are"):
        load_table(path, target_cols=["band_gap"])
    dup = tmp_path / "dup.jsonl"
    dup.write_text("".join(json.dumps(r) + "\n" for r in [eform_records[0], eform_records[0]]))
    with pytest.raises(ValueError, match="duplicate ids"):
        load_table(dup)
    other = tmp_path / "t.parquet"
    other.write_text("x")
    with pytest.raises(ValueError, match="format"):
        load_table(other)


def test_parallel_parsing_keeps_order_and_reports_failures(eform_records, tmp_path, monkeypatch):
    records = [dict(r) for r in eform_records[:40]]
    records[25]["cif"] = "nonsense\ntext\n"
    path = tmp_path / "p.jsonl.gz"
    _write_jsonl_gz(path, records)
    monkeypatch.setattr(datasets.dataset, "_MIN_PARALLEL", 10)
    # threads exercise the chunking and reassembly without the cost of starting processes
    with joblib.parallel_config(backend="threading"), pytest.warns(UserWarning, match="left out 1 of 40"):
        par = load_table(path, n_jobs=2, errors="skip")
    monkeypatch.setattr(datasets.dataset, "_MIN_PARALLEL", 10**9)
    with pytest.warns(UserWarning):
        seq = load_table(path, errors="skip")
    assert par.ids == seq.ids and len(par) == 39
    assert [e.id for e in par.skipped] == [records[25]["id"]]
    assert all(_same(a, b) for a, b in zip(par.X, seq.X))


# ----------------------------------------------------------------------------- Matbench


def _no_download(*args, **kwargs):
    raise AssertionError("the test must not download anything")


def test_matbench_offline_fails_fast_with_advice(monkeypatch, tmp_path):
    import matminer.datasets

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(matminer.datasets, "load_dataset", _no_download)
    start = time.perf_counter()
    with pytest.raises(ConnectionError) as info:
        load_matbench("mp_gap", data_home=tmp_path)
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert "network" in msg and "load_table" in msg and "matbench_mp_gap" in msg


def test_matbench_download_error_becomes_connection_error(monkeypatch, tmp_path):
    import matminer.datasets
    import requests

    def fail(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Max retries exceeded")

    monkeypatch.setattr(datasets.matbench, "_reachable", lambda url, timeout: None)
    monkeypatch.setattr(matminer.datasets, "load_dataset", fail)
    with pytest.raises(ConnectionError, match="needs network access"):
        load_matbench("matbench_log_kvrh", data_home=tmp_path)


def test_matbench_from_a_local_copy(monkeypatch, tmp_path, elastic_dicts):
    import matminer.datasets

    (tmp_path / "matbench_log_kvrh.json.gz").write_bytes(b"")  # matminer's cached file
    frame = pd.DataFrame(
        {
            "structure": [Structure.from_dict(r["structure"]) for r in elastic_dicts[:12]],
            "log10(K_VRH)": np.log10([r["bulk_modulus_vrh"] for r in elastic_dicts[:12]]),
        }
    )
    calls = []

    def fake_load(name, data_home=None, **kwargs):
        calls.append((name, data_home))
        return frame

    monkeypatch.setattr(matminer.datasets, "load_dataset", fake_load)
    monkeypatch.setattr(socket, "create_connection", _no_download)  # a cached file needs no network
    data = load_matbench("log_kvrh", data_home=tmp_path)
    assert calls == [("matbench_log_kvrh", str(tmp_path))]
    assert data.ids[0] == "mb-log-kvrh-01" and data.ids[-1] == "mb-log-kvrh-12"
    np.testing.assert_array_equal(data.y.to_numpy(), frame["log10(K_VRH)"].to_numpy())
    assert data.y.name == "log10(K_VRH)"


def test_matbench_unknown_and_composition_tasks():
    with pytest.raises(ValueError, match="matbench_mp_gap"):
        load_matbench("mp_gapp")
    with pytest.raises(ValueError, match="compositions"):
        load_matbench("expt_gap")
