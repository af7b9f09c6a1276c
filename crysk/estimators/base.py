"""Shared machinery of the crysk skorch estimators.

Input handling (structures or ``CrystalGraphs``), target checks and scaling,
repeatable seeding, the validation split with best-epoch selection, the
resident-on-device batching, and the optimiser set-up live here, so each model
class only says which torch module to build.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetRegressor
from skorch.callbacks import EpochTimer, LRScheduler, PassthroughScoring, PrintLog
from sklearn.exceptions import NotFittedError

from .._malloc import tune_malloc
from .._threads import resolve_n_threads, torch_threads
from ..featurizer import CrystalGraphFeaturizer, check_settings, graph_settings
from ..graphs import CrystalGraphs
from ..targets import make_target_scaler
from ..transfer import (
    CGCNN_DEFAULT_SETTINGS as CGCNN_SETTINGS,
    CheckpointError,
    read_weights,
    resolve_freeze,
    save_checkpoint,
    scaler_from_state,
    scaler_state,
    transfer_weights,
)
from .callbacks import ResumeSchedule, RestoreBestWeights, StopOnNonFinite, ValidMAE, read_resume_state
from .data import GraphBatch, GraphBatchIterator, GraphDataset

__all__ = ["CrystalNet", "CrystalNetRegressor", "register_estimator", "estimator_from_checkpoint"]

_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
_LOSSES = {"mse": torch.nn.MSELoss, "l1": torch.nn.L1Loss, "mae": torch.nn.L1Loss}


def _check_targets(y: Any, n: int) -> np.ndarray:
    if y is None:
        raise ValueError("y is required: this estimator is supervised")
    try:
        y = np.asarray(y, dtype=np.float64) if not hasattr(y, "to_numpy") else y.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(_non_numeric_targets(y)) from exc
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(f"y must be 1-D (one target) or 2-D (several), got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"X has {n} crystals but y has {len(y)} values; they must match one to one")
    if n == 0:
        raise ValueError("got no crystals to fit")
    bad = ~np.isfinite(y.reshape(n, -1)).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)
        raise ValueError(
            f"y has NaN or inf for {len(where)} crystals (first at positions {where[:5].tolist()}); "
            "drop those crystals or fill their targets before fitting"
        )
    return y


def _non_numeric_targets(y: Any) -> str:
    """Say which value of ``y`` is not a number (for the error of :func:`_check_targets`)."""
    values = np.asarray(y, dtype=object).ravel()
    for i, value in enumerate(values):
        try:
            float(value)
        except (TypeError, ValueError):
            return (
                f"y must hold numbers (regression targets), but y[{i}] is {value!r}; convert the targets "
                "to floats, or encode categories as numbers"
            )
    return "y must hold numbers (regression targets) in a 1-D or 2-D array"


class CrystalNet(NeuralNet):
    """Machinery shared by every crysk network estimator (not used directly).

    Input handling (structures or ``CrystalGraphs``), repeatable seeding, the
    validation split, device-resident batching, warm starts, freezing and
    the optimiser set-up. :class:`CrystalNetRegressor` adds targets;
    :class:`~crysk.CrysAE` trains without them.
    """

    #: history key that is True on an epoch whose weights are kept (best validation epoch)
    _monitor = "valid_loss_best"

    def __init__(
        self,
        module=None,
        *,
        radius: float = 8.0,
        max_num_nbr: int = 12,
        lr: float = 0.01,
        optimizer: Any = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_milestones: Any = (100,),
        gamma: float = 0.1,
        batch_size: int = 256,
        max_epochs: int = 100,
        validation_fraction: float | None = 0.2,
        warm_start_from: Any = None,
        freeze: Any = None,
        warm_start_strict: bool = False,
        warm_start_include: Any = None,
        lr_transferred: float | None = None,
        n_jobs: int | None = None,
        n_threads: int | None = None,
        device: str = "cpu",
        random_state: int | None = None,
        verbose: int = 0,
        **kwargs,
    ):
        kwargs.setdefault("criterion", torch.nn.MSELoss)
        kwargs.setdefault("train_split", None)
        kwargs.setdefault("iterator_train", GraphBatchIterator)
        kwargs.setdefault("iterator_valid", GraphBatchIterator)
        kwargs.setdefault("dataset", GraphDataset)
        super().__init__(
            module,
            lr=lr,
            optimizer=optimizer,
            batch_size=batch_size,
            max_epochs=max_epochs,
            device=device,
            verbose=verbose,
            **kwargs,
        )
        self.radius = radius
        self.max_num_nbr = max_num_nbr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_milestones = lr_milestones
        self.gamma = gamma
        self.validation_fraction = validation_fraction
        self.warm_start_from = warm_start_from
        self.freeze = freeze
        self.warm_start_strict = warm_start_strict
        self.warm_start_include = warm_start_include
        self.lr_transferred = lr_transferred
        self.n_jobs = n_jobs
        self.n_threads = n_threads
        self.random_state = random_state

    # ------------------------------------------------------------------ params
    def _module_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _check_params(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        for name in ("batch_size", "max_num_nbr"):
            positive_int(name)
        me = self.max_epochs
        if not isinstance(me, numbers.Integral) or isinstance(me, bool) or me < 0:
            raise ValueError(f"max_epochs must be a non-negative integer (0 only initialises), got {me!r}")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.radius, numbers.Real) and self.radius > 0):
            raise ValueError(f"radius must be a positive number of Å, got {self.radius!r}")
        vf = self.validation_fraction
        if vf is not None and not (isinstance(vf, numbers.Real) and 0 <= vf < 1):
            raise ValueError(f"validation_fraction must be in [0, 1) or None, got {vf!r}")
        if isinstance(self.optimizer, str) and self.optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)} or a torch optimizer class")

    @property
    def graph_settings(self) -> dict[str, Any]:
        """The featurizer settings this model needs (see :func:`crysk.featurizer.graph_settings`)."""
        return graph_settings(self.radius, self.max_num_nbr)

    # ------------------------------------------------------------------ inputs
    def _as_graphs(self, X: Any) -> CrystalGraphs:
        if isinstance(X, CrystalGraphs):
            check_settings(X, self.graph_settings, type(self).__name__)
            return X
        return CrystalGraphFeaturizer(self.radius, self.max_num_nbr, n_jobs=self.n_jobs).transform(X)

    def _seeds(self) -> np.ndarray:
        return np.random.SeedSequence(self.random_state).generate_state(3)

    # ------------------------------------------------------------------ skorch hooks
    @property
    def _default_callbacks(self):
        milestones = [] if self.lr_milestones is None else list(self.lr_milestones)
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            *self._extra_callbacks(),
            (
                "lr_scheduler",
                LRScheduler(policy="MultiStepLR", milestones=milestones, gamma=self.gamma),
            ),
            ("stop_on_nonfinite", StopOnNonFinite()),
            ("resume", ResumeSchedule()),
            ("restore_best", RestoreBestWeights(self._monitor)),
            ("print_log", PrintLog()),
        ]

    def _extra_callbacks(self) -> list:
        return []

    def initialize_module(self):
        """Build the torch module (seeded), warm-start it and freeze what ``freeze`` names."""
        seed = int(self._seeds()[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.module(**self._module_kwargs(), **self.get_params_for("module"))
        self.transfer_report_ = None
        if self.warm_start_from is not None:
            source = read_weights(self.warm_start_from)
            self.transfer_report_ = transfer_weights(
                module,
                source,
                strict=self.warm_start_strict,
                expected_settings=self.graph_settings,
                include=self.warm_start_include,
            )
        self.frozen_parameters_ = resolve_freeze(module, self.freeze)
        frozen = set(self.frozen_parameters_)
        transferred = set(self.transfer_report_.loaded) if self.transfer_report_ else set()
        fresh = [name for name in self.frozen_parameters_ if name not in transferred]
        if fresh:
            from .._warnings import warn_user

            warn_user(
                f"freeze={self.freeze!r} keeps {len(fresh)} freshly initialised (not transferred) tensors fixed, "
                f"e.g. {fresh[:3]}: they will stay random. Check warm_start_from and the layer widths"
            )
        for name, param in module.named_parameters():
            param.requires_grad_(name not in frozen)
        # a batch-norm layer whose affine parameters are all frozen keeps its statistics too
        module.frozen_norms = tuple(
            name
            for name, sub in module.named_modules()
            if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm)
            and all(f"{name}.{p}" in frozen for p, _ in sub.named_parameters())
            and any(True for _ in sub.parameters())
        )
        self.module_ = module.to(self.device)
        return self

    def initialize_optimizer(self, triggered_directly=None):
        """Optimiser over the trainable parameters, with ``momentum``/``weight_decay``."""
        opt = self.optimizer
        if isinstance(opt, str):
            opt = _OPTIMIZERS[opt.lower()]
        params = [(n, p) for n, p in self.get_all_learnable_params() if p.requires_grad]
        if not params:
            raise ValueError(f"freeze={self.freeze!r} leaves no parameter to train")
        args, kwargs = self.get_params_for_optimizer("optimizer", params)
        report = getattr(self, "transfer_report_", None)
        if self.lr_transferred is not None and report is not None:
            # two groups: transferred tensors at lr_transferred, new ones at lr
            loaded = set(report.loaded)
            old = [p for n, p in params if n in loaded]
            new = [p for n, p in params if n not in loaded]
            args = ([g for g in ({"params": old, "lr": self.lr_transferred}, {"params": new}) if g["params"]],)
        kwargs.setdefault("weight_decay", self.weight_decay)
        if opt is torch.optim.SGD:
            kwargs.setdefault("momentum", self.momentum)
        self.optimizer_ = opt(*args, **kwargs)
        return self

    def get_dataset(self, X, y=None):
        """Wrap graphs (already featurized) into a device-resident dataset."""
        if isinstance(X, GraphDataset):
            return X
        return GraphDataset.from_graphs(X, y, self.device)

    def get_split_datasets(self, X, y=None, **fit_params):
        """Split off the validation crystals (``validation_fraction``) with the seeded RNG."""
        dataset = self.get_dataset(X, y)
        valid = getattr(self, "fit_validation_", None)
        if valid is not None:
            return dataset, self.get_dataset(*valid)
        vf = self.validation_fraction
        n = len(dataset)
        n_valid = int(round(n * vf)) if vf else 0
        if n_valid == 0:
            return dataset, None
        if n - n_valid < 1:
            raise ValueError(f"validation_fraction={vf} leaves no training crystals out of {n}")
        order = np.random.default_rng(int(self._seeds()[1])).permutation(n)
        return dataset.subset(np.sort(order[n_valid:])), dataset.subset(np.sort(order[:n_valid]))

    def get_iterator(self, dataset, training=False):
        """Batches gathered on the device; training batches are shuffled with the seeded RNG."""
        batch_size = len(dataset) if self.batch_size == -1 else self.batch_size
        if training:
            return GraphBatchIterator(dataset, batch_size, shuffle=True, generator=self.shuffle_rng_)
        return GraphBatchIterator(dataset, batch_size, shuffle=False)

    def infer(self, x, **fit_params):
        """Run the module on a :class:`GraphBatch`."""
        if isinstance(x, GraphBatch):
            return self.module_(**x.tensors)
        return super().infer(x, **fit_params)

    def check_data(self, X, y):  # the checks happen in fit, before featurizing
        pass

    def _train(self, graphs: CrystalGraphs, y: np.ndarray | None, resume_from: Any = None) -> None:
        """Initialise and run skorch's training loop on prepared graphs and targets.

        ``resume_from`` (a checkpoint of this estimator, see
        :func:`~crysk.estimators.callbacks.read_resume_state`) continues an
        interrupted run: its weights, the epochs still to run, the learning
        rate schedule and its best score (see :class:`ResumeSchedule`).
        """
        # set before training so that checkpoint callbacks can save mid-fit
        self.graph_settings_ = self.graph_settings
        if str(self.device).startswith("cpu"):
            tune_malloc()
        self._resume_state = None if resume_from is None else read_resume_state(self, resume_from)
        try:
            self.initialize()
            epochs = self.max_epochs
            if self._resume_state is not None:
                self.module_.load_state_dict(self._resume_state.state_dict)
                epochs = max(self.max_epochs - self._resume_state.epochs_done, 0)
            # NeuralNet.fit would call the subclass's partial_fit, which prepares y again
            with torch_threads(resolve_n_threads(self.n_threads)):
                NeuralNet.partial_fit(self, graphs, y, epochs=epochs)
        finally:
            self.fit_validation_ = None
            self._resume_state = None

    def _best_score(self) -> float | None:
        """The validation score of the kept (best) epoch, from the history; None without one."""
        key = self._monitor.removesuffix("_best")
        scores = [row[key] for row in getattr(self, "history_", None) or [] if row.get(self._monitor) and key in row]
        return float(scores[-1]) if scores else None

    # ------------------------------------------------------------------ fitted state
    def _check_fitted(self) -> None:
        if not getattr(self, "initialized_", False) or not hasattr(self, "graph_settings_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path) -> "Path":
        """Save weights, hyperparameters, featurizer settings and target scaler.

        The file is written atomically and loads with
        ``torch.load(weights_only=True)``; use :func:`crysk.load`,
        ``from_pretrained`` or ``warm_start_from=path`` to use it.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        pathlib.Path
        """
        from .. import __version__

        self._check_fitted()
        payload = {
            "format": "crysk-checkpoint",
            "format_version": 1,
            "crysk_version": __version__,
            "estimator": type(self).__name__,
            "params": _plain_params(self),
            "state_dict": {k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
            "graph_settings": dict(self.graph_settings),
            "best_epoch": None if self.best_epoch_ is None else int(self.best_epoch_),
            # with best_epoch, what fit(resume_from=...) needs to continue the run
            "best_score": self._best_score(),
            **self._checkpoint_state(),
        }
        return save_checkpoint(path, payload)

    def _checkpoint_state(self) -> dict:
        """Fitted state besides the weights that a checkpoint must keep."""
        return {}

    def _restore_checkpoint_state(self, ckpt: dict) -> None:
        """Set the fitted attributes that :meth:`_checkpoint_state` saved."""

    @classmethod
    def from_pretrained(cls, path, **params) -> "CrystalNet":
        """Load a fitted estimator of this class from a checkpoint.

        Parameters
        ----------
        path : str or os.PathLike
            A crysk checkpoint, or for ``CGCNNRegressor`` an original CGCNN
            one, or for ``CrysXPPRegressor`` the CrysXPP authors'
            ``model_best.pth.tar``.
        **params
            Hyperparameters to change after loading (e.g. ``device``).

        Returns
        -------
        estimator
        """
        est = estimator_from_checkpoint(read_weights(path), **params)
        if not isinstance(est, cls):
            raise CheckpointError(f"{str(path)!r} holds a {type(est).__name__}, not a {cls.__name__}")
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = self.random_state is None
        return tags




class CrystalNetRegressor(CrystalNet, NeuralNetRegressor):
    """Base class of the crysk graph-network regressors (not used directly).

    Subclasses implement :meth:`_module_kwargs` (and set ``module``). All the
    scikit-learn regressor behaviour lives here: ``fit(X, y)`` with
    structures or ``CrystalGraphs``, ``predict`` in original units, ``score``
    (R²), target scaling, best-epoch selection by validation MAE.
    """

    _monitor = "valid_mae_best"

    def __init__(self, module=None, *, loss: str = "mse", target_scaler: Any = "standard", **kwargs):
        super().__init__(module, **kwargs)
        self.loss = loss
        self.target_scaler = target_scaler

    def _check_params(self) -> None:
        super()._check_params()
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {self.loss!r}")
        make_target_scaler(self.target_scaler)

    def _extra_callbacks(self) -> list:
        return [("valid_mae", ValidMAE())]

    def initialize_criterion(self):
        """The loss named by ``loss``."""
        self.criterion_ = _LOSSES[self.loss]().to(self.device)
        return self

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any, **fit_params) -> "CrystalNetRegressor":
        """Featurize (if needed), scale the targets and train.

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
        self._check_params()
        X_valid = fit_params.pop("X_valid", None)
        y_valid = fit_params.pop("y_valid", None)
        resume_from = fit_params.pop("resume_from", None)
        if fit_params:
            raise TypeError(f"unexpected fit parameters: {sorted(fit_params)}")
        graphs = self._as_graphs(X)
        y = _check_targets(y, len(graphs))
        self.y_ndim_ = y.ndim
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        self.target_scaler_ = make_target_scaler(self.target_scaler).fit(y2)
        y_scaled = self.target_scaler_.transform(y2)
        self.fit_validation_ = None
        if X_valid is not None:
            g_valid = self._as_graphs(X_valid)
            yv = _check_targets(y_valid, len(g_valid)).reshape(len(g_valid), -1)
            if yv.shape[1] != self.n_outputs_:
                raise ValueError(f"y_valid has {yv.shape[1]} targets, y has {self.n_outputs_}")
            self.fit_validation_ = (g_valid, self.target_scaler_.transform(yv))
        self.shuffle_rng_ = np.random.default_rng(int(self._seeds()[2]))
        self.best_epoch_ = None
        self._train(graphs, y_scaled, resume_from)
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training on (X, y), see :meth:`fit` (targets scaled as in the first fit)."""
        if not getattr(self, "initialized_", False) or not hasattr(self, "target_scaler_"):
            return self.fit(X, y, **fit_params)
        if isinstance(X, GraphDataset):
            return super().partial_fit(X, y, classes, **fit_params)
        graphs = self._as_graphs(X)
        y2 = _check_targets(y, len(graphs)).reshape(len(graphs), -1)
        return super().partial_fit(graphs, self.target_scaler_.transform(y2), classes, **fit_params)

    def predict_scaled(self, X: Any) -> np.ndarray:
        """Raw network outputs (scaled targets), shape ``(n_crystals, n_outputs)``.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs

        Returns
        -------
        numpy.ndarray
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

        Returns
        -------
        numpy.ndarray of shape (n_crystals,) or (n_crystals, n_targets)
        """
        scaled = self.predict_scaled(X)
        if len(scaled) == 0:  # no crystals, no predictions (the scaler would refuse 0 rows)
            return np.zeros((0,) if self.y_ndim_ == 1 else (0, self.n_outputs_))
        out = self.target_scaler_.inverse_transform(scaled)
        return out.ravel() if self.y_ndim_ == 1 else out

    def predict_proba(self, X):  # noqa: D102 - regression has no probabilities
        raise AttributeError("predict_proba is not available for a regressor; use predict")

    def score(self, X: Any, y: Any, sample_weight=None) -> float:
        """R² of the predictions (scikit-learn's regressor score).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
        y : array-like
        sample_weight : array-like, optional

        Returns
        -------
        float
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


_REGISTRY: dict[str, type] = {}


def register_estimator(cls: type) -> type:
    """Make ``cls`` loadable from checkpoints by its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


_SIMPLE = (bool, int, float, str, type(None))


def _plain_params(est) -> dict:
    """The hyperparameters worth storing: plain values only (no classes or objects)."""
    skip = {"warm_start_from", "warm_start_include", "freeze", "callbacks", "module", "criterion", "dataset",
            "iterator_train", "iterator_valid", "train_split", "verbose", "n_jobs", "n_threads"}
    out = {}
    for name, value in est.get_params(deep=False).items():
        if name in skip or name.startswith("_") or "__" in name:
            continue
        if isinstance(value, _SIMPLE):
            out[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, _SIMPLE) for v in value):
            out[name] = list(value)
    return out


def estimator_from_checkpoint(source, **params):
    """Build a fitted estimator from a :class:`~crysk.transfer.WeightSource` read from a file.

    Parameters
    ----------
    source : WeightSource
    **params
        Hyperparameters to override.

    Returns
    -------
    estimator
    """
    ckpt = source.checkpoint or {}
    if source.kind == "crysk":
        cls = _REGISTRY.get(ckpt["estimator"])
        if cls is None:
            raise CheckpointError(f"unknown estimator {ckpt['estimator']!r} in {source.description}")
        stored = dict(ckpt["params"])
        for key in ("lr_milestones",):
            if key in stored and stored[key] is not None:
                stored[key] = tuple(stored[key])
        est = cls(**{**stored, **params})
        est._restore_checkpoint_state(ckpt)
        best_epoch = ckpt.get("best_epoch")
        if est.graph_settings != source.graph_settings:
            raise CheckpointError(
                f"{source.description} was made with graph settings {source.graph_settings}, "
                f"but the estimator would use {est.graph_settings}"
            )
    elif source.kind == "cgcnn":
        from ..featurizer import graph_settings as _settings

        state = source.state_dict
        est = _REGISTRY["CGCNNRegressor"](**{**_original_shape(state), **params})
        if est.graph_settings != _settings(**CGCNN_SETTINGS):
            raise CheckpointError(f"{source.description} needs radius 8.0 and max_num_nbr 12 (CGCNN's defaults)")
        est._restore_checkpoint_state(_original_scaler(ckpt, int(state["fc_out.weight"].shape[0])))
        best_epoch = ckpt.get("epoch")
    elif source.kind == "crysxpp":
        est, best_epoch = _original_crysxpp(source, params)
    else:
        raise CheckpointError(
            f"{source.description} holds an encoder, not a whole model; use it as warm_start_from= instead"
        )
    est.initialize()
    missing, unexpected = est.module_.load_state_dict(
        {k: v for k, v in source.state_dict.items()}, strict=False
    )
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(
            f"{source.description} does not fit a {type(est).__name__} with its own hyperparameters "
            f"(missing {missing}, unexpected {unexpected})"
        )
    est.best_epoch_ = best_epoch
    est.graph_settings_ = est.graph_settings
    return est


def _original_shape(state) -> dict:
    """Hyperparameters that fix the tensor shapes of an original CGCNN-layout state dict."""
    return dict(
        atom_fea_len=int(state["embedding.weight"].shape[0]),
        n_conv=len({k.split(".")[1] for k in state if k.startswith("convs.")}),
        h_fea_len=int(state["conv_to_fc.weight"].shape[0]),
        n_h=len({k.split(".")[1] for k in state if k.startswith("fcs.")}) + 1,
    )


def _original_scaler(ckpt: dict, n_outputs: int) -> dict:
    """The checkpoint state of the original code's target ``normalizer`` (mean/std)."""
    norm = ckpt.get("normalizer") or {"mean": 0.0, "std": 1.0}
    return {
        "n_outputs": n_outputs,
        "y_ndim": 1,
        "target_scaler": {
            "kind": "standard",
            "mean": [float(norm["mean"])] * n_outputs,
            "scale": [float(norm["std"])] * n_outputs,
        },
    }


def _original_crysxpp(source, params: dict):
    """A ``CrysXPPRegressor`` shaped like an original CrysXPP predictor (``model_best.pth.tar``)."""
    from ..featurizer import graph_settings as _settings

    ckpt = source.checkpoint or {}
    state = source.state_dict
    shape = _original_shape(state)
    # the authors' predictor: embedding with bias, selector only if it has a mask, L1 as a mean
    shape.update(
        embedding_bias="embedding.bias" in state,
        feature_selector="selector.weight" in state,
        l1_reduction="mean",
    )
    est = _REGISTRY["CrysXPPRegressor"](**{**shape, **params})
    if est.graph_settings != _settings(**CGCNN_SETTINGS):
        raise CheckpointError(f"{source.description} needs radius 8.0 and max_num_nbr 12 (CrysXPP's defaults)")
    est._restore_checkpoint_state(_original_scaler(ckpt, int(state["fc_out.weight"].shape[0])))
    epoch = ckpt.get("epoch")
    return est, None if epoch is None else int(epoch)
