"""Graph stores on disk: round trips, memory maps, featurize_to_disk and its resumption."""

import json
import pickle

import numpy as np
import pytest

from crysk import CGCNNRegressor, CrystalGraphFeaturizer, CrystalGraphs, featurize_to_disk
from crysk.graphs import GraphTensors
from crysk.store import FORMAT_VERSION, is_store, read_header

ARRAYS = ["atomic_numbers", "degrees", "neighbors", "distances", "atom_offsets", "edge_offsets"]


@pytest.fixture(scope="module")
def cifs(eform_records):
    return [r["cif"] for r in eform_records[:60]], [r["id"] for r in eform_records[:60]]


@pytest.fixture(scope="module")
def graphs(cifs):
    return CrystalGraphFeaturizer().transform(cifs[0], ids=cifs[1])


def bit_identical(a: CrystalGraphs, b: CrystalGraphs):
    for name in ARRAYS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name  # bytes, so -0.0/NaN payloads count too
    assert a.settings == b.settings
    assert (a.ids is None) == (b.ids is None)
    if a.ids is not None:
        assert list(a.ids) == list(b.ids) and [type(i) for i in a.ids] == [type(i) for i in b.ids]


@pytest.mark.parametrize("mmap", [True, False])
def test_store_round_trip_is_bit_identical(tmp_path, graphs, mmap):
    path = graphs.save(tmp_path / "store")
    assert is_store(path) and (path / "header.json").is_file()
    loaded = CrystalGraphs.load(path, mmap=mmap)
    bit_identical(loaded, graphs)
    assert loaded.is_mapped is mmap
    # a memory-mapped store saved again (and sliced) stays identical
    again = CrystalGraphs.load(loaded.save(tmp_path / "again"))
    bit_identical(again, graphs)
    bit_identical(loaded[7:23], graphs[7:23])
    bit_identical(pickle.loads(pickle.dumps(loaded[3:9])), graphs[3:9])


def test_npz_still_written_and_read(tmp_path, graphs):
    path = graphs.save(tmp_path / "g.npz")
    assert path.is_file()
    bit_identical(CrystalGraphs.load(path), graphs)


def test_integer_ids_and_no_ids(tmp_path, graphs):
    numbered = CrystalGraphs(*(getattr(graphs, n) for n in ARRAYS[:5]), graphs.settings, list(range(len(graphs))))
    bit_identical(CrystalGraphs.load(numbered.save(tmp_path / "int")), numbered)
    bare = CrystalGraphs(*(getattr(graphs, n) for n in ARRAYS[:5]), graphs.settings)
    loaded = CrystalGraphs.load(bare.save(tmp_path / "bare"))
    assert loaded.ids is None
    bit_identical(loaded, bare)


