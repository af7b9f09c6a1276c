import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from crysk import CGCNNRegressor, CrystalGraphFeaturizer

FAST = dict(atom_fea_len=16, n_conv=2, h_fea_len=16, batch_size=32, max_epochs=2, random_state=0)


@pytest.fixture(scope="module")
def graphs_y(eform_structures):
    structures, y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures, ids=ids), y


def test_fit_predict_score(graphs_y):
    g, y = graphs_y
    model = CGCNNRegressor(**FAST).fit(g[:120], y[:120])
    pred = model.predict(g[120:])
    assert pred.shape == (80,) and np.isfinite(pred).all()
    assert isinstance(model.score(g[120:], y[120:]), float)
    assert len(model.history) == 2 and "valid_mae" in model.history[-1]
    assert model.best_epoch_ in (1, 2)
    assert isinstance(model.module_.convs[0].fc_full, torch.nn.Linear)


def test_structures_in_and_graphs_in_agree(eform_structures, graphs_y):
    structures, y, _ = eform_structures
    g, _ = graphs_y
    a = CGCNNRegressor(**FAST).fit(structures[:60], y[:60])
    b = CGCNNRegressor(**FAST).fit(g[:60], y[:60])
    np.testing.assert_array_equal(a.predict(structures[60:70]), b.predict(g[60:70]))


def test_same_seed_same_model_and_other_seed_differs(graphs_y):
    g, y = graphs_y
    p1 = CGCNNRegressor(**FAST).fit(g[:100], y[:100]).predict(g[100:])
    p2 = CGCNNRegressor(**FAST).fit(g[:100], y[:100]).predict(g[100:])
    np.testing.assert_array_equal(p1, p2)
    p3 = CGCNNRegressor(**{**FAST, "random_state": 1}).fit(g[:100], y[:100]).predict(g[100:])
    assert not np.allclose(p1, p3)


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        CGCNNRegressor().predict([])


def test_pickle_joblib_and_clone(graphs_y, tmp_path):
    g, y = graphs_y
    model = CGCNNRegressor(**FAST).fit(g[:80], y[:80])
    ref = model.predict(g[80:])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(g[80:]), ref)
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict(g[80:]), ref)
    twin = clone(model)
    assert twin.get_params()["h_fea_len"] == 16 and not hasattr(twin, "module_")
    np.testing.assert_array_equal(twin.fit(g[:80], y[:80]).predict(g[80:]), ref)


def test_plain_hyperparameters_are_params():
    model = CGCNNRegressor(h_fea_len=64, lr=0.005)
    params = model.get_params()
    for name in ["atom_fea_len", "n_conv", "h_fea_len", "n_h", "radius", "max_num_nbr", "lr", "optimizer",
                 "lr_milestones", "gamma", "batch_size", "max_epochs", "validation_fraction", "loss",
                 "target_scaler", "device", "random_state", "verbose"]:
        assert name in params
    assert params["h_fea_len"] == 64 and params["lr"] == 0.005
    model.set_params(n_conv=2, lr=0.1)
    assert model.n_conv == 2 and model.lr == 0.1


def test_pipeline_gridsearch(eform_structures):
    structures, y, _ = eform_structures
    pipe = Pipeline([("graphs", CrystalGraphFeaturizer()), ("cgcnn", CGCNNRegressor(**FAST))])
    search = GridSearchCV(
        pipe, {"cgcnn__lr": [0.01, 0.003], "cgcnn__h_fea_len": [8, 16]}, cv=3, scoring="neg_mean_absolute_error"
    )
    search.fit(structures[:60], y[:60])
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.predict(structures[60:65]).shape == (5,)


def test_gridsearch_on_graphs_by_plain_names(graphs_y):
    g, y = graphs_y
    search = GridSearchCV(CGCNNRegressor(**FAST), {"lr": [0.01, 0.003], "h_fea_len": [8, 16]}, cv=3)
    search.fit(g[:60], y[:60])
    assert set(search.best_params_) == {"lr", "h_fea_len"}


def test_cross_validation_helpers(graphs_y):
    g, y = graphs_y
    scores = cross_val_score(CGCNNRegressor(**FAST), g[:60], y[:60], cv=KFold(3), scoring="neg_mean_absolute_error")
    assert scores.shape == (3,) and np.isfinite(scores).all()
    pred = cross_val_predict(CGCNNRegressor(**FAST), g[:60], y[:60], cv=3)
    assert pred.shape == (60,)


def test_transformed_target_regressor(graphs_y):
    g, y = graphs_y
    ttr = TransformedTargetRegressor(
        regressor=CGCNNRegressor(**FAST), transformer=FunctionTransformer(lambda v: v * 10, lambda v: v / 10)
    )
    assert ttr.fit(g[:60], y[:60]).predict(g[60:70]).shape == (10,)


def test_multi_output(graphs_y):
    g, y = graphs_y
    Y = np.column_stack([y, 2 * y + 1])
    model = CGCNNRegressor(**FAST).fit(g[:80], Y[:80])
    assert model.module_.fc_out.out_features == 2
    assert model.predict(g[80:90]).shape == (10, 2)


def test_explicit_validation_set(graphs_y):
    g, y = graphs_y
    model = CGCNNRegressor(**FAST).fit(g[:80], y[:80], X_valid=g[80:100], y_valid=y[80:100])
    assert "valid_mae" in model.history[-1]
    none = CGCNNRegressor(**{**FAST, "validation_fraction": None}).fit(g[:80], y[:80])
    assert "valid_mae" not in none.history[-1] and none.best_epoch_ is None


def test_bad_targets_and_inputs(graphs_y):
    g, y = graphs_y
    bad = y[:50].copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match="NaN or inf for 1 crystals.*positions \\[7\\]"):
        CGCNNRegressor(**FAST).fit(g[:50], bad)
    with pytest.raises(ValueError, match="50 crystals but y has 49"):
        CGCNNRegressor(**FAST).fit(g[:50], y[:49])
    other = CrystalGraphFeaturizer(radius=6.0).transform([])
    with pytest.raises(ValueError, match="radius=6.0 .expected 8.0"):
        CGCNNRegressor(**FAST).fit(other, [])
    with pytest.raises(ValueError, match="loss must be"):
        CGCNNRegressor(**{**FAST, "loss": "huber"}).fit(g[:50], y[:50])
    with pytest.raises(ValueError, match="validation_fraction"):
        CGCNNRegressor(**{**FAST, "validation_fraction": 1.5}).fit(g[:50], y[:50])


def test_learns_formation_energies(eform_records):
    """30 epochs on 400 formation energies must beat the mean predictor by a wide margin."""
    records = eform_records[:500]
    y = np.array([r["formation_energy_per_atom"] for r in records])
    g = CrystalGraphFeaturizer(n_jobs=2).transform([r["cif"] for r in records])
    model = CGCNNRegressor(max_epochs=30, batch_size=32, random_state=0, lr_milestones=(25,))
    model.fit(g[:400], y[:400])
    mae = np.abs(model.predict(g[400:]) - y[400:]).mean()
    baseline = np.abs(y[:400].mean() - y[400:]).mean()
    assert mae < 0.4 * baseline, (mae, baseline)
