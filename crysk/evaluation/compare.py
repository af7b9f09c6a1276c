"""compare: several estimators fitted and scored on the same trials, resumable through a CSV cache."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Mapping
from typing import Any

import joblib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import mean_absolute_error

from .splits import _n_samples, _take

__all__ = ["accepts_validation", "compare"]


def accepts_validation(estimator: BaseEstimator) -> bool:
    """Whether ``estimator.fit`` takes an explicit validation set.

    True when ``fit`` has ``X_valid`` and ``y_valid`` parameters, for
    crysk's graph-network estimators (whose ``fit`` takes them as keyword
    arguments), and for a :class:`~crysk.DeepEnsemble` of such estimators
    (it hands the validation set to every member). Pipelines and other
    meta-estimators count as not accepting one.

    Parameters
    ----------
    estimator : estimator
        Any scikit-learn estimator (it is cloned, never fitted in place).

    Returns
    -------
    bool
    """
    try:
        params = inspect.signature(estimator.fit).parameters
    except (TypeError, ValueError):
        return False
    if "X_valid" in params and "y_valid" in params:
        return True
    from ..ensemble import DeepEnsemble
    from ..estimators.regressor import CrystalNetRegressor

    if isinstance(estimator, DeepEnsemble):
        return accepts_validation(estimator.estimator)
    return isinstance(estimator, CrystalNetRegressor)


def _splits(cv: Any, X: Any, y: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if hasattr(cv, "split_with_validation"):
        return [tuple(np.asarray(p) for p in s) for s in cv.split_with_validation(X, y)]
    if not hasattr(cv, "split"):
        raise TypeError(f"cv must be a splitter with a split method (e.g. RepeatedSubsample), got {cv!r}")
    empty = np.zeros(0, dtype=np.int64)
    return [(np.asarray(train), empty, np.asarray(test)) for train, test in cv.split(X, y)]


def _mae(y_true: Any, y_pred: Any) -> float:
    return float(mean_absolute_error(np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)))


def _run_trial(name, estimator, X, y, trial, train, val, test) -> dict:
    est = clone(estimator)
    use_val = len(val) > 0 and accepts_validation(est)
    fit_idx = train if use_val or len(val) == 0 else np.concatenate([train, val])
    X_fit, y_fit = _take(X, fit_idx), _take(y, fit_idx)
    kwargs = {}
    if use_val:
        kwargs = {"X_valid": _take(X, val), "y_valid": _take(y, val)}
    start = time.perf_counter()
    est.fit(X_fit, y_fit, **kwargs)
    fit_time = time.perf_counter() - start
    X_test = _take(X, test)
    start = time.perf_counter()
    test_mae = _mae(_take(y, test), est.predict(X_test))
    predict_time = time.perf_counter() - start
    return {
        "estimator": name,
        "trial": trial,
        "n_train": len(fit_idx),
        "n_val": len(val) if use_val else 0,
        "n_test": len(test),
        "train_mae": _mae(y_fit, est.predict(X_fit)),
        "val_mae": _mae(kwargs["y_valid"], est.predict(kwargs["X_valid"])) if use_val else np.nan,
        "test_mae": test_mae,
        "fit_time": fit_time,
        "predict_time": predict_time,
    }


def _fit_key(estimator: BaseEstimator, y_digest: str, train, val, test) -> str:
    # what decides a fit's outcome: every parameter (through the unfitted clone's pickle) and
    # exactly which samples and targets went where
    return joblib.hash((clone(estimator), y_digest, np.asarray(train), np.asarray(val), np.asarray(test)))


class _ResultCache:
    """The ``cache=`` file of :func:`compare`: finished rows, appended one at a time."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.rows: dict[str, dict] = {}
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            try:
                table = pd.read_csv(self.path)
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"compare(cache={self.path!r}): the file is not a CSV written by compare ({exc}); "
                    "move it away or pass another path"
                ) from exc
            if "fit_key" not in table.columns:
                raise ValueError(
                    f"compare(cache={self.path!r}): the file has no 'fit_key' column, so it was not written by "
                    "compare; move it away or pass another path"
                )
            self.rows = {row["fit_key"]: row for row in table.to_dict("records")}

    def add(self, row: dict) -> None:
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        # one line per finished fit, flushed at once: an interrupted comparison keeps every fit it finished
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            pd.DataFrame([row]).to_csv(fh, header=new, index=False)
        self.rows[row["fit_key"]] = row


