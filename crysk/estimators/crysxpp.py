"""CrysXPPRegressor and CrysXPPClassifier: the explainable property predictor of the CrysXPP paper."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..elements import ATOMIC_PROPERTIES, cgcnn_feature_table, feature_names
from ..nn import CrysXPPNet
from .._validation import check_number, check_option
from .classifier import CrystalNetClassifier
from .registry import register_estimator
from .regressor import CrystalNetRegressor

__all__ = ["CrysXPPRegressor", "CrysXPPClassifier"]


class _CrysXPPModel:
    """What makes a CrysXPP estimator, whatever its task: the selector network, its L1 penalty, the explanations."""

    _default_module = CrysXPPNet
    _auto_batch_cap = 512  # the CrysXPP paper's batch size

    def _module_kwargs(self) -> dict[str, Any]:
        return {
            "atom_fea_len": self.atom_fea_len,
            "n_conv": self.n_conv,
            "h_fea_len": self.h_fea_len,
            "n_h": self.n_h,
            "n_out": self.n_outputs_,
            "feature_selector": bool(self.feature_selector),
            "radius": self.radius,
            "embedding_bias": bool(self.embedding_bias),
        }

    def _check_params(self, fit_params: dict[str, Any] | None = None) -> None:
        super()._check_params(fit_params)
        check_number("l1_penalty", self.l1_penalty, low=0)
        check_option("l1_reduction", self.l1_reduction, ["sum", "mean"])

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Prediction loss, plus ``l1_penalty · |ζ|₁`` (or its mean, ``l1_reduction``) while training (eq. 10).

        Parameters
        ----------
        y_pred : torch.Tensor or tuple
            The module's output for the batch.
        y_true : torch.Tensor or None
            Scaled targets of the batch (None for CrysAE).
        X : GraphBatch
            The batch.
        training : bool
            Whether this is a training step.
        """
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and self.feature_selector and self.l1_penalty:
            loss = loss + self.l1_penalty * self.module_.penalty(self.l1_reduction)
        return loss

    # ------------------------------------------------------------------ explanations
    def _selector(self) -> np.ndarray:
        self._check_fitted()
        selector = getattr(self.module_, "selector", None)
        if selector is None:
            raise AttributeError(f"this {type(self).__name__} was fitted with feature_selector=False: it has no selector")
        return selector.weight.detach().cpu().numpy().astype(np.float64)

    @property
    def selector_weights_(self) -> pd.Series:
        """The selector weight ``ζ`` of each of the 92 element-feature dimensions."""
        return pd.Series(self._selector(), index=feature_names(), name="weight")

    @property
    def feature_importances_(self) -> pd.Series:
        """Importance of each atomic property: the mean of ``|ζ|`` over its categories.

        The mean, not the sum, so that properties with many categories (group
        number has 19, block 4) do not rank higher merely for having more
        weights: an untrained selector (all ones) gives every property 1.0.
        A value is the average factor by which the selector scales the
        property's one-hot input, whichever category an atom has. For the
        sums (the paper's per-property totals) use
        ``property_importances("sum")``; the raw per-category weights are
        :attr:`selector_weights_`.

        Returns
        -------
        pandas.Series
            Indexed by the property labels of Table 1 of the paper, in table order.
        """
        return self.property_importances("mean")

    def property_importances(self, reduction: str = "mean") -> pd.Series:
        """``|ζ|`` of each atomic property's categories, reduced to one number.

        Parameters
        ----------
        reduction : {"mean", "sum", "max"}, default="mean"
            ``"mean"`` (what :attr:`feature_importances_` gives) is
            comparable across properties with different numbers of
            categories; ``"sum"`` is the total selector weight of the
            property, which grows with its number of categories; ``"max"``
            is its most strongly passed category.

        Returns
        -------
        pandas.Series
            Indexed by the property labels of Table 1 of the paper, in table order.

        Raises
        ------
        ValueError
            If ``reduction`` is not one of the above.
        """
        reducers = {"mean": np.mean, "sum": np.sum, "max": np.max}
        if reduction not in reducers:
            raise ValueError(f"reduction must be one of {sorted(reducers)}, got {reduction!r}")
        w = np.abs(self._selector())
        return pd.Series(
            [float(reducers[reduction](w[p.slice])) for p in ATOMIC_PROPERTIES],
            index=[p.label for p in ATOMIC_PROPERTIES],
            name="importance",
        )

    def explain(self, X: Any) -> pd.DataFrame:
        """Selector weight of every atom's category of every atomic property.

        For each atom, each of the nine properties has one active category
        (its one-hot position); the selector weight of that position is how
        much the model lets that fact about the atom through (Figs. 4-6 of
        the paper).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals: anything :class:`~crysk.CrystalGraphFeaturizer` accepts, or CrystalGraphs.

        Returns
        -------
        pandas.DataFrame
            One row per atom × property with columns ``structure`` (id or
            position), ``atom`` (index in the structure), ``element``,
            ``property``, ``category``, ``feature`` (0-91) and ``weight``.
            Properties an element has no data for are left out.
        """
        from pymatgen.core.periodic_table import Element

        weights = self._selector()
        graphs = self._as_graphs(X)
        table = cgcnn_feature_table()
        ids = graphs.ids if graphs.ids is not None else list(range(len(graphs)))
        z_all = graphs.atomic_numbers.astype(np.int64)
        crystal = np.repeat(np.arange(len(graphs)), graphs.n_atoms)
        atom = np.arange(len(z_all)) - np.repeat(np.cumsum(graphs.n_atoms) - graphs.n_atoms, graphs.n_atoms)
        frames = []
        for prop in ATOMIC_PROPERTIES:
            part = table[z_all, prop.slice]
            has = part.sum(axis=1) > 0
            category = part.argmax(axis=1)
            feature = prop.start + category
            frames.append(
                pd.DataFrame(
                    {
                        "structure": np.asarray(ids, dtype=object)[crystal[has]],
                        "atom": atom[has],
                        "element": [Element.from_Z(int(z)).symbol for z in z_all[has]],
                        "property": prop.label,
                        "category": np.asarray(prop.categories, dtype=object)[category[has]],
                        "feature": feature[has],
                        "weight": weights[feature[has]],
                        "_c": crystal[has],
                        "_p": len(frames),
                    }
                )
            )
        out = pd.concat(frames, ignore_index=True)
        return out.sort_values(["_c", "atom", "_p"], kind="stable").drop(columns=["_p", "_c"]).reset_index(drop=True)


