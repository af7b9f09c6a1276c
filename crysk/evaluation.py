"""The papers' evaluation protocols: repeated subsampling, paired t-tests, learning curves.

The TL-CGCNN paper evaluates every model on 10 trials, each a fresh random
draw of 500 training, 125 validation and 125 test crystals. Networks use the
validation crystals to pick their best epoch; the baselines choose their
hyperparameters by 5-fold cross-validation on training + validation (625).
Models are compared by the mean test MAE over trials and by a paired t-test
on the per-trial MAEs. A learning curve of the network trained from scratch,
interpolated in log-log space, gives the "equivalent training-set size" of a
transfer-learned model (Table 2 of the paper).

:class:`RepeatedSubsample` draws the trials, :func:`compare` runs several
estimators on exactly the same trials and returns a tidy table,
:func:`paired_ttest`, :func:`summarize` and :func:`markdown_table` digest it,
and :func:`learning_curve` with :func:`equivalent_training_size` give Table 2.
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import joblib
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import mean_absolute_error
from sklearn.utils import check_random_state

from ._validation import check_number

__all__ = [
    "PairedTTestResult",
    "RepeatedSubsample",
    "accepts_validation",
    "compare",
    "equivalent_training_size",
    "learning_curve",
    "markdown_table",
    "paired_ttest",
    "summarize",
]


# ----------------------------------------------------------------------------- splitter


def _count(name: str, value: Any, minimum: int) -> int:
    return int(check_number(name, value, integer=True, low=minimum))


def _n_samples(X: Any) -> int:
    """Number of rows of an array, DataFrame, sequence or CrystalGraphs."""
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        raise TypeError(f"expected an array-like, sequence or CrystalGraphs, got {type(X).__name__}") from None


def _take(X: Any, positions: np.ndarray) -> Any:
    """Rows ``positions`` of ``X``, in the same kind of container (as cross-validation splits need)."""
    positions = np.asarray(positions, dtype=np.int64)
    if hasattr(X, "iloc"):  # pandas: positions, not labels
        return X.iloc[positions]
    if isinstance(X, (list, tuple)):
        return [X[i] for i in positions]
    return X[positions]  # numpy arrays, CrystalGraphs, sparse matrices


class RepeatedSubsample:
    """Repeated random training/validation/test subsamples (the papers' trials).

    Each trial permutes the crystals and takes ``n_test`` test, ``n_val``
    validation and ``n_train`` training crystals, all disjoint; crystals
    beyond ``n_train + n_val + n_test`` are unused in that trial.

    As a scikit-learn splitter (``cv=`` of ``cross_validate``,
    ``GridSearchCV``, ...), :meth:`split` yields ``(train + val, test)``, so a
    model that tunes itself by inner cross-validation (the baselines) sees
    the training and validation crystals only. :meth:`split_with_validation`
    yields the three parts, for models that stop on a validation set.

    Parameters
    ----------
    n_train : int, default=500
        Training crystals per trial.
    n_val : int, default=125
        0 for no validation part.
    n_test : int, default=125
        Test crystals per trial.
    n_trials : int, default=10
        Number of trials (independent random draws).
    random_state : int, RandomState instance or None, default=None
        With an int, every call of ``split`` gives the same trials.

    Notes
    -----
    Draws are laid out as ``[test | val | train]`` within each trial's
    permutation. Two splitters that share ``random_state``, ``n_val`` and
    ``n_test`` therefore have the same test and validation crystals trial
    by trial, and the smaller one's training crystals are a subset of the
    larger one's: learning curves made this way differ only in training-set
    size. Defaults are the TL-CGCNN paper's protocol (500/125/125, 10 trials).

    Examples
    --------
    >>> from sklearn.model_selection import cross_validate  # doctest: +SKIP
    >>> cross_validate(model, X, y, cv=RepeatedSubsample(random_state=0),
    ...                scoring="neg_mean_absolute_error")   # doctest: +SKIP
    """

    def __init__(
        self,
        n_train: int = 500,
        n_val: int = 125,
        n_test: int = 125,
        n_trials: int = 10,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.n_train = n_train
        self.n_val = n_val
        self.n_test = n_test
        self.n_trials = n_trials
        self.random_state = random_state

    def __repr__(self) -> str:
        return (
            f"RepeatedSubsample(n_train={self.n_train}, n_val={self.n_val}, n_test={self.n_test}, "
            f"n_trials={self.n_trials}, random_state={self.random_state!r})"
        )

    def _sizes(self, n_samples: int) -> tuple[int, int, int]:
        n_train = _count("n_train", self.n_train, 1)
        n_val = _count("n_val", self.n_val, 0)
        n_test = _count("n_test", self.n_test, 1)
        _count("n_trials", self.n_trials, 1)
        if n_train + n_val + n_test > n_samples:
            raise ValueError(
                f"n_train + n_val + n_test = {n_train} + {n_val} + {n_test} = {n_train + n_val + n_test} "
                f"is more than the {n_samples} samples; use smaller parts or more data"
            )
        return n_train, n_val, n_test

    def split_with_validation(
        self, X: Any, y: Any = None, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(train, val, test)`` position arrays, one triple per trial.

        Parameters
        ----------
        X : array-like, sequence or CrystalGraphs
            Only its length is used.
        y, groups : ignored
            Ignored; accepted for scikit-learn's splitter signature.
            Ignored; only the length of ``X`` matters.

        Yields
        ------
        train, val, test : numpy.ndarray of int
            Disjoint; ``val`` is empty when ``n_val=0``.
        """
        n = _n_samples(X)
        n_train, n_val, n_test = self._sizes(n)
        rng = check_random_state(self.random_state)
        for _ in range(self.n_trials):
            perm = rng.permutation(n)
            yield perm[n_test + n_val : n_test + n_val + n_train], perm[n_test : n_test + n_val], perm[:n_test]

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train + val, test)`` position arrays, one pair per trial.

        Parameters
        ----------
        X : array-like, sequence or CrystalGraphs
            Only its length is used.
        y, groups : ignored
            Ignored; accepted for scikit-learn's splitter signature.
            Ignored; only the length of ``X`` matters.

        Yields
        ------
        train : numpy.ndarray of int
            The training and validation crystals together.
        test : numpy.ndarray of int
        """
        for train, val, test in self.split_with_validation(X, y, groups):
            yield np.concatenate([train, val]), test

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of trials.

        Parameters
        ----------
        X, y, groups : ignored
            Ignored; accepted for scikit-learn's splitter signature.
            Ignored.
            Ignored.

        Returns
        -------
        int
        """
        return _count("n_trials", self.n_trials, 1)


