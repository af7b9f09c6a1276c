"""Building blocks shared by the crysk models (pure torch, no scikit-learn)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GaussianExpansion", "ConvLayer", "gate", "batch_norm_gate", "mean_pool", "n_gaussians"]


class _Gate(torch.autograd.Function):
    """``sigmoid(f) * softplus(c)`` for ``[f, c] = x``, saving only ``x`` for backward.

    Autograd would keep the sigmoid and softplus outputs too (two more
    per-edge tensors per layer); recomputing them is cheaper than storing them.
    """

    @staticmethod
    def forward(ctx, x):
        f, c = x.chunk(2, dim=1)
        ctx.save_for_backward(x)
        return torch.sigmoid(f).mul_(F.softplus(c))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _gate_backward(x, grad)


def _gate_backward(g: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    f, c = g.chunk(2, dim=1)
    s = torch.sigmoid(f)
    grad_g = torch.empty_like(g)
    gf, gc = grad_g.chunk(2, dim=1)
    # d/df = grad * softplus(c) * s * (1 - s);  d/dc = grad * s * sigmoid(c)
    torch.mul(grad, s, out=gc)
    torch.mul(F.softplus(c), (1.0 - s).mul_(s), out=gf).mul_(grad)
    gc.mul_(torch.sigmoid(c))
    return grad_g


def gate(x: torch.Tensor) -> torch.Tensor:
    """CGCNN's edge gate: ``sigmoid(x[:, :d]) * softplus(x[:, d:])`` with ``d = x.shape[1] // 2``."""
    return _Gate.apply(x)


class _BatchNormGate(torch.autograd.Function):
    """Training-mode batch norm followed by the gate, keeping only the BN input.

    Autograd would store both the batch-norm input and its output (the gate's
    input): two per-edge tensors of width ``2 * atom_fea_len`` per layer. The
    output is one multiply-add away from the input and the batch statistics,
    so it is recomputed in backward; the batch-norm itself uses torch's own
    fused kernels in both directions.
    """

    @staticmethod
    def forward(ctx, z, weight, bias, running_mean, running_var, momentum, eps):
        g, mean, invstd = torch.ops.aten.native_batch_norm(
            z, weight, bias, running_mean, running_var, True, momentum, eps
        )
        ctx.save_for_backward(z, weight, bias, running_mean, running_var, mean, invstd)
        ctx.eps = eps
        f, c = g.chunk(2, dim=1)
        return torch.sigmoid(f).mul_(F.softplus(c))

    @staticmethod
    def backward(ctx, grad):
        z, weight, bias, running_mean, running_var, mean, invstd = ctx.saved_tensors
        scale = invstd * weight
        g = torch.addcmul(bias - mean * scale, z, scale)
        grad_g = _gate_backward(g, grad)
        del g
        grad_z, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_g, z, weight, running_mean, running_var, mean, invstd, True, ctx.eps, [True, True, True]
        )
        return grad_z, grad_w, grad_b, None, None, None, None