def test_header_is_checked(tmp_path, graphs):
    path = graphs.save(tmp_path / "store")
    header = read_header(path)
    assert header["format"] == "crysk-graphs" and header["version"] == FORMAT_VERSION
    assert header["settings"] == graphs.settings
    with pytest.raises(ValueError, match="radius=8.0 \\(expected 6.0\\)"):
        CrystalGraphs.load(path, expected_settings=CrystalGraphFeaturizer(radius=6.0).settings)
    header["version"] = FORMAT_VERSION + 1
    (path / "header.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="upgrade crysk"):
        CrystalGraphs.load(path)
    header["version"] = FORMAT_VERSION
    header["arrays"]["neighbors"]["shape"] = [5]
    (path / "header.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="damaged"):
        CrystalGraphs.load(path)
    (path / "header.json").unlink()
    with pytest.raises(ValueError, match="no header.json"):
        CrystalGraphs.load(path)


def test_save_refuses_to_replace_other_directories(tmp_path, graphs):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a crysk graph store"):
        graphs.save(other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_mapped_batches_match_resident_ones(tmp_path, graphs):
    mapped = CrystalGraphs.load(graphs.save(tmp_path / "store"), mmap=True)
    lazy = GraphTensors(mapped)
    assert not lazy.resident and not hasattr(lazy, "neighbors")  # nothing moved but offsets
    resident = GraphTensors(graphs)
    for rows in (None, np.array([5, 0, 17, 17, 59]), np.arange(10, 40)):
        a, b = lazy.batch(rows), resident.batch(rows)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype, k
            assert np.array_equal(a[k].numpy(), b[k].numpy()), k


def test_training_and_prediction_from_a_memory_map(tmp_path, graphs, eform_records):
    y = np.array([r["formation_energy_per_atom"] for r in eform_records[:60]])
    mapped = CrystalGraphs.load(graphs.save(tmp_path / "store"), mmap=True)
    kwargs = dict(max_epochs=2, batch_size=16, atom_fea_len=16, h_fea_len=16, n_conv=1, random_state=0)
    from_ram = CGCNNRegressor(**kwargs).fit(graphs, y)
    from_map = CGCNNRegressor(**kwargs).fit(mapped, y)
    # same batches, same arithmetic: the same model
    np.testing.assert_array_equal(from_map.predict(mapped), from_ram.predict(graphs))
    assert from_map.get_dataset(mapped).tensors.resident is False


def test_featurize_to_disk_matches_transform(tmp_path, cifs, graphs):
    out = featurize_to_disk(cifs[0], tmp_path / "store", chunk_size=25, ids=cifs[1])
    assert out.is_mapped and not (tmp_path / "store" / "_chunks").exists()
    bit_identical(out, graphs)
    # a finished store is opened, not redone
    bit_identical(featurize_to_disk(cifs[0], tmp_path / "store", chunk_size=25, ids=cifs[1]), graphs)


class CountingFeaturizer(CrystalGraphFeaturizer):
    """Counts the structures it featurizes and can fail on a chosen call (an interruption)."""

    seen = 0
    fail_at_call = None
    calls = 0

    def transform_with_skipped(self, X, ids=None):
        type(self).calls += 1
        if type(self).calls == type(self).fail_at_call:
            raise KeyboardInterrupt
        type(self).seen += len(X)
        return super().transform_with_skipped(X, ids)


def test_featurize_to_disk_resumes_after_interruption(tmp_path, cifs, graphs):
    path = tmp_path / "store"
    CountingFeaturizer.seen, CountingFeaturizer.calls = 0, 0
    CountingFeaturizer.fail_at_call = 3  # chunks 0 and 1 finish, chunk 2 is interrupted
    with pytest.raises(KeyboardInterrupt):
        featurize_to_disk(iter(cifs[0]), path, chunk_size=20, featurizer=CountingFeaturizer())
    chunks = sorted(p.name for p in (path / "_chunks").iterdir() if p.is_dir())
    assert chunks == ["chunk-000000", "chunk-000001"] and not is_store(path)
    assert CountingFeaturizer.seen == 40
    CountingFeaturizer.fail_at_call = None
    out = featurize_to_disk(iter(cifs[0]), path, chunk_size=20, featurizer=CountingFeaturizer())
    assert CountingFeaturizer.seen == 60  # only the last chunk was featurized again
    ids_from_positions = CrystalGraphs(*(getattr(graphs, n) for n in ARRAYS[:5]), graphs.settings, list(range(60)))
    bit_identical(out, ids_from_positions)


def test_featurize_to_disk_refuses_to_mix_settings(tmp_path, cifs):
    path = tmp_path / "store"
    CountingFeaturizer.fail_at_call, CountingFeaturizer.calls = 2, 0
    with pytest.raises(KeyboardInterrupt):
        featurize_to_disk(cifs[0], path, chunk_size=20, featurizer=CountingFeaturizer())
    CountingFeaturizer.fail_at_call = None
    with pytest.raises(ValueError, match="other \\['settings'\\]"):
        featurize_to_disk(cifs[0], path, chunk_size=20, featurizer=CrystalGraphFeaturizer(radius=6.0))


def test_featurize_to_disk_reads_tables_and_folders(tmp_path, eform_records, data_path):
    import gzip

    table = tmp_path / "t.jsonl.gz"
    with gzip.open(table, "wt") as fh:
        for r in eform_records[:12]:
            fh.write(json.dumps({"cif": r["cif"], "id": r["id"]}) + "\n")
    out = featurize_to_disk(table, tmp_path / "a", chunk_size=5, id_col="id")
    assert list(out.ids) == [r["id"] for r in eform_records[:12]]
    folder = data_path / "sample_regression_cgcnn"
    out = featurize_to_disk(folder, tmp_path / "b", chunk_size=4)
    assert list(out.ids) == sorted(p.stem for p in folder.glob("*.cif"))


def test_featurize_to_disk_lists_skipped_and_names_global_positions(tmp_path, cifs):
    items = list(cifs[0][:8]) + ["not a cif"] + list(cifs[0][8:12])
    with pytest.warns(UserWarning, match="left out 1 structures; first: #8"):
        out = featurize_to_disk(items, tmp_path / "s", chunk_size=5, featurizer=CrystalGraphFeaturizer(errors="skip"))
    header = read_header(tmp_path / "s")
    assert len(out) == 12 and [s["index"] for s in header["skipped"]] == [8]
    from crysk.structures import CrystalInputError

    with pytest.raises(CrystalInputError, match="structure #8"):
        featurize_to_disk(items, tmp_path / "r", chunk_size=5)
    assert is_store(tmp_path / "r" / "_chunks" / "chunk-000000")  # the chunk before the bad one is kept
