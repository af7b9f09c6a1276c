"""RepeatedSubsample: the papers' repeated training/validation/test draws, and row selection by position."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from .._validation import check_number

__all__ = ["RepeatedSubsample"]


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

        Returns
        -------
        int
        """
        return _count("n_trials", self.n_trials, 1)