def batch_norm_gate(z: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """``gate(bn(z))``, storing less for backward when ``bn`` trains.

    Parameters
    ----------
    z : torch.Tensor of shape (n_edges, 2 * d)
    bn : torch.nn.BatchNorm1d

    Returns
    -------
    torch.Tensor of shape (n_edges, d)
    """
    if bn.training and torch.is_grad_enabled() and bn.affine and bn.track_running_stats and bn.momentum is not None:
        bn.num_batches_tracked.add_(1)
        return _BatchNormGate.apply(z, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)
    return gate(bn(z))


def n_gaussians(dmax: float, step: float = 0.2, dmin: float = 0.0) -> int:
    """Number of Gaussian centres on ``[dmin, dmax]`` spaced by ``step`` (41 for 0-8 Å by 0.2 Å)."""
    return int(math.floor((dmax - dmin) / step + 1e-6)) + 1


class GaussianExpansion(nn.Module):
    """Expand distances on Gaussians centred on a regular grid (CGCNN's edge features).

    ``exp(-(d - mu_k)^2 / var^2)`` with ``mu_k = dmin + k * step`` up to ``dmax``.
    Computed on the device inside the model, so graphs store only distances.

    Parameters
    ----------
    dmin, dmax : float
        First and last centre (Å).
    step : float
        Spacing of the centres (Å).
    var : float, optional
        Width; defaults to ``step`` as in CGCNN.
    """

    def __init__(self, dmin: float = 0.0, dmax: float = 8.0, step: float = 0.2, var: float | None = None):
        super().__init__()
        n = n_gaussians(dmax, step, dmin)
        self.register_buffer("centers", dmin + step * torch.arange(n, dtype=torch.float32), persistent=False)
        self.inv_var2 = 1.0 / (step if var is None else var) ** 2

    @property
    def n_features(self) -> int:
        """Number of Gaussians (the edge feature length)."""
        return len(self.centers)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """Expand ``(n_edges,)`` distances into ``(n_edges, n_features)``."""
        diff = distances.unsqueeze(-1) - self.centers
        return torch.exp(-(diff * diff) * self.inv_var2)


class ConvLayer(nn.Module):
    """CGCNN's gated graph convolution (eq. 3 of the TL-CGCNN paper) on an edge list.

    ``v_i <- softplus(v_i + BN(sum_j sigmoid(z_ij W_f + b_f) * softplus(z_ij W_s + b_s)))``
    with ``z_ij = v_i (+) v_j (+) u_ij`` and batch normalisation of the gated
    pre-activations, as in the original code. Parameter names (``fc_full``,
    ``bn1``, ``bn2``) match the original CGCNN so its checkpoints load.

    The linear map of the concatenation is computed as three products (per
    atom for the two atom parts, per edge only for the edge features), which
    is the same function with ~4x fewer operations than concatenating first.

    Parameters
    ----------
    atom_fea_len : int
        Width of the atom features.
    nbr_fea_len : int
        Width of the edge features.
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.nbr_fea_len = nbr_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(
        self, atom_fea: torch.Tensor, edge_fea: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor
    ) -> torch.Tensor:
        """Update ``(n_atoms, atom_fea_len)`` atom features along the edges ``src -> dst``."""
        f = self.atom_fea_len
        w = self.fc_full.weight
        # one product per atom for both atom parts: [:, :2f] centre atom (+ bias), [:, 2f:] neighbour
        pair = atom_fea @ torch.cat([w[:, :f], w[:, f : 2 * f]], dim=0).t()
        centre = pair[:, : 2 * f] + self.fc_full.bias
        # accumulate in place: each per-edge temporary costs a full pass over memory
        gated = centre.index_select(0, edge_src).addmm_(edge_fea, w[:, 2 * f :].t())
        gated = gated.add_(pair[:, 2 * f :].index_select(0, edge_dst))
        messages = batch_norm_gate(gated, self.bn1)
        summed = torch.zeros_like(atom_fea).index_add_(0, edge_src, messages)
        return F.softplus(atom_fea + self.bn2(summed))


def mean_pool(atom_fea: torch.Tensor, crystal_index: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """Average atom features per crystal (eq. 4 of the TL-CGCNN paper).

    Parameters
    ----------
    atom_fea : torch.Tensor of shape (n_atoms_total, d)
    crystal_index : torch.Tensor of shape (n_atoms_total,)
        Crystal of each atom.
    n_atoms : torch.Tensor of shape (n_crystals,)

    Returns
    -------
    torch.Tensor of shape (n_crystals, d)
    """
    summed = atom_fea.new_zeros((len(n_atoms), atom_fea.shape[1])).index_add_(0, crystal_index, atom_fea)
    return summed / n_atoms.unsqueeze(1).to(atom_fea.dtype)
