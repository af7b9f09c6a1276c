
import numpy as np
import pytest
from pymatgen.core import Structure

from crysk import CrystalGraphFeaturizer, CrystalGraphs


def brute_force(structure, radius=8.0, max_num_nbr=12):
    """The reference rule of the original CGCNN/CrysXPP ``CIFData``, written plainly.

    pymatgen's ``get_all_neighbors``, each atom's list sorted with Python's
    stable ``sorted(key=distance)``, the first ``max_num_nbr`` kept.
    """
    out = []
    for nbrs in structure.get_all_neighbors(radius):
        nbrs = sorted(nbrs, key=lambda n: n[1])
        out.append([(n.index, n.nn_distance) for n in nbrs[:max_num_nbr]])
    return out


def neighbour_sets(graphs, i):
    """Per atom of crystal ``i``: the sorted (neighbour index, float32 distance) pairs."""
    g = graphs.graph(i)
    return [
        sorted(zip(g["target"][g["source"] == a].tolist(), g["distances"][g["source"] == a].tolist()))
        for a in range(graphs.n_atoms[i])
    ]


def reference_sets(structure, **kwargs):
    return [sorted((int(j), float(np.float32(d))) for j, d in nbrs) for nbrs in brute_force(structure, **kwargs)]


def test_neighbours_match_the_reference_rule(eform_structures):
    structures = eform_structures[0][:110]
    graphs = CrystalGraphFeaturizer().transform(structures)
    assert len(graphs) == 110
    for i, s in enumerate(structures):
        assert neighbour_sets(graphs, i) == reference_sets(s), f"crystal {i}"
        # each atom's neighbours come nearest first
        assert np.all(np.diff(graphs.graph(i)["distances"].reshape(-1, 12), axis=1) >= 0)


def _tied_at_the_cut(structure, max_num_nbr=12):
    """Atoms whose neighbour shell at the cut mixes elements and is only partly kept.

    A shell is the neighbours as far as the last one kept, to float noise
    (1e-6 Å); which of them are kept is then decided by the tie rule alone.
    """
    tied = []
    for a, nbrs in enumerate(structure.get_all_neighbors(8.0)):
        nbrs = sorted(nbrs, key=lambda n: n[1])
        cut = nbrs[max_num_nbr - 1].nn_distance
        shell = [n for n in nbrs if abs(n.nn_distance - cut) < 1e-6]
        dropped = [n for n in nbrs[max_num_nbr:] if abs(n.nn_distance - cut) < 1e-6]
        if dropped and len({n.specie for n in shell}) > 1:
            tied.append(a)
    return tied


