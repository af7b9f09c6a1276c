"""DeepEnsemble: several independently seeded copies of a crysk estimator, and the spread of their predictions.

A deep ensemble (Lakshminarayanan et al., NeurIPS 2017) trains the same
network several times from different random initialisations (and batch
orders) and averages the predictions. The mean is usually a little more
accurate than one network, and the spread of the members' predictions is a
per-crystal uncertainty: where the training data say little, independently
trained networks disagree. :class:`DeepEnsemble` does this for any crysk
regressor or classifier, as a scikit-learn meta-estimator: it clones,
grid-searches (``estimator__lr``), pickles and cross-validates like any
other, and its members train in parallel processes.

The raw spread of a handful of networks that all see the same training data
is often too small (the members share the data's blind spots), so
:meth:`DeepEnsemble.recalibrate` fits one scale factor per target on
held-out crystals; see its docstring.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted

from ._validation import check_number
from .parallel import map_chunks

__all__ = ["DeepEnsemble"]


def _fit_members(members: list, X: Any, y: Any, fit_params: dict, one_thread: bool) -> list:
    """Fit ``members`` one after another (in this process or a joblib worker) and return them.

    With ``one_thread`` (several members train at once, each in its own
    process), each fit runs torch on one thread: the processes already fill
    the cores, and more threads per process would only make them wait for
    each other. The member's own ``n_threads`` is put back afterwards, so a
    fitted member predicts with the setting it was given.
    """
    out = []
    for est in members:
        own = getattr(est, "n_threads", None)
        if one_thread and "n_threads" in est.get_params(deep=False):
            est.set_params(n_threads=1)
        est.fit(X, y, **fit_params)
        if one_thread and "n_threads" in est.get_params(deep=False):
            # a plain attribute write: set_params on a fitted skorch net may re-initialise parts of it
            est.n_threads = own
        out.append(est)
    return out


def _is_classifier_ensemble(ens: "DeepEnsemble") -> bool:
    return is_classifier(ens.estimator)


def _is_regressor_ensemble(ens: "DeepEnsemble") -> bool:
    return is_regressor(ens.estimator)


class DeepEnsemble(BaseEstimator):
    """An ensemble of independently seeded copies of a crysk estimator, with predictive uncertainty.

    Each member is a clone of ``estimator`` with its own ``random_state``
    (drawn from this ensemble's ``random_state``), so members differ in
    their initial weights, batch order and validation split, and nothing
    else. With ``warm_start_from=`` set on ``estimator``, every member
    fine-tunes from the same source weights. Crystal structures are
    featurized once and the same ``CrystalGraphs`` go to every member.

    For a regressor, :meth:`predict` returns the members' mean and, with
    ``return_std=True``, their standard deviation σ (times the factor fitted
    by :meth:`recalibrate`, if called). For a classifier,
    :meth:`predict_proba` is the members' mean probability and
    :meth:`predict` its most probable class. The ensemble is a regressor or
    a classifier as ``estimator`` is (scikit-learn's ``is_regressor`` /
    ``is_classifier``, ``score``, ``GridSearchCV`` defaults follow).

    Parameters
    ----------
    estimator : crysk regressor or classifier
        The model to copy (e.g. ``CGCNNRegressor(...)``); it is cloned,
        never fitted itself. It must have a ``random_state`` parameter.
    n_members : int, default=5
        Number of members (at least 2: one network has no spread).
    n_jobs : int, optional
        Members trained at once, each in its own process (joblib
        semantics: ``None`` is 1, ``-1`` all cores). When more than one
        process trains, each runs torch on one thread.
    random_state : int, RandomState instance or None, default=None
        Seeds the members' seeds: an int makes the whole ensemble
        repeatable; ``None`` gives fresh seeds at each ``fit``.

    Attributes
    ----------
    members_ : list of estimators
        The fitted members, in seed order.
    member_seeds_ : numpy.ndarray of int
        The ``random_state`` each member was fitted with.
    classes_ : numpy.ndarray
        The class labels (classifiers only), as the members have them.
    std_scale_ : float or numpy.ndarray of shape (n_targets,)
        Factor applied to σ by :meth:`predict` (regressors only): 1 after
        ``fit``, the fitted factor after :meth:`recalibrate`.

    See Also
    --------
    crysk.plotting.plot_calibration : Observed against expected coverage of the σ intervals.

    Notes
    -----
    σ is the sample standard deviation (``ddof=1``) of the members'
    predictions: the spread of the networks' optimisation, not the noise of
    the targets. Members are trained on the same crystals, so it
    underestimates the error wherever all of them are wrong the same way;
    check it with :meth:`recalibrate` or
    :func:`~crysk.plotting.plot_calibration` on crystals none of them was
    trained on.

    Examples
    --------
    >>> from crysk import CGCNNRegressor, DeepEnsemble  # doctest: +SKIP
    >>> ens = DeepEnsemble(CGCNNRegressor(max_epochs=50), n_members=5, n_jobs=2, random_state=0)  # doctest: +SKIP
    >>> ens.fit(train_structures, y_train).recalibrate(valid_structures, y_valid)  # doctest: +SKIP
    >>> mean, std = ens.predict(test_structures, return_std=True)  # doctest: +SKIP
    """

    def __init__(self, estimator: Any, n_members: int = 5, *, n_jobs: int | None = None, random_state: Any = None):
        self.estimator = estimator
        self.n_members = n_members
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers
    def _check_estimator(self) -> None:
        est = self.estimator
        if not hasattr(est, "fit") or not hasattr(est, "get_params") or isinstance(est, type):
            raise ValueError(f"estimator must be an estimator instance (e.g. CGCNNRegressor()), got {est!r}")
        if not (is_regressor(est) or is_classifier(est)):
            raise ValueError(
                f"estimator must be a regressor or a classifier, got a {type(est).__name__}; "
                "an ensemble averages predictions, which an autoencoder does not make"
            )
        if "random_state" not in est.get_params(deep=False):
            raise ValueError(
                f"{type(est).__name__} has no random_state parameter: the members of a DeepEnsemble differ "
                "only by their seeds, so the estimator must take one"
            )

    def _graphs(self, template: Any, X: Any) -> Any:
        """``X`` featurized once by ``template``'s own featurizer (unchanged for non-crysk estimators)."""
        as_graphs = getattr(template, "_as_graphs", None)
        return X if as_graphs is None else as_graphs(X)

    def _seeds(self, n: int) -> np.ndarray:
        rng = check_random_state(self.random_state)
        # distinct seeds: a repeated seed would give two identical members
        seeds: list[int] = []
        while len(seeds) < n:
            s = int(rng.randint(np.iinfo(np.int32).max))
            if s not in seeds:
                seeds.append(s)
        return np.asarray(seeds, dtype=np.int64)

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, **fit_params: Any) -> "DeepEnsemble":
        """Fit ``n_members`` clones of ``estimator``, each with its own seed.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            Anything the estimator accepts; structures are featurized once
            for all members.
        y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
            Targets or labels.
        **fit_params
            Passed to every member's ``fit`` (e.g. ``X_valid``/``y_valid``,
            whose structures are also featurized once).

        Returns
        -------
        DeepEnsemble
            This ensemble, fitted.
        """
        self._check_estimator()
        n = int(check_number("n_members", self.n_members, integer=True, low=2,
                             hint=" (an ensemble of one network has no spread)"))
        template = clone(self.estimator)
        graphs = self._graphs(template, X)
        if fit_params.get("X_valid") is not None:
            fit_params = {**fit_params, "X_valid": self._graphs(template, fit_params["X_valid"])}
        seeds = self._seeds(n)
        members = [clone(self.estimator).set_params(random_state=int(s)) for s in seeds]
        # one member per task, so that joblib hands the next member to whichever process is free
        chunks = map_chunks(
            _fit_members,
            n,
            lambda start, stop, parallel: (members[start:stop], graphs, y, fit_params, parallel),
            n_jobs=self.n_jobs,
            max_chunk=1,
        )
        self.members_ = [m for chunk in chunks for m in chunk]
        self.member_seeds_ = seeds
        if is_classifier(self.estimator):
            self.classes_ = self.members_[0].classes_
            for m in self.members_[1:]:
                if not np.array_equal(m.classes_, self.classes_):  # pragma: no cover - same y, same classes
                    raise RuntimeError(f"members found different classes: {self.classes_} and {m.classes_}")
        else:
            self.std_scale_ = 1.0
        return self

    # ------------------------------------------------------------------ predictions
    def predict_members(self, X: Any) -> np.ndarray:
        """Every member's predictions (regressors) or class probabilities (classifiers).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict (featurized once).

        Returns
        -------
        numpy.ndarray of shape (n_members, n_crystals, ...)
            Member ``i``'s ``predict`` (regressor) or ``predict_proba``
            (classifier) in row ``i``.
        """
        check_is_fitted(self, "members_")
        graphs = self._graphs(self.members_[0], X)
        if is_classifier(self.estimator):
            return np.stack([m.predict_proba(graphs) for m in self.members_])
        return np.stack([np.asarray(m.predict(graphs), dtype=np.float64) for m in self.members_])

    def predict(self, X: Any, return_std: bool = False, calibrated: bool = True) -> Any:
        """Predict the members' mean (regressors) or most probable class (classifiers).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.
        return_std : bool, default=False
            Also return σ, the standard deviation of the members'
            predictions (regressors only).
        calibrated : bool, default=True
            Scale σ by ``std_scale_`` (the factor :meth:`recalibrate`
            fitted; 1 if it was not called). False gives the raw spread.

        Returns
        -------
        y_pred : numpy.ndarray of shape (n_crystals,) or (n_crystals, n_targets)
            Mean prediction (regressors, in the targets' shape) or labels of
            the highest mean probability (classifiers, of the type of
            ``classes_``).
        y_std : numpy.ndarray, same shape as ``y_pred``
            Only with ``return_std=True``: σ per crystal (and target).
        """
        preds = self.predict_members(X)
        if is_classifier(self.estimator):
            if return_std:
                raise ValueError("return_std applies to regressors; a classifier's uncertainty is predict_proba")
            return self.classes_[preds.mean(axis=0).argmax(axis=1)]
        mean = preds.mean(axis=0)
        if not return_std:
            return mean
        std = preds.std(axis=0, ddof=1)
        if calibrated:
            std = std * self.std_scale_
        return mean, std

    @available_if(_is_classifier_ensemble)
    def predict_proba(self, X: Any) -> np.ndarray:
        """The members' mean class probabilities (classifiers only).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.

        Returns
        -------
        numpy.ndarray of shape (n_crystals, n_classes)
            Columns in ``classes_`` order; every row sums to 1.
        """
        return self.predict_members(X).mean(axis=0)

    @available_if(_is_regressor_ensemble)
    def recalibrate(self, X: Any, y: Any) -> "DeepEnsemble":
        """Fit the factor ``std_scale_`` that makes σ match the errors on held-out crystals.

        For each target, ``s = sqrt(mean((y - mean)² / σ²))`` over the given
        crystals (the raw σ, with missing targets and σ = 0 left out), so
        that the σ-normalised residuals ``(y - mean) / (s σ)`` have unit root
        mean square there. If the errors are Gaussian with a standard
        deviation proportional to σ, intervals ``mean ± z s σ`` then cover
        the fraction of crystals the normal distribution says. It changes
        the σ of :meth:`predict`, not the mean.

        Use crystals that no member trained on: a validation split (the
        members' best-epoch choice on the same crystals makes the factor a
        little optimistic) or, better, a separate calibration split.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            Held-out crystals.
        y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
            Their true targets (NaN: missing, left out).

        Returns
        -------
        DeepEnsemble
            This ensemble, with ``std_scale_`` set.
        """
        mean, std = self.predict(X, return_std=True, calibrated=False)
        y = np.asarray(y, dtype=np.float64).reshape(mean.shape)
        z2 = ((y - mean) / np.where(std > 0, std, np.nan)) ** 2
        z2 = z2.reshape(len(z2), -1)
        counts = np.isfinite(z2).sum(axis=0)
        if (counts == 0).any():
            raise ValueError(
                "recalibrate needs, for every target, crystals with a known target and a non-zero spread; "
                f"targets {np.flatnonzero(counts == 0).tolist()} have none"
            )
        scale = np.sqrt(np.nanmean(z2, axis=0))
        self.std_scale_ = float(scale[0]) if mean.ndim == 1 else scale
        return self

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the mean prediction (regressors) or accuracy (classifiers).

        NaN targets (crystals missing some targets, with the estimator's
        ``missing_targets="ignore"``) are left out as the crysk regressors'
        ``score`` does: each target's R² over the crystals that have it,
        averaged over the targets.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.
        y : array-like
            Their true targets or labels.
        sample_weight : array-like, optional
            Weights of the crystals.

        Returns
        -------
        float
            As scikit-learn's ``RegressorMixin.score`` / ``ClassifierMixin.score``.
        """
        from sklearn.metrics import accuracy_score, r2_score

        pred = self.predict(X)
        if is_classifier(self.estimator):
            return float(accuracy_score(y, pred, sample_weight=sample_weight))
        y = np.asarray(y, dtype=np.float64)
        if not np.isnan(y).any():
            return float(r2_score(y, pred, sample_weight=sample_weight))
        y2, p2 = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        scores = []
        for j in range(y2.shape[1]):
            keep = ~np.isnan(y2[:, j])
            scores.append(r2_score(y2[keep, j], p2[keep, j], sample_weight=None if w is None else w[keep]))
        return float(np.mean(scores))

    # ------------------------------------------------------------------ scikit-learn
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            inner = get_tags(self.estimator)
        except (AttributeError, TypeError, ValueError):  # not an estimator: fit says so
            return tags
        # a regressor or a classifier as the estimator is (how Pipeline takes its last step's kind)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = deepcopy(inner.classifier_tags)
        tags.regressor_tags = deepcopy(inner.regressor_tags)
        tags.target_tags = deepcopy(inner.target_tags)
        tags.input_tags = deepcopy(inner.input_tags)
        # the members' seeds come from the ensemble's random_state, whatever the estimator's is
        tags.non_deterministic = self.random_state is None
        return tags
