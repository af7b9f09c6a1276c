"""Learning curves on nested training sets, and the equivalent training-set size of Table 2 (TL-CGCNN)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from .splits import RepeatedSubsample, _count
from .compare import compare

__all__ = ["equivalent_training_size", "learning_curve"]


def learning_curve(
    estimator: BaseEstimator,
    X: Any,
    y: Any,
    train_sizes: Sequence[int],
    *,
    n_val: int = 125,
    n_test: int = 125,
    n_trials: int = 5,
    random_state: int | None = 0,
    n_jobs: int | None = 1,
    verbose: bool = False,
) -> pd.DataFrame:
    """Test MAE against training-set size, on shared test sets.

    For each size a :class:`RepeatedSubsample` with the same
    ``random_state``, ``n_val`` and ``n_test`` is run through
    :func:`compare`, so every size is scored on the same test (and
    validation) crystals, trial by trial, and the training sets are nested.

    Parameters
    ----------
    estimator : estimator
        Any scikit-learn estimator (it is cloned, never fitted in place).
    X, y
        As for :func:`compare`.
    train_sizes : sequence of int
        Numbers of training crystals, one curve point each.
    n_val : int, default=125
        Validation crystals per trial (merged into training for estimators
        without a validation set, see :func:`compare`).
    n_test : int, default=125
        Test crystals per trial.
    n_trials : int, default=5
        Number of trials (independent random draws).
    random_state : int, default=0
        Must be fixed (not None) for the test sets to be shared.
    n_jobs : int, optional
        Fits run in parallel (joblib; one task per estimator, size and trial).
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        The :func:`compare` rows of all sizes, with a ``train_size``
        column; average ``test_mae`` by ``train_size`` to plot the curve, or
        pass the columns to :func:`equivalent_training_size` directly.
    """
    if random_state is None or isinstance(random_state, np.random.RandomState):
        raise ValueError("random_state must be an int so that every training size shares the test sets")
    sizes = [_count("train_sizes entry", s, 1) for s in train_sizes]
    if not sizes:
        raise ValueError("train_sizes is empty")
    parts = []
    for size in sorted(set(sizes)):
        cv = RepeatedSubsample(size, n_val, n_test, n_trials, random_state)
        part = compare({"estimator": estimator}, X, y, cv, n_jobs=n_jobs, verbose=verbose)
        parts.append(part.drop(columns="estimator").assign(train_size=size))
    out = pd.concat(parts, ignore_index=True)
    return out[["train_size"] + [c for c in out.columns if c != "train_size"]]


def equivalent_training_size(
    curve_sizes: Sequence[float],
    curve_maes: Sequence[float],
    mae: float,
    *,
    extrapolate: bool = False,
) -> float:
    """Training-set size at which a learning curve reaches a given MAE.

    The curve is interpolated linearly in ``log10(MAE)`` against
    ``log10(size)`` between neighbouring sizes, as for Table 2 of the
    TL-CGCNN paper (there: the CGCNN-from-scratch curve and the MAE of the
    transfer-learned model at 500 training crystals). For a power law
    ``MAE = a * size**b`` the answer is exact.

    Parameters
    ----------
    curve_sizes : sequence of float
        Training-set sizes; repeated sizes (one row per trial) are averaged.
    curve_maes : sequence of float
        MAE at each size (same length).
    mae : float
        The target MAE.
    extrapolate : bool, default=False
        If the target lies beyond the curve's range: ``False`` raises a
        ``ValueError``; ``True`` extends the first or last segment and
        warns.

    Returns
    -------
    float
        The equivalent size. When the curve is not monotonic and reaches
        ``mae`` more than once, the smallest such size (with a warning).

    Raises
    ------
    ValueError
        For fewer than two distinct sizes, non-positive values, or (by
        default) a target outside the curve's range.
    """
    sizes = np.asarray(curve_sizes, dtype=np.float64).ravel()
    maes = np.asarray(curve_maes, dtype=np.float64).ravel()
    if sizes.shape != maes.shape:
        raise ValueError(f"curve_sizes and curve_maes differ in length ({len(sizes)} vs {len(maes)})")
    if not (np.all(sizes > 0) and np.all(maes > 0) and np.isfinite(mae) and mae > 0):
        raise ValueError("sizes and MAEs must be positive (they are compared on a log scale)")
    curve = pd.Series(maes).groupby(sizes).mean()
    if len(curve) < 2:
        raise ValueError("the learning curve needs at least two distinct training sizes")
    lx, ly, target = np.log10(curve.index.to_numpy()), np.log10(curve.to_numpy()), np.log10(mae)
    lo, hi = np.minimum(ly[:-1], ly[1:]), np.maximum(ly[:-1], ly[1:])
    hits = np.flatnonzero((lo <= target) & (target <= hi))
    if len(hits):
        k = int(hits[0])
        if len(hits) > 1 and not np.all(np.diff(ly) < 0):
            warnings.warn(
                f"the learning curve is not monotonic and reaches MAE {mae} more than once; "
                "taking the smallest size",
                stacklevel=2,
            )
    else:
        above = target > ly.max()
        msg = (
            f"MAE {mae} is {'above' if above else 'below'} every MAE of the learning curve "
            f"({curve.min():.4g}-{curve.max():.4g} over sizes {curve.index.min():g}-{curve.index.max():g})"
        )
        if not extrapolate:
            raise ValueError(msg + "; extend the curve or pass extrapolate=True")
        warnings.warn(msg + "; extrapolating the end segment of the curve", stacklevel=2)
        # extend the end whose MAE is nearer the target (the small-size end when above, for a falling curve)
        first_end_nearer = (ly[0] >= ly[-1]) == above
        k = 0 if first_end_nearer else len(lx) - 2
    if ly[k + 1] == ly[k]:
        return float(10 ** lx[k])
    t = (target - ly[k]) / (ly[k + 1] - ly[k])
    return float(10 ** (lx[k] + t * (lx[k + 1] - lx[k])))
