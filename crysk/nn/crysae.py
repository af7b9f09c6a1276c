"""CrysAE: the crystal graph autoencoder of CrysXPP (Das et al. 2022, eqs. 1-7).

The encoder is :class:`~crysk.nn.cgcnn.GraphEncoder` without an embedding
bias (the released CrysAE's layout). The decoder reconstructs, from the atom
embeddings ``z``:

(a) each atom's nine categorical properties (eq. 4, one cross-entropy per
    property over its categories of the CGCNN element table);
(b) whether a directed atom pair ``(u, v)`` is an edge, ``σ(zᵤᵀ Wₑ zᵥ + bₑ)``
    (eq. 5), against randomly drawn atom pairs of the same crystal;
(c) the number ``k`` of edges between ``u`` and ``v`` (periodic images among
    the nearest neighbours), a softmax over ``1..K`` from the shared pair
    embedding ``zᵤᵥ = zᵤᵀ W_f zᵥ + b_f`` (eqs. 2 and 6);
(d) the length of each of those edges from ``zᵤᵥ`` and the edge's rank
    (eq. 3), by mean squared error (on the unclipped output).

Loss (eq. 7) is the weighted sum; (b, c) are the "global" terms and (a, d)
the "local" ones of the paper's ablation (Table 5).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..elements import ATOMIC_PROPERTIES, cgcnn_feature_table
from .cgcnn import GraphEncoder
from .layers import mean_pool

__all__ = ["CrysAENet", "RECONSTRUCTION_TERMS", "bilinear", "pair_structure"]

#: the reconstruction terms of eq. 7, by the paper's grouping
RECONSTRUCTION_TERMS = {"global": ("edge", "count"), "local": ("node", "length")}

_IGNORE = -100  # cross-entropy's ignore_index: an element without data for a property


def bilinear(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x1ᵀ W x2 + b`` row by row, as ``torch.nn.functional.bilinear``.

    torch's CPU kernel for bilinear is ~20x slower than one matmul followed by
    a batched dot product, which is what this does.

    Parameters
    ----------
    x1, x2 : torch.Tensor of shape (n, d1), (n, d2)
        First and second inputs, one row per pair.
    weight : torch.Tensor of shape (out, d1, d2)
        The bilinear form, one ``(in1, in2)`` matrix per output.
    bias : torch.Tensor of shape (out,) or None
        Added to each output (None: no bias).

    Returns
    -------
    torch.Tensor of shape (n, out)
    """
    n_out, d1, d2 = weight.shape
    left = (x1 @ weight.permute(1, 0, 2).reshape(d1, n_out * d2)).view(len(x1), n_out, d2)
    # a broadcast product and a sum, not bmm: the backward of bmm(left, x2[:, :, None]) is a batched outer
    # product that torch's CPU bmm runs as n tiny matrix products, 1.4-2x slower for the whole function
    out = (left * x2.unsqueeze(1)).sum(2)
    return out if bias is None else out + bias


def pair_structure(edge_src: torch.Tensor, edge_dst: torch.Tensor, n_atoms_total: int) -> dict[str, torch.Tensor]:
    """Group a multigraph's edges into distinct directed atom pairs.

    Parameters
    ----------
    edge_src, edge_dst : torch.Tensor of int64
        Edges in batch-global atom numbering, sorted by source and, per
        source, by length (as :class:`~crysk.graphs.CrystalGraphs` stores them).
    n_atoms_total : int
        Number of atoms in the batch.

    Returns
    -------
    dict
        ``keys`` (sorted pair keys ``u * n + v``), ``src``/``dst`` of each
        pair, ``count`` (edges per pair), ``edge_pair`` (pair of each edge)
        and ``edge_rank`` (0 for the shortest edge of its pair, 1 for the
        next, ...).
    """
    keys = edge_src * n_atoms_total + edge_dst
    uniq, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)  # stable: keeps each pair's edges in length order
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(len(inverse), device=inverse.device) - starts[inverse[order]]
    return {
        "keys": uniq,
        "src": uniq // n_atoms_total,
        "dst": uniq % n_atoms_total,
        "count": counts,
        "edge_pair": inverse,
        "edge_rank": rank,
    }


