import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.dummy import DummyRegressor
from sklearn.model_selection import KFold, cross_validate

from crysk import (
    CGCNNRegressor,
    CrystalGraphFeaturizer,
    RepeatedSubsample,
    compare,
    equivalent_training_size,
    learning_curve,
    markdown_table,
    paired_ttest,
    summarize,
)
from crysk.evaluation import accepts_validation

# every (estimator, event, positions) seen; positions are recovered from X = arange
LOG: list = []


class Recorder(RegressorMixin, BaseEstimator):
    """Predicts the training mean and records which samples it saw."""

    def __init__(self, tag="plain"):
        self.tag = tag

    def fit(self, X, y):
        LOG.append((self.tag, "fit", _positions(X)))
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        LOG.append((self.tag, "predict", _positions(X)))
        return np.full(len(X), self.mean_)


class ValidRecorder(Recorder):
    """Like Recorder, but takes an explicit validation set as CGCNNRegressor does."""

    def fit(self, X, y, X_valid=None, y_valid=None):
        LOG.append((self.tag, "fit", _positions(X)))
        LOG.append((self.tag, "valid", None if X_valid is None else _positions(X_valid)))
        self.mean_ = float(np.mean(y))
        return self


def _positions(X):
    if hasattr(X, "ids"):  # CrystalGraphs: ids are the positions
        return np.asarray(X.ids, dtype=int)
    return np.asarray(X, dtype=int).ravel()


@pytest.fixture(autouse=True)
def clear_log():
    LOG.clear()


def _data(n=60):
    return np.arange(n).reshape(-1, 1), np.random.default_rng(0).normal(size=n)


# ----------------------------------------------------------------------------- RepeatedSubsample


def test_subsamples_are_disjoint_sized_and_reproducible():
    X, _ = _data(100)
    cv = RepeatedSubsample(40, 15, 20, n_trials=6, random_state=7)
    triples = list(cv.split_with_validation(X))
    assert len(triples) == 6 == cv.get_n_splits()
    for train, val, test in triples:
        assert (len(train), len(val), len(test)) == (40, 15, 20)
        assert len(set(train) | set(val) | set(test)) == 75
    again = list(cv.split_with_validation(X))
    assert all(all(np.array_equal(a, b) for a, b in zip(s, t)) for s, t in zip(triples, again))
    assert not np.array_equal(np.sort(triples[0][2]), np.sort(triples[1][2]))
    other = list(RepeatedSubsample(40, 15, 20, n_trials=6, random_state=8).split_with_validation(X))
    assert not np.array_equal(other[0][2], triples[0][2])
    for (tv, test), (train, val, test2) in zip(cv.split(X), triples):
        assert np.array_equal(np.sort(tv), np.sort(np.concatenate([train, val])))
        assert np.array_equal(test, test2)


def test_paper_defaults_and_size_errors():
    cv = RepeatedSubsample()
    assert (cv.n_train, cv.n_val, cv.n_test, cv.n_trials) == (500, 125, 125, 10)
    with pytest.raises(ValueError, match="more than the 700 samples"):
        next(cv.split(np.zeros((700, 1))))
    with pytest.raises(ValueError, match="n_train"):
        next(RepeatedSubsample(0, 1, 1).split(np.zeros((10, 1))))
    with pytest.raises(ValueError, match="n_val"):
        next(RepeatedSubsample(5, -1, 1).split(np.zeros((10, 1))))
    train, val, _test = next(RepeatedSubsample(5, 0, 3, random_state=0).split_with_validation(np.zeros((10, 1))))
    assert len(val) == 0 and len(train) == 5


def test_smaller_training_sets_are_nested_with_the_same_test_sets():
    X, _ = _data(100)
    small = list(RepeatedSubsample(20, 10, 15, n_trials=3, random_state=1).split_with_validation(X))
    large = list(RepeatedSubsample(60, 10, 15, n_trials=3, random_state=1).split_with_validation(X))
    for (tr_s, va_s, te_s), (tr_l, va_l, te_l) in zip(small, large):
        assert np.array_equal(te_s, te_l) and np.array_equal(va_s, va_l)
        assert set(tr_s) <= set(tr_l)


