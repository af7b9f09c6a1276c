"""ResidualRegressor: learn a correction to a per-crystal baseline value."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from crysk import CGCNNRegressor, CrystalGraphFeaturizer
from crysk.correction import ResidualRegressor
from crysk.demo import make_demo_data
from crysk.evaluation import RepeatedSubsample, compare


@pytest.fixture
def linear_data():
    """y = baseline + 2 x + 0.5 exactly: the correction is linear in x."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    base = rng.normal(size=60) * 3
    return x, base, base + 2 * x + 0.5


def test_fit_learns_the_residual_and_predict_adds_the_baseline_back(linear_data):
    x, base, y = linear_data
    X = pd.DataFrame({"x": x, "dft": base})
    model = ResidualRegressor(LinearRegression(), baseline="dft").fit(X, y)
    # the inner model saw y - baseline, which is exactly 2x + 0.5
    np.testing.assert_allclose(model.estimator_.coef_, [2.0])
    np.testing.assert_allclose(model.estimator_.intercept_, 0.5)
    np.testing.assert_allclose(model.predict(X), y)
    np.testing.assert_allclose(model.baseline_values(X), base)
    assert model.baseline_train_mae_ == pytest.approx(np.mean(np.abs(2 * x + 0.5)))
    # a constant-zero correction gives the baseline itself
    zero = ResidualRegressor(DummyRegressor(strategy="constant", constant=0.0), baseline="dft").fit(X, y)
    np.testing.assert_array_equal(zero.predict(X), base)


def test_a_mapping_baseline_follows_the_ids_through_splits(linear_data):
    x, base, y = linear_data
    ids = [f"mp-{i}" for i in range(60)]
    X = pd.DataFrame({"x": x}, index=ids)
    lookup = dict(zip(ids, base))
    model = ResidualRegressor(LinearRegression(), baseline=lookup)
    # shuffled folds: each test fold must get its own crystals' baseline values
    pred = cross_val_predict(model, X, y, cv=KFold(3, shuffle=True, random_state=0))
    np.testing.assert_allclose(pred, y)
    with pytest.raises(ValueError, match="no baseline value"):
        model.fit(X, y).predict(pd.DataFrame({"x": [0.0]}, index=["mp-new"]))
    with pytest.raises(ValueError, match="carries no ids"):
        model.fit(x.reshape(-1, 1), y)


def test_pipeline_gridsearch_clone_and_pickle(linear_data):
    x, base, y = linear_data
    X = pd.DataFrame({"x": x, "dft": base})
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", Ridge())])
    model = ResidualRegressor(pipe, baseline="dft")
    search = GridSearchCV(model, {"estimator__ridge__alpha": [1e-6, 100.0]}, cv=3,
                          scoring="neg_mean_absolute_error").fit(X, y)
    assert search.best_params_ == {"estimator__ridge__alpha": 1e-6}
    assert clone(model).get_params()["estimator__ridge__alpha"] == 1.0
    again = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_allclose(again.predict(X), y, atol=1e-4)


def test_a_fitted_model_as_baseline_survives_clone_and_is_never_refitted(linear_data):
    x, base, y = linear_data
    dft_model = LinearRegression().fit(x.reshape(-1, 1), 3 * x)
    model = ResidualRegressor(LinearRegression(), baseline=dft_model)
    copy = clone(model)
    assert copy.baseline is dft_model and "baseline__fit_intercept" not in copy.get_params()
    target = 3 * x + 2 * x + 1
    copy.fit(x.reshape(-1, 1), target)
    np.testing.assert_allclose(copy.estimator_.coef_, [2.0])
    np.testing.assert_allclose(dft_model.coef_, [3.0])
    with pytest.raises(NotFittedError, match="never fits it"):
        ResidualRegressor(LinearRegression(), baseline=LinearRegression()).fit(x.reshape(-1, 1), y)


def test_bad_baselines_are_named():
    X = pd.DataFrame({"x": [1.0, 2.0], "dft": [0.0, np.nan]})
    with pytest.raises(ValueError, match="NaN or inf for 1 crystals"):
        ResidualRegressor(LinearRegression(), baseline="dft").fit(X, [1.0, 2.0])
    with pytest.raises(ValueError, match="no baseline column 'e'"):
        ResidualRegressor(LinearRegression(), baseline="e").fit(X, [1.0, 2.0])
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        ResidualRegressor(LinearRegression(), baseline="dft").fit(np.ones((2, 1)), [1.0, 2.0])
    twice = pd.Series([0.0, 1.0, 2.0], index=["a", "a", "b"])
    with pytest.raises(ValueError, match=r"several values for ids \['a'\]"):
        ResidualRegressor(LinearRegression(), baseline=twice).fit(pd.DataFrame({"x": [1.0]}, index=["a"]), [1.0])
    with pytest.raises(TypeError, match="baseline must be"):
        ResidualRegressor(LinearRegression(), baseline=3.0).fit(X, [1.0, 2.0])


@pytest.fixture(scope="module")
def demo_graphs():
    structures, y = make_demo_data(n=48, random_state=0)
    ids = [f"demo-{i}" for i in range(len(y))]
    return CrystalGraphFeaturizer().transform(structures, ids=ids), y, ids


def test_crysk_networks_on_graphs_with_validation_and_warm_start(demo_graphs, tmp_path):
    graphs, y, ids = demo_graphs
    offset = 0.3 * y + 1.0  # a "DFT value" that is off by a composition-dependent amount
    dft = dict(zip(ids, y - offset))
    small = dict(atom_fea_len=8, h_fea_len=8, n_conv=1, batch_size=16, random_state=0)
    # a checkpoint path: clone() (in compare) would re-initialise a fitted estimator given as warm_start_from
    source = CGCNNRegressor(max_epochs=2, **small).fit(graphs, y - offset).save_pretrained(tmp_path / "dft.pt")
    model = ResidualRegressor(CGCNNRegressor(max_epochs=2, warm_start_from=str(source), **small), baseline=dft)
    cv = RepeatedSubsample(24, 8, 16, n_trials=2, random_state=0)
    res = compare({"correction": model}, graphs, y, cv)
    assert (res["n_val"] == 8).all()  # the validation crystals reached the network as X_valid
    train, val, test = next(cv.split_with_validation(graphs))
    fitted = clone(model).fit(graphs[train], y[train], X_valid=graphs[val], y_valid=y[val])
    assert fitted.estimator_.transfer_report_ is not None and fitted.estimator_.transfer_report_.loaded
    pred = fitted.predict(graphs[test])
    np.testing.assert_allclose(pred - fitted.estimator_.predict(graphs[test]), (y - offset)[test])
    np.testing.assert_allclose(np.abs(pred - y[test]).mean(), res.test_mae[0])
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(graphs[test]), pred)


def test_random_forest_on_magpie_merges_the_validation_set(demo_graphs):
    from crysk.baselines import make_baseline

    graphs, y, ids = demo_graphs
    dft = dict(zip(ids, y - 0.5))
    rf = make_baseline("rf", random_state=0, cv=2, param_grid={"min_samples_leaf": [1]})
    model = ResidualRegressor(rf, baseline=dft).fit(graphs[:30], y[:30], X_valid=graphs[30:40], y_valid=y[30:40])
    # no validation set in RF: it was fitted on all 40 crystals, on residuals of 0.5
    assert model.estimator_[-1].best_estimator_["model"].n_features_in_ == 132
    np.testing.assert_allclose(model.estimator_.predict(graphs[40:]), 0.5)
    np.testing.assert_allclose(model.predict(graphs[40:]), y[40:])


def test_structures_in_a_dataframe_beside_the_baseline_column():
    structures, y = make_demo_data(n=24, random_state=1)
    X = pd.DataFrame({"structure": structures, "dft": y - 0.2})
    net = CGCNNRegressor(max_epochs=1, atom_fea_len=8, h_fea_len=8, n_conv=1, batch_size=8, random_state=0)
    model = ResidualRegressor(net, baseline="dft").fit(X, y)
    np.testing.assert_allclose(model.predict(X) - model.estimator_.predict(X[["structure"]]), y - 0.2)
