"""CrysAE: unsupervised pretraining of a crystal graph encoder (CrysXPP paper)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import TransformerMixin
from skorch.callbacks import PassthroughScoring

from ..nn import CrysAENet
from ..nn.crysae import RECONSTRUCTION_TERMS
from .._validation import check_number, check_option
from .base import CrystalNet
from .registry import register_estimator

__all__ = ["CrysAE"]

_TERMS = ("node", "edge", "count", "length")
_VALID_SEED = 20220043  # fixed non-edge draws, so validation losses compare across epochs


@register_estimator
class CrysAE(TransformerMixin, CrystalNet):
    """Crystal graph autoencoder for pretraining on unlabelled structures.

    Fits on structures alone (no targets): a CGCNN-style encoder (bias-free
    element embedding, ``n_conv`` gated convolutions) learns atom embeddings
    from which a decoder reconstructs each atom's nine atomic properties,
    which atom pairs are bonded, how many edges join them and how long those
    are (eqs. 1-7 of the CrysXPP paper). The trained encoder then
    warm-starts :class:`~crysk.CrysXPPRegressor` (or
    :class:`~crysk.CGCNNRegressor`) through ``warm_start_from=``, and
    :meth:`transform` turns structures into mean-pooled crystal embeddings
    for any scikit-learn estimator.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings.
    n_conv : int, default=3
        Number of gated graph convolutions.
    pair_fea_len : int, default=6
        Width of the shared pair embedding ``zᵤᵥ`` (eq. 2).
    reconstruct : {"all", "global", "local"}, default="all"
        Which reconstruction terms train the encoder: ``"global"`` = edge
        existence and edge counts, ``"local"`` = atom properties and bond
        lengths (the ablation of Table 5), ``"all"`` = both (eq. 7).
    node_weight, edge_weight, count_weight, length_weight : float, default=1.0
        Weights of the four terms in the loss.
    max_pairs : int or None, default=16384
        Atom pairs per batch used for the pair terms (a random sample when a
        batch has more; ``None`` uses every pair).
    radius : float, default=8.0
        Neighbour cut-off (Å), also the last Gaussian centre; graphs made with another radius are refused.
    max_num_nbr : int, default=12
        Neighbours per atom; also ``K``, the most edges a pair can have.
    lr : float, default=0.003
        Adam's learning rate. Lower than the paper's 0.03 (whose optimiser
        is unstated), at which the reconstruction diverges (see
        ``benchmarks/RESULTS.md``).
    optimizer : {"sgd", "adam", "adamw"} or torch optimizer class, default="adam"
    momentum : float, default=0.9
        SGD's momentum (other optimisers have none).
    weight_decay : float, default=0.0
        L2 penalty the optimiser applies to the weights.
    lr_milestones : sequence of int, default=(100,)
        Epochs at which the learning rate is multiplied by ``gamma``.
    gamma : float, default=0.1
        Factor applied to the learning rate at each of ``lr_milestones``.
    batch_size : int, "auto" or -1, default="auto"
        Crystals per training step. ``"auto"`` picks the power of two nearest
        to a 32nd of the training set, between 16 and 512 (the CrysXPP
        paper's batch), so that a few hundred crystals still get ~30
        optimiser steps per epoch (with 512, 400 crystals get one step per
        epoch); the resolved value is ``batch_size_``. ``512`` is the paper's
        setting; -1: all crystals in one batch.
    max_epochs : int, default=200
        Epochs per ``fit`` (0 only initialises the network).
    validation_fraction : float or None, default=0.1
        Held-out share whose total reconstruction loss picks the best epoch.
    warm_start_from, freeze, warm_start_strict, warm_start_include, lr_transferred
        As for :class:`~crysk.CGCNNRegressor`. From the released
        ``model_pretrain.pth`` the encoder is loaded but not its
        ``fc_atom_feature``: the authors trained that layer with a per-bit
        binary loss, this decoder's layer of that name with a cross-entropy
        per atomic property, so it starts fresh (listed as skipped in
        ``transfer_report_``).
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
    module_ : crysk.nn.CrysAENet
    history_ : skorch History
        Per-epoch ``train_loss``/``valid_loss`` and each term as
        ``train_<term>_loss``/``valid_<term>_loss``.
    best_epoch_ : int or None

    Examples
    --------
    >>> from crysk import CrysAE
    >>> from crysk.demo import make_demo_data
    >>> X, _ = make_demo_data(40)
    >>> ae = CrysAE(max_epochs=1, batch_size=20, random_state=0).fit(X)
    >>> ae.transform(X[:2]).shape
    (2, 64)
    """

    _default_module = CrysAENet
    _auto_batch_cap = 512  # the CrysXPP paper's batch size

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        pair_fea_len: int = 6,
        reconstruct: str = "all",
        node_weight: float = 1.0,
        edge_weight: float = 1.0,
        count_weight: float = 1.0,
        length_weight: float = 1.0,
        max_pairs: int | None = 16384,
        radius: float = 8.0,
        max_num_nbr: int = 12,
        lr: float = 0.003,
        optimizer: Any = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_milestones: Any = (100,),
        gamma: float = 0.1,
        batch_size: int | str = "auto",
        max_epochs: int = 200,
        validation_fraction: float | None = 0.1,
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
        self.pair_fea_len = pair_fea_len
        self.reconstruct = reconstruct
        self.node_weight = node_weight
        self.edge_weight = edge_weight
        self.count_weight = count_weight
        self.length_weight = length_weight
        self.max_pairs = max_pairs

    # ------------------------------------------------------------------ configuration
    def _module_kwargs(self) -> dict[str, Any]:
        return {
            "atom_fea_len": self.atom_fea_len,
            "n_conv": self.n_conv,
            "max_count": self.max_num_nbr,
            "pair_fea_len": self.pair_fea_len,
            "radius": self.radius,
        }

    def _check_params(self, fit_params: dict[str, Any] | None = None) -> None:
        super()._check_params(fit_params)
        if self.criterion is not None:
            raise ValueError(
                "CrysAE trains on its reconstruction losses, so criterion= is not used; weigh the terms "
                "with node_weight/edge_weight/count_weight/length_weight instead"
            )
        check_option("reconstruct", self.reconstruct, ["all", *RECONSTRUCTION_TERMS])
        for term in _TERMS:
            check_number(f"{term}_weight", getattr(self, f"{term}_weight"), low=0)
        if not self._terms():
            raise ValueError(f"every reconstruction term selected by reconstruct={self.reconstruct!r} has weight 0")
        check_number("max_pairs", self.max_pairs, integer=True, low=1, allow_none=True)

    def _fit_param_names(self) -> tuple[str, ...]:
        return ("X_valid", "resume_from")

    def _terms(self) -> tuple[str, ...]:
        """The reconstruction terms that train (selected and with a non-zero weight)."""
        chosen = _TERMS if self.reconstruct == "all" else RECONSTRUCTION_TERMS[self.reconstruct]
        return tuple(t for t in _TERMS if t in chosen and getattr(self, f"{t}_weight") > 0)

    def _extra_callbacks(self) -> list:
        out = []
        for term in _TERMS:
            out.append((f"train_{term}_loss", PassthroughScoring(name=f"train_{term}_loss", on_train=True)))
            out.append((f"valid_{term}_loss", PassthroughScoring(name=f"valid_{term}_loss")))
        return out

    # ------------------------------------------------------------------ training
    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Weighted sum of the reconstruction terms for the batch ``X``; each term is logged.

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
        z = y_pred[0]
        if training:
            generator = self._sampling_rng
        else:
            generator = torch.Generator().manual_seed(_VALID_SEED)
        terms = self._terms()
        losses = self.module_.reconstruction_losses(z, X.tensors, terms, self.max_pairs, generator)
        prefix = "train" if training else "valid"
        for name, value in losses.items():
            self.history.record_batch(f"{prefix}_{name}_loss", float(value.detach()))
        return sum(getattr(self, f"{name}_weight") * value for name, value in losses.items())

    def fit(self, X: Any, y: Any = None, **fit_params) -> "CrysAE":
        """Train the autoencoder on structures (no targets needed).

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals: anything :class:`~crysk.CrystalGraphFeaturizer` accepts, or CrystalGraphs.
        y : ignored
            Accepted for Pipeline compatibility.
        **fit_params
            ``X_valid``: explicit validation structures instead of splitting
            ``validation_fraction`` off ``X``.

        Returns
        -------
        self
        """
        self._check_params(fit_params)
        graphs = self._as_graphs(X)
        if len(graphs) == 0:
            raise ValueError("got no crystals to fit")
        self.graph_settings_ = self.graph_settings
        self.best_epoch_ = None
        # skorch's fit: initialize(), then partial_fit (which featurizes X_valid)
        return super().fit(graphs, None, **fit_params)

    def initialize(self) -> "CrysAE":
        """Build the network and optimiser, and seed the shuffling and the non-edge sampling.

        Returns
        -------
        self
        """
        self._sampling_rng = torch.Generator().manual_seed(int(self._seeds()[2]) + 1)
        return super().initialize()

    def partial_fit(self, X: Any, y: Any = None, classes: Any = None, **fit_params: Any) -> "CrysAE":
        """Train for ``max_epochs`` more epochs on ``X``, continuing from the current weights.

        The learning-rate schedule, history, optimiser state and random
        streams continue. On an unfitted estimator this is :meth:`fit`.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals to train on.
        y : ignored
            Accepted for Pipeline compatibility.
        classes : None
            Unused (scikit-learn's signature for classifiers).
        **fit_params
            ``X_valid``: an explicit validation set.

        Returns
        -------
        self
        """
        if not getattr(self, "initialized_", False) or not hasattr(self, "graph_settings_"):
            return self.fit(X, **{k: v for k, v in fit_params.items() if k != "_routing_method"})
        if fit_params.get("X_valid") is not None:
            fit_params["X_valid"] = self._as_graphs(fit_params["X_valid"])
        return super().partial_fit(self._as_graphs(X), None, classes, **fit_params)

    # ------------------------------------------------------------------ using the encoder
    def _batches(self, X: Any):
        self._check_fitted()
        graphs = self._as_graphs(X)
        dataset = self.get_dataset(graphs)
        self.module_.eval()
        with torch.no_grad():
            for xb, _ in self.get_iterator(dataset, training=False):
                yield xb, self.module_(**xb.tensors)

    def transform(self, X: Any) -> np.ndarray:
        """Mean-pooled crystal embeddings from the trained encoder.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals: anything :class:`~crysk.CrystalGraphFeaturizer` accepts, or CrystalGraphs.

        Returns
        -------
        numpy.ndarray of shape (n_crystals, atom_fea_len)
        """
        parts = [pooled.float().cpu().numpy() for _, (_, pooled) in self._batches(X)]
        if not parts:
            return np.zeros((0, self._encoder_param("atom_fea_len")), dtype=np.float32)
        return np.concatenate(parts)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the embedding columns: ``crysae0`` to ``crysae{atom_fea_len-1}``.

        Parameters
        ----------
        input_features : ignored
            The names do not depend on the input.
        """
        return np.array([f"crysae{i}" for i in range(self._encoder_param("atom_fea_len"))], dtype=object)

    def reconstruction_loss(self, X: Any) -> dict[str, float]:
        """Mean of each reconstruction term on ``X`` (every term, whatever ``reconstruct`` is).

        Non-edges are drawn with a fixed seed, so the numbers are repeatable
        and comparable between models.

        Parameters
        ----------
        X : collection of structures, or CrystalGraphs
            The crystals: anything :class:`~crysk.CrystalGraphFeaturizer` accepts, or CrystalGraphs.

        Returns
        -------
        dict of str to float
            ``"node"``, ``"edge"``, ``"count"``, ``"length"``, each weighted
            by crystals per batch.
        """
        totals = dict.fromkeys(_TERMS, 0.0)
        n = 0
        generator = torch.Generator().manual_seed(_VALID_SEED)
        for xb, (z, _) in self._batches(X):
            with torch.no_grad():
                losses = self.module_.reconstruction_losses(z, xb.tensors, _TERMS, None, generator)
            for name, value in losses.items():
                totals[name] += float(value) * len(xb)
            n += len(xb)
        return {name: total / max(n, 1) for name, total in totals.items()}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags
