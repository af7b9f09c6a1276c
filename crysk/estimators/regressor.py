"""CrystalNetRegressor: targets, their scaling and the regressor API shared by CGCNN and CrysXPP."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch import NeuralNetRegressor

from .._threads import resolve_n_threads, torch_threads
from .._validation import check_option
from ..checkpoints import scaler_from_state, scaler_state
from ..targets import make_target_scaler
from .base import CrystalNet
from .callbacks import ValidMAE
from .data import GraphDataset

__all__ = ["CrystalNetRegressor"]

_LOSSES = {"mse": torch.nn.MSELoss, "l1": torch.nn.L1Loss, "mae": torch.nn.L1Loss}


def _non_numeric_targets(y: Any, name: str) -> str:
    """Say which value of ``y`` is not a number (for the error of :func:`_check_targets`)."""
    values = np.asarray(y, dtype=object).ravel()
    for i, value in enumerate(values):
        try:
            float(value)
        except (TypeError, ValueError):
            return (
                f"{name} must hold numbers (regression targets), but {name}[{i}] is {value!r}; convert the "
                "targets to floats, or encode categories as numbers"
            )
    return f"{name} must hold numbers (regression targets) in a 1-D or 2-D array"


def _check_targets(y: Any, n: int, name: str = "y") -> np.ndarray:
    if y is None:
        raise ValueError(f"{name} is required: this estimator is supervised")
    try:
        y = np.asarray(y, dtype=np.float64) if not hasattr(y, "to_numpy") else y.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(_non_numeric_targets(y, name)) from exc
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(f"{name} must be 1-D (one target) or 2-D (several), got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"X has {n} crystals but {name} has {len(y)} values; they must match one to one")
    if n == 0:
        raise ValueError("got no crystals to fit")
    bad = ~np.isfinite(y.reshape(n, -1)).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has NaN or inf for {len(where)} crystals (first at positions {where[:5].tolist()}); "
            "drop those crystals or fill their targets before fitting"
        )
    return y


class CrystalNetRegressor(CrystalNet, NeuralNetRegressor):
    """Base class of the crysk graph-network regressors (not used directly).

    Subclasses implement :meth:`_module_kwargs` (and set ``module``). All the
    scikit-learn regressor behaviour lives here: ``fit(X, y)`` with
    structures or ``CrystalGraphs``, ``predict`` in original units, ``score``
    (R²), target scaling, best-epoch selection by validation MAE.

    Parameters
    ----------
    module : type of torch.nn.Module, optional
        The network class; each subclass sets its own.
    loss : {"mse", "l1"}, default="mse"
        Training loss on scaled targets, unless ``criterion`` is given.
    target_scaler : {"standard", "tanh"}, None or transformer, default="standard"
        How targets are scaled for training.
    **kwargs
        The parameters of :class:`CrystalNet`.
    """

    _monitor = "valid_mae_best"

    def __init__(self, module: Any = None, *, loss: str = "mse", target_scaler: Any = "standard", **kwargs: Any):
        super().__init__(module, **kwargs)
        self.loss = loss
        self.target_scaler = target_scaler

    def _check_params(self, fit_params: dict[str, Any] | None = None) -> None:
        super()._check_params(fit_params)
        check_option("loss", self.loss, sorted(_LOSSES))
        if self.criterion is not None and self.loss != "mse":
            raise ValueError(f"give either loss={self.loss!r} or criterion=, not both: criterion replaces loss")
        make_target_scaler(self.target_scaler)

    def _extra_callbacks(self) -> list:
        return [("valid_mae", ValidMAE())]

    def _default_criterion(self) -> torch.nn.Module:
        return _LOSSES[self.loss]()

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any, **fit_params: Any) -> "CrystalNetRegressor":
        """Featurize (if needed), scale the targets and train from scratch (or from ``warm_start_from``).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            Anything :class:`~crysk.CrystalGraphFeaturizer` accepts; graphs
            must have been made with this model's ``radius``/``max_num_nbr``.
        y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
            Targets; a 2-D ``y`` trains one multi-output head.
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
        y = _check_targets(y, len(graphs))
        self.y_ndim_ = y.ndim
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        self.target_scaler_ = make_target_scaler(self.target_scaler).fit(y2)
        # set before training so that checkpoint callbacks can save mid-fit
        self.graph_settings_ = self.graph_settings
        self.best_epoch_ = None
        # skorch's fit: initialize(), then partial_fit, which scales y (and the validation set)
        return super().fit(graphs, y, **fit_params)

    def partial_fit(self, X: Any, y: Any = None, classes: Any = None, **fit_params: Any) -> "CrystalNetRegressor":
        """Train for ``max_epochs`` more epochs on (X, y), continuing from the current weights.

        Targets are scaled with the scaler fitted by the first :meth:`fit`;
        the learning-rate schedule, history and optimiser state continue.
        On an unfitted estimator this is :meth:`fit`.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to train on.
        y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
            Their targets, in original units.
        classes : None
            Unused (scikit-learn's signature for classifiers).
        **fit_params
            ``X_valid`` and ``y_valid``: an explicit validation set.

        Returns
        -------
        self
        """
        if not getattr(self, "initialized_", False) or not hasattr(self, "target_scaler_"):
            return self.fit(X, y, **{k: v for k, v in fit_params.items() if k != "_routing_method"})
        if isinstance(X, GraphDataset):
            return super().partial_fit(X, y, classes, **fit_params)
        graphs = self._as_graphs(X)
        y_scaled = self._scale(y, len(graphs), "y")
        if fit_params.get("X_valid") is not None:
            g_valid = self._as_graphs(fit_params["X_valid"])
            fit_params["X_valid"] = g_valid
            fit_params["y_valid"] = self._scale(fit_params.get("y_valid"), len(g_valid), "y_valid")
        return super().partial_fit(graphs, y_scaled, classes, **fit_params)

    def _scale(self, y: Any, n: int, name: str) -> np.ndarray:
        y2 = _check_targets(y, n, name).reshape(n, -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(f"{name} has {y2.shape[1]} targets, the model has {self.n_outputs_}")
        return self.target_scaler_.transform(y2)

    def predict_scaled(self, X: Any) -> np.ndarray:
        """Raw network outputs (scaled targets), shape ``(n_crystals, n_outputs)``.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.

        Returns
        -------
        numpy.ndarray
            The outputs before the target scaler's inverse.
        """
        self._check_fitted()
        graphs = self._as_graphs(X)
        if len(graphs) == 0:
            return np.zeros((0, self.n_outputs_))
        with torch_threads(resolve_n_threads(self.n_threads)):
            outs = [yp.detach().float().cpu().numpy() for yp in self.forward_iter(graphs, training=False)]
        return np.concatenate(outs).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predict targets in their original units.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.

        Returns
        -------
        numpy.ndarray of shape (n_crystals,) or (n_crystals, n_targets)
            One row per crystal; 1-D when ``y`` was 1-D.
        """
        scaled = self.predict_scaled(X)
        if len(scaled) == 0:  # no crystals, no predictions (the scaler would refuse 0 rows)
            return np.zeros((0,) if self.y_ndim_ == 1 else (0, self.n_outputs_))
        out = self.target_scaler_.inverse_transform(scaled)
        return out.ravel() if self.y_ndim_ == 1 else out

    def predict_proba(self, X: Any):  # noqa: D102 - regression has no probabilities
        raise AttributeError("predict_proba is not available for a regressor; use predict")

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the predictions (scikit-learn's regressor score).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to predict.
        y : array-like
            Their true targets.
        sample_weight : array-like, optional
            Weights of the crystals.

        Returns
        -------
        float
            The coefficient of determination.
        """
        from sklearn.metrics import r2_score

        return r2_score(y, self.predict(X), sample_weight=sample_weight)

    def _checkpoint_state(self) -> dict:
        return {
            "target_scaler": scaler_state(self.target_scaler_),
            "n_outputs": int(self.n_outputs_),
            "y_ndim": int(self.y_ndim_),
        }

    def _restore_checkpoint_state(self, ckpt: dict) -> None:
        self.n_outputs_ = int(ckpt["n_outputs"])
        self.y_ndim_ = int(ckpt["y_ndim"])
        self.target_scaler_ = scaler_from_state(ckpt["target_scaler"], self.n_outputs_)
