"""CrystalNetRegressor: targets, their scaling and the regressor API shared by CGCNN and CrysXPP."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch import NeuralNetRegressor

from .._threads import resolve_n_threads, torch_threads
from .._validation import check_number, check_option
from ..checkpoints import scaler_from_state, scaler_state, source_target_scaler
from ..targets import make_target_scaler
from .callbacks import ValidMAE
from .supervised import SupervisedNet

__all__ = ["CrystalNetRegressor", "MaskedLoss"]

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


def _check_targets(y: Any, n: int, name: str = "y", allow_missing: bool = False) -> np.ndarray:
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
    y2 = y.reshape(n, -1)
    if allow_missing:
        if np.isinf(y2).any():
            where = np.flatnonzero(np.isinf(y2).any(axis=1))
            raise ValueError(f"{name} has inf for {len(where)} crystals (first at positions {where[:5].tolist()}); "
                             "missing_targets='ignore' skips NaN only: mark missing values as NaN")
        return y
    bad = ~np.isfinite(y2).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has NaN or inf for {len(where)} crystals (first at positions {where[:5].tolist()}); "
            "drop those crystals or fill their targets before fitting, or, for crystals missing some of "
            "several targets, set missing_targets='ignore'"
        )
    return y


class MaskedLoss(torch.nn.Module):
    """MSE or L1 over the present (non-NaN) targets only, with optional per-target weights.

    The loss of a batch is ``sum(w_j * l(pred_ij, y_ij)) / sum(w_j)`` over
    the entries ``(i, j)`` whose target is present: with unit weights it is
    exactly ``MSELoss``/``L1Loss`` on the present entries, and a missing
    entry contributes neither to the loss nor to its gradient.

    Parameters
    ----------
    kind : {"mse", "l1", "mae"}
        The per-entry loss.
    weights : torch.Tensor of shape (n_targets,), optional
        Weight of each target (default: all 1).
    """

    def __init__(self, kind: str = "mse", weights: torch.Tensor | None = None):
        super().__init__()
        self.kind = kind
        self.register_buffer("weights", weights)

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The weighted mean loss over the present entries (0 when none is present).

        Parameters
        ----------
        y_pred : torch.Tensor of shape (n_crystals, n_targets)
            Network outputs (scaled targets).
        y_true : torch.Tensor of shape (n_crystals, n_targets)
            Scaled targets, NaN where missing.
        """
        present = ~torch.isnan(y_true)
        # zero the missing entries before the arithmetic: NaN * 0 would still poison the gradient
        diff = torch.where(present, y_pred - torch.nan_to_num(y_true), torch.zeros_like(y_pred))
        per_entry = diff.square() if self.kind == "mse" else diff.abs()
        weight = present.to(y_pred.dtype)
        if self.weights is not None:
            weight = weight * self.weights.to(y_pred.dtype)
        return (per_entry * weight).sum() / weight.sum().clamp_min(torch.finfo(y_pred.dtype).tiny)


