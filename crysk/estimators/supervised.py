"""SupervisedNet: the ``fit``/``partial_fit`` flow shared by the crysk regressors and classifiers.

Both featurize the inputs, learn how to encode the targets at ``fit``
(regressors: a target scaler; classifiers: the classes), encode every later
``y`` and ``y_valid`` the same way and read the network's raw outputs to
predict. Only the target handling differs; it is in the subclass hooks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._threads import resolve_n_threads, torch_threads
from .base import CrystalNet
from .data import GraphDataset

__all__ = ["SupervisedNet"]


class SupervisedNet(CrystalNet):
    """Base class of the crysk estimators trained on targets (not used directly).

    Subclasses implement :meth:`_fit_targets` (check ``y`` and learn its
    encoding, setting ``n_outputs_``), :meth:`_encode_targets` (``y`` as the
    network is trained on it) and :meth:`_targets_fitted`.

    Parameters
    ----------
    module : type of torch.nn.Module, optional
        The network class; each subclass sets its own.
    radius, max_num_nbr, lr, optimizer, momentum, weight_decay, lr_milestones, gamma, batch_size, max_epochs, \
validation_fraction, warm_start_from, freeze, warm_start_strict, warm_start_include, lr_transferred, malloc_tuning, n_jobs, \
n_threads, device, random_state, verbose
        As for :class:`~crysk.CGCNNRegressor`.
    **kwargs
        Other skorch ``NeuralNet`` arguments.
    """

    #: "regression" or "classification": a warm start from a model of the other task leaves the head out
    _task: str | None = None

    def _fit_targets(self, y: Any, n: int) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _encode_targets(self, y: Any, n: int, name: str) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - abstract

    def _targets_fitted(self) -> bool:
        raise NotImplementedError  # pragma: no cover - abstract

    def fit(self, X: Any, y: Any, **fit_params: Any) -> "SupervisedNet":
        """Featurize (if needed), learn the target encoding and train from scratch (or from ``warm_start_from``).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            Anything :class:`~crysk.CrystalGraphFeaturizer` accepts; graphs
            must have been made with this model's ``radius``/``max_num_nbr``.
        y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
            Targets (regressors) or labels (classifiers).
        **fit_params
            ``X_valid`` and ``y_valid`` give an explicit validation set
            instead of splitting ``validation_fraction`` off ``X``.
            ``resume_from``: a checkpoint this estimator class wrote (e.g.
            the :class:`~crysk.estimators.SaveBestCheckpoint` file of an
            interrupted fit with the same data and parameters): training
            continues after its epoch, up to ``max_epochs`` in all, with the
            learning rate where the schedule had it, and ends with the best
            epoch of the whole run. Optimiser momentum and batch order start
            afresh.

        Returns
        -------
        self

        Raises
        ------
        NonFiniteLossError
            If the loss or a gradient becomes NaN or infinite; the best
            weights so far are kept.
        """
        self._check_params(fit_params)
        graphs = self._as_graphs(X)
        self._fit_targets(y, len(graphs))
        # set before training so that checkpoint callbacks can save mid-fit
        self.graph_settings_ = self.graph_settings
        self.best_epoch_ = None
        # skorch's fit: initialize(), then partial_fit, which encodes y (and the validation set)
        return super().fit(graphs, y, **fit_params)

    def partial_fit(self, X: Any, y: Any = None, classes: Any = None, **fit_params: Any) -> "SupervisedNet":
        """Train for ``max_epochs`` more epochs on (X, y), continuing from the current weights.

        Targets are encoded as the first :meth:`fit` learned (scaler,
        classes); the learning-rate schedule, history and optimiser state
        continue. On an unfitted estimator this is :meth:`fit`.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to train on.
        y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
            Their targets in original units, or their labels.
        classes : None
            Unused: a classifier's classes are those of the first ``fit``.
        **fit_params
            ``X_valid`` and ``y_valid``: an explicit validation set.

        Returns
        -------
        self
        """
        if not getattr(self, "initialized_", False) or not self._targets_fitted():
            return self.fit(X, y, **{k: v for k, v in fit_params.items() if k != "_routing_method"})
        if isinstance(X, GraphDataset):
            return super().partial_fit(X, y, classes, **fit_params)
        graphs = self._as_graphs(X)
        y_encoded = self._encode_targets(y, len(graphs), "y")
        if fit_params.get("X_valid") is not None:
            g_valid = self._as_graphs(fit_params["X_valid"])
            fit_params["X_valid"] = g_valid
            fit_params["y_valid"] = self._encode_targets(fit_params.get("y_valid"), len(g_valid), "y_valid")
        return super().partial_fit(graphs, y_encoded, classes, **fit_params)

    def _network_outputs(self, X: Any) -> np.ndarray:
        """The module's raw outputs for ``X`` (float64), shape ``(n_crystals, n_outputs_)``."""
        self._check_fitted()
        graphs = self._as_graphs(X)
        if len(graphs) == 0:
            return np.zeros((0, self.n_outputs_))
        with torch_threads(resolve_n_threads(self.n_threads)):
            outs = [yp.detach().float().cpu().numpy() for yp in self.forward_iter(graphs, training=False)]
        return np.concatenate(outs).astype(np.float64)
