import pickle

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold, train_test_split
from sklearn.utils import _safe_indexing

from crysk import CrystalGraphFeaturizer, CrystalGraphs, concatenate


@pytest.fixture(scope="module")
def graphs(eform_structures):
    structures, _, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures[:30], ids=ids[:30])


def same(a: CrystalGraphs, b: CrystalGraphs):
    for name in ["atomic_numbers", "degrees", "neighbors", "distances", "atom_offsets"]:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.settings == b.settings
    assert (a.ids is None and b.ids is None) or list(a.ids) == list(b.ids)


def test_indexing_forms_agree(graphs):
    n = len(graphs)
    assert graphs.shape == (n,)
    one = graphs[3]
    assert isinstance(one, CrystalGraphs) and len(one) == 1 and one.ids[0] == graphs.ids[3]
    same(graphs[-1], graphs[n - 1])
    same(graphs[2:9], graphs[list(range(2, 9))])
    same(graphs[::3], graphs[np.arange(0, n, 3)])
    mask = np.zeros(n, dtype=bool)
    mask[[1, 5, 7]] = True
    same(graphs[mask], graphs[[1, 5, 7]])
    same(graphs[np.array([], dtype=int)], graphs[5:5])
    with pytest.raises(IndexError):
        graphs[n]
    with pytest.raises(IndexError):
        graphs[np.ones(3, dtype=bool)]


def test_each_crystal_survives_selection(graphs):
    picked = graphs[[7, 2]]
    for k, i in enumerate([7, 2]):
        a, b = picked.graph(k), graphs.graph(i)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_concatenate_and_pickle(graphs):
    same(concatenate([graphs[:10], graphs[10:]]), graphs)
    same(pickle.loads(pickle.dumps(graphs)), graphs)
    other = CrystalGraphFeaturizer(radius=6.0).transform([])
    assert len(other) == 0
    with pytest.raises(ValueError, match="different settings"):
        concatenate([graphs, other])


def test_sklearn_splitting(graphs):
    idx = np.array([4, 0, 9])
    same(_safe_indexing(graphs, idx), graphs[idx])
    same(_safe_indexing(graphs, np.isin(np.arange(len(graphs)), idx)), graphs[np.sort(idx)])
    y = np.arange(len(graphs), dtype=float)
    g_train, g_test, y_train, y_test = train_test_split(graphs, y, test_size=0.25, random_state=0)
    assert len(g_train) + len(g_test) == len(graphs)
    same(g_test, graphs[y_test.astype(int)])
    for train, test in KFold(3).split(graphs):
        assert len(graphs[train]) == len(train)


def test_batch_matches_per_crystal_graphs(graphs):
    sel = [5, 1, 12]
    batch = graphs.to_tensors().batch(sel)
    assert batch["n_atoms"].tolist() == [int(graphs.n_atoms[i]) for i in sel]
    start = 0
    for k, i in enumerate(sel):
        g = graphs.graph(i)
        n = len(g["atomic_numbers"])
        atoms = batch["crystal_index"] == k
        assert atoms.sum() == n
        np.testing.assert_array_equal(batch["atomic_numbers"][atoms].numpy(), g["atomic_numbers"])
        edges = (batch["edge_src"] >= start) & (batch["edge_src"] < start + n)
        np.testing.assert_array_equal(batch["edge_src"][edges].numpy() - start, g["source"])
        np.testing.assert_array_equal(batch["edge_dst"][edges].numpy() - start, g["target"])
        np.testing.assert_array_equal(batch["distances"][edges].numpy(), g["distances"])
        start += n
    full = graphs.batch()
    assert full["edge_src"].dtype == torch.int64 and len(full["distances"]) == len(graphs.distances)


def test_element_counts_match_the_structures(eform_structures):
    from crysk import CrystalGraphFeaturizer

    structures = eform_structures[0][:5]
    graphs = CrystalGraphFeaturizer().transform(structures)
    for counts, s in zip(graphs.element_counts(), structures):
        assert counts == {el.Z: int(n) for el, n in sorted(s.composition.items(), key=lambda kv: kv[0].Z)}