# ----------------------------------------------------------------------------- compare


def accepts_validation(estimator: BaseEstimator) -> bool:
    """Whether ``estimator.fit`` takes an explicit validation set.

    True when ``fit`` has ``X_valid`` and ``y_valid`` parameters, or for
    crysk's graph-network estimators (whose ``fit`` takes them as keyword
    arguments). Pipelines and meta-estimators count as not accepting one.

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
    from .estimators.base import CrystalNetRegressor

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
        hashed: delete the cache when such a file changes.

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


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class PairedTTestResult:
    """Outcome of :func:`paired_ttest`.

    Parameters
    ----------
    statistic : float
        t statistic of ``a - b`` (negative when ``a`` has the smaller metric).
    pvalue : float
        Two-sided p-value.
    mean_difference : float
        Mean over trials of ``a - b``.
    n_trials : int
        Number of paired trials.
    """

    statistic: float
    pvalue: float
    mean_difference: float
    n_trials: int


def _per_trial(results: pd.DataFrame, name: str, metric: str) -> pd.Series:
    rows = results[results["estimator"] == name]
    if rows.empty:
        raise ValueError(f"no results for estimator {name!r}; known: {list(pd.unique(results['estimator']))}")
    if rows["trial"].duplicated().any():
        raise ValueError(f"estimator {name!r} has several rows per trial; pass one compare() table")
    return rows.set_index("trial")[metric]


def paired_ttest(results: pd.DataFrame, a: str, b: str, metric: str = "test_mae") -> PairedTTestResult:
    """Paired t-test of two estimators' per-trial scores (the TL-CGCNN paper's test).

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`compare`.
    a, b : str
        Estimator names.
    metric : str, default="test_mae"
        Column of the :func:`compare` table to compare.

    Returns
    -------
    PairedTTestResult
        From ``scipy.stats.ttest_rel`` on the values of the trials both
        estimators ran.

    Raises
    ------
    ValueError
        If an estimator is missing, the trials do not match, or fewer than
        two trials are shared.
    """
    from scipy.stats import ttest_rel

    if metric not in results.columns:
        raise ValueError(f"no column {metric!r} in the results; columns are {list(results.columns)}")
    va, vb = _per_trial(results, a, metric), _per_trial(results, b, metric)
    if set(va.index) != set(vb.index):
        raise ValueError(
            f"{a!r} and {b!r} ran different trials ({sorted(va.index)} vs {sorted(vb.index)}); "
            "compare them on the same splits (one compare() call)"
        )
    if len(va) < 2:
        raise ValueError(f"a paired t-test needs at least 2 trials, got {len(va)}")
    vb = vb.loc[va.index]
    test = ttest_rel(va.to_numpy(), vb.to_numpy())
    return PairedTTestResult(
        float(test.statistic), float(test.pvalue), float((va - vb).mean()), len(va)
    )


_DEFAULT_METRICS = ("train_mae", "val_mae", "test_mae", "fit_time")


def summarize(results: pd.DataFrame, metrics: Sequence[str] = _DEFAULT_METRICS) -> pd.DataFrame:
    """Mean and standard deviation over trials, per estimator.

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`compare`.
    metrics : sequence of str
        Columns to summarize (missing or all-NaN ones are left out).

    Returns
    -------
    pandas.DataFrame
        Indexed by estimator, with columns ``<metric>_mean`` and
        ``<metric>_std`` (sample standard deviation, ``ddof=1``, as in the
        paper's tables) and ``n_trials``.
    """
    metrics = [m for m in metrics if m in results.columns and results[m].notna().any()]
    grouped = results.groupby("estimator", observed=True, sort=True)
    out = pd.DataFrame(index=grouped.size().index)
    for m in metrics:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_std"] = grouped[m].std(ddof=1)
    out["n_trials"] = grouped.size()
    return out


def markdown_table(
    results: pd.DataFrame, metrics: Sequence[str] = ("train_mae", "test_mae"), digits: int = 3
) -> str:
    """A Markdown table of ``mean (std)`` per estimator, like Table S2 of the paper.

    Needs no extra package (pandas' ``to_markdown`` would need tabulate).

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`compare`.
    metrics : sequence of str, default=("train_mae", "test_mae")
        Columns of the :func:`compare` table to show.
    digits : int, default=3
        Decimals shown.

    Returns
    -------
    str
    """
    summary = summarize(results, metrics)
    shown = [m for m in metrics if f"{m}_mean" in summary.columns]
    lines = ["| estimator | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for name, row in summary.iterrows():
        cells = [f"{row[f'{m}_mean']:.{digits}f} ({row[f'{m}_std']:.{digits}f})" for m in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- learning curves


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
