"""CGCNNRegressor and CGCNNClassifier: CGCNN as scikit-learn estimators."""

from __future__ import annotations

from typing import Any

from ..nn import CGCNN
from .classifier import CrystalNetClassifier
from .registry import register_estimator
from .regressor import CrystalNetRegressor

__all__ = ["CGCNNRegressor", "CGCNNClassifier"]


class _CGCNNShape:
    """The CGCNN network a CGCNN estimator builds: its width parameters and ``n_outputs_`` outputs."""

    _default_module = CGCNN

    def _module_kwargs(self) -> dict[str, Any]:
        return {
            "atom_fea_len": self.atom_fea_len,
            "n_conv": self.n_conv,
            "h_fea_len": self.h_fea_len,
            "n_h": self.n_h,
            "n_out": self.n_outputs_,
            "radius": self.radius,
        }


@register_estimator
class CGCNNRegressor(_CGCNNShape, CrystalNetRegressor):
    """Crystal graph convolutional neural network regressor (CGCNN / TL-CGCNN).

    A skorch ``NeuralNetRegressor`` that takes crystal structures (or
    ``CrystalGraphs``) and fits like any scikit-learn regressor. Defaults are
    those of the CGCNN code and Table S1 of the TL-CGCNN paper.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings.
    n_conv : int, default=3
        Number of gated graph convolutions.
    h_fea_len : int, default=128
        Width of the hidden layer(s) after pooling (the paper uses 64 when
        fine-tuning).
    n_h : int, default=1
        Number of hidden layers after pooling.
    radius : float, default=8.0
        Neighbour cut-off (Å); also the last Gaussian centre.
    max_num_nbr : int, default=12
        Nearest neighbours per atom.
    lr : float, default=0.01
        Initial learning rate (the paper uses 0.005 when fine-tuning).
    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, default="sgd"
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=0.0
        L2 penalty the optimiser applies to the weights.
    lr_milestones : sequence of int, default=(100,)
        Epochs at which the learning rate is multiplied by ``gamma``.
    gamma : float, default=0.1
        Factor applied to the learning rate at each of ``lr_milestones``.
    batch_size : int, "auto" or -1, default="auto"
        Crystals per training step. ``"auto"`` picks the power of two nearest
        to a 32nd of the training set, between 16 and 256 (CGCNN's batch),
        so that a few hundred crystals still get ~30 optimiser steps per
        epoch; the resolved value is ``batch_size_``
        (:func:`crysk.estimators.data.auto_batch_size`). ``256`` is the
        CGCNN code's and the TL-CGCNN paper's setting; -1: all crystals in
        one batch.
    max_epochs : int, default=100
        Epochs per ``fit`` (0 only initialises the network).
    validation_fraction : float or None, default=0.2
        Share of the training crystals held out to pick the best epoch
        (lowest validation MAE); its weights are restored after training.
        ``None`` or 0 trains on everything and keeps the last epoch.
    loss : {"mse", "l1"}, default="mse"
        Training loss on scaled targets (MSE as in the CGCNN code; the
        TL-CGCNN paper describes MAE).
    target_scaler : {"standard", "tanh", "source"}, None or transformer, default="standard"
        How targets are scaled for training (each target on its own);
        predictions are unscaled. ``"source"`` (with ``warm_start_from``)
        keeps the source model's fitted scaler instead of learning one from
        ``y``: use it to train a model further on more data of the **same**
        property, so that the transferred output layer starts from the
        source's predictions (a refitted scaler would shift them). For a
        new property keep ``"standard"``.
    missing_targets : {"raise", "ignore"}, default="raise"
        With several targets (2-D ``y``): ``"ignore"`` treats NaN as "not
        known for this crystal" and leaves it out of the loss, the scaling
        and the validation MAE, so a crystal with some targets trains on
        those; ``"raise"`` refuses NaN.
    target_weights : array-like of shape (n_targets,), optional
        Weight of each target in the (masked) loss; default all 1.
    warm_start_from : str, os.PathLike or fitted estimator, optional
        Start from these weights (transfer learning): the name of a
        pretrained model shipped with crysk (``"cgcnn-mp-eform"``, see
        :mod:`crysk.pretrained`; a path that exists wins over a name), a crysk
        checkpoint (``save_pretrained``), a fitted crysk estimator, an
        original CGCNN ``.pth.tar`` file, the CrysXPP authors' predictor
        ``model_best.pth.tar`` or their released CrysAE ``model_pretrain.pth``.
        Tensors are matched by name and shape; the rest (e.g. a head of
        another width) starts fresh. Read at every ``fit``; the outcome is in
        ``transfer_report_``. The encoder is never cut short silently: where
        the source's ``atom_fea_len`` or ``n_conv`` differs from this
        estimator's and the parameter is at its default, the network is built
        like the source's (``adopted_params_``; e.g. the original CGCNN
        formation-energy model has 4 convolutions); where you set another
        value, ``fit`` raises :class:`~crysk.CheckpointError` naming the
        parameters to set, unless ``warm_start_include`` picks the layers.
    freeze : str or list of str, optional
        Parameters kept fixed during training: ``"embedding"``, ``"convs"``,
        ``"convs[:k]"``, ``"all-but-head"`` (the paper's layer freezing: only
        ``fc_out`` trains), or parameter-name prefixes/patterns. Batch-norm
        statistics inside frozen layers are frozen too.
    warm_start_strict : bool, default=False
        Raise :class:`~crysk.CheckpointError` unless every tensor
        matches.
    warm_start_include : str or list of str, optional
        Which layers to take from ``warm_start_from``, in the language of
        ``freeze`` (``"embedding"``, ``"convs"``, ``"convs[:k]"``,
        ``"all-but-head"``, name prefixes/patterns; a layer's batch-norm
        statistics come with it). The rest starts fresh and is listed in
        ``transfer_report_.initialized``. ``None`` (default) takes every
        tensor that matches by name and shape. ``"convs"`` is the CrysXPP
        authors' recipe: only the convolutions of a pretrained encoder, with
        a fresh embedding.
    lr_transferred : float, optional
        Learning rate for the transferred tensors (``lr`` then applies to the
        freshly initialised ones); by default all use ``lr``. Needs
        ``warm_start_from``.
    malloc_tuning : bool, default=True
        On glibc Linux, keep freed memory inside the process while a CPU fit
        runs, so the large per-edge tensors are not page-faulted afresh at
        every step (figures in ``benchmarks/RESULTS.md``); malloc's
        start-up settings are restored and the memory handed back when the
        fit ends (see :func:`crysk._malloc.malloc_tuning`). False leaves
        malloc alone, e.g. when other threads of a service allocate during
        a fit.
    n_jobs : int, optional
        Processes for featurizing structures.
    n_threads : int, optional
        Torch threads during ``fit`` and ``predict`` (torch's own setting is
        restored afterwards). ``None``: the cores not busy with other work
        when the call starts, checked again at the start of each training
        epoch so that a long fit takes up cores other work leaves free (other
        processes' runnable threads, see :func:`crysk._threads.free_cores`),
        at most torch's own setting, since OpenMP threads that share busy
        cores slow training down several-fold; ``-1``: torch's setting.
        Affects speed only (and the last bits of floating-point sums).
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``. The training data moves there once.
    random_state : int, optional
        Seed for weights, validation split and shuffling; with a seed two fits
        on the CPU give identical predictions.
    verbose : int, default=0
        1 prints a table per epoch.
    **kwargs
        Other skorch ``NeuralNet`` arguments (e.g. ``callbacks``).

    Attributes
    ----------
    module_ : crysk.nn.CGCNN
        The trained network.
    target_scaler_ : transformer
        Fitted target scaler.
    n_outputs_ : int
    best_epoch_ : int or None
        Epoch whose weights were restored (None without validation).
    batch_size_ : int
        The batch size the last fit trained with (``batch_size`` resolved).
    adopted_params_ : dict
        Encoder hyperparameters (``atom_fea_len``, ``n_conv``) taken from
        ``warm_start_from`` because they were left at their defaults; empty
        when the encoder is built from the parameters as given.
    transfer_report_ : crysk.transfer.TransferReport or None
        What ``warm_start_from`` loaded and what started fresh.
    frozen_parameters_ : list of str
        Names of the parameters ``freeze`` kept fixed.
    history_ : skorch History
        Per-epoch losses and ``valid_mae`` (with several targets also
        ``valid_mae_0``, ``valid_mae_1``, ... per target).

    Examples
    --------
    >>> from crysk import CGCNNRegressor
    >>> from crysk.demo import make_demo_data
    >>> X, y = make_demo_data(60)
    >>> model = CGCNNRegressor(max_epochs=2, random_state=0).fit(X, y)
    >>> model.predict(X[:3]).shape
    (3,)
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
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
        loss: str = "mse",
        target_scaler: Any = "standard",
        missing_targets: str = "raise",
        target_weights: Any = None,
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
        kwargs.setdefault("module", self._default_module)
        super().__init__(
            radius=radius,
            max_num_nbr=max_num_nbr,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            lr_milestones=lr_milestones,
            gamma=gamma,
            batch_size=batch_size,
            max_epochs=max_epochs,
            validation_fraction=validation_fraction,
            loss=loss,
            target_scaler=target_scaler,
            missing_targets=missing_targets,
            target_weights=target_weights,
            warm_start_from=warm_start_from,
            freeze=freeze,
            warm_start_strict=warm_start_strict,
            warm_start_include=warm_start_include,
            lr_transferred=lr_transferred,
            malloc_tuning=malloc_tuning,
            n_jobs=n_jobs,
            n_threads=n_threads,
            device=device,
            random_state=random_state,
            verbose=verbose,
            **kwargs,
        )
        self.atom_fea_len = atom_fea_len
        self.n_conv = n_conv
        self.h_fea_len = h_fea_len
        self.n_h = n_h


@register_estimator
class CGCNNClassifier(_CGCNNShape, CrystalNetClassifier):
    """Crystal graph convolutional neural network classifier (CGCNN's classification task).

    The network of :class:`CGCNNRegressor` with one output per class (two
    for a binary problem, the layout of the original CGCNN classifier, whose
    ``semi-metal-classification.pth.tar`` :func:`crysk.load` reads as a
    ``CGCNNClassifier``), trained with the cross-entropy. Labels may be of
    any type (strings, integers, booleans); ``classes_`` holds them sorted,
    and ``predict_proba`` has one column per class in that order. The
    weights of the epoch with the lowest validation log-loss are kept.
    Warm starts, freezing, checkpoints, pickling and grid searches work as
    for :class:`CGCNNRegressor`; a warm start from a regressor (or a
    regression checkpoint) takes the encoder and leaves the output layer
    ``fc_out`` fresh, whatever its shape.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings.
    n_conv : int, default=3
        Number of gated graph convolutions.
    h_fea_len : int, default=128
        Width of the hidden layer(s) after pooling.
    n_h : int, default=1
        Number of hidden layers after pooling.
    radius : float, default=8.0
        Neighbour cut-off (Å); also the last Gaussian centre.
    max_num_nbr : int, default=12
        Nearest neighbours per atom.
    lr : float, default=0.01
        Initial learning rate.
    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, default="sgd"
        The optimiser.
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=0.0
        L2 penalty the optimiser applies to the weights.
    lr_milestones : sequence of int, default=(100,)
        Epochs at which the learning rate is multiplied by ``gamma``.
    gamma : float, default=0.1
        Factor applied to the learning rate at each of ``lr_milestones``.
    batch_size : int, "auto" or -1, default="auto"
        Crystals per training step. ``"auto"`` picks the power of two nearest
        to a 32nd of the training set, between 16 and 256 (CGCNN's batch),
        so that a few hundred crystals still get ~30 optimiser steps per
        epoch; the resolved value is ``batch_size_``
        (:func:`crysk.estimators.data.auto_batch_size`). ``256`` is the
        CGCNN code's and the TL-CGCNN paper's setting; -1: all crystals in
        one batch.
    max_epochs : int, default=100
        Epochs per ``fit`` (0 only initialises the network).
    validation_fraction : float or None, default=0.2
        Share of the training crystals held out (stratified by class) to
        pick the best epoch: the lowest validation log-loss, unweighted
        whatever ``class_weight`` says (the history also records
        ``valid_acc``). ``None`` or 0 trains on everything and keeps the
        last epoch.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the training loss: None weighs every
        crystal alike, ``"balanced"`` weighs each class inversely to its
        frequency, a dict maps labels to weights (others weigh 1).
    warm_start_from : str, os.PathLike or fitted estimator, optional
        Start from these weights, as for :class:`CGCNNRegressor`. From a
        regression model the output layer is never taken.
    freeze : str or list of str, optional
        Parameters kept fixed during training, as for :class:`CGCNNRegressor`.
    warm_start_strict : bool, default=False
        Raise :class:`~crysk.CheckpointError` unless every tensor matches.
    warm_start_include : str or list of str, optional
        Which layers to take from ``warm_start_from``, as for :class:`CGCNNRegressor`.
    lr_transferred : float, optional
        Learning rate for the transferred tensors (needs ``warm_start_from``).
    malloc_tuning : bool, default=True
        Keep freed memory in the process during a CPU fit, as for :class:`CGCNNRegressor`.
    n_jobs : int, optional
        Processes for featurizing structures.
    n_threads : int, optional
        Torch threads during ``fit`` and ``predict``, see
        :class:`~crysk.CGCNNRegressor` (default: the cores not busy with other work).
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``.
    random_state : int, optional
        Seed for weights, validation split and shuffling.
    verbose : int, default=0
        1 prints a table per epoch.
    **kwargs
        Other skorch ``NeuralNet`` arguments (e.g. ``callbacks``).

    Attributes
    ----------
    classes_ : numpy.ndarray of shape (n_classes,)
        The labels, sorted; the order of ``predict_proba``'s columns.
    class_weight_ : numpy.ndarray of shape (n_classes,)
        The weight of each class in the training loss.
    module_ : crysk.nn.CGCNN
        The trained network (``n_classes`` outputs: the logits).
    n_outputs_ : int
        Number of network outputs (= number of classes).
    best_epoch_ : int or None
        Epoch whose weights were restored (None without validation).
    batch_size_ : int
        The batch size the last fit trained with (``batch_size`` resolved).
    adopted_params_ : dict
        Encoder hyperparameters (``atom_fea_len``, ``n_conv``) taken from
        ``warm_start_from`` because they were left at their defaults; empty
        when the encoder is built from the parameters as given.
    transfer_report_ : crysk.transfer.TransferReport or None
        What ``warm_start_from`` loaded and what started fresh.
    frozen_parameters_ : list of str
        Names of the parameters ``freeze`` kept fixed.
    history_ : skorch History
        Per-epoch losses, ``valid_log_loss`` and ``valid_acc``.

    Examples
    --------
    >>> from crysk import CGCNNClassifier
    >>> from crysk.demo import make_demo_data
    >>> X, y = make_demo_data(60)
    >>> labels = (y > y.mean()).astype(int)
    >>> model = CGCNNClassifier(max_epochs=2, random_state=0).fit(X, labels)
    >>> model.predict_proba(X[:3]).shape
    (3, 2)
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
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
        class_weight: Any = None,
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
        kwargs.setdefault("module", self._default_module)
        super().__init__(
            radius=radius,
            max_num_nbr=max_num_nbr,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            lr_milestones=lr_milestones,
            gamma=gamma,
            batch_size=batch_size,
            max_epochs=max_epochs,
            validation_fraction=validation_fraction,
            class_weight=class_weight,
            warm_start_from=warm_start_from,
            freeze=freeze,
            warm_start_strict=warm_start_strict,
            warm_start_include=warm_start_include,
            lr_transferred=lr_transferred,
            malloc_tuning=malloc_tuning,
            n_jobs=n_jobs,
            n_threads=n_threads,
            device=device,
            random_state=random_state,
            verbose=verbose,
            **kwargs,
        )
        self.atom_fea_len = atom_fea_len
        self.n_conv = n_conv
        self.h_fea_len = h_fea_len
        self.n_h = n_h