def compare(
    estimators: Mapping[str, BaseEstimator],
    X: Any,
    y: Any,
    cv: Any,
    *,
    n_jobs: int | None = 1,
    verbose: bool = False,
    cache: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Fit and score several estimators on the same trials.

    The trials are drawn once and shared by all estimators. In each trial,
    an estimator that accepts a validation set (``fit(X, y, X_valid=...,
    y_valid=...)``, such as ``CGCNNRegressor``) is fitted on the training
    crystals with the validation crystals passed as ``X_valid``/``y_valid``;
    any other estimator (baselines, pipelines) is fitted on training +
    validation together, as in the paper. Each fit uses a fresh
    :func:`~sklearn.base.clone`.

    Parameters
    ----------
    estimators : mapping of str to estimator
        Names (used in the ``estimator`` column) and unfitted estimators.
    X : sequence of structures, CrystalGraphs or array-like
        Rows are taken by position (``.iloc`` for pandas).
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Targets, one row per crystal.
    cv : RepeatedSubsample or scikit-learn splitter
        A splitter without ``split_with_validation`` (e.g. ``KFold``) gives
        no validation part.
    n_jobs : int, optional
        Fits run in parallel (joblib; one task per estimator and trial).
    verbose : bool, default=False
        Show a progress bar.
    cache : str or path-like, optional
        A CSV file that makes long comparisons resumable. Each fit's row is
        appended to it as soon as the fit is done; a fit whose row is already
        there is not run again. A row is reused only for the same estimator
        parameters (hashed from the unfitted clone), the same training,
        validation and test positions and the same targets ``y``; the name
        and trial number are not part of the match. Files that a parameter
        merely names (such as a ``warm_start_from`` checkpoint path) are not
        hashed, nor is the code that fits: delete the cache (or the rows
        concerned) when such a file changes or after an upgrade that changes
        how a model trains.

    Returns
    -------
    pandas.DataFrame
        One row per (estimator, trial) with columns ``estimator``,
        ``trial``, ``n_train`` (crystals the model was fitted on), ``n_val``
        (validation crystals passed to ``fit``; 0 when merged into
        training), ``n_test``, ``train_mae`` (on the fitted crystals),
        ``val_mae`` (NaN when there was no separate validation set),
        ``test_mae``, ``fit_time`` and ``predict_time`` (seconds).
    """
    if not isinstance(estimators, Mapping) or not estimators:
        raise TypeError("estimators must be a non-empty dict mapping names to estimators")
    if _n_samples(X) != _n_samples(y):
        raise ValueError(f"X has {_n_samples(X)} samples but y has {_n_samples(y)}")
    splits = _splits(cv, X, y)
    tasks = [
        (name, est, trial, *parts)
        for trial, parts in enumerate(splits)
        for name, est in estimators.items()
    ]
    done: list[dict] = []
    if cache is not None:
        store = _ResultCache(cache)
        y_digest = joblib.hash(np.asarray(y))
        keys = [_fit_key(est, y_digest, *parts) for _, est, _, *parts in tasks]
        todo = []
        for key, (name, est, trial, *parts) in zip(keys, tasks):
            if key in store.rows:
                done.append({**store.rows[key], "estimator": name, "trial": trial})
            else:
                todo.append((key, (name, est, trial, *parts)))
        keys, tasks = [k for k, _ in todo], [t for _, t in todo]
    calls = (delayed(_run_trial)(name, est, X, y, trial, *parts) for name, est, trial, *parts in tasks)
    if n_jobs in (None, 1):
        rows = (f(*a, **k) for f, a, k in calls)
    else:
        rows = Parallel(n_jobs=n_jobs, return_as="generator")(calls)
    if cache is not None:
        rows = (store.add({**row, "fit_key": key}) or row for key, row in zip(keys, rows))
    if verbose:
        from tqdm.auto import tqdm

        rows = tqdm(rows, total=len(tasks), desc="fitting", unit="fit")
    out = pd.DataFrame(done + list(rows)).drop(columns="fit_key", errors="ignore")
    order = pd.CategoricalDtype(list(estimators), ordered=True)
    out["estimator"] = out["estimator"].astype(order)
    return out.sort_values(["estimator", "trial"], kind="stable").reset_index(drop=True)
