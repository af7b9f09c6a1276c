"""CrystalNet: the training machinery shared by every crysk network estimator.

Parameter checks, input handling (structures or ``CrystalGraphs``), seeding,
warm starts and freezing, the optimiser and learning-rate schedule, the
scoped malloc tuning and the checkpoint methods live here, so each model class
only says which torch module to build. The scikit-learn parameter contract is
:class:`~crysk.estimators.params.ParamsMixin`, the data hooks
:class:`~crysk.estimators.data.GraphDataMixin`, training on targets
:class:`~crysk.estimators.supervised.SupervisedNet`, with the targets'
handling in :class:`~crysk.estimators.regressor.CrystalNetRegressor` and
:class:`~crysk.estimators.classifier.CrystalNetClassifier`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from skorch import NeuralNet
from skorch.callbacks import EpochTimer, PassthroughScoring, PrintLog

from .._malloc import malloc_tuning
from .. import _threads
from .._threads import resolve_n_threads, torch_threads
from .._warnings import warn_user
from .._validation import check_number, check_option
from ..distributed import broadcast_buffers, is_distributed, wrap_module
from ..checkpoints import CheckpointError, crysk_payload, read_weights, save_checkpoint
from ..featurizer import CrystalGraphFeaturizer, check_settings, graph_settings
from ..graphs import CrystalGraphs
from ..transfer import ENCODER_PARAMS, encoder_shape, resolve_freeze, transfer_weights, without_head
from .callbacks import NetMultiStepLR, RestoreBestWeights, ResumeSchedule, StopOnNonFinite, read_resume_state
from .data import GraphDataMixin
from .params import ParamsMixin
from .registry import from_pretrained_estimator, plain_params

__all__ = ["CrystalNet"]

logger = logging.getLogger("crysk")

_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

# the fit parameters crysk's fit and partial_fit understand (skorch adds _routing_method itself)
_VALIDATION_KEYS = ("X_valid", "y_valid")


class CrystalNet(ParamsMixin, GraphDataMixin, NeuralNet):
    """Machinery shared by every crysk network estimator (not used directly).

    Input handling (structures or ``CrystalGraphs``), repeatable seeding, the
    validation split, device-resident batching, warm starts, freezing and
    the optimiser set-up. :class:`CrystalNetRegressor` and
    :class:`CrystalNetClassifier` add targets; :class:`~crysk.CrysAE`
    trains without them.

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

    #: history key that is True on an epoch whose weights are kept (best validation epoch)
    _monitor = "valid_loss_best"
    #: the network class a subclass builds unless ``module=`` says otherwise
    _default_module: Any = None
    #: the DistributedDataParallel wrapper while a data-parallel fit runs (crysk.distributed)
    _ddp: Any = None

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
        batch_size: int | str = "auto",
        max_epochs: int = 100,
        validation_fraction: float | None = 0.2,
        warm_start_from: Any = None,
        freeze: Any = None,
        warm_start_strict: bool = False,
        warm_start_include: Any = None,
        lr_transferred: float | None = None,
        malloc_tuning: bool = True,
        n_jobs: int | None = None,
        n_threads: int | None = None,
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
        self.warm_start_include = warm_start_include
        self.lr_transferred = lr_transferred
        self.malloc_tuning = malloc_tuning
        self.n_jobs = n_jobs
        self.n_threads = n_threads
        self.random_state = random_state

    def _module_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _check_params(self, fit_params: dict[str, Any] | None = None) -> None:
        """Check every parameter (and the fit parameters); called by ``fit``, never by ``__init__``."""
        if not (self.batch_size == "auto" or self.batch_size == -1):
            check_number("batch_size", self.batch_size, integer=True, low=1, hint=' (or "auto", or -1 for all)')
        check_number("max_num_nbr", self.max_num_nbr, integer=True, low=1)
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
        self._check_skorch_arguments()
        unknown = sorted(set(fit_params or {}) - set(self._fit_param_names()) - {"_routing_method"})
        if unknown:
            raise TypeError(f"unexpected fit parameters: {unknown}; {type(self).__name__}.fit takes {self._fit_param_names()}")

    def _fit_param_names(self) -> tuple[str, ...]:
        return (*_VALIDATION_KEYS, "resume_from")

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
            ("stop_on_nonfinite", StopOnNonFinite()),
            ("resume", ResumeSchedule()),
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
        source = None if self.warm_start_from is None else read_weights(self.warm_start_from)
        self.adopted_params_ = {} if source is None else self._adopt_encoder(source)
        if self.adopted_params_:
            logger.info(
                "warm_start_from=%r: the network's encoder is built like the source's (%s) instead of the defaults",
                self.warm_start_from, ", ".join(f"{k}={v}" for k, v in self.adopted_params_.items()),
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.module(**{**self._module_kwargs(), **self.adopted_params_}, **self.get_params_for("module"))
        self.transfer_report_ = None
        if source is not None:
            task = getattr(self, "_task", None)
            if source.task is not None and task is not None and source.task != task:
                source = without_head(source, module, f"skipped: the output layer of a {source.task} model")
            self.transfer_report_ = transfer_weights(
                module,
                source,
                strict=self.warm_start_strict,
                expected_settings=self.graph_settings,
                include=self.warm_start_include,
            )
            self.transfer_report_.adopted = dict(self.adopted_params_)
        self.frozen_parameters_ = resolve_freeze(module, self.freeze)
        frozen = set(self.frozen_parameters_)
        transferred = set(self.transfer_report_.loaded) if self.transfer_report_ else set()
        fresh = [name for name in self.frozen_parameters_ if name not in transferred]
        if fresh:
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

    def _adopt_encoder(self, source: Any) -> dict[str, int]:
        """Encoder hyperparameters to take from a warm-start source (see ``warm_start_from``).

        A source whose encoder (``atom_fea_len``, ``n_conv``) differs from
        this estimator's parameters must not lose layers silently: where the
        parameter is at its constructor default, the source's value is
        adopted (the network is built like the source's; the parameter
        itself stays as given, so ``get_params`` and ``clone`` are
        unchanged); where the user set another value, this raises, naming
        what to set. With ``warm_start_include`` the user has chosen the
        layers to take, so explicit values are kept as they are.
        """
        import inspect

        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        adopted, conflicts = {}, []
        for name, value in encoder_shape(source.state_dict).items():
            if name not in ENCODER_PARAMS or not hasattr(self, name):
                continue
            mine = getattr(self, name)
            if mine == value:
                continue
            if name in defaults and mine == defaults[name]:
                adopted[name] = value
            elif self.warm_start_include is None:
                conflicts.append((name, mine, value))
        if conflicts:
            found = "; ".join(f"{n}={mine} here but {value} in the source" for n, mine, value in conflicts)
            fixes = ", ".join(f"{n}={value}" for n, _, value in conflicts)
            raise CheckpointError(
                f"warm_start_from={self.warm_start_from!r} ({source.description}) has another encoder: {found}. "
                f"Set {fixes} (or leave them at their defaults, which adopt the source's), or choose the layers "
                "to take with warm_start_include (e.g. 'convs[:2]'); layers are never dropped silently"
            )
        return adopted

    def _encoder_param(self, name: str) -> Any:
        """An encoder hyperparameter as the fitted network has it (adopted from a warm start, or the parameter)."""
        return getattr(self, "adopted_params_", {}).get(name, getattr(self, name))

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
        tune = self._malloc_tuning_applies()
        state = getattr(self, "_resume_state", None)
        if state is not None:
            # continue the interrupted run: its weights, and only the epochs it had left
            self.module_.load_state_dict(state.state_dict)
            epochs = max(self.max_epochs - state.epochs_done, 0)
        if is_distributed():
            if self.random_state is None:
                raise ValueError(
                    "data-parallel training needs random_state set (the same on every rank), so that every rank "
                    "draws the same validation split and batch order"
                )
            # made here, not in initialize_module: it broadcasts rank 0's weights, so every rank must get here.
            # object.__setattr__: skorch registers modules set on the net as parts of it (saved, cloned); the
            # wrapper is a view of module_ that lives only while this loop runs
            object.__setattr__(self, "_ddp", wrap_module(self.module_, self.device))
            norms = [m for m in self.module_.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
            for norm in norms:
                norm.sync_stats = True  # global-batch statistics (crysk.nn.layers.normalize)
        else:
            norms = []
        try:
            # the ceiling for the per-epoch re-check (on_epoch_begin): torch's setting outside the fit
            object.__setattr__(self, "_thread_cap", torch.get_num_threads())
            with malloc_tuning(tune), torch_threads(resolve_n_threads(self.n_threads)):
                super().fit_loop(X, y, epochs=epochs, **fit_params)
            if self._ddp is not None:
                broadcast_buffers(self.module_)  # every rank predicts with rank 0's running statistics
            return self
        finally:
            object.__setattr__(self, "_ddp", None)
            object.__setattr__(self, "_thread_cap", None)
            for norm in norms:
                del norm.sync_stats

    def _malloc_tuning_applies(self) -> bool:
        """Whether fits tune glibc's malloc: CPU training only (CUDA memory has its own caching allocator)."""
        return self.malloc_tuning is True and torch.device(self.device).type == "cpu"

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> "CrystalNet":
        """skorch's fit, with ``resume_from=`` (see the subclasses' ``fit``).

        Parameters
        ----------
        X : CrystalGraphs
            Featurized crystals (the subclasses featurize).
        y : numpy.ndarray, optional
            Targets as the subclass prepared them.
        **fit_params
            ``resume_from``: a checkpoint of this estimator class to continue
            from (read by :func:`~crysk.estimators.callbacks.read_resume_state`,
            applied by :class:`~crysk.estimators.callbacks.ResumeSchedule`);
            the rest goes to skorch.

        Returns
        -------
        self
        """
        resume_from = fit_params.pop("resume_from", None)
        self._resume_state = None if resume_from is None else read_resume_state(self, resume_from)
        try:
            return super().fit(X, y, **fit_params)
        finally:
            self._resume_state = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_compiled", None)  # a compiled module is rebuilt on first use, never pickled
        return state

    def _best_score(self) -> float | None:
        """The validation score of the kept (best) epoch, from the history; None without one."""
        key = self._monitor.removesuffix("_best")
        history = getattr(self, "history_", None) or []
        scores = [row[key] for row in history if row.get(self._monitor) and key in row]
        return float(scores[-1]) if scores else None

    def on_epoch_begin(self, net: "CrystalNet", **kwargs: Any) -> None:
        """With ``n_threads=None``, take up the cores that other work has left free since the last epoch.

        A fit of many epochs outlives the load it started under: a fit begun
        beside a busy process would otherwise keep one thread after that
        process ends, and one begun on an idle machine would keep sharing its
        cores with work started later. ``fit_loop`` restores torch's setting.

        Parameters
        ----------
        net : CrystalNet
            This estimator (skorch's callback signature).
        **kwargs
            skorch's epoch arguments.
        """
        super().on_epoch_begin(net, **kwargs)
        cap = getattr(self, "_thread_cap", None)
        if cap is None or self.n_threads is not None or self._ddp is not None or torch.device(self.device).type != "cpu":
            return
        wanted = max(1, min(cap, _threads.free_cores()))  # looked up here: tests pin it
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)

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
    def save_pretrained(self, path: Any, include_optimizer: bool = False) -> Path:
        """Save weights, hyperparameters, featurizer settings and target scaler.

        The file is written atomically and loads with
        ``torch.load(weights_only=True)``; use :func:`crysk.load`,
        ``from_pretrained`` or ``warm_start_from=path`` to use it.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (its folder is created if needed).
        include_optimizer : bool, default=False
            Also keep the optimiser's per-parameter state (Adam's moments:
            about twice the weights' size), so that ``fit(..., resume_from=path)``
            continues as if uninterrupted instead of restarting the moments
            from zero. Not needed for prediction or warm starts.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        self._check_fitted()
        payload = crysk_payload(
            type(self).__name__,
            # the network's real shape: encoder parameters adopted from a warm-start source replace the defaults
            {**plain_params(self), **getattr(self, "adopted_params_", {})},
            self.module_.state_dict(),
            self.graph_settings,
            self.best_epoch_,
            self._checkpoint_state(),
        )
        # with best_epoch, what fit(resume_from=...) needs to continue the run
        payload["best_score"] = self._best_score()
        if include_optimizer:
            payload["optimizer_state"] = self.optimizer_.state_dict()["state"]
        return save_checkpoint(path, payload)

    def _checkpoint_state(self) -> dict:
        """Fitted state besides the weights that a checkpoint must keep."""
        return {}

    def _restore_checkpoint_state(self, ckpt: dict) -> None:
        """Set the fitted attributes that :meth:`_checkpoint_state` saved."""

    @classmethod
    def from_pretrained(cls, name_or_path: Any, **params: Any) -> "CrystalNet":
        """An estimator of this class from a pretrained model's name or a checkpoint.

        Without changes to the network's shape this is the saved model,
        fitted and ready to predict. With them (e.g. ``h_fea_len=64``, a new
        head width for fine-tuning) it is an **unfitted** estimator with the
        source's architecture, your changes and
        ``warm_start_from=name_or_path``: ``fit`` on your data transfers
        every tensor that fits and starts the rest fresh.

        Parameters
        ----------
        name_or_path : str or os.PathLike
            A pretrained model's name (:func:`crysk.pretrained.available`)
            or a checkpoint path (a path that exists wins over a name): a
            crysk checkpoint, or for ``CGCNNRegressor`` an original CGCNN
            regression one (for ``CGCNNClassifier`` a classification one),
            or for ``CrysXPPRegressor`` the CrysXPP authors'
            ``model_best.pth.tar``.
        **params
            Hyperparameters to change (e.g. ``device``, or ``h_fea_len``).

        Returns
        -------
        CrystalNet
            A fitted estimator of this class, or an unfitted one set up to
            warm-start from ``name_or_path`` when ``params`` change the
            network's shape (``atom_fea_len``, ``n_conv``, ``h_fea_len``,
            ``n_h`` ...).

        Raises
        ------
        CheckpointError
            For an unknown name (the message lists the names), an unreadable
            file, or a fitted model of another class.
        """
        return from_pretrained_estimator(cls, name_or_path, **params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = self.random_state is None
        return tags
