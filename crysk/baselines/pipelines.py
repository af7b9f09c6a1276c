"""make_baseline: the paper's PLS, LASSO, SVR and random-forest pipelines with their cross-validated grids."""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from .descriptors import ElementDescriptor
from .soap import SOAPKernelRidge, _inner_cv

__all__ = ["BASELINE_GRIDS", "make_baseline"]


def _standardized_target(model):
    from sklearn.compose import TransformedTargetRegressor

    # grids below are then unit-free (eV, GPa or log10 GPa alike)
    return TransformedTargetRegressor(regressor=model, transformer=StandardScaler())


def _pls(random_state):
    from sklearn.cross_decomposition import PLSRegression

    return PLSRegression(), {"n_components": [1, 2, 3, 4, 6, 8, 12, 16, 24]}


def _lasso(random_state):
    from sklearn.linear_model import Lasso

    model = _standardized_target(Lasso(max_iter=50_000, random_state=random_state))
    return model, {"regressor__alpha": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3]}


def _svr(random_state):
    from sklearn.svm import SVR

    model = _standardized_target(SVR(kernel="rbf"))
    return model, {
        "regressor__C": [1.0, 10.0, 100.0],
        "regressor__gamma": [1e-3, 1e-2, 1e-1],
        "regressor__epsilon": [0.01, 0.1],
    }


def _rf(random_state):
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(n_estimators=100, random_state=random_state, n_jobs=1)
    return model, {"max_features": [1 / 3, 1.0], "min_samples_leaf": [1, 4]}


_MODELS = {"pls": _pls, "lasso": _lasso, "svr": _svr, "rf": _rf}

#: The hyperparameter grids searched by :func:`make_baseline` (the paper does
#: not list its grids; these cover the usual ranges and stay small).
BASELINE_GRIDS = {kind: make(None)[1] for kind, make in _MODELS.items()}


def _scaling(kind: str) -> list:
    """Feature scaling steps before the model (none for the scale-free random forest).

    Features are first clipped to their training range (``MinMaxScaler(clip=True)``),
    then standardized. Without the clip, a descriptor that is nearly constant in
    the training crystals (e.g. the GSmagmom mode when they hold no magnetic
    element) standardizes to millions for a test crystal, and a linear model
    extrapolates to absurd predictions.
    """
    if kind == "rf":
        return []
    return [("clip", MinMaxScaler(clip=True)), ("scale", StandardScaler())]


def make_baseline(
    kind: str,
    *,
    random_state: int | None = None,
    n_jobs: int | None = 1,
    cv: int | Any = 5,
    param_grid: dict | None = None,
) -> BaseEstimator:
    """Build one of the paper's baseline regressors.

    ``"pls"``, ``"lasso"``, ``"svr"`` and ``"rf"`` give the pipeline
    ``ElementDescriptor → GridSearchCV(clip → StandardScaler → model)``:
    the 132 Magpie descriptors are computed once per ``fit`` (before the
    search, so the inner cross-validation does not recompute them), and the
    scaling sits inside the search so each inner fold is scaled on its own
    training part. Features are clipped to their training range before
    scaling (see Notes); the random forest gets them unscaled. The search minimises the MAE (the paper's metric) and refits on
    all data given to ``fit``. ``"soap"`` gives a :class:`SOAPKernelRidge`.

    Parameters
    ----------
    kind : {"pls", "lasso", "svr", "rf", "soap"}
    random_state : int, optional
        Seeds the inner folds and the random forest.
    n_jobs : int, optional
        Parallel fits in the grid search (joblib semantics).
    cv : int or cross-validation splitter, default=5
        Inner cross-validation; an int gives shuffled ``KFold``.
    param_grid : dict, optional
        Replaces the default grid (:data:`BASELINE_GRIDS`); keys name the
        model's parameters (``"n_components"`` for PLS; LASSO and SVR are
        wrapped in a target-standardizing ``TransformedTargetRegressor``, so
        ``"regressor__alpha"``, ``"regressor__C"``; for ``"soap"`` the
        ``alphas`` list is taken from ``param_grid["alpha"]``).

    Returns
    -------
    estimator
        Unfitted; ``fit(X, y)`` takes structures or ``CrystalGraphs``.

    Notes
    -----
    Default grids (the paper says only that 5-fold CV chose the
    hyperparameters against overfitting): PLS ``n_components`` 1-24;
    LASSO ``alpha`` 3e-4-0.3 on standardized targets; SVR ``C`` 1-100,
    ``gamma`` 1e-3-0.1 (on 132 standardized features; 1/132 ≈ 0.008 is
    scikit-learn's default), ``epsilon`` 0.01-0.1 standardized target units;
    RF with 100 trees, ``max_features`` 1/3 or all, ``min_samples_leaf``
    1 or 4.

    Clipping to the training range guards the linear models and the SVR
    against descriptors that are nearly constant in the training crystals:
    a test crystal with an element unlike all training ones would otherwise
    get standardized values in the millions.
    """
    if kind == "soap":
        alphas = None if param_grid is None else param_grid.get("alpha")
        kwargs = {} if alphas is None else {"alphas": tuple(alphas)}
        return SOAPKernelRidge(cv=cv, random_state=random_state, n_jobs=n_jobs, **kwargs)
    if kind not in _MODELS:
        raise ValueError(f"kind must be one of {sorted(_MODELS) + ['soap']}, got {kind!r}")
    model, grid = _MODELS[kind](random_state)
    if param_grid is not None:
        grid = param_grid
    inner = Pipeline(_scaling(kind) + [("model", model)])
    search = GridSearchCV(
        inner,
        {f"model__{k}": v for k, v in grid.items()},
        cv=_inner_cv(cv, random_state),
        scoring="neg_mean_absolute_error",
        n_jobs=n_jobs,
    )
    return Pipeline([("descriptor", ElementDescriptor(n_jobs=n_jobs)), ("search", search)])
