"""Learn a correction to a value you already have for each crystal.

A DFT formation energy is systematically off from experiment in ways that
depend on the chemistry; with a few hundred measurements it is often better to
learn the *error* of the DFT value than the measured value itself (Kingsbury
et al. 2022 fit such corrections per element; here any regressor learns them).
:class:`ResidualRegressor` fits a regressor to ``y - baseline`` and predicts
``baseline + correction``. It is an ordinary scikit-learn meta-estimator, so
the whole recipe is one object in ``Pipeline``, ``GridSearchCV``,
``cross_validate`` or :func:`crysk.evaluation.compare`.

How the per-crystal baseline travels with X
-------------------------------------------
Cross-validation splits ``X`` and ``y`` but knows nothing of a side array, so
the baseline has to be found from ``X`` itself. ``baseline=`` says how:

* a **mapping keyed by crystal id** (dict or pandas Series): the ids come from
  ``X`` — ``CrystalGraphs`` made with ``ids=`` keep them through every split,
  and so does a pandas Series of structures indexed by id (``Dataset.X``).
  The network estimators then get ``X`` unchanged: featurize once, reuse
  the graphs, warm-start as usual;
* a **column name**: ``X`` is a DataFrame holding the baseline in that column
  and the structures in another; the wrapped estimator gets the other
  column(s) as a DataFrame (crysk's estimators take a one-column frame of
  structures);
* a **fitted model** (anything with ``predict``) or a **callable**
  ``f(X) -> array``: the baseline is computed from ``X``. The model is used
  as it is: :func:`~sklearn.base.clone` keeps it (fitted) instead of
  re-initialising it, and ``fit`` never refits it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MetaEstimatorMixin, RegressorMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .graphs import CrystalGraphs, concatenate

__all__ = ["ResidualRegressor"]


def _is_model(baseline: Any) -> bool:
    return hasattr(baseline, "predict") and not isinstance(baseline, type)


def _ids_of(X: Any) -> list | None:
    if isinstance(X, CrystalGraphs):
        return None if X.ids is None else list(X.ids)
    index = getattr(X, "index", None)
    if index is not None and hasattr(X, "iloc"):
        return list(index)
    return None


def _join(a: Any, b: Any) -> Any:
    """``a`` followed by ``b``, for inputs of the same kind (training + validation crystals)."""
    if isinstance(a, CrystalGraphs):
        return concatenate([a, b])
    if hasattr(a, "iloc"):
        return pd.concat([a, b])
    if isinstance(a, np.ndarray):
        return np.concatenate([a, np.asarray(b)])
    return list(a) + list(b)


def _accepts_validation(estimator: Any) -> bool:
    from .evaluation import accepts_validation

    return accepts_validation(estimator)


class ResidualRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """Fit a regressor to ``y - baseline`` and predict ``baseline + correction``.

    The usual case: ``y`` is a measured property, the baseline a cheap
    estimate of it for every crystal (a DFT value), and ``estimator`` learns
    where the estimate goes wrong. Any regressor fits: a crysk network on
    structures or ``CrystalGraphs`` (from scratch or ``warm_start_from=`` a
    model of the baseline quantity), or a descriptor pipeline such as
    ``crysk.baselines.make_baseline("rf")``.

    Parameters
    ----------
    estimator : estimator
        The regressor of the correction; cloned at ``fit`` (fitted copy in
        ``estimator_``). Its parameters are searchable as
        ``estimator__<name>``.
    baseline : mapping, str, fitted estimator or callable
        Where each crystal's baseline value comes from (see the module
        notes): a dict or pandas Series from crystal id to value (ids from
        ``CrystalGraphs.ids`` or the pandas index of ``X``); the name of a
        column of a DataFrame ``X`` (the other columns go to
        ``estimator``, as a DataFrame); a fitted model, whose ``predict(X)`` is the baseline
        (never refitted, and kept fitted by ``clone``); or a callable
        ``baseline(X)`` returning one value per crystal.

    Attributes
    ----------
    estimator_ : estimator
        The fitted correction model.
    baseline_train_mae_ : float
        Mean absolute difference between ``y`` and the baseline on the
        crystals ``fit`` saw (the error the correction starts from).

    Notes
    -----
    ``fit(X, y, X_valid=..., y_valid=...)`` passes a validation set on (its
    targets made residuals too) to an estimator that takes one, such as
    crysk's networks; any other estimator is fitted on training and
    validation crystals together, as :func:`crysk.evaluation.compare` does.
    ``predict`` needs the baseline of every crystal it is given: with a
    mapping, add the new crystals' values to it (``set_params``) first.

    Examples
    --------
    >>> from sklearn.dummy import DummyRegressor
    >>> import numpy as np, pandas as pd
    >>> X = pd.DataFrame({"formula": ["NaCl", "MgO", "LiF"], "dft": [-2.0, -3.0, -3.1]})
    >>> model = ResidualRegressor(DummyRegressor(), baseline="dft")
    >>> model.fit(X, np.array([-2.1, -3.1, -3.2])).predict(X)
    array([-2.1, -3.1, -3.2])
    """

    def __init__(self, estimator: Any, baseline: Mapping | pd.Series | str | Callable | Any):
        self.estimator = estimator
        self.baseline = baseline

    # ------------------------------------------------------------------ the baseline
    def _split(self, X: Any) -> tuple[Any, np.ndarray]:
        """The estimator's input and the baseline value of each crystal of ``X``."""
        b = self.baseline
        if isinstance(b, str):
            if not isinstance(X, pd.DataFrame):
                raise TypeError(
                    f"baseline={b!r} names a column, so X must be a pandas DataFrame holding it (and the "
                    f"structures in another column); got {type(X).__name__}"
                )
            if b not in X.columns:
                raise ValueError(f"X has no baseline column {b!r}; its columns are {list(X.columns)}")
            values = X[b].to_numpy(dtype=np.float64)
            # a DataFrame still, so tabular models get 2-D input; crysk's accept a one-column frame
            X = X.drop(columns=b)
        elif isinstance(b, (Mapping, pd.Series)):
            ids = _ids_of(X)
            if ids is None:
                raise ValueError(
                    "baseline is keyed by crystal id, but X carries no ids: pass CrystalGraphs made with "
                    "ids= (CrystalGraphFeaturizer().transform(structures, ids=...)) or a pandas Series of "
                    "structures indexed by id"
                )
            lookup = b if isinstance(b, pd.Series) else pd.Series(dict(b), dtype=np.float64)
            if lookup.index.has_duplicates:
                dup = lookup.index[lookup.index.duplicated()].unique()[:3].tolist()
                raise ValueError(f"the baseline has several values for ids {dup}; give one value per crystal id")
            missing = pd.Index(ids).difference(lookup.index)
            if len(missing):
                raise ValueError(
                    f"{len(missing)} crystals of X have no baseline value (e.g. {list(missing[:3])}); add "
                    "their ids to the baseline mapping (set_params(baseline=...))"
                )
            values = lookup.loc[ids].to_numpy(dtype=np.float64)
        elif _is_model(b):
            try:
                values = b.predict(X)
            except NotFittedError as exc:
                raise NotFittedError(
                    f"the baseline model {type(b).__name__} is not fitted; ResidualRegressor never fits it: "
                    "fit it first (on the data it models, e.g. DFT values) and pass the fitted model"
                ) from exc
            values = np.asarray(values, dtype=np.float64)
        elif callable(b):
            values = np.asarray(b(X), dtype=np.float64)
        else:
            raise TypeError(
                "baseline must be a mapping or Series from crystal id to value, a column name, a fitted "
                f"model with predict, or a callable; got {type(b).__name__}"
            )
        values = values.reshape(len(values), -1)[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values
        if values.ndim != 1:
            raise ValueError(f"the baseline must give one value per crystal, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            bad = np.flatnonzero(~np.isfinite(values))
            raise ValueError(
                f"the baseline is NaN or inf for {len(bad)} crystals (first at positions {bad[:5].tolist()}); "
                "drop those crystals or fill in their baseline"
            )
        return X, values

    def baseline_values(self, X: Any) -> np.ndarray:
        """The baseline value of each crystal of ``X`` (what ``predict`` corrects).

        Parameters
        ----------
        X : as for :meth:`fit`
            The crystals (with their ids or baseline column).

        Returns
        -------
        numpy.ndarray of shape (n_crystals,)
        """
        return self._split(X)[1]

    def _residuals(self, X: Any, y: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        X_est, base = self._split(X)
        y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one value per crystal), got shape {y.shape}")
        if len(y) != len(base):
            raise ValueError(f"X has {len(base)} crystals but y has {len(y)} values")
        return X_est, y - base, base

    # ------------------------------------------------------------------ estimator API
    def fit(self, X: Any, y: Any, X_valid: Any = None, y_valid: Any = None, **fit_params) -> ResidualRegressor:
        """Fit ``estimator`` to ``y`` minus the baseline.

        Parameters
        ----------
        X : CrystalGraphs, collection of structures, or DataFrame
            What the baseline mode needs (see ``baseline``).
        y : array-like of shape (n_crystals,)
            The values to predict (e.g. measured formation enthalpies).
        X_valid, y_valid : optional
            A validation set, passed on (as residuals) to an estimator that
            takes one, else merged into the training crystals.
        **fit_params
            Passed to ``estimator.fit``.

        Returns
        -------
        self
        """
        X_est, r, base = self._residuals(X, y)
        self.baseline_train_mae_ = float(np.mean(np.abs(r)))
        self.estimator_ = clone(self.estimator)
        if (X_valid is None) != (y_valid is None):
            raise ValueError("give both X_valid and y_valid, or neither")
        if X_valid is not None:
            Xv_est, rv, _ = self._residuals(X_valid, y_valid)
            if _accepts_validation(self.estimator_):
                fit_params = {**fit_params, "X_valid": Xv_est, "y_valid": rv}
            else:
                X_est, r = _join(X_est, Xv_est), np.concatenate([r, rv])
        self.estimator_.fit(X_est, r, **fit_params)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Baseline plus the learned correction.

        Parameters
        ----------
        X : as for :meth:`fit`
            The crystals (with their ids or baseline column).

        Returns
        -------
        numpy.ndarray of shape (n_crystals,)
        """
        check_is_fitted(self, "estimator_")
        X_est, base = self._split(X)
        return base + np.asarray(self.estimator_.predict(X_est), dtype=np.float64).reshape(len(base))

    def __sklearn_clone__(self) -> ResidualRegressor:
        # a fitted baseline model is data, not a sub-estimator to re-initialise: clone keeps it as it is
        params = self.get_params(deep=False)
        baseline = params.pop("baseline")
        if not _is_model(baseline):
            baseline = clone(baseline, safe=False)
        return type(self)(**{k: clone(v, safe=False) for k, v in params.items()}, baseline=baseline)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator (and, with ``deep``, ``estimator__*`` ones).

        A baseline model's own parameters are not listed: it is fixed, not
        tuned.

        Parameters
        ----------
        deep : bool, default=True
            Also return the wrapped estimator's parameters, prefixed ``estimator__``.

        Returns
        -------
        dict
        """
        out = {"estimator": self.estimator, "baseline": self.baseline}
        if deep and hasattr(self.estimator, "get_params"):
            out.update({f"estimator__{k}": v for k, v in self.estimator.get_params(deep=True).items()})
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__() if hasattr(self.estimator, "__sklearn_tags__") else None
        if inner is not None:
            tags.input_tags = inner.input_tags
            tags.non_deterministic = inner.non_deterministic
        tags.input_tags.string = True  # a DataFrame with a structure column
        return tags
