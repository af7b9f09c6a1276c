"""Shared machinery of the crysk skorch estimators.

Input handling (structures or ``CrystalGraphs``), target checks and scaling,
repeatable seeding, the validation split with best-epoch selection, the
resident-on-device batching, and the optimiser set-up live here, so each model
class only says which torch module to build.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from skorch import NeuralNet, NeuralNetRegressor
from skorch.callbacks import EpochTimer, PassthroughScoring, PrintLog

from .._malloc import malloc_tuning
from .._validation import check_number, check_option
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
from .callbacks import NetMultiStepLR, RestoreBestWeights, ValidMAE
from .data import GraphBatch, GraphBatchIterator, GraphDataset, as_graph_dataset

__all__ = ["CrystalNet", "CrystalNetRegressor", "register_estimator", "estimator_from_checkpoint"]

_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
_LOSSES = {"mse": torch.nn.MSELoss, "l1": torch.nn.L1Loss, "mae": torch.nn.L1Loss}

# skorch arguments that crysk's own machinery replaces: skorch's signature accepts them, but any value
# other than crysk's would be ignored, so fit refuses it (with what to do instead)
_REPLACED = {
    "iterator_train": (GraphBatchIterator, "crysk batches the graphs on the device itself; set batch_size"),
    "iterator_valid": (GraphBatchIterator, "crysk batches the graphs on the device itself; set batch_size"),
    "dataset": (GraphDataset, "crysk builds its datasets from the graphs"),
    "predict_nonlinearity": ("auto", "predictions are the network outputs in the targets' units"),
    "warm_start": (False, "use partial_fit to continue training, or warm_start_from= to start from weights"),
}
_REPLACED_PREFIXES = ("iterator_train__", "iterator_valid__", "dataset__")
# the fit parameters crysk's fit and partial_fit understand (skorch adds _routing_method itself)
_VALIDATION_KEYS = ("X_valid", "y_valid")


def _same(value: Any, default: Any) -> bool:
    """Whether ``value`` is ``default``: the same object, or an equal plain value."""
    if value is default:
        return True
    plain = (bool, int, float, str, type(None))
    return type(value) is type(default) and isinstance(value, plain) and value == default


def _is_estimator(obj: Any) -> bool:
    return hasattr(obj, "fit") and hasattr(obj, "get_params") and not isinstance(obj, type)


def _check_targets(y: Any, n: int, name: str = "y") -> np.ndarray:
    if y is None:
        raise ValueError(f"{name} is required: this estimator is supervised")
    y = np.asarray(y, dtype=np.float64) if not hasattr(y, "to_numpy") else y.to_numpy(dtype=np.float64)
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


class CrystalNet(NeuralNet):
    """Machinery shared by every crysk network estimator (not used directly).

    Input handling (structures or ``CrystalGraphs``), repeatable seeding, the
    validation split, device-resident batching, warm starts, freezing and
    the optimiser set-up. :class:`CrystalNetRegressor` adds targets;
    :class:`~crysk.CrysAE` trains without them.

    Parameters
    ----------
    module : type of torch.nn.Module, optional
        The network class; each subclass sets its own.
    radius, max_num_nbr, lr, optimizer, momentum, weight_decay, lr_milestones, gamma, batch_size, max_epochs, \
