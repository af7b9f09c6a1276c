"""CGCNN (Xie & Grossman 2018) as used by TL-CGCNN, on packed edge lists."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..elements import cgcnn_feature_table
from .layers import ConvLayer, GaussianExpansion, mean_pool, uniform_degree
from .workspace import Workspace

__all__ = ["GraphEncoder", "CGCNN"]


class GraphEncoder(nn.Module):
    """Element embedding followed by gated graph convolutions (no pooling).

    Shared by CGCNN, the CrysAE encoder and CrysXPP. Parameter names follow
    the original CGCNN code (``embedding``, ``convs.<i>.fc_full``,
    ``convs.<i>.bn1``, ``convs.<i>.bn2``), so original checkpoints map
    one-to-one.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings.
    n_conv : int, default=3
        Number of gated graph convolutions.
    radius : float, default=8.0
        Last Gaussian centre (Å); CGCNN uses the neighbour cut-off.
    step : float, default=0.2
        Spacing and width of the Gaussians (Å).
    embedding_bias : bool, default=True
        CGCNN's embedding has a bias, CrysAE's has none.
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        radius: float = 8.0,
        step: float = 0.2,
        embedding_bias: bool = True,
    ):
        super().__init__()
        table = torch.as_tensor(cgcnn_feature_table().copy())
        # not in the state dict: checkpoints record the table's fingerprint instead
        self.register_buffer("element_table", table, persistent=False)
        self.gaussian = GaussianExpansion(0.0, radius, step)
        self.embedding = nn.Linear(table.shape[1], atom_fea_len, bias=embedding_bias)
        self.convs = nn.ModuleList([ConvLayer(atom_fea_len, self.gaussian.n_features) for _ in range(n_conv)])
        # this model's per-edge training buffers (not state: copies and pickles start empty)
        self.workspace = Workspace()

    #: BatchNorm submodules kept in eval mode (their statistics frozen), by name
    frozen_norms: tuple[str, ...] = ()

    def train(self, mode: bool = True) -> "GraphEncoder":
        """Set train/eval mode, keeping frozen batch-norm layers in eval mode.

        skorch switches the module to train mode at every step; frozen layers
        must not update their running statistics.

        Parameters
        ----------
        mode : bool, default=True
            Training (True) or evaluation (False) mode.
        """
        super().train(mode)
        for name in self.frozen_norms:
            self.get_submodule(name).eval()
        if not mode:
            self.release_workspace()  # training's per-edge buffers are not needed to predict
        return self

    def release_workspace(self) -> None:
        """Free the per-edge buffers this model keeps from one CPU training step to the next.

        They hold about ``(2 * n_conv + 1) x n_edges x 2 * atom_fea_len``
        floats for the largest batch seen. Switching to eval mode releases
        them, and so do the estimators at the end of each epoch.
        """
        workspace = getattr(self, "workspace", None)  # models pickled before workspaces were per model lack one
        if workspace is not None:
            workspace.clear()

    def atom_features(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """The 92-dimensional element features of each atom.

        Parameters
        ----------
        atomic_numbers : torch.Tensor of shape (n_atoms,)
            Atomic number of every atom of the batch.
        """
        return self.element_table.index_select(0, atomic_numbers)

    def encode(
        self,
        atom_features: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        distances: torch.Tensor,
    ) -> torch.Tensor:
        """Atom embeddings after the convolutions, ``(n_atoms, atom_fea_len)``.

        Parameters
        ----------
        atom_features : torch.Tensor of shape (n_atoms, 92)
            Element features of every atom.
        edge_src : torch.Tensor of shape (n_edges,)
            Centre atom of each edge.
        edge_dst : torch.Tensor of shape (n_edges,)
            Neighbour atom of each edge.
        distances : torch.Tensor of shape (n_edges,)
            Edge lengths (Å).
        """
        h = self.embedding(atom_features)
        workspace = getattr(self, "workspace", None)
        edge_fea = self.gaussian(distances, workspace)
        degree = uniform_degree(edge_src, len(h))
        for conv in self.convs:
            h = conv(h, edge_fea, edge_src, edge_dst, workspace, degree)
        return h


class CGCNN(GraphEncoder):
    """Crystal graph convolutional network for crystal-level regression.

    Embedding, ``n_conv`` gated convolutions, mean pooling, then
    ``softplus -> conv_to_fc -> softplus`` (and ``n_h - 1`` more hidden
    layers ``fcs.<i>``) and a linear output ``fc_out``, as in the original
    code.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings.
    n_conv : int, default=3
        Number of gated graph convolutions.
    h_fea_len : int, default=128
        Width of the hidden layer(s) of the head.
    n_h : int, default=1
        Number of hidden layers of the head.
    n_out : int, default=1
        Number of outputs (targets).
    radius : float, default=8.0
        Last Gaussian centre (Å).
    step : float, default=0.2
        Spacing and width of the Gaussians (Å).
    embedding_bias : bool, default=True
        Whether the element embedding has a bias (CGCNN's has, CrysAE's has not).
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
        n_out: int = 1,
        radius: float = 8.0,
        step: float = 0.2,
        embedding_bias: bool = True,
    ):
        super().__init__(atom_fea_len, n_conv, radius, step, embedding_bias)
        self.output_layer = "fc_out"
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        if n_h > 1:
            self.fcs = nn.ModuleList([nn.Linear(h_fea_len, h_fea_len) for _ in range(n_h - 1)])
        self.fc_out = nn.Linear(h_fea_len, n_out)

    def head(self, crystal_fea: torch.Tensor) -> torch.Tensor:
        """Map pooled crystal features to the outputs.

        Parameters
        ----------
        crystal_fea : torch.Tensor of shape (n_crystals, atom_fea_len)
            Pooled crystal features.
        """
        h = F.softplus(self.conv_to_fc(F.softplus(crystal_fea)))
        for fc in getattr(self, "fcs", ()):
            h = F.softplus(fc(h))
        return self.fc_out(h)

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        distances: torch.Tensor,
        crystal_index: torch.Tensor,
        n_atoms: torch.Tensor,
    ) -> torch.Tensor:
        """Predict ``(n_crystals, n_out)`` outputs for a batch (see ``GraphTensors.batch``).

        Parameters
        ----------
        atomic_numbers : torch.Tensor of shape (n_atoms,)
            Atomic number of every atom of the batch.
        edge_src : torch.Tensor of shape (n_edges,)
            Centre atom of each edge.
        edge_dst : torch.Tensor of shape (n_edges,)
            Neighbour atom of each edge.
        distances : torch.Tensor of shape (n_edges,)
            Edge lengths (Å).
        crystal_index : torch.Tensor of shape (n_atoms,)
            Crystal of each atom.
        n_atoms : torch.Tensor of shape (n_crystals,)
            Atoms per crystal.
        """
        h = self.encode(self.atom_features(atomic_numbers), edge_src, edge_dst, distances)
        return self.head(mean_pool(h, crystal_index, n_atoms))