class CrystalNetRegressor(SupervisedNet, NeuralNetRegressor):
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
    target_scaler : {"standard", "tanh", "source"}, None or transformer, default="standard"
        How targets are scaled for training (each target on its own);
        ``"source"`` keeps the warm-start source's fitted scaler.
    missing_targets : {"raise", "ignore"}, default="raise"
        What a NaN in ``y`` means: an error, or (``"ignore"``) a target not
        known for that crystal, left out of the loss, the scaling and the
        validation MAE, so that a crystal missing some of several targets
        still trains the others.
    target_weights : array-like of shape (n_targets,), optional
        Weight of each target in the loss (with several targets on
        different scaled ranges, or one that matters more).
    **kwargs
        The parameters of :class:`CrystalNet`.
    """

    _monitor = "valid_mae_best"
    _task = "regression"

    def __init__(
        self,
        module: Any = None,
        *,
        loss: str = "mse",
        target_scaler: Any = "standard",
        missing_targets: str = "raise",
        target_weights: Any = None,
        **kwargs: Any,
    ):
        super().__init__(module, **kwargs)
        self.loss = loss
        self.target_scaler = target_scaler
        self.missing_targets = missing_targets
        self.target_weights = target_weights

    def _check_params(self, fit_params: dict[str, Any] | None = None) -> None:
        super()._check_params(fit_params)
        check_option("loss", self.loss, sorted(_LOSSES))
        if self.criterion is not None and self.loss != "mse":
            raise ValueError(f"give either loss={self.loss!r} or criterion=, not both: criterion replaces loss")
        if self._source_scaler():
            if self.warm_start_from is None:
                raise ValueError(
                    "target_scaler='source' keeps the scaling of the warm-start source: set warm_start_from too, "
                    "or choose 'standard' or 'tanh'"
                )
        else:
            make_target_scaler(self.target_scaler)
        check_option("missing_targets", self.missing_targets, ["ignore", "raise"])
        if self.criterion is not None and self._masked_loss():
            raise ValueError(
                "missing_targets='ignore' and target_weights need crysk's own (masked) loss: "
                "leave criterion=None and choose loss='mse' or 'l1'"
            )
        if self.target_weights is not None:
            weights = np.asarray(self.target_weights, dtype=np.float64)
            if weights.ndim != 1 or not len(weights):
                raise ValueError(f"target_weights must be one number per target, got {self.target_weights!r}")
            for w in weights:
                check_number("each of target_weights", float(w), low=0)
            if not weights.sum() > 0:
                raise ValueError("target_weights are all 0: give at least one target a positive weight")

    def _source_scaler(self) -> bool:
        """Whether the target scaler is taken from the warm-start source (``target_scaler="source"``)."""
        return isinstance(self.target_scaler, str) and self.target_scaler == "source"

    def _masked_loss(self) -> bool:
        return self.missing_targets == "ignore" or self.target_weights is not None

    def _extra_callbacks(self) -> list:
        return [("valid_mae", ValidMAE())]

    def _default_criterion(self) -> torch.nn.Module:
        if not self._masked_loss():
            return _LOSSES[self.loss]()
        weights = None
        if self.target_weights is not None:
            weights = torch.as_tensor(np.asarray(self.target_weights, dtype=np.float32), device=self.device)
        return MaskedLoss(self.loss, weights)

    # ------------------------------------------------------------------ targets
    def _fit_targets(self, y: Any, n: int) -> None:
        y = _check_targets(y, n, allow_missing=self.missing_targets == "ignore")
        self.y_ndim_ = y.ndim
        y2 = y.reshape(n, -1)
        self.n_outputs_ = y2.shape[1]
        if self.target_weights is not None and len(self.target_weights) != self.n_outputs_:
            raise ValueError(f"target_weights has {len(self.target_weights)} entries but y has {self.n_outputs_} targets")
        empty = np.flatnonzero(np.isnan(y2).all(axis=0))
        if len(empty):
            raise ValueError(f"targets {empty.tolist()} have no value for any crystal: drop those columns of y")
        if self._source_scaler():
            self.target_scaler_ = source_target_scaler(self.warm_start_from, self.n_outputs_)
        else:
            self.target_scaler_ = make_target_scaler(self.target_scaler).fit(y2)

    def _targets_fitted(self) -> bool:
        return hasattr(self, "target_scaler_")

    def _encode_targets(self, y: Any, n: int, name: str) -> np.ndarray:
        y2 = _check_targets(y, n, name, allow_missing=self.missing_targets == "ignore").reshape(n, -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(f"{name} has {y2.shape[1]} targets, the model has {self.n_outputs_}")
        return self.target_scaler_.transform(y2)

    # ------------------------------------------------------------------ public API
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
        return self._network_outputs(X)

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

        With ``missing_targets="ignore"``, NaN targets are left out: each
        target's R² is taken over the crystals that have it, and the scores
        are averaged over the targets.

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

        pred = self.predict(X)
        y = np.asarray(y, dtype=np.float64) if not hasattr(y, "to_numpy") else y.to_numpy(dtype=np.float64)
        if self.missing_targets != "ignore" or not np.isnan(y).any():
            return r2_score(y, pred, sample_weight=sample_weight)
        y2, p2 = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        scores = []
        for j in range(y2.shape[1]):
            keep = ~np.isnan(y2[:, j])
            scores.append(r2_score(y2[keep, j], p2[keep, j], sample_weight=None if w is None else w[keep]))
        return float(np.mean(scores))

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
