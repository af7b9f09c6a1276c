"""Target scalers used by the neural estimators.

``"standard"`` is scikit-learn's :class:`~sklearn.preprocessing.StandardScaler`
(the CGCNN code's normaliser); ``"tanh"`` is the tanh-estimator normalisation
of eq. 6 of the TL-CGCNN paper, :class:`TanhScaler`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["TanhScaler", "make_target_scaler"]


class TanhScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Tanh-estimator normalisation (Hampel et al.; eq. 6 of the TL-CGCNN paper).

    ``u = 0.5 * (tanh(scale * (y - mean) / std) + 1)`` maps every target into
    (0, 1), so that a pretrained model and a fine-tuned one see targets on the
    same scale whatever the property. With ``standardize=True`` (the default)
    ``u`` is then standardized with its own training mean and standard
    deviation, which is what the paper's pipeline did: the CGCNN code it ran
    standardizes whatever targets it is given (its ``Normalizer``) before the
    loss. :meth:`inverse_transform` undoes both steps.

    Parameters
    ----------
    scale : float, default=0.01
        The factor inside tanh (0.01 in the paper). With 0.01 the map is
        nearly linear over several standard deviations.
    standardize : bool, default=True
        Standardize the tanh values. ``False`` gives the network eq. 6's
        values themselves: with ``scale=0.01`` they lie within
        ``0.5 +- 0.005`` per standard deviation, so a network must fit them
        to a few 1e-4 to be useful and arctanh multiplies its output error by
        ``std / 0.005``; CGCNN fits of 500 log10 bulk moduli then had test
        MAEs of 0.8-1.7 against 0.10 with standardization
        (``benchmarks/RESULTS.md``). Checkpoints saved before this option
        existed load with ``standardize=False``, as they were trained.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean of each target column.
    std_ : ndarray of shape (n_features,)
        Standard deviation of each target column (1 where it is 0).
    out_mean_ : ndarray of shape (n_features,)
        Mean of the tanh values (0 without ``standardize``).
    out_std_ : ndarray of shape (n_features,)
        Standard deviation of the tanh values (1 without ``standardize``).
    """

    #: inverse_transform caps predictions at this many standard deviations from the mean
    MAX_SIGMAS = 10.0

    def __init__(self, scale: float = 0.01, standardize: bool = True):
        self.scale = scale
        self.standardize = standardize

    def fit(self, X: Any, y: Any = None) -> "TanhScaler":
        """Learn the mean and standard deviation of each column.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Targets to learn the mean and standard deviation from, one
            column per target; NaN (a missing target) is left out.
        y : ignored
            Ignored; accepted for Pipeline compatibility.

        Returns
        -------
        self
        """
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale!r}")
        # NaN marks a missing target (missing_targets="ignore"): each column's statistics use its present values
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        if np.isnan(X).all(axis=0).any():
            raise ValueError("a target column has no value (all NaN): drop it before fitting")
        self.mean_, self.std_ = _column_mean_std(X)
        self.out_mean_, self.out_std_ = np.zeros_like(self.mean_), np.ones_like(self.std_)
        if self.standardize:
            self.out_mean_, self.out_std_ = _column_mean_std(self._squash(X))
        return self

    def _squash(self, X: np.ndarray) -> np.ndarray:
        return 0.5 * (np.tanh(self.scale * (X - self.mean_) / self.std_) + 1.0)

    def transform(self, X: Any) -> np.ndarray:
        """Map values into (0, 1), then standardize them if ``standardize``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Targets in original units (NaN stays NaN).

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False, ensure_all_finite="allow-nan")
        return (self._squash(X) - self.out_mean_) / self.out_std_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN is a missing target, kept as NaN (like StandardScaler)
        return tags

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Map scaled values (network outputs) back to the original units.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Scaled targets (network outputs).

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float64) * self.out_std_ + self.out_mean_
        # a network's outputs can leave (0, 1), and with scale=0.01 arctanh turns a small output
        # error near the edges into thousands of standard deviations: cap at MAX_SIGMAS of them
        limit = np.tanh(self.scale * self.MAX_SIGMAS)
        inner = np.clip(2.0 * X - 1.0, -limit, limit)
        return np.arctanh(inner) * self.std_ / self.scale + self.mean_


def _column_mean_std(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # NaN-aware, and a constant column gets std 1 so that scaling never divides by 0
    std = np.nanstd(X, axis=0)
    return np.nanmean(X, axis=0), np.where(std > 0, std, 1.0)


def make_target_scaler(spec: Any) -> TransformerMixin:
    """Build an unfitted target scaler from its specification.

    Parameters
    ----------
    spec : {"standard", "tanh", None} or transformer
        ``None`` leaves targets unchanged; a scikit-learn transformer with
        ``inverse_transform`` is cloned.

    Returns
    -------
    transformer
    """
    if spec is None or spec == "none":
        return FunctionTransformer(validate=False)
    if isinstance(spec, str):
        if spec == "standard":
            return StandardScaler()
        if spec == "tanh":
            return TanhScaler()
        raise ValueError(f"target_scaler must be 'standard', 'tanh', None or a transformer, got {spec!r}")
    if not hasattr(spec, "inverse_transform"):
        raise ValueError(f"target_scaler {spec!r} has no inverse_transform, so predictions could not be unscaled")
    return clone(spec)