def _tie_structures():
    from pymatgen.core import Lattice

    # perovskite: O has 2 Ti, then a shell of 4 Sr + 8 O that the 12th neighbour cuts
    perovskite = Structure(
        Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    vacancy = perovskite * (2, 2, 2)
    vacancy.remove_sites([3])  # an oxygen vacancy
    # rock salt with a substitution: the 12-atom second shell mixes Na and K
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rocksalt = rocksalt * (2, 1, 1)
    rocksalt.replace(0, "K")
    return {"perovskite": perovskite, "perovskite with a vacancy": vacancy, "rock salt K/Na": rocksalt}


@pytest.mark.parametrize("name", ["perovskite", "perovskite with a vacancy", "rock salt K/Na"])
def test_ties_at_the_cut_follow_the_reference_rule(name):
    structure = _tie_structures()[name]
    # the case really is a tie of different elements across the cut
    assert _tied_at_the_cut(structure), "no tie straddles the 12th neighbour: the test would prove nothing"
    graphs = CrystalGraphFeaturizer().transform([structure])
    assert neighbour_sets(graphs, 0) == reference_sets(structure)


def test_ties_from_cif_text_follow_the_reference_rule():
    """The CIF route (gemmi) gives pymatgen's coordinates and site order, hence its tie-breaks."""
    for name, structure in _tie_structures().items():
        text = structure.to(fmt="cif")
        reference = Structure.from_str(text, fmt="cif")
        graphs = CrystalGraphFeaturizer().transform([text])
        assert neighbour_sets(graphs, 0) == reference_sets(reference), name


def test_graph_is_invariant_under_rotation_and_translation(eform_structures):
    rng = np.random.default_rng(0)
    feat = CrystalGraphFeaturizer()
    for s in eform_structures[0][:10]:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        rotated = Structure(
            s.lattice.matrix @ q.T, s.species, s.cart_coords @ q.T + rng.normal(size=3), coords_are_cartesian=True
        )
        a, b = feat.transform([s]), feat.transform([rotated])
        np.testing.assert_array_equal(a.degrees, b.degrees)
        np.testing.assert_allclose(a.distances, b.distances, atol=1e-4)


def test_variable_degree_without_padding(eform_structures):
    s = eform_structures[0][0]
    g = CrystalGraphFeaturizer(radius=3.0, max_num_nbr=12).transform([s])
    assert g.degrees.max() <= 12
    assert (g.distances <= 3.0).all()
    full = CrystalGraphFeaturizer().transform([s])
    assert (full.degrees == 12).all()


def test_parallel_and_serial_agree(eform_sample):
    paths, _, ids = eform_sample
    serial = CrystalGraphFeaturizer().transform(paths[:80], ids=ids[:80])
    parallel = CrystalGraphFeaturizer(n_jobs=2).transform(paths[:80], ids=ids[:80])
    for name in ["atomic_numbers", "degrees", "neighbors", "distances", "atom_offsets"]:
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name))
    assert list(parallel.ids) == ids[:80]


def test_parallel_from_structures_names_the_bad_one(eform_structures):
    from pymatgen.core import Lattice

    structures = list(eform_structures[0][:70])
    structures[66] = Structure(Lattice.cubic(20.0), ["Na"], [[0, 0, 0]])
    with pytest.raises(ValueError, match="structure #66"):
        CrystalGraphFeaturizer(n_jobs=2).transform(structures)


def test_pandas_inputs_use_the_index_as_ids(eform_structures):
    import pandas as pd

    structures, _, ids = eform_structures
    series = pd.Series(structures[:5], index=ids[:5])
    g = CrystalGraphFeaturizer().fit_transform(series)
    assert list(g.ids) == ids[:5]
    g2 = CrystalGraphFeaturizer().transform(pd.DataFrame({"structure": structures[:5]}))
    np.testing.assert_array_equal(g.distances, g2.distances)


def test_graphs_pass_through_and_settings_are_checked(eform_structures):
    g = CrystalGraphFeaturizer().transform(eform_structures[0][:3])
    assert CrystalGraphFeaturizer().transform(g) is g
    with pytest.raises(ValueError, match="radius=8.0 .expected 6.0"):
        CrystalGraphFeaturizer(radius=6.0).transform(g)


@pytest.mark.parametrize("params", [{"radius": -1}, {"max_num_nbr": 0}, {"max_num_nbr": 2.5}, {"errors": "ignore"}])
def test_bad_parameters(params, eform_structures):
    with pytest.raises(ValueError):
        CrystalGraphFeaturizer(**params).fit(eform_structures[0][:1])


def test_is_a_sklearn_transformer(eform_structures):
    from sklearn.base import clone

    feat = CrystalGraphFeaturizer(radius=7.0, n_jobs=1)
    twin = clone(feat)
    assert twin.get_params() == feat.get_params()
    out = twin.fit_transform(eform_structures[0][:4])
    assert isinstance(out, CrystalGraphs)


def test_memory_per_structure_is_small(eform_structures):
    g = CrystalGraphFeaturizer().transform(eform_structures[0])
    per_edge = g.nbytes / len(g.neighbors)
    assert per_edge < 8.6  # int32 neighbour + float32 distance + a little per atom
