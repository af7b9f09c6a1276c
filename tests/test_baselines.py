import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Species
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

from crysk import (
    CrystalGraphFeaturizer,
    CrystalInputError,
    ElementDescriptor,
    SOAPKernelRidge,
    make_baseline,
)
from crysk.baselines import BASELINE_GRIDS


@pytest.fixture(scope="module")
def eform_graphs(eform_structures):
    structures, _y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures[:40], ids=ids[:40])


@pytest.fixture(scope="module")
def eform_features(eform_structures):
    return ElementDescriptor().fit_transform(eform_structures[0])


@pytest.fixture(scope="module")
def eform_300(eform_records):
    """300 formation-energy records as CIF text (a Series indexed by MP id)."""
    records = eform_records[:300]
    X = pd.Series([r["cif"] for r in records], index=[r["id"] for r in records])
    return X, np.array([r["formation_energy_per_atom"] for r in records])


def _mad(y_test, y_train):
    return np.mean(np.abs(y_test - np.mean(y_train)))


def test_magpie_gives_the_papers_132_descriptors(eform_features):
    names = ElementDescriptor().get_feature_names_out()
    assert len(names) == 132 == len(set(names))
    assert "MagpieData mean Electronegativity" in names
    assert eform_features.shape == (200, 132)
    assert np.isfinite(eform_features).all()


def test_known_values_for_nacl():
    names = list(ElementDescriptor().get_feature_names_out())
    row = ElementDescriptor().fit_transform(["NaCl"])[0]
    assert row[names.index("MagpieData mean Number")] == pytest.approx(14.0)
    assert row[names.index("MagpieData range Number")] == pytest.approx(6.0)
    assert row[names.index("MagpieData maximum Electronegativity")] == pytest.approx(3.16)
    assert row[names.index("MagpieData avg_dev Number")] == pytest.approx(3.0)


def test_structures_graphs_compositions_and_formulas_agree(eform_structures, eform_graphs, eform_features, data_path):
    structures, _, ids = eform_structures
    from_graphs = ElementDescriptor().transform(eform_graphs)
    np.testing.assert_array_equal(from_graphs, eform_features[:40])
    comps = [s.composition for s in structures[:40]]
    np.testing.assert_array_equal(ElementDescriptor().transform(comps), eform_features[:40])
    formulas = [c.reduced_formula for c in comps]
    np.testing.assert_array_equal(ElementDescriptor().transform(formulas), eform_features[:40])
    cif_paths = [data_path / "cgcnn_format_sample" / f"{i}.cif" for i in ids[:5]]
    np.testing.assert_array_equal(ElementDescriptor().transform(cif_paths), eform_features[:5])


def test_oxidation_states_do_not_matter(eform_structures):
    s = eform_structures[0][3].copy()
    plain = ElementDescriptor().transform([s])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.add_oxidation_state_by_guess()
    np.testing.assert_array_equal(ElementDescriptor().transform([s]), plain)
    ionic = Composition({Species("Fe", 2): 1, Species("O", -2): 1})
    np.testing.assert_array_equal(ElementDescriptor().transform([ionic]), ElementDescriptor().transform(["FeO"]))


def test_bad_input_names_its_id():
    X = pd.Series(["NaCl", "Xx3Q", "FeO"], index=["a", "b", "c"])
    with pytest.raises(CrystalInputError) as info:
        ElementDescriptor().transform(X)
    assert info.value.id == "b" and info.value.index == 1
    with pytest.raises(ValueError, match="preset"):
        ElementDescriptor(preset="nope").fit(["NaCl"])


def test_pandas_output_and_clone():
    desc = clone(ElementDescriptor(n_jobs=2)).set_output(transform="pandas")
    out = desc.fit_transform(pd.Series(["NaCl", "KBr"], index=["x", "y"]))
    assert isinstance(out, pd.DataFrame) and out.shape == (2, 132)
    assert out.columns[0] == "MagpieData minimum Number"


def test_pipeline_layout_and_grids():
    model = make_baseline("svr", random_state=3, cv=4)
    assert isinstance(model, Pipeline) and [n for n, _ in model.steps] == ["descriptor", "search"]
    search = model.named_steps["search"]
    assert isinstance(search, GridSearchCV) and search.scoring == "neg_mean_absolute_error"
    assert isinstance(search.cv, KFold) and search.cv.n_splits == 4 and search.cv.shuffle
    assert set(search.param_grid) == {f"model__{k}" for k in BASELINE_GRIDS["svr"]}
    assert [n for n, _ in search.estimator.steps] == ["clip", "scale", "model"]
    assert [n for n, _ in make_baseline("rf").named_steps["search"].estimator.steps] == ["model"]
    assert isinstance(make_baseline("soap", cv=3), SOAPKernelRidge)
    with pytest.raises(ValueError, match="kind"):
        make_baseline("xgboost")


def test_random_forest_beats_the_mean_on_formation_energies(eform_300):
    X, y = eform_300
    model = make_baseline("rf", random_state=0, cv=3).fit(X[:240], y[:240])
    mae = np.mean(np.abs(model.predict(X[240:]) - y[240:]))
    assert mae < 0.6 * _mad(y[240:], y[:240])
    assert set(model.named_steps["search"].best_params_) == {"model__max_features", "model__min_samples_leaf"}


@pytest.mark.parametrize("kind", ["pls", "lasso", "svr"])
def test_linear_and_kernel_baselines_learn(kind, eform_structures):
    structures, y, _ = eform_structures
    model = make_baseline(kind, random_state=0).fit(structures[:150], y[:150])
    mae = np.mean(np.abs(model.predict(structures[150:]) - y[150:]))
    assert mae < 0.75 * _mad(y[150:], y[:150])


def test_rare_descriptor_does_not_blow_up_linear_models(eform_structures):
    # this fold's training crystals have a near-constant GSmagmom mode, its test crystals
    # include a Co sulfide: without clipping to the training range, PLS predicts ~40000 eV/atom
    structures, y, _ = eform_structures
    train, test = list(KFold(3).split(y))[1]
    model = make_baseline("pls", random_state=0).fit([structures[i] for i in train], y[train])
    pred = model.predict([structures[i] for i in test])
    assert np.abs(pred - y[test]).max() < 5.0


def test_soap_without_dscribe_says_how_to_install(monkeypatch, eform_structures):
    monkeypatch.setitem(sys.modules, "dscribe", None)
    monkeypatch.setitem(sys.modules, "dscribe.descriptors", None)
    structures, y, _ = eform_structures
    model = SOAPKernelRidge()
    with pytest.raises(ImportError, match=r"pip install crysk\[soap\]"):
        model.fit(structures[:5], y[:5])
    assert clone(model).get_params()["n_max"] == 6


def test_soap_kernel_ridge_learns(eform_structures, eform_graphs):
    pytest.importorskip("dscribe")
    structures, y, _ = eform_structures
    model = SOAPKernelRidge(n_max=4, l_max=3, random_state=0).fit(structures[:120], y[:120])
    mae = np.mean(np.abs(model.predict(structures[120:]) - y[120:]))
    assert mae < 0.85 * _mad(y[120:], y[:120])
    assert model.alpha_ in model.alphas
    with pytest.raises(TypeError, match="positions"):
        model.predict(eform_graphs)