validation_fraction, warm_start_from, freeze, warm_start_strict, lr_transferred, malloc_tuning, n_jobs, device, \
random_state, verbose
        As for :class:`~crysk.CGCNNRegressor`.
    **kwargs
        Other skorch ``NeuralNet`` arguments.
    """

    #: history key that is True on an epoch whose weights are kept (best validation epoch)
    _monitor = "valid_loss_best"
    #: the network class a subclass builds unless ``module=`` says otherwise
    _default_module: Any = None

    def __init__(
        self,
        module: Any = None,
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
        lr_transferred: float | None = None,
        malloc_tuning: bool = True,
        n_jobs: int | None = None,
        device: str = "cpu",
        random_state: int | None = None,
        verbose: int = 0,
        **kwargs: Any,
    ):
        for name, value in self._skorch_defaults().items():
            if name != "module":
                kwargs.setdefault(name, value)
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
        self.lr_transferred = lr_transferred
        self.malloc_tuning = malloc_tuning
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ params
    def _skorch_defaults(self) -> dict[str, Any]:
        """skorch's own arguments with crysk's values for them (they stay out of ``get_params`` unless changed)."""
        return {
            "module": self._default_module,
            "criterion": None,
            "train_split": None,
            "callbacks": None,
            "iterator_train": GraphBatchIterator,
            "iterator_valid": GraphBatchIterator,
            "dataset": GraphDataset,
            "predict_nonlinearity": "auto",
            "warm_start": False,
            "compile": False,
            "use_caching": "auto",
            "torch_load_kwargs": None,
        }

    def _get_param_names(self) -> list[str]:
        # skorch takes every instance attribute not ending in "_" as a parameter, its own bookkeeping
        # (_params_to_validate) included. crysk's parameters are its constructor's, plus the skorch
        # arguments given a value other than crysk's and the routed ones (module__*, optimizer__*, ...)
        signature = inspect.signature(type(self).__init__).parameters.values()
        names = {p.name for p in signature if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        attrs = vars(self)
        names |= {k for k, d in self._skorch_defaults().items() if k in attrs and not _same(attrs[k], d)}
        names |= {k for k in attrs if "__" in k and not k.startswith("_")}
        names |= {k for k in getattr(self, "_params_to_validate", ()) if k in attrs}
        return sorted(names)

    def set_params(self, **params: Any) -> "CrystalNet":
        """Set parameters (scikit-learn's ``set_params``; nothing is checked or built here).

        Parameters
        ----------
        **params
            Constructor parameters by name, skorch arguments (``criterion``,
            ``train_split``, ``callbacks`` ...) and routed ones
            (``optimizer__nesterov``, ``callbacks__print_log__sink`` ...).

        Returns
        -------
        self
        """
        skorch_args = {k: params.pop(k) for k in list(params) if k in self._skorch_defaults() and k != "callbacks"}
        # skorch's arguments at crysk's values are not in get_params, so BaseEstimator.set_params would
        # refuse them; they are plain attributes, read when fitting
        for name, value in skorch_args.items():
            setattr(self, name, value)
        return super().set_params(**params) if params else self

    def __repr__(self) -> str:
        # scikit-learn's repr (the parameters the user changed), not skorch's list of module attributes
        from sklearn.base import BaseEstimator

        return BaseEstimator.__repr__(self)

    def __sklearn_clone__(self) -> "CrystalNet":
        """Clone as scikit-learn does, passing a fitted ``warm_start_from`` estimator by reference.

        A fitted estimator given as ``warm_start_from`` is the source of the
        weights, not a sub-estimator to refit: ``clone`` would turn it into
        an unfitted copy, and every clone made by ``cross_val_score``,
        ``GridSearchCV`` or :func:`crysk.evaluation.compare` would then have
        nothing to start from. Its weights are read at each ``fit``.

        Returns
        -------
        CrystalNet
            An unfitted estimator with the same parameters.
        """
        params = self.get_params(deep=False)
        source = params.get("warm_start_from")
        if not _is_estimator(source):
            return super().__sklearn_clone__()
        new_params = {k: v if k == "warm_start_from" else clone(v, safe=False) for k, v in params.items()}
        new = type(self)(**new_params)
        if hasattr(self, "_metadata_request"):
            import copy

            new._metadata_request = copy.deepcopy(self._metadata_request)
        return new

    def _module_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _check_params(self, fit_params: dict[str, Any] | None = None) -> None:
        """Check every parameter (and the fit parameters); called by ``fit``, never by ``__init__``."""
        for name in ("batch_size", "max_num_nbr"):
            check_number(name, getattr(self, name), integer=True, low=1)
        check_number("max_epochs", self.max_epochs, integer=True, low=0, hint=" (0 only initialises)")
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("lr_transferred", self.lr_transferred, low=0, low_open=True, allow_none=True)
        check_number("radius", self.radius, low=0, low_open=True, hint=" (Å)")
        check_number("gamma", self.gamma, low=0, low_open=True)
        check_number("momentum", self.momentum, low=0)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("validation_fraction", self.validation_fraction, low=0, high=1, high_open=True, allow_none=True)
        if not isinstance(self.malloc_tuning, bool):
            raise ValueError(f"malloc_tuning must be True or False, got {self.malloc_tuning!r}")
        if isinstance(self.optimizer, str):
            check_option("optimizer", self.optimizer.lower(), sorted(_OPTIMIZERS), hint=" (or a torch optimizer class)")
        milestones = self.lr_milestones
        if milestones is not None:
            try:
                milestones = list(milestones)
            except TypeError:
                raise ValueError(f"lr_milestones must be a sequence of epochs (e.g. (100,)) or None, got {milestones!r}")
            for m in milestones:
                check_number("each of lr_milestones", m, integer=True, low=1)
        if self.lr_transferred is not None and self.warm_start_from is None:
            raise ValueError("lr_transferred applies to transferred weights: set warm_start_from too, or leave it None")
        for name, (default, instead) in _REPLACED.items():
            if not _same(getattr(self, name, default), default):
                raise ValueError(f"{name}={getattr(self, name)!r} is not used by crysk estimators: {instead}")
        routed = sorted(k for k in vars(self) if k.startswith(_REPLACED_PREFIXES))
        if routed:
            raise ValueError(f"{routed} are not used by crysk estimators: crysk batches the graphs itself")
        unknown = sorted(set(fit_params or {}) - set(self._fit_param_names()) - {"_routing_method"})
        if unknown:
            raise TypeError(f"unexpected fit parameters: {unknown}; {type(self).__name__}.fit takes {self._fit_param_names()}")

    def _fit_param_names(self) -> tuple[str, ...]:
        return _VALIDATION_KEYS

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
        # built from nothing but constants: get_params lists the default callbacks, so building them
        # must never read (or check) a parameter; the LR schedule reads lr_milestones when training starts
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            *self._extra_callbacks(),
            ("lr_scheduler", NetMultiStepLR()),
            ("restore_best", RestoreBestWeights(self._monitor)),
            ("print_log", PrintLog()),
        ]

    def _extra_callbacks(self) -> list:
        return []

    def initialize(self) -> "CrystalNet":
        """Build callbacks, module, criterion and optimiser, and the seeded shuffling order.

        Returns
        -------
        self
        """
        self._shuffle_rng = np.random.default_rng(int(self._seeds()[2]))
        return super().initialize()

    def initialize_module(self) -> "CrystalNet":
        """Build the torch module (seeded), warm-start it and freeze what ``freeze`` names.

        Returns
        -------
        self
        """
        seed = int(self._seeds()[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.module(**self._module_kwargs(), **self.get_params_for("module"))
        self.transfer_report_ = None
        if self.warm_start_from is not None:
            source = read_weights(self.warm_start_from)
            self.transfer_report_ = transfer_weights(
                module, source, strict=self.warm_start_strict, expected_settings=self.graph_settings
            )
        self.frozen_parameters_ = resolve_freeze(module, self.freeze)
        frozen = set(self.frozen_parameters_)
        transferred = set(self.transfer_report_.loaded) if self.transfer_report_ else set()
        fresh = [name for name in self.frozen_parameters_ if name not in transferred]
        if fresh:
            warnings.warn(
                f"freeze={self.freeze!r} keeps {len(fresh)} freshly initialised (not transferred) tensors fixed, "
                f"e.g. {fresh[:3]}: they will stay random. Check warm_start_from and the layer widths",
                UserWarning,
                stacklevel=2,
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

    def initialize_criterion(self) -> "CrystalNet":
        """The ``criterion`` class given (with ``criterion__*`` arguments), or the estimator's own loss.

        Returns
        -------
        self
        """
        if self.criterion is None:
            self.criterion_ = self._default_criterion()
            return self
        return super().initialize_criterion()

    def _default_criterion(self) -> torch.nn.Module | None:
        """The loss used when ``criterion`` is None (None: the estimator computes its own in ``get_loss``)."""
        return None

    def initialize_optimizer(self, triggered_directly: Any = None) -> "CrystalNet":
        """Optimiser over the trainable parameters, with ``momentum``/``weight_decay``.

        Parameters
        ----------
        triggered_directly : object, optional
            Unused; kept for skorch's signature.

        Returns
        -------
        self
        """
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

    def get_dataset(self, X: Any, y: Any = None) -> GraphDataset:
        """Wrap graphs (already featurized) into a device-resident dataset.

        Parameters
        ----------
        X : CrystalGraphs or GraphDataset
            Featurized crystals (or an already built dataset, returned as is).
        y : numpy.ndarray, optional
            Scaled targets.

        Returns
        -------
        GraphDataset
        """
        if isinstance(X, GraphDataset):
            return X
        return GraphDataset.from_graphs(X, y, self.device)

    def get_split_datasets(
        self, X: Any, y: Any = None, X_valid: Any = None, y_valid: Any = None, **fit_params: Any
    ) -> tuple[GraphDataset, GraphDataset | None]:
        """Training and validation datasets.

        The validation set is, in this order: ``X_valid``/``y_valid`` given to
        ``fit`` or ``partial_fit``; what ``train_split`` returns, if set;
        else a seeded ``validation_fraction`` of ``X``.

        Parameters
        ----------
        X : CrystalGraphs or GraphDataset
            Featurized crystals (or an already built dataset).
        y : numpy.ndarray, optional
            Scaled targets.
        X_valid : CrystalGraphs or GraphDataset, optional
            Featurized validation crystals given to ``fit``/``partial_fit``.
        y_valid : numpy.ndarray, optional
            Scaled validation targets.
        **fit_params
            Passed to ``train_split``.

        Returns
        -------
        dataset_train, dataset_valid : GraphDataset, GraphDataset or None
        """
        dataset = self.get_dataset(X, y)
        if X_valid is not None:
            return dataset, self.get_dataset(X_valid, y_valid)
        if self.train_split is not None:
            fit_params.pop("_routing_method", None)
            train, valid = self.train_split(dataset, y, **fit_params)
            return as_graph_dataset(train), None if valid is None else as_graph_dataset(valid)
        vf = self.validation_fraction
        n = len(dataset)
        n_valid = int(round(n * vf)) if vf else 0
        if n_valid == 0:
            return dataset, None
        if n - n_valid < 1:
            raise ValueError(f"validation_fraction={vf} leaves no training crystals out of {n}")
        order = np.random.default_rng(int(self._seeds()[1])).permutation(n)
        return dataset.subset(np.sort(order[n_valid:])), dataset.subset(np.sort(order[:n_valid]))

    def get_iterator(self, dataset: Any, training: bool = False) -> GraphBatchIterator:
        """Batches gathered on the device; training batches are shuffled with the seeded RNG.

        Parameters
        ----------
        dataset : GraphDataset (or a torch ``Subset`` of one)
            The crystals to iterate over.
        training : bool, default=False
            Shuffle with the seeded generator (training) or keep the order.

        Returns
        -------
        GraphBatchIterator
        """
        dataset = as_graph_dataset(dataset)
        batch_size = len(dataset) if self.batch_size == -1 else self.batch_size
        if training:
            return GraphBatchIterator(dataset, batch_size, shuffle=True, generator=self._shuffle_rng)
        return GraphBatchIterator(dataset, batch_size, shuffle=False)

    def infer(self, x: Any, **fit_params: Any) -> Any:
        """Run the module on a :class:`GraphBatch`.

        Parameters
        ----------
        x : GraphBatch
            One batch of crystals.
        **fit_params
            The validation set (``X_valid``/``y_valid``) travels with skorch's
            fit parameters and is not the module's business.

        Returns
        -------
        torch.Tensor or tuple of torch.Tensor
        """
        if isinstance(x, GraphBatch):
            return self.module_(**x.tensors)
        return super().infer(x, **fit_params)

    def check_data(self, X: Any, y: Any) -> None:
        """Nothing to do: ``fit`` checks inputs and targets before featurizing.

        Parameters
        ----------
        X, y : ignored
            Ignored.
            Ignored.
        """

    def fit_loop(self, X: Any, y: Any = None, epochs: int | None = None, **fit_params: Any) -> "CrystalNet":
        """skorch's training loop, inside :func:`crysk._malloc.malloc_tuning` on the CPU.

        Parameters
        ----------
        X : CrystalGraphs or GraphDataset
            Featurized crystals (or an already built dataset).
        y : numpy.ndarray, optional
            Scaled targets.
        epochs : int, optional
            Defaults to ``max_epochs``.
        **fit_params
            ``X_valid``/``y_valid`` (prepared by ``partial_fit``).

        Returns
        -------
        self
        """
        tune = self.malloc_tuning is True and str(self.device).startswith("cpu")
        with malloc_tuning(tune):
            return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def on_epoch_end(self, net: "CrystalNet", **kwargs: Any) -> None:
        """Let the module drop the per-edge buffers it keeps between training steps.

        Parameters
        ----------
        net : CrystalNet
            This estimator (skorch's callback signature).
        **kwargs
            skorch's epoch arguments.
        """
        super().on_epoch_end(net, **kwargs)
        release = getattr(self.module_, "release_workspace", None)
        if release is not None:
            release()

    # ------------------------------------------------------------------ fitted state
    def _check_fitted(self) -> None:
        if not getattr(self, "initialized_", False) or not hasattr(self, "graph_settings_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: Any) -> Path:
        """Save weights, hyperparameters, featurizer settings and target scaler.

        The file is written atomically and loads with
        ``torch.load(weights_only=True)``; use :func:`crysk.load`,
        ``from_pretrained`` or ``warm_start_from=path`` to use it.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (its folder is created if needed).

        Returns
        -------
        pathlib.Path
            The path written.
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
            **self._checkpoint_state(),
        }
        return save_checkpoint(path, payload)

    def _checkpoint_state(self) -> dict:
        """Fitted state besides the weights that a checkpoint must keep."""
        return {}

    def _restore_checkpoint_state(self, ckpt: dict) -> None:
        """Set the fitted attributes that :meth:`_checkpoint_state` saved."""

    @classmethod
    def from_pretrained(cls, path: Any, **params: Any) -> "CrystalNet":
        """Load a fitted estimator of this class from a checkpoint.

        Parameters
        ----------
        path : str or os.PathLike
            A crysk checkpoint, or for ``CGCNNRegressor`` an original CGCNN one.
        **params
            Hyperparameters to change after loading (e.g. ``device``).

        Returns
        -------
        CrystalNet
            A fitted estimator of this class.
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

        Returns
        -------
        self
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


_REGISTRY: dict[str, type] = {}


def register_estimator(cls: type) -> type:
    """Make ``cls`` loadable from checkpoints by its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


_SIMPLE = (bool, int, float, str, type(None))


def _plain_params(est) -> dict:
    """The hyperparameters worth storing: plain values only (no classes or objects)."""
    skip = {"warm_start_from", "freeze", "callbacks", "module", "criterion", "dataset", "iterator_train",
            "iterator_valid", "train_split", "verbose", "n_jobs", "malloc_tuning"}
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
        A crysk checkpoint or an original CGCNN one, as read by :func:`crysk.transfer.read_weights`.
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

        cls = _REGISTRY["CGCNNRegressor"]
        state = source.state_dict
        n_conv = len({k.split(".")[1] for k in state if k.startswith("convs.")})
        fcs = len({k.split(".")[1] for k in state if k.startswith("fcs.")})
        shape = dict(
            atom_fea_len=int(state["embedding.weight"].shape[0]),
            n_conv=n_conv,
            h_fea_len=int(state["conv_to_fc.weight"].shape[0]),
            n_h=fcs + 1,
        )
        est = cls(**{**shape, **params})
        if est.graph_settings != _settings(**CGCNN_SETTINGS):
            raise CheckpointError(f"{source.description} needs radius 8.0 and max_num_nbr 12 (CGCNN's defaults)")
        n_outputs = int(state["fc_out.weight"].shape[0])
        norm = ckpt.get("normalizer") or {"mean": 0.0, "std": 1.0}
        scale = {"kind": "standard", "mean": [float(norm["mean"])] * n_outputs, "scale": [float(norm["std"])] * n_outputs}
        est._restore_checkpoint_state({"n_outputs": n_outputs, "y_ndim": 1, "target_scaler": scale})
        best_epoch = ckpt.get("epoch")
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
