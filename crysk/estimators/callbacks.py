"""skorch callbacks used by the crysk estimators."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from skorch.callbacks import Callback, LRScheduler

__all__ = [
    "ValidMAE",
    "RestoreBestWeights",
    "SaveBestCheckpoint",
    "NetMultiStepLR",
    "StopOnNonFinite",
    "NonFiniteLossError",
    "ResumeSchedule",
    "ResumeState",
    "read_resume_state",
    "ValidLogLoss",
]


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


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the loss or a gradient became NaN or infinite.

    Parameters
    ----------
    message : str
        What happened and what to try.
    epoch, batch : int
        Where it happened (see Attributes).
    lr : float
        The learning rate at that moment.

    Attributes
    ----------
    epoch : int
        The epoch (counted from 1) of the failing batch.
    batch : int
        The training batch (counted from 1) within that epoch.
    lr : float
        The learning rate of the first parameter group at that moment.
    """

    def __init__(self, message: str, epoch: int, batch: int, lr: float):
        super().__init__(message)
        self.epoch, self.batch, self.lr = epoch, batch, lr


class StopOnNonFinite(Callback):
    """Stop a fit at the first NaN or infinite loss or gradient, keeping the best weights.

    The gradients are checked before the optimiser applies them, so the
    weights are never overwritten with NaN. When an epoch already improved
    the validation score, its weights (held by :class:`RestoreBestWeights`)
    are put back, so the estimator stays usable; otherwise the weights are
    those before the failing step. Then :class:`NonFiniteLossError` is
    raised, naming the epoch, the batch and the learning rate.
    """

    def on_epoch_begin(self, net, **kwargs):
        self.batch_ = 0

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        if training:
            self.batch_ += 1

    def on_grad_computed(self, net, named_parameters, batch=None, training=None, **kwargs):
        if not training:
            return
        grads = [p.grad for _, p in named_parameters if p.grad is not None]
        # one reduction over all gradients: a NaN or inf loss makes them non-finite too
        if grads and not bool(torch.isfinite(torch.stack([g.detach().sum() for g in grads])).all()):
            self._stop(net, "the loss or its gradient")

    def on_batch_end(self, net, batch=None, training=None, loss=None, **kwargs):
        if training and loss is not None and not math.isfinite(float(torch.as_tensor(loss).detach())):
            self._stop(net, "the training loss")

    def _stop(self, net, what: str) -> None:
        epoch = len(net.history) + getattr(getattr(net, "_resume_state", None), "epochs_done", 0)
        lr = float(net.optimizer_.param_groups[0]["lr"])
        restore = dict(net.callbacks_).get("restore_best")
        best = getattr(restore, "best_state_", None)
        if best is not None:
            net.module_.load_state_dict(best)
            net.best_epoch_ = restore.best_epoch_
            kept = f"the weights of the best epoch so far ({restore.best_epoch_}) are kept"
        else:
            kept = "no epoch had improved the validation score yet; the weights are those before this step"
        # Adam is the usual cure for SGD's divergences; a diverging Adam fit needs a smaller lr only
        adam = str(getattr(net, "optimizer", "")).lower() == "adam"
        raise NonFiniteLossError(
            f"{what} became NaN or infinite at epoch {epoch}, batch {self.batch_} (lr {lr:g}); "
            f"training stopped and {kept}. The learning rate is probably too high for these data: "
            "try lr ten times smaller" + ("" if adam else ", or optimizer='adam'"),
            epoch, self.batch_, lr,
        )


@dataclass
class ResumeState:
    """Where an interrupted fit stopped, read from a checkpoint.

    Its fields (the parameters) are described under Attributes.

    Parameters
    ----------
    path, epochs_done, best_score, state_dict, optimizer_state
        As the attributes of the same names.

    Attributes
    ----------
    path : str
        The checkpoint.
    epochs_done : int
        Epochs of the whole run the checkpoint holds (its ``best_epoch``).
    best_score : float
        Its validation score (``inf`` when unknown, so any epoch improves).
    state_dict : dict
        Its weights.
    optimizer_state : dict or None
        The optimiser's per-parameter state (Adam's moments, SGD's momentum
        buffers) when the checkpoint holds it (``save_pretrained(...,
        include_optimizer=True)``), else ``None``.
    """

    path: str
    epochs_done: int
    best_score: float
    state_dict: dict
    optimizer_state: dict | None = None


