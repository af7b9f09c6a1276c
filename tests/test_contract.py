"""The scikit-learn/skorch contract of the crysk estimators (issue 15 items 1-8, issue 19 item 7)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import (
    check_estimator,
    check_estimator_repr,
    check_get_params_invariance,
    check_mixin_order,
    check_parameters_default_constructible,
    check_set_params,
)
from skorch.dataset import ValidSplit
from skorch.helper import predefined_split

from crysk import CGCNNClassifier, CGCNNRegressor, CrysAE, CrystalGraphFeaturizer, CrysXPPClassifier, CrysXPPRegressor
from crysk.baselines import ElementDescriptor, SOAPKernelRidge
from crysk.evaluation import RepeatedSubsample, compare
from crysk.targets import TanhScaler

TINY = dict(atom_fea_len=8, n_conv=1, h_fea_len=8, batch_size=20, max_epochs=1, random_state=0)
NETS = [CGCNNRegressor, CGCNNClassifier, CrysXPPRegressor, CrysXPPClassifier, CrysAE]
STRUCTURE_ESTIMATORS = [*NETS, CrystalGraphFeaturizer, ElementDescriptor, SOAPKernelRidge]
# skorch's NeuralNet.__init__ sets these fitted-looking attributes itself
SKORCH_INIT_ATTRIBUTES = {"history_", "initialized_", "virtual_params_"}


def _tiny(cls, **params):
    if cls is CrysAE:
        return CrysAE(**{k: v for k, v in TINY.items() if k != "h_fea_len"}, **params)
    return cls(**TINY, **params)


def _fit_args(cls, gy):
    """What ``fit`` takes: graphs alone (CrysAE), with labels (classifiers) or with targets."""
    g, y = gy
    if cls is CrysAE:
        return (g,)
    return (g, y < np.median(y)) if is_classifier(cls()) else (g, y)


@pytest.fixture(scope="module")
def gy(eform_structures):
    structures, y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures[:80], ids=ids[:80]), y[:80]


@pytest.fixture(scope="module")
def source(gy):
    g, y = gy
    return CGCNNRegressor(**TINY).fit(g, y)


# ----------------------------------------------------------------------------- item 1
def test_fitted_source_survives_clone_cross_validation_grid_search_and_compare(source, gy):
    g, y = gy
    tuned = CGCNNRegressor(**TINY, warm_start_from=source, freeze="convs")
    twin = clone(tuned)
    assert twin.warm_start_from is source  # the source is passed on, not refit-cloned
    scores = cross_val_score(tuned, g, y, cv=KFold(2), scoring="neg_mean_absolute_error")
    assert np.isfinite(scores).all()
    search = GridSearchCV(tuned, {"lr": [0.01, 0.005]}, cv=2, scoring="neg_mean_absolute_error").fit(g, y)
    assert search.best_estimator_.transfer_report_.loaded
    table = compare({"tl": tuned}, g, y, RepeatedSubsample(40, 10, 20, n_trials=1, random_state=0))
    assert np.isfinite(table["test_mae"]).all()
    # the transferred convolution is the source's, bit for bit
    w = search.best_estimator_.module_.convs[0].fc_full.weight
    assert torch.equal(w, source.module_.convs[0].fc_full.weight)


# ----------------------------------------------------------------------------- item 2
@pytest.mark.parametrize("cls", NETS)
def test_get_and_set_params_never_check_or_build(cls, gy):
    est = cls(lr_milestones=1, batch_size=-3, optimizer="nonsense", max_epochs="many")
    est.set_params(lr_milestones=2, gamma=-1.0)
    params = est.get_params()  # deep: includes the default callbacks' parameters
    assert params["lr_milestones"] == 2 and "callbacks__lr_scheduler" in params
    assert clone(est).get_params(deep=False)["max_epochs"] == "many"
    with pytest.raises(ValueError, match="batch_size"):
        est.fit(gy[0], gy[1])


def test_bad_milestones_are_reported_by_fit(gy):
    est = CGCNNRegressor(**TINY).set_params(lr_milestones=1)
    with pytest.raises(ValueError, match="lr_milestones must be a sequence"):
        est.fit(*gy)


def test_milestones_reach_the_schedule(gy):
    est = CGCNNRegressor(**{**TINY, "max_epochs": 3}, lr=0.1, gamma=0.5, lr_milestones=(1, 2)).fit(*gy)
    assert est.optimizer_.param_groups[0]["lr"] == pytest.approx(0.025)


# ----------------------------------------------------------------------------- item 3
def test_criterion_is_honoured(gy):
    g, y = gy
    huber = CGCNNRegressor(**TINY, criterion=torch.nn.HuberLoss, criterion__delta=0.1).fit(g, y)
    assert isinstance(huber.criterion_, torch.nn.HuberLoss) and huber.criterion_.delta == 0.1
    mse = CGCNNRegressor(**TINY).fit(g, y)
    assert isinstance(mse.criterion_, torch.nn.MSELoss)
    assert huber.history[-1, "train_loss"] != pytest.approx(mse.history[-1, "train_loss"])
    assert clone(huber).get_params()["criterion"] is torch.nn.HuberLoss


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(criterion=torch.nn.HuberLoss, loss="l1"), "either loss"),
        (dict(iterator_train=torch.utils.data.DataLoader), "iterator_train"),
        (dict(iterator_train__shuffle=False), "iterator_train__shuffle"),
        (dict(predict_nonlinearity=torch.sigmoid), "predict_nonlinearity"),
        (dict(warm_start=True), "partial_fit"),
        (dict(lr_transferred=0.001), "warm_start_from"),
    ],
)
def test_accepted_but_unused_arguments_are_refused(params, match, gy):
    with pytest.raises(ValueError, match=match):
        CGCNNRegressor(**TINY, **params).fit(*gy)


def test_crysae_refuses_a_criterion(gy):
    with pytest.raises(ValueError, match="reconstruction"):
        _tiny(CrysAE, criterion=torch.nn.L1Loss).fit(gy[0])


# ----------------------------------------------------------------------------- items 4 and 8
@pytest.mark.parametrize("cls", STRUCTURE_ESTIMATORS)
def test_applicable_scikit_learn_checks(cls):
    name = cls.__name__
    est = cls()
    check_parameters_default_constructible(name, est)
    check_get_params_invariance(name, est)
    check_set_params(name, est)
    check_mixin_order(name, est)
    check_estimator_repr(name, est)
    twin = clone(est)
    assert twin.get_params(deep=False).keys() == est.get_params(deep=False).keys()


@pytest.mark.parametrize("cls", STRUCTURE_ESTIMATORS)
def test_init_sets_only_parameters(cls):
    est = cls()
    params = set(est.get_params(deep=False))
    public = {k for k in vars(est) if not k.startswith("_")}
    skorch_args = set(est._skorch_defaults()) if hasattr(est, "_skorch_defaults") else set()
    assert public - params - skorch_args - SKORCH_INIT_ATTRIBUTES == set()
    assert params <= public


def test_check_estimator_on_the_numeric_estimators():
    check_estimator(TanhScaler())


@pytest.mark.parametrize("cls", NETS)
def test_fit_is_idempotent_and_clone_round_trips(cls, gy):
    g, _ = gy
    est = _tiny(cls)
    args = _fit_args(cls, gy)
    if cls is CrysAE:
        out = lambda e: e.transform(g[:10])  # noqa: E731
    else:
        out = (lambda e: e.predict_proba(g[:10])) if is_classifier(cls()) else (lambda e: e.predict(g[:10]))
    first = out(est.fit(*args))
    np.testing.assert_array_equal(out(est.fit(*args)), first)
    np.testing.assert_array_equal(out(clone(est).fit(*args)), first)


# ----------------------------------------------------------------------------- item 5
def test_fit_goes_through_partial_fit_of_subclasses(gy):
    calls = []

    class Counting(CGCNNRegressor):
        def partial_fit(self, X, y=None, classes=None, **fit_params):
            calls.append(sorted(fit_params))
            return super().partial_fit(X, y, classes, **fit_params)

    g, y = gy
    Counting(**TINY).fit(g[:60], y[:60], X_valid=g[60:], y_valid=y[60:])
    assert calls and "X_valid" in calls[0]


def test_partial_fit_continues_training(gy):
    g, y = gy
    est = CGCNNRegressor(**TINY).fit(g, y)
    before = est.module_.fc_out.weight.detach().clone()
    est.partial_fit(g[:60], y[:60], X_valid=g[60:], y_valid=y[60:])
    assert len(est.history) == 2
    assert not torch.equal(before, est.module_.fc_out.weight)
    assert "valid_mae" in est.history[-1]
    # partial_fit on an unfitted estimator fits it
    assert len(CGCNNRegressor(**TINY).partial_fit(g, y).history) == 1
    ae = _tiny(CrysAE).partial_fit(g)
    ae.partial_fit(g[:60], X_valid=g[60:])
    assert len(ae.history) == 2 and "valid_loss" in ae.history[-1]


def _crystals(est, kind):
    return sum(b[f"{kind}_batch_size"] for b in est.history[-1, "batches"] if f"{kind}_batch_size" in b)


def test_train_split_is_honoured(gy):
    g, y = gy
    est = CGCNNRegressor(**TINY, train_split=ValidSplit(4)).fit(g, y)
    assert (_crystals(est, "train"), _crystals(est, "valid")) == (60, 20)
    valid = est.get_dataset(g[:30], est.target_scaler_.transform(y[:30, None]))
    est = CGCNNRegressor(**TINY, train_split=predefined_split(valid)).fit(g, y)
    assert (_crystals(est, "train"), _crystals(est, "valid")) == (80, 30)


# ----------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("cls", NETS)
def test_training_plumbing_is_private(cls, gy):
    est = _tiny(cls).fit(*_fit_args(cls, gy))
    for name in ("fit_validation_", "shuffle_rng_", "sampling_rng_"):
        assert not hasattr(est, name)
    assert not [k for k in est.get_params(deep=False) if k.startswith("_")]


# ----------------------------------------------------------------------------- item 7
def test_stateless_transformers_say_so(gy, eform_structures):
    structures = eform_structures[0][:3]
    for est in (CrystalGraphFeaturizer(), ElementDescriptor()):
        assert est.__sklearn_tags__().requires_fit is False
        before = dict(vars(est))
        est.transform(structures)  # no fit needed
        assert vars(est) == before  # and transform changes nothing
        est.fit(structures)
        assert not hasattr(est, "n_features_in_")


# ----------------------------------------------------------------------------- issue 19 item 7
def test_repr_shows_the_parameters_the_user_set():
    assert repr(CGCNNRegressor(lr=0.005)) == "CGCNNRegressor(lr=0.005)"
    assert repr(CrysAE()) == "CrysAE()"
    text = repr(Pipeline([("f", CrystalGraphFeaturizer()), ("m", CGCNNRegressor(n_conv=2))]))
    assert "CGCNNRegressor(n_conv=2)" in text
    for internal in ("iterator_train", "_params_to_validate", "predict_nonlinearity", "<class"):
        assert internal not in text


@pytest.mark.parametrize("cls", NETS)
def test_get_params_holds_public_parameters_only(cls):
    params = cls().get_params()
    assert not [k for k in params if k.startswith("_")]
    for internal in ("iterator_train", "dataset", "predict_nonlinearity", "use_caching"):
        assert internal not in params
    # skorch arguments the user sets are parameters like any other, and survive clone and pickle
    est = cls(optimizer__nesterov=True, train_split=None, callbacks=[])
    twin = pickle.loads(pickle.dumps(clone(est)))
    assert twin.get_params(deep=False)["optimizer__nesterov"] is True
    assert twin.get_params(deep=False)["callbacks"] == []
    est.set_params(criterion=torch.nn.L1Loss)
    assert clone(est).criterion is torch.nn.L1Loss


def test_grid_search_over_a_skorch_argument(gy):
    g, y = gy
    search = GridSearchCV(
        CGCNNRegressor(**TINY), {"criterion": [None, torch.nn.L1Loss]}, cv=2, scoring="neg_mean_absolute_error"
    ).fit(g, y)
    assert len(search.cv_results_["params"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about unknown parameters
        CGCNNRegressor().set_params(criterion=torch.nn.L1Loss, optimizer__nesterov=True)
