"""skorch callbacks used by the crysk estimators."""

from __future__ import annotations

import copy

import numpy as np
import torch
from skorch.callbacks import Callback, LRScheduler

__all__ = ["ValidMAE", "ValidLogLoss", "RestoreBestWeights", "SaveBestCheckpoint", "NetMultiStepLR"]


class NetMultiStepLR(LRScheduler):
    """skorch's ``MultiStepLR`` schedule with the milestones and factor read from the estimator.

    The crysk estimators list this callback among their defaults, and
    skorch builds the default callbacks whenever ``get_params`` runs, so it
    must not read the estimator's parameters when built: it takes
    ``lr_milestones`` and ``gamma`` from the estimator when training starts
    (``fit`` has checked them by then).
    """

    def __init__(self):
        super().__init__(policy="MultiStepLR")

    def _get_scheduler(self, net, policy, **scheduler_kwargs):
        milestones = [] if net.lr_milestones is None else [int(m) for m in net.lr_milestones]
        return super()._get_scheduler(net, policy, milestones=milestones, gamma=net.gamma, **scheduler_kwargs)


class _ValidationMetric(Callback):
    """A per-crystal validation metric, averaged over the epoch, recorded with a ``<name>_best`` flag.

    Subclasses compute the metric from the predictions skorch already made
    for the validation loss, so it costs no extra forward pass; lower is
    better.
    """

    #: the history key
    name = ""

    def on_epoch_begin(self, net, **kwargs):
        self.values_ = []

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        self.values_.append(self._per_crystal(net, y_pred.detach(), batch[1].detach()))

    def _per_crystal(self, net, y_pred, y_true) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - abstract

    def on_epoch_end(self, net, **kwargs):
        if not self.values_:
            return
        values = np.concatenate(self.values_)
        score = self._summarize(net, values)
        history = net.history
        previous = [row[self.name] for row in history[:-1] if self.name in row]
        history.record(self.name, score)
        history.record(f"{self.name}_best", not previous or score < min(previous))

    def _summarize(self, net, values: np.ndarray) -> float:
        return float(values.mean())


class ValidMAE(_ValidationMetric):
    """Record the validation MAE in the targets' original units.

    The papers pick the best epoch by validation MAE; this works whatever the
    training loss and target scaler are. Missing targets (NaN, with
    ``missing_targets="ignore"``) are left out; with several targets the MAE
    of each is recorded too, as ``valid_mae_0``, ``valid_mae_1``, ...
    and ``valid_mae`` is the mean over all present values.
    """

    name = "valid_mae"

    def _per_crystal(self, net, y_pred, y_true) -> np.ndarray:
        scaler = net.target_scaler_
        pred = scaler.inverse_transform(y_pred.float().cpu().numpy())
        true = scaler.inverse_transform(y_true.float().cpu().numpy())
        return np.abs(pred - true).reshape(len(pred), -1)

    def _summarize(self, net, values: np.ndarray) -> float:
        present = ~np.isnan(values)
        if values.shape[1] > 1:
            for j in range(values.shape[1]):
                col = values[present[:, j], j]
                # a target with no value in the validation set has no MAE this epoch
                net.history.record(f"{self.name}_{j}", float(col.mean()) if len(col) else float("nan"))
        return float(values[present].mean()) if present.any() else float("nan")


class ValidLogLoss(_ValidationMetric):
    """Record the validation log-loss (mean negative log-probability of the true class) and accuracy.

    Unweighted whatever ``class_weight`` is, so that the best epoch is the
    one with the best calibrated probabilities on the validation crystals;
    the accuracy (``valid_acc``) is recorded alongside.
    """

    name = "valid_log_loss"

    def _per_crystal(self, net, y_pred, y_true) -> np.ndarray:
        logp = torch.log_softmax(y_pred.double(), dim=1)
        true = y_true.long().view(-1, 1)
        nll = -logp.gather(1, true).view(-1)
        correct = (logp.argmax(dim=1) == true.view(-1)).double()
        return torch.stack([nll, correct], dim=1).cpu().numpy()

    def _summarize(self, net, values: np.ndarray) -> float:
        net.history.record("valid_acc", float(values[:, 1].mean()))
        return float(values[:, 0].mean())


class RestoreBestWeights(Callback):
    """Keep the weights of the best validation epoch and restore them at the end.

    Kept in memory (no files), so an interrupted fit (Ctrl-C) also ends with
    the best weights seen so far.

    Parameters
    ----------
    monitor : str, default="valid_mae_best"
        History key that is True on an epoch whose weights are to be kept.
    """

    def __init__(self, monitor: str = "valid_mae_best"):
        self.monitor = monitor

    def on_train_begin(self, net, **kwargs):
        self.best_state_ = None
        self.best_epoch_ = None

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        if row.get(self.monitor):
            self.best_state_ = copy.deepcopy(net.module_.state_dict())
            self.best_epoch_ = row["epoch"]

    def on_train_end(self, net, **kwargs):
        if self.best_state_ is not None:
            net.module_.load_state_dict(self.best_state_)
            net.best_epoch_ = self.best_epoch_
        self.best_state_ = None


class SaveBestCheckpoint(Callback):
    """Write a crysk checkpoint every time the validation score improves.

    The file is replaced atomically, so a long run that is interrupted (or
    killed) leaves the last good checkpoint on disk; load it with
    :func:`crysk.load` or continue from it with ``warm_start_from=``.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file (replaced atomically at each improvement).
    monitor : str or None, default="auto"
        History key that is True on an improving epoch: ``"auto"`` takes the
        estimator's own (validation MAE for regressors, validation log-loss
        for classifiers, validation loss for :class:`~crysk.CrysAE`). Without a validation set, use
        ``monitor=None`` to save after every epoch.
    """

    def __init__(self, path, monitor: str | None = "auto"):
        self.path = path
        self.monitor = monitor

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        monitor = net._monitor if self.monitor == "auto" else self.monitor
        if monitor is None or row.get(monitor):
            net.best_epoch_ = row["epoch"]
            net.save_pretrained(self.path)