def read_resume_state(net, path) -> ResumeState:
    """Read the resume point of ``net`` from a crysk checkpoint (e.g. a :class:`SaveBestCheckpoint` file).

    Parameters
    ----------
    net : CrystalNet
        The estimator that resumes; the checkpoint must hold the same class.
    path : str or os.PathLike
        The checkpoint of the interrupted run.

    Returns
    -------
    ResumeState

    Raises
    ------
    CheckpointError
        If the file is not a crysk checkpoint of this estimator class with
        its graph settings, or does not record its epoch.
    """
    from ..checkpoints import CheckpointError, read_weights

    source = read_weights(path)
    ckpt = source.checkpoint or {}
    name = type(net).__name__
    if source.kind != "crysk" or ckpt.get("estimator") != name:
        raise CheckpointError(
            f"cannot resume a {name} from {source.description}: resume_from= needs a checkpoint that a {name} "
            "wrote (save_pretrained or SaveBestCheckpoint); use warm_start_from= to start a new fit from other weights"
        )
    if source.graph_settings != net.graph_settings:
        raise CheckpointError(
            f"cannot resume from {source.description}: it was made with graph settings {source.graph_settings}, "
            f"this estimator uses {net.graph_settings}"
        )
    done = ckpt.get("best_epoch")
    if done is None:
        raise CheckpointError(f"{source.description} does not record its epoch, so a fit cannot resume from it")
    score = ckpt.get("best_score")
    return ResumeState(str(path), int(done), math.inf if score is None else float(score), dict(source.state_dict),
                       ckpt.get("optimizer_state"))


def _restore_optimizer_state(net, state: ResumeState) -> None:
    """Give ``net``'s optimiser the saved per-parameter state, keeping its own learning rates and options.

    Without it a resumed Adam starts with zero moments, and its first steps after the restart are as large
    as a fresh run's: the training loss of a CrysAE jumped from 1.06 to 1.37 at a restart. Only ``state`` is
    taken; the parameter groups (learning rate, which the schedule sets) stay the new fit's.
    """
    optimizer = net.optimizer_
    current = optimizer.state_dict()
    try:
        optimizer.load_state_dict({"state": state.optimizer_state, "param_groups": current["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        optimizer.load_state_dict(current)
        warnings.warn(
            f"the optimiser state in {state.path} does not fit this fit's optimiser ({exc}); it starts afresh "
            "(resumed with the checkpoint's weights only)",
            UserWarning, stacklevel=2,
        )


class ResumeSchedule(Callback):
    """Continue an interrupted run from :attr:`CrystalNet._resume_state` (set by ``fit(resume_from=...)``).

    Epochs are numbered over the whole run; the learning-rate schedule is
    stepped past the epochs already done; an epoch counts as the best only
    if it beats the checkpoint's score, so neither :class:`RestoreBestWeights`
    nor :class:`SaveBestCheckpoint` replaces the checkpoint with a worse
    epoch. If no epoch beats it, the fit ends with the checkpoint's weights.
    Does nothing on an ordinary fit.
    """

    def on_train_begin(self, net, **kwargs):
        self.state_ = getattr(net, "_resume_state", None)
        self.improved_ = False
        if self.state_ is None:
            return
        if self.state_.optimizer_state is not None:
            _restore_optimizer_state(net, self.state_)
        scheduler = getattr(dict(net.callbacks_).get("lr_scheduler"), "lr_scheduler_", None)
        if scheduler is not None:
            with warnings.catch_warnings():
                # stepping before any optimiser step is the point here: the epochs already ran
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                for _ in range(self.state_.epochs_done):
                    scheduler.step()

    def on_epoch_begin(self, net, **kwargs):
        if self.state_ is not None:
            net.history.record("epoch", self.state_.epochs_done + len(net.history))

    def on_epoch_end(self, net, **kwargs):
        if self.state_ is None:
            return
        row = net.history[-1]
        monitor = net._monitor
        score = row.get(monitor.removesuffix("_best"))
        better = bool(row.get(monitor)) and score is not None and score < self.state_.best_score
        if monitor in row:
            net.history.record(monitor, better)
        if better:
            self.state_.best_score = float(score)
            self.improved_ = True

    def on_train_end(self, net, **kwargs):
        if self.state_ is not None and not self.improved_ and math.isfinite(self.state_.best_score):
            # no epoch of this piece beat the checkpoint: it holds the run's best
            net.module_.load_state_dict(self.state_.state_dict)
            net.best_epoch_ = self.state_.epochs_done