def _property_targets() -> torch.Tensor:
    """Category index of each element for each of the nine properties, ``(101, 9)``."""
    table = torch.as_tensor(cgcnn_feature_table().copy())
    cols = []
    for prop in ATOMIC_PROPERTIES:
        part = table[:, prop.slice]
        cols.append(torch.where(part.sum(1) > 0, part.argmax(1), torch.full_like(part[:, 0], _IGNORE).long()))
    return torch.stack(cols, dim=1).long()


class CrysAENet(GraphEncoder):
    """CrysAE encoder and decoder.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Width of the atom embeddings ``z``.
    n_conv : int, default=3
        Number of gated graph convolutions.
    max_count : int, default=12
        ``K``: most edges one pair can have (the neighbour count).
    pair_fea_len : int, default=6
        Width of the shared pair embedding ``zᵤᵥ`` (6 in the released CrysAE).
    length_hidden : int, default=32
        Hidden width of the bond-length network ``γₛ``.
    radius : float, default=8.0
        Last Gaussian centre (Å).
    step : float, default=0.2
        Spacing and width of the Gaussians (Å).
    """

    def __init__(
        self,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        max_count: int = 12,
        pair_fea_len: int = 6,
        length_hidden: int = 32,
        radius: float = 8.0,
        step: float = 0.2,
    ):
        super().__init__(atom_fea_len, n_conv, radius, step, embedding_bias=False)
        self.max_count = max_count
        self.register_buffer("property_targets", _property_targets(), persistent=False)
        # decoder names follow the released CrysAE where the role is the same (eq. 4)
        self.fc_atom_feature = nn.Linear(atom_fea_len, self.element_table.shape[1])
        self.fc_edge = nn.Bilinear(atom_fea_len, atom_fea_len, 1)
        self.fc_pair = nn.Bilinear(atom_fea_len, atom_fea_len, pair_fea_len)
        self.fc_count = nn.Linear(pair_fea_len, max_count)
        self.fc_length = nn.Sequential(
            nn.Linear(pair_fea_len + 1, length_hidden), nn.Softplus(), nn.Linear(length_hidden, 1)
        )
        with torch.no_grad():  # start mid-range: lengths lie in (0, radius]
            self.fc_length[-1].bias.fill_(radius / 2)

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        distances: torch.Tensor,
        crystal_index: torch.Tensor,
        n_atoms: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Atom embeddings ``z`` and their per-crystal means (the crystal embeddings).

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
        z = self.encode(self.atom_features(atomic_numbers), edge_src, edge_dst, distances)
        return z, mean_pool(z, crystal_index, n_atoms)

    def reconstruction_losses(
        self,
        z: torch.Tensor,
        batch: dict[str, torch.Tensor],
        terms: tuple[str, ...] = ("node", "edge", "count", "length"),
        max_pairs: int | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The reconstruction losses of eq. 7 (each a mean over its items).

        Parameters
        ----------
        z : torch.Tensor of shape (n_atoms_total, atom_fea_len)
            Atom embeddings from :meth:`forward`.
        batch : dict
            The batch the embeddings came from (``GraphTensors.batch``).
        terms : tuple of str
            Which of ``"node"``, ``"edge"``, ``"count"``, ``"length"`` to compute.
        max_pairs : int, optional
            Use at most this many randomly chosen atom pairs for the pair terms
            (an unbiased estimate of their mean; bounds the cost of big batches).
        generator : torch.Generator, optional
            Source of the pair sample and of the non-edges.

        Returns
        -------
        dict of str to scalar torch.Tensor
        """
        # gathers with grad use index_select: its backward (index_add_) is deterministic on the
        # CPU, while advanced indexing's (index_put_ with accumulate) is not
        losses: dict[str, torch.Tensor] = {}
        if "node" in terms:
            logits = self.fc_atom_feature(z)
            targets = self.property_targets.index_select(0, batch["atomic_numbers"])
            parts = [
                F.cross_entropy(logits[:, prop.slice], targets[:, i], ignore_index=_IGNORE)
                for i, prop in enumerate(ATOMIC_PROPERTIES)
            ]
            losses["node"] = torch.stack(parts).sum()
        if not {"edge", "count", "length"} & set(terms):
            return losses
        n_total = len(z)
        pairs = pair_structure(batch["edge_src"], batch["edge_dst"], n_total)
        n_pairs = len(pairs["keys"])
        chosen = None
        if max_pairs is not None and n_pairs > max_pairs:
            chosen = torch.randperm(n_pairs, generator=generator, device="cpu")[:max_pairs].to(z.device)
        src = pairs["src"] if chosen is None else pairs["src"][chosen]
        dst = pairs["dst"] if chosen is None else pairs["dst"][chosen]
        if "edge" in terms:
            losses["edge"] = self._edge_loss(z, src, dst, pairs["keys"], batch, generator)
        if "count" in terms or "length" in terms:
            z_pair = bilinear(z.index_select(0, src), z.index_select(0, dst), self.fc_pair.weight, self.fc_pair.bias)
            if "count" in terms:
                count = pairs["count"] if chosen is None else pairs["count"][chosen]
                target = (count - 1).clamp(max=self.max_count - 1)
                losses["count"] = F.cross_entropy(self.fc_count(z_pair), target)
            if "length" in terms:
                losses["length"] = self._length_loss(z_pair, pairs, chosen, batch["distances"])
        return losses

    def _edge_loss(self, z, src, dst, keys, batch, generator) -> torch.Tensor:
        """Binary cross-entropy of eq. 5 on the edges and as many random pairs."""
        n_atoms = batch["n_atoms"]
        starts = torch.cumsum(n_atoms, 0) - n_atoms
        crystal = batch["crystal_index"][src]
        u = torch.rand(len(src), generator=generator, device="cpu").to(z.device)
        other = starts[crystal] + (u * n_atoms[crystal]).long().clamp(max=n_atoms[crystal] - 1)
        # a random pair may well be an edge too (small cells are fully connected): label it as it is
        other_keys = src * len(z) + other
        pos = torch.searchsorted(keys, other_keys).clamp(max=len(keys) - 1)
        is_edge = (keys[pos] == other_keys).to(z.dtype)
        a = torch.cat([src, src])
        b = torch.cat([dst, other])
        labels = torch.cat([torch.ones_like(is_edge), is_edge])
        logits = bilinear(z.index_select(0, a), z.index_select(0, b), self.fc_edge.weight, self.fc_edge.bias)
        logits = logits.squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, labels)

    def _length_loss(self, z_pair, pairs, chosen, distances) -> torch.Tensor:
        """Squared error of eq. 3 over the edges of the (chosen) pairs."""
        edge_pair, rank = pairs["edge_pair"], pairs["edge_rank"]
        if chosen is not None:
            slot = torch.full((len(pairs["keys"]),), -1, dtype=torch.long, device=z_pair.device)
            slot[chosen] = torch.arange(len(chosen), device=z_pair.device)
            keep = slot[edge_pair] >= 0
            edge_pair, rank, distances = slot[edge_pair[keep]], rank[keep], distances[keep]
        k = (rank.to(z_pair.dtype) + 1.0).unsqueeze(1) / self.max_count
        # eq. 3 clips predictions at 0; the loss uses the unclipped output, because a clip (ReLU, or
        # a saturating softplus) let the whole head die in a few Adam steps and never recover
        predicted = self.fc_length(torch.cat([z_pair.index_select(0, edge_pair), k], dim=1)).squeeze(1)
        return F.mse_loss(predicted, distances)