def test_works_as_a_cv_splitter_in_cross_validate():
    X, y = _data(80)
    cv = RepeatedSubsample(30, 10, 20, n_trials=4, random_state=0)
    out = cross_validate(Recorder(), X, y, cv=cv, scoring="neg_mean_absolute_error")
    assert len(out["test_score"]) == 4
    fits = [p for tag, ev, p in LOG if ev == "fit"]
    for fitted, (train, val, test) in zip(fits, cv.split_with_validation(X)):
        assert set(fitted) == set(train) | set(val)
        expected = -np.mean(np.abs(y[test] - y[np.concatenate([train, val])].mean()))
    assert out["test_score"][-1] == pytest.approx(expected)


# ----------------------------------------------------------------------------- compare


def test_compare_uses_the_same_splits_and_passes_validation_sets():
    X, y = _data(90)
    cv = RepeatedSubsample(30, 12, 18, n_trials=3, random_state=5)
    estimators = {
        "mean": DummyRegressor(),
        "median": DummyRegressor(strategy="median"),
        "plain": Recorder("plain"),
        "valid": ValidRecorder("valid"),
    }
    res = compare(estimators, X, y, cv)
    assert len(res) == 12 and list(res["estimator"].cat.categories) == list(estimators)
    assert {"estimator", "trial", "n_train", "n_val", "n_test", "train_mae", "val_mae", "test_mae", "fit_time"} <= set(
        res.columns
    )
    splits = list(cv.split_with_validation(X))
    fits = {tag: [p for t, ev, p in LOG if t == tag and ev == "fit"] for tag in ("plain", "valid")}
    valids = [p for t, ev, p in LOG if t == "valid" and ev == "valid"]
    # the last predict call of each trial is on the test set (after train and val scores)
    for k, (train, val, test) in enumerate(splits):
        assert set(fits["plain"][k]) == set(train) | set(val)  # no X_valid: trains on both
        assert set(fits["valid"][k]) == set(train)
        assert np.array_equal(valids[k], val)
        mean_row = res[(res.estimator == "mean") & (res.trial == k)].iloc[0]
        expected = np.mean(np.abs(y[test] - y[np.concatenate([train, val])].mean()))
        assert mean_row.test_mae == pytest.approx(expected)
        assert mean_row.n_train == 42 and mean_row.n_val == 0 and np.isnan(mean_row.val_mae)
        valid_row = res[(res.estimator == "valid") & (res.trial == k)].iloc[0]
        assert valid_row.n_train == 30 and valid_row.n_val == 12
        assert valid_row.val_mae == pytest.approx(np.mean(np.abs(y[val] - y[train].mean())))
    predicted = {tag: [p for t, ev, p in LOG if t == tag and ev == "predict"] for tag in ("plain", "valid")}
    test_sets_plain = [p for p in predicted["plain"] if len(p) == 18]
    test_sets_valid = [p for p in predicted["valid"] if len(p) == 18]
    for a, b, (_, _, test) in zip(test_sets_plain, test_sets_valid, splits):
        assert np.array_equal(a, test) and np.array_equal(b, test)


def test_compare_with_crystal_graphs_and_a_plain_splitter(eform_structures):
    structures, y, _ = eform_structures
    graphs = CrystalGraphFeaturizer().transform(structures[:30], ids=list(range(30)))
    res = compare({"plain": Recorder()}, graphs, y[:30], KFold(3))
    assert len(res) == 3 and (res.n_val == 0).all() and res.val_mae.isna().all()
    fitted = [p for _, ev, p in LOG if ev == "fit"]
    for seen, (train, _) in zip(fitted, KFold(3).split(np.zeros(30))):
        assert np.array_equal(seen, train)


def test_compare_passes_validation_to_cgcnn(eform_structures):
    from crysk import DeepEnsemble
    from crysk.correction import ResidualRegressor

    assert accepts_validation(CGCNNRegressor()) and not accepts_validation(DummyRegressor())
    # an ensemble of networks hands the validation set to its members, so it takes one too (it was merged
    # into training before, and each member split off its own)
    assert accepts_validation(DeepEnsemble(CGCNNRegressor()))
    assert accepts_validation(ResidualRegressor(DeepEnsemble(CGCNNRegressor()), baseline={}))
    assert not accepts_validation(DeepEnsemble(DummyRegressor()))
    structures, y, _ = eform_structures
    graphs = CrystalGraphFeaturizer().transform(structures[:70])
    fast = CGCNNRegressor(atom_fea_len=8, n_conv=1, h_fea_len=8, batch_size=32, max_epochs=2, random_state=0)
    res = compare({"cgcnn": fast}, graphs, y[:70], RepeatedSubsample(40, 10, 20, n_trials=1, random_state=0))
    row = res.iloc[0]
    assert row.n_train == 40 and row.n_val == 10 and np.isfinite(row.val_mae) and np.isfinite(row.test_mae)
    ens = compare({"ensemble": DeepEnsemble(fast, n_members=2, random_state=0)}, graphs, y[:70],
                  RepeatedSubsample(40, 10, 20, n_trials=1, random_state=0)).iloc[0]
    assert ens.n_train == 40 and ens.n_val == 10 and np.isfinite(ens.val_mae)


