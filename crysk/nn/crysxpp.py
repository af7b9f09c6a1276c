"""CrysXPP's property predictor (Das et al. 2022, eqs. 8-10): feature selector, encoder, pooling, MLP."""

from __future__ import annotations

import torch
from torch import nn

from .cgcnn import CGCNN

__all__ = ["FeatureSelector", "CrysXPPNet"]


class FeatureSelector(nn.Module):
    """A trainable weight per element-feature dimension: ``X' = ζ ⊙ X``.

    Initialised to ones, so an untrained selector passes the features
    unchanged; an L1 penalty on ``weight`` (eq. 10) makes it sparse.

    Parameters
    ----------
    n_features : int
        Number of element-feature dimensions (92 for CGCNN's table).
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each feature dimension by its weight.

        Parameters
        ----------
        x : torch.Tensor of shape (n_atoms, n_features)
            Element features.
        """
        return x * self.weight

    def l1(self, reduction: str = "sum") -> torch.Tensor:
        """``|ζ|₁`` (``reduction="sum"``, eq. 10) or its mean over the dimensions (``"mean"``).

        Parameters
        ----------
        reduction : {"sum", "mean"}, default="sum"
            Sum (eq. 10) or mean over the dimensions.
        """
        w = self.weight.abs()
        return w.mean() if reduction == "mean" else w.sum()


class CrysXPPNet(CGCNN):
    """Feature selector → CrysAE-style encoder → mean pooling → MLP head.

    The encoder's tensor names are those of CrysAE and CGCNN (``embedding``,
    ``convs.*``), so a CrysAE checkpoint warm-starts it; the selector is
    ``selector.weight`` (``mask`` in the authors' code). As there, the
    selector multiplies the 92 element features elementwise before the
    embedding.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings.
    n_conv : int, default=3
        Number of gated graph convolutions.
    h_fea_len : int, default=128
        Width of the head's hidden layers.
    n_h : int, default=1
        Number of hidden layers of the head.
    n_out : int, default=1
        Number of outputs.
    feature_selector : bool, default=True
        Without it the model is a CGCNN (with the embedding bias chosen by
        ``embedding_bias``).
    radius : float, default=8.0
        Last Gaussian centre of the edge features (Å).
    step : float, default=0.2
        Spacing and width of the Gaussians (Å).
    embedding_bias : bool, default=False
        ``False`` gives the CrysAE's bias-free embedding, so that all of a
        CrysAE encoder transfers; the authors' released predictor has an
        embedding with a bias (``True``).
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
        n_out: int = 1,
        feature_selector: bool = True,
        radius: float = 8.0,
        step: float = 0.2,
        embedding_bias: bool = False,
    ):
        super().__init__(atom_fea_len, n_conv, h_fea_len, n_h, n_out, radius, step, embedding_bias=embedding_bias)
        if feature_selector:
            self.selector = FeatureSelector(self.element_table.shape[1])

    def atom_features(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Element features of each atom, weighted by the selector.

        Parameters
        ----------
        atomic_numbers : torch.Tensor of shape (n_atoms,)
            Atomic number of every atom of the batch.
        """
        x = super().atom_features(atomic_numbers)
        selector = getattr(self, "selector", None)
        return x if selector is None else selector(x)

    def penalty(self, reduction: str = "sum") -> torch.Tensor:
        """The selector's ``|ζ|₁``, or its mean with ``reduction="mean"`` (zero without a selector).

        Parameters
        ----------
        reduction : {"sum", "mean"}, default="sum"
            Sum (eq. 10) or mean over the feature dimensions.

        Returns
        -------
        torch.Tensor
            A scalar.
        """
        selector = getattr(self, "selector", None)
        return selector.l1(reduction) if selector is not None else self.element_table.new_zeros(())
