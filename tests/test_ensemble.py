"""DeepEnsemble and plot_calibration (issue 17 item 4): members, σ, seeds, pickling, classifiers, recalibration."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV, KFold

import crysk
from crysk import CGCNNClassifier, CGCNNRegressor, CrystalGraphFeaturizer, DeepEnsemble

TINY = dict(atom_fea_len=8, n_conv=1, h_fea_len=8, batch_size=16, max_epochs=4, lr=0.02)


@pytest.fixture(scope="module")
def data(eform_structures):
    """60 featurized crystals with formation energies, and 20 more (their structures) to predict."""
    structures, y, ids = eform_structures
    g = CrystalGraphFeaturizer().transform(structures[:60], ids=ids[:60])
    return g, y[:60], structures[60:80], y[60:80]


@pytest.fixture(scope="module")
def fitted(data):
    g, y, _, _ = data
    return DeepEnsemble(CGCNNRegressor(**TINY), n_members=3, random_state=0).fit(g, y)


def test_members_differ_and_predict_is_their_mean(fitted, data):
    _, _, s_test, _ = data
    ens = fitted
    assert len(ens.members_) == 3 and len(set(ens.member_seeds_.tolist())) == 3
    assert [m.random_state for m in ens.members_] == ens.member_seeds_.tolist()
    assert ens.estimator.random_state is None  # the template is never fitted or changed
    w = [m.module_.embedding.weight.detach().numpy() for m in ens.members_]
    assert not np.array_equal(w[0], w[1]) and not np.array_equal(w[1], w[2])
    each = ens.predict_members(s_test)  # structures: featurized once, inside
    assert each.shape == (3, 20)
    assert np.ptp(each, axis=0).min() > 0  # every crystal gets different predictions
    np.testing.assert_allclose(ens.predict(s_test), each.mean(axis=0))


def test_return_std_shape_and_positivity(fitted, data):
    _, _, s_test, _ = data
    mean, std = fitted.predict(s_test, return_std=True)
    assert mean.shape == std.shape == (20,)
    assert np.all(std > 0) and np.all(np.isfinite(std))
    np.testing.assert_allclose(std, fitted.predict_members(s_test).std(axis=0, ddof=1))


def test_multi_target_std_shape(data):
    g, y, _, _ = data
    y2 = np.column_stack([y, 2.0 * y + 1.0])
    ens = DeepEnsemble(CGCNNRegressor(**{**TINY, "max_epochs": 2}), n_members=2, random_state=0).fit(g, y2)
    mean, std = ens.predict(g[:7], return_std=True)
    assert mean.shape == std.shape == (7, 2) and np.all(std > 0)
    y_missing = y2[:30].copy()
    y_missing[::3, 1] = np.nan  # recalibrate and score leave missing targets out
    ens.recalibrate(g[:30], y_missing)
    assert np.shape(ens.std_scale_) == (2,) and np.all(ens.std_scale_ > 0)
    mean, raw = ens.predict(g[:30], return_std=True, calibrated=False)
    keep = ~np.isnan(y_missing[:, 1])
    expected = np.sqrt(np.mean(((y_missing[keep, 1] - mean[keep, 1]) / raw[keep, 1]) ** 2))
    assert ens.std_scale_[1] == pytest.approx(expected, rel=1e-9)
    assert np.isfinite(ens.score(g[:30], y_missing))


def test_reproducible_with_random_state_serial_or_parallel(fitted, data):
    g, y, s_test, _ = data
    # One torch thread in this process: float sums depend on the thread count, which the
    # default (n_threads=None) takes from the cores free at each fit, and parallel members use 1.
    one = dict(TINY, n_threads=1)
    serial = DeepEnsemble(CGCNNRegressor(**one), n_members=3, random_state=0).fit(g, y)
    again = DeepEnsemble(CGCNNRegressor(**one), n_members=3, random_state=0).fit(g, y)
    np.testing.assert_array_equal(again.member_seeds_, fitted.member_seeds_)
    np.testing.assert_array_equal(again.predict_members(g), serial.predict_members(g))
    # two worker processes, one torch thread each: the same members as in this process
    par = DeepEnsemble(CGCNNRegressor(**TINY), n_members=3, n_jobs=2, random_state=0).fit(g, y)
    np.testing.assert_array_equal(par.predict_members(g), serial.predict_members(g))
    assert all(m.n_threads is None for m in par.members_)  # the one-thread setting does not stick
    np.testing.assert_allclose(par.predict_members(g), fitted.predict_members(g), rtol=1e-5, atol=1e-6)
    other = DeepEnsemble(CGCNNRegressor(**TINY), n_members=3, random_state=1).fit(g, y)
    assert not np.array_equal(other.predict(g), fitted.predict(g))


def test_pickle_round_trip_gives_identical_predictions(fitted, data):
    _, _, s_test, _ = data
    back = pickle.loads(pickle.dumps(fitted))
    m0, s0 = fitted.predict(s_test, return_std=True)
    m1, s1 = back.predict(s_test, return_std=True)
    np.testing.assert_array_equal(m0, m1)
    np.testing.assert_array_equal(s0, s1)


def test_classifier_averages_probabilities(data):
    g, y, s_test, _ = data
    labels = np.where(y < np.median(y), "stable", "less stable")
    ens = DeepEnsemble(CGCNNClassifier(**TINY), n_members=2, random_state=0).fit(g, labels)
    assert is_classifier(ens) and not is_regressor(ens)
    assert list(ens.classes_) == ["less stable", "stable"]
    proba = ens.predict_proba(s_test)
    assert proba.shape == (20, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    members = [m.predict_proba(s_test) for m in ens.members_]
    np.testing.assert_allclose(proba, np.mean(members, axis=0))
    np.testing.assert_array_equal(ens.predict(s_test), ens.classes_[proba.argmax(axis=1)])
    assert 0.0 <= ens.score(g, labels) <= 1.0
    assert not hasattr(ens, "recalibrate")
    with pytest.raises(ValueError, match="return_std"):
        ens.predict(s_test, return_std=True)


def test_regressor_has_no_predict_proba(fitted):
    assert is_regressor(fitted) and not hasattr(fitted, "predict_proba")


def test_grid_search_over_estimator_lr(data):
    g, y, _, _ = data
    ens = DeepEnsemble(CGCNNRegressor(**{**TINY, "max_epochs": 2}), n_members=2, random_state=0)
    assert ens.get_params()["estimator__lr"] == 0.02
    search = GridSearchCV(ens, {"estimator__lr": [0.001, 0.05]}, cv=KFold(2), scoring="neg_mean_absolute_error")
    search.fit(g, y)
    assert search.best_params_["estimator__lr"] in (0.001, 0.05)
    assert search.best_estimator_.members_[0].lr == search.best_params_["estimator__lr"]
    assert clone(ens).get_params()["estimator__lr"] == 0.02


def test_warm_start_every_member_starts_from_the_same_source(data):
    g, y, _, _ = data
    source = CGCNNRegressor(**TINY, random_state=5).fit(g, y)
    est = CGCNNRegressor(**TINY, warm_start_from=source, freeze=["embedding", "convs"])
    ens = DeepEnsemble(est, n_members=3, random_state=0).fit(g, y)
    src = source.module_.state_dict()
    for m in ens.members_:
        assert sorted(m.transfer_report_.loaded) == sorted(ens.members_[0].transfer_report_.loaded)
        state = m.module_.state_dict()
        # frozen transferred tensors: bit-identical to the source in every member
        for name in ("embedding.weight", "convs.0.fc_full.weight"):
            assert torch.equal(state[name], src[name])
    # the heads were trained from different seeds
    heads = [m.module_.state_dict()["fc_out.weight"] for m in ens.members_]
    assert not torch.equal(heads[0], heads[1])


def test_recalibration_scale_factor_on_a_synthetic_case(fitted, data):
    """Targets built so that their error is exactly 3 raw σ for every crystal: the factor must be 3."""
    g, _, _, _ = data
    mean, std = fitted.predict(g, return_std=True, calibrated=False)
    signs = np.where(np.arange(len(mean)) % 2 == 0, 1.0, -1.0)
    ens = pickle.loads(pickle.dumps(fitted))
    ens.recalibrate(g, mean + 3.0 * signs * std)
    assert ens.std_scale_ == pytest.approx(3.0, rel=1e-9)
    mean2, std2 = ens.predict(g, return_std=True)
    np.testing.assert_allclose(mean2, mean)
    np.testing.assert_allclose(std2, 3.0 * std)
    np.testing.assert_allclose(ens.predict(g, return_std=True, calibrated=False)[1], std)
    # a mixture: RMS of the normalised residuals is sqrt((1 + 9) / 2)
    z = np.where(np.arange(len(mean)) % 2 == 0, 1.0, 3.0)
    ens.recalibrate(g, mean + z * std)
    assert ens.std_scale_ == pytest.approx(np.sqrt(5.0), rel=1e-9)
    assert fitted.std_scale_ == 1.0


def test_bad_parameters_are_refused_in_fit(data):
    g, y, _, _ = data
    with pytest.raises(ValueError, match="n_members"):
        DeepEnsemble(CGCNNRegressor(**TINY), n_members=1).fit(g, y)
    with pytest.raises(ValueError, match="regressor or a classifier"):
        DeepEnsemble(crysk.CrysAE()).fit(g, y)


def test_plot_calibration_returns_axes_and_the_right_curve(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    from crysk.plotting import plot_calibration

    rng = np.random.default_rng(0)
    mu = rng.normal(size=4000)
    std = rng.uniform(0.5, 2.0, size=4000)
    y = mu + std * rng.normal(size=4000)
    ax = plot_calibration(y, mu, std, label="calibrated", path=tmp_path / "cal.png")
    assert isinstance(ax, Axes) and (tmp_path / "cal.png").stat().st_size > 0
    plot_calibration(y, mu, std / 3, ax=ax, label="overconfident")
    (diag, good, bad) = ax.get_lines()
    x, observed = good.get_data()
    np.testing.assert_allclose(observed, x, atol=0.03)  # Gaussian errors with the right σ: on the diagonal
    assert np.all(bad.get_data()[1][10:] < x[10:] - 0.05)  # σ three times too small: well below it
    plt.close(ax.figure)