FAIL_AT: list = []  # first training position that interrupts FailsOnTrial (not a parameter: not in the key)


class FailsOnTrial(Recorder):
    """Fits like Recorder, but is interrupted on the training set that starts at ``FAIL_AT``."""

    def fit(self, X, y):
        if FAIL_AT and _positions(X)[0] == FAIL_AT[0]:
            raise KeyboardInterrupt
        return super().fit(X, y)


def test_compare_cache_resumes_and_refits_only_what_changed(tmp_path):
    X, y = _data(60)
    cv = RepeatedSubsample(20, 5, 10, n_trials=3, random_state=1)
    cache = tmp_path / "runs.csv"
    FAIL_AT[:] = [np.concatenate([tr, va])[0] for tr, va, _ in cv.split_with_validation(X)][2:3]
    # interrupted during trial 2 of the second estimator: everything finished before is on disk
    with pytest.raises(KeyboardInterrupt):
        compare({"a": Recorder("a"), "b": FailsOnTrial("b")}, X, y, cv, cache=cache)
    assert len(pd.read_csv(cache)) == 5  # a0 b0 a1 b1 a2
    FAIL_AT.clear()
    LOG.clear()
    res = compare({"a": Recorder("a"), "b": FailsOnTrial("b")}, X, y, cv, cache=cache)
    assert [t for t, ev, _ in LOG if ev == "fit"] == ["b"]  # only the interrupted fit runs again
    fresh = compare({"a": Recorder("a"), "b": FailsOnTrial("b")}, X, y, cv)
    pd.testing.assert_frame_equal(res.drop(columns=["fit_time", "predict_time"]),
                                  fresh.drop(columns=["fit_time", "predict_time"]), check_dtype=False)
    LOG.clear()
    again = compare({"b2": FailsOnTrial("b"), "a": Recorder("a")}, X, y, cv, cache=cache)
    assert LOG == []  # names and order are not part of the match
    assert list(again.estimator.cat.categories) == ["b2", "a"] and "fit_key" not in again.columns
    assert np.allclose(again.test_mae[:3], res.test_mae[3:]) and again.trial.tolist() == [0, 1, 2] * 2
    # other parameters, other targets or other splits are other fits
    compare({"a": Recorder("a-other")}, X, y, cv, cache=cache)
    compare({"a": Recorder("a")}, X, y + 1, cv, cache=cache)
    compare({"a": Recorder("a")}, X, y, RepeatedSubsample(20, 5, 10, n_trials=1, random_state=2), cache=cache)
    assert [t for t, ev, _ in LOG if ev == "fit"] == ["a-other"] * 3 + ["a"] * 4


def test_compare_cache_refuses_a_foreign_file(tmp_path):
    X, y = _data(30)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not written by compare"):
        compare({"m": DummyRegressor()}, X, y, KFold(2), cache=other)


def test_compare_argument_errors():
    X, y = _data(20)
    with pytest.raises(TypeError):
        compare({}, X, y, KFold(2))
    with pytest.raises(ValueError, match="samples"):
        compare({"m": DummyRegressor()}, X, y[:10], KFold(2))


# ----------------------------------------------------------------------------- statistics


def _table():
    rng = np.random.default_rng(3)
    rows = []
    for name, shift in (("a", 0.0), ("b", 0.05)):
        for t in range(8):
            rows.append({"estimator": name, "trial": t, "train_mae": 0.1 + shift, "test_mae": 0.3 + shift + rng.normal(0, 0.02)})
    return pd.DataFrame(rows)