@register_estimator
class CrysXPPRegressor(_CrysXPPModel, CrystalNetRegressor):
    """Crystal eXplainable Property Predictor (CrysXPP).

    A trainable feature selector weighs each of the 92 element-feature
    dimensions (the nine atomic properties, one-hot), then a CGCNN-style
    encoder, mean pooling and an MLP head predict the property (eqs. 8-10 of
    the CrysXPP paper). The loss is the prediction loss plus
    ``l1_penalty · |ζ|₁`` on the selector, which makes it sparse: its
    weights (:attr:`feature_importances_`, :meth:`explain`) say which atomic
    properties the model uses. Warm-start the encoder from a
    :class:`~crysk.CrysAE` (fitted, or a checkpoint, or the released
    ``model_pretrain.pth``) with ``warm_start_from=``.

    The authors' own recipe differs from the defaults here: their predictor
    takes only the convolutions from the CrysAE (``warm_start_include="convs"``),
    has an embedding with a bias (``embedding_bias=True``) and adds the L1
    term as a mean (``l1_reduction="mean"``). ``crysk.load`` turns their
    released predictor ``model_best.pth.tar`` into a fitted
    ``CrysXPPRegressor`` with those settings.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings (must match a CrysAE to warm-start from).
    n_conv : int, default=3
        Number of gated graph convolutions (3 in the paper and the CrysAE).
    h_fea_len : int, default=128
        Width of the hidden layer(s) of the head.
    n_h : int, default=1
        Number of hidden layers of the head.
    feature_selector : bool, default=True
        ``False`` drops the selector (and its penalty): plain CGCNN-style
        training.
    embedding_bias : bool, default=False
        Give the atom embedding a bias. ``False`` matches the CrysAE, whose
        embedding has none, so a CrysAE's embedding transfers whole;
        ``True`` is the authors' predictor (use it with
        ``warm_start_include="convs"``, or to warm-start from their
        ``model_best.pth.tar`` with every tensor).
    l1_penalty : float, default=0.01
        ``λ`` of eq. 10; 0 keeps the selector without sparsity (the "without
        L1" ablation of Table 6).
    l1_reduction : {"sum", "mean"}, default="sum"
        ``"sum"`` penalises ``λ·|ζ|₁`` as eq. 10 is written; ``"mean"``
        penalises ``λ·mean|ζ|`` (``|ζ|₁`` over the 92 dimensions), as the
        authors' published training code does: 92 times weaker at the same
        ``λ``.
    radius : float, default=8.0
        Neighbour cut-off (Å), also the last Gaussian centre; graphs made with another radius are refused.
    max_num_nbr : int, default=12
        Nearest neighbours per atom.
    lr : float, default=0.01
        Initial learning rate: CGCNN's, because the paper's 0.03 (whose
        optimiser is unstated) trains much worse with SGD (the comparison
        is in ``benchmarks/RESULTS.md``).
    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, default="sgd"
        The optimiser.
    momentum : float, default=0.9
        SGD momentum (ignored by the other optimisers).
    weight_decay : float, default=0.0
        L2 weight decay of the optimiser.
    lr_milestones : sequence of int, default=(100,)
        Epochs at which the learning rate is multiplied by ``gamma``.
    gamma : float, default=0.1
        Factor of the learning-rate steps.
    batch_size : int, "auto" or -1, default="auto"
        Crystals per training step. ``"auto"`` picks the power of two nearest
        to a 32nd of the training set, between 16 and 512 (the CrysXPP
        paper's batch), so that a few hundred crystals still get ~30
        optimiser steps per epoch (with 512, 400 crystals get one step per
        epoch); the resolved value is ``batch_size_``. ``512`` is the paper's
        setting; -1: all crystals in one batch.
    max_epochs : int, default=200
        Training epochs (the paper's 200); the best validation epoch is kept.
    validation_fraction : float or None, default=0.1
        Share of the training crystals held out to pick the best epoch.
    loss : {"mse", "l1"}, default="mse"
        Prediction loss on scaled targets (eq. 10 writes the squared error).
    target_scaler : {"standard", "tanh", "source"}, None or transformer, default="standard"
        How targets are scaled for training; predictions are unscaled.
        ``"source"`` keeps the warm-start source's scaler (same property);
        as for :class:`~crysk.CGCNNRegressor`.
    missing_targets : {"raise", "ignore"}, default="raise"
        NaN in a 2-D ``y``: an error, or a target left out of the loss
        for that crystal; as for :class:`~crysk.CGCNNRegressor`.
    target_weights : array-like of shape (n_targets,), optional
        Weight of each target in the loss; as for :class:`~crysk.CGCNNRegressor`.
    warm_start_from, freeze, warm_start_strict, warm_start_include, lr_transferred
        As for :class:`~crysk.CGCNNRegressor`; the selector is
        ``"selector"`` for ``freeze``.
    malloc_tuning : bool, default=True
        Keep freed memory in the process during a CPU fit; as for
        :class:`~crysk.CGCNNRegressor`.
    n_jobs : int, optional
        Processes for featurizing structures (joblib semantics); CrystalGraphs need none.
    n_threads : int, optional
        Torch threads during ``fit`` and ``predict``, see
        :class:`~crysk.CGCNNRegressor` (default: the cores not busy with other work).
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``; the training data moves there once.
    random_state : int, optional
        Seed of the weights, the validation split and the shuffling; with a seed two CPU fits are identical.
    verbose : int, default=0
        1 prints a table per epoch.
    **kwargs
        Other skorch ``NeuralNet`` arguments.

    Attributes
    ----------
    module_ : crysk.nn.CrysXPPNet
    feature_importances_ : pandas.Series
        Mean of ``|ζ|`` over each atomic property's categories (1 for every
        property of an untrained selector); see :meth:`property_importances`
        for the sums.
    selector_weights_ : pandas.Series
        ``ζ`` for each of the 92 feature dimensions (the raw values).
    target_scaler_, n_outputs_, best_epoch_, transfer_report_, frozen_parameters_
        As for :class:`~crysk.CGCNNRegressor`.

    Examples
    --------
    >>> from crysk import CrysXPPRegressor
    >>> from crysk.demo import make_demo_data
    >>> X, y = make_demo_data(60)
    >>> model = CrysXPPRegressor(max_epochs=2, batch_size=30, random_state=0).fit(X, y)
    >>> list(model.feature_importances_.index[:2])
    ['Group number', 'Period number']
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
        feature_selector: bool = True,
        embedding_bias: bool = False,
        l1_penalty: float = 0.01,
        l1_reduction: str = "sum",
        radius: float = 8.0,
        max_num_nbr: int = 12,
        lr: float = 0.01,
        optimizer: Any = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_milestones: Any = (100,),
        gamma: float = 0.1,
        batch_size: int | str = "auto",
        max_epochs: int = 200,
        validation_fraction: float | None = 0.1,
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
        self.feature_selector = feature_selector
        self.embedding_bias = embedding_bias
        self.l1_penalty = l1_penalty
        self.l1_reduction = l1_reduction


@register_estimator
class CrysXPPClassifier(_CrysXPPModel, CrystalNetClassifier):
    """CrysXPP for classification: the feature-selector network of :class:`CrysXPPRegressor` with one output per class.

    Everything of :class:`CrysXPPRegressor` (the sparse selector and its
    ``l1_penalty``, warm starts from a :class:`~crysk.CrysAE`,
    :attr:`feature_importances_`, :meth:`explain`) with the classifier
    behaviour of :class:`~crysk.CGCNNClassifier`: labels of any type,
    ``predict_proba`` in ``classes_`` order, ``class_weight``, the best epoch
    on the validation log-loss, a cross-entropy training loss (plus the L1
    term).

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings (must match a CrysAE to warm-start from).
    n_conv : int, default=3
        Number of gated graph convolutions.
    h_fea_len : int, default=128
        Width of the hidden layer(s) of the head.
    n_h : int, default=1
        Number of hidden layers of the head.
    feature_selector : bool, default=True
        ``False`` drops the selector (and its penalty).
    embedding_bias : bool, default=False
        Give the atom embedding a bias (``False`` matches the CrysAE).
    l1_penalty : float, default=0.01
        ``λ`` of eq. 10 of the CrysXPP paper, on the selector.
    l1_reduction : {"sum", "mean"}, default="sum"
        The L1 term as ``λ·|ζ|₁`` or ``λ·mean|ζ|``; as for :class:`CrysXPPRegressor`.
    radius : float, default=8.0
        Neighbour cut-off (Å), also the last Gaussian centre.
    max_num_nbr : int, default=12
        Nearest neighbours per atom.
    lr : float, default=0.01
        Initial learning rate.
    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, default="sgd"
        The optimiser.
    momentum : float, default=0.9
        SGD momentum (ignored by the other optimisers).
    weight_decay : float, default=0.0
        L2 weight decay of the optimiser.
    lr_milestones : sequence of int, default=(100,)
        Epochs at which the learning rate is multiplied by ``gamma``.
    gamma : float, default=0.1
        Factor applied to the learning rate at each milestone.
    batch_size : int, "auto" or -1, default="auto"
        Crystals per training step. ``"auto"`` picks the power of two nearest
        to a 32nd of the training set, between 16 and 512 (the CrysXPP
        paper's batch), so that a few hundred crystals still get ~30
        optimiser steps per epoch (with 512, 400 crystals get one step per
        epoch); the resolved value is ``batch_size_``. ``512`` is the paper's
        setting; -1: all crystals in one batch.
    max_epochs : int, default=200
        Training epochs; the best validation epoch is kept.
    validation_fraction : float or None, default=0.1
        Share of the training crystals held out (stratified by class) to
        pick the best epoch by the validation log-loss.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the training loss; as for :class:`~crysk.CGCNNClassifier`.
    warm_start_from, freeze, warm_start_strict, warm_start_include, lr_transferred
        As for :class:`~crysk.CGCNNRegressor`; from a regression model the
        output layer is never taken.
    malloc_tuning : bool, default=True
        Keep freed memory in the process during a CPU fit; as for :class:`~crysk.CGCNNRegressor`.
    n_jobs : int, optional
        Processes for featurizing structures.
    n_threads : int, optional
        Torch threads during ``fit`` and ``predict``, see
        :class:`~crysk.CGCNNRegressor` (default: the cores not busy with other work).
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``.
    random_state : int, optional
        Seed of the weights, the validation split and the shuffling.
    verbose : int, default=0
        1 prints a table per epoch.
    **kwargs
        Other skorch ``NeuralNet`` arguments.

    Attributes
    ----------
    classes_, class_weight_, n_outputs_, best_epoch_, transfer_report_, frozen_parameters_
        As for :class:`~crysk.CGCNNClassifier`.
    module_ : crysk.nn.CrysXPPNet
        The trained network.
    feature_importances_ : pandas.Series
        Mean ``|ζ|`` per atomic property; as for :class:`CrysXPPRegressor`.
    selector_weights_ : pandas.Series
        ``ζ`` for each of the 92 feature dimensions.
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
        feature_selector: bool = True,
        embedding_bias: bool = False,
        l1_penalty: float = 0.01,
        l1_reduction: str = "sum",
        radius: float = 8.0,
        max_num_nbr: int = 12,
        lr: float = 0.01,
        optimizer: Any = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_milestones: Any = (100,),
        gamma: float = 0.1,
        batch_size: int | str = "auto",
        max_epochs: int = 200,
        validation_fraction: float | None = 0.1,
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
        self.feature_selector = feature_selector
        self.embedding_bias = embedding_bias
        self.l1_penalty = l1_penalty
        self.l1_reduction = l1_reduction
