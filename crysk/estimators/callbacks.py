"""skorch callbacks used by the crysk estimators."""

from __future__ import annotations

import copy

import numpy as np
from skorch.callbacks import Callback, LRScheduler

__all__ = ["ValidMAE", "RestoreBestWeights", "SaveBestCheckpoint", "NetMultiStepLR"]


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


class ValidMAE(Callback):
    """Record the validation MAE in the targets' original units.

    The papers pick the best epoch by validation MAE; this works whatever the
    training loss and target scaler are. Uses the predictions skorch already
    made for the validation loss, so it costs no extra forward pass.
    """

    def on_epoch_begin(self, net, **kwargs):
        self.errors_ = []

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        yb = batch[1]
        scaler = net.target_scaler_
        pred = scaler.inverse_transform(y_pred.detach().float().cpu().numpy())
        true = scaler.inverse_transform(yb.detach().cpu().numpy())
        self.errors_.append(np.abs(pred - true).reshape(len(pred), -1).mean(axis=1))

    def on_epoch_end(self, net, **kwargs):
        if not self.errors_:
            return
        mae = float(np.concatenate(self.errors_).mean())
        history = net.history
        previous = [row["valid_mae"] for row in history[:-1] if "valid_mae" in row]
        history.record("valid_mae", mae)
        history.record("valid_mae_best", not previous or mae < min(previous))


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
        estimator's own (validation MAE for regressors, validation loss for
        :class:`~crysk.CrysAE`). Without a validation set, use
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