def test_paired_ttest_matches_scipy():
    res = _table().sample(frac=1.0, random_state=0)  # order must not matter: pairs are matched by trial
    out = paired_ttest(res, "a", "b")
    a = res[res.estimator == "a"].sort_values("trial").test_mae.to_numpy()
    b = res[res.estimator == "b"].sort_values("trial").test_mae.to_numpy()
    ref = ttest_rel(a, b)
    assert out.statistic == pytest.approx(ref.statistic) and out.pvalue == pytest.approx(ref.pvalue)
    assert out.n_trials == 8 and out.mean_difference == pytest.approx(np.mean(a - b)) and out.statistic < 0
    with pytest.raises(ValueError, match="different trials"):
        paired_ttest(res[~((res.estimator == "b") & (res.trial == 3))], "a", "b")
    with pytest.raises(ValueError, match="no results"):
        paired_ttest(res, "a", "c")


def test_summarize_and_markdown():
    res = _table()
    summary = summarize(res)
    assert list(summary.index) == ["a", "b"]
    assert summary.loc["b", "test_mae_mean"] == pytest.approx(res[res.estimator == "b"].test_mae.mean())
    assert summary.loc["a", "test_mae_std"] == pytest.approx(res[res.estimator == "a"].test_mae.std(ddof=1))
    assert "val_mae_mean" not in summary.columns and (summary.n_trials == 8).all()
    text = markdown_table(res, digits=2)
    lines = text.splitlines()
    assert lines[0] == "| estimator | train_mae | test_mae |" and len(lines) == 4
    assert lines[3].startswith("| b | 0.15 (0.00) |")


# ----------------------------------------------------------------------------- learning curves


def test_learning_curve_shares_test_sets_and_nests_training_sets():
    X, y = _data(120)
    curve = learning_curve(Recorder(), X, y, [10, 40, 20], n_val=10, n_test=25, n_trials=2, random_state=4)
    assert list(curve.train_size) == [10, 10, 20, 20, 40, 40]
    assert list(curve.columns[:2]) == ["train_size", "trial"]
    fits = [p for _, ev, p in LOG if ev == "fit"]
    tests = [p for _, ev, p in LOG if ev == "predict" and len(p) == 25]
    # fits run size by size, trial by trial: trial 0 of each size is at positions 0, 2, 4
    assert set(fits[0]) <= set(fits[2]) <= set(fits[4])
    assert np.array_equal(tests[0], tests[2]) and np.array_equal(tests[1], tests[5])
    with pytest.raises(ValueError, match="random_state"):
        learning_curve(Recorder(), X, y, [10], random_state=None)


def test_equivalent_size_recovers_a_power_law():
    sizes = np.array([100, 200, 500, 1000, 2000, 5000])
    mae = 2.0 * sizes ** -0.3
    assert equivalent_training_size(sizes, mae, 2.0 * 750**-0.3) == pytest.approx(750, rel=1e-9)
    assert equivalent_training_size(sizes, mae, 2.0 * 1000**-0.3) == pytest.approx(1000, rel=1e-9)
    # one row per trial (as learning_curve gives) is averaged per size
    rep = np.repeat(sizes, 3)
    noisy = np.repeat(mae, 3) * np.tile([0.9, 1.0, 1.1], len(sizes))
    assert equivalent_training_size(rep, noisy, 2.0 * 300**-0.3) == pytest.approx(300, rel=1e-9)


def test_equivalent_size_outside_the_curve():
    sizes = np.array([100, 200, 500, 1000])
    mae = 2.0 * sizes ** -0.3
    with pytest.raises(ValueError, match="extrapolate=True"):
        equivalent_training_size(sizes, mae, 2.0 * 3000**-0.3)
    with pytest.warns(UserWarning, match="extrapolating"):
        assert equivalent_training_size(sizes, mae, 2.0 * 3000**-0.3, extrapolate=True) == pytest.approx(3000)
    with pytest.warns(UserWarning, match="extrapolating"):
        assert equivalent_training_size(sizes, mae, 2.0 * 50**-0.3, extrapolate=True) == pytest.approx(50)
    with pytest.raises(ValueError, match="two distinct"):
        equivalent_training_size([100, 100], [0.5, 0.4], 0.45)


def test_equivalent_size_of_a_bumpy_curve_takes_the_first_crossing():
    sizes = [100, 200, 400, 800]
    maes = [0.5, 0.3, 0.35, 0.2]
    with pytest.warns(UserWarning, match="more than once"):
        got = equivalent_training_size(sizes, maes, 0.32)
    expected = 10 ** (2 + np.log10(0.32 / 0.5) / np.log10(0.3 / 0.5) * np.log10(2))
    assert got == pytest.approx(expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        equivalent_training_size(sizes, maes, 0.4)  # one crossing: no warning
