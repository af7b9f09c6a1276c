"""Building blocks shared by the crysk models (pure torch, no scikit-learn)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import workspace as _workspace
from .workspace import Workspace, new_empty

__all__ = [
    "GaussianExpansion",
    "ConvLayer",
    "gate",
    "batch_norm_gate",
    "mean_pool",
    "n_gaussians",
    "uniform_degree",
]


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
    """CGCNN's edge gate: ``sigmoid(x[:, :d]) * softplus(x[:, d:])`` with ``d = x.shape[1] // 2``.

    Parameters
    ----------
    x : torch.Tensor of shape (n_edges, 2 * d)
        Gate and core pre-activations, side by side.
    """
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


def _fusable(bn: nn.BatchNorm1d, synced: bool = False) -> bool:
    """Whether ``bn`` normalises with batch statistics under autograd (the memory-saving paths).

    ``synced``: the caller's path also sums the statistics over the ranks of a
    data-parallel fit (the edge convolution does; the others leave that to
    :func:`normalize`).
    """
    return (
        _workspace.USE_PRIVATE_APIS  # read at each call: tests switch it
        and bn.training
        and torch.is_grad_enabled()
        and bn.affine
        and bn.track_running_stats
        and bn.momentum is not None
        and (synced or not getattr(bn, "sync_stats", False))
        # under torch.compile the plain ops are traced instead: the compiler fuses them itself, and the
        # custom autograd functions' private kernels and buffer reuse would break its graph
        and not _workspace._is_compiling()
    )


def uniform_degree(edge_src: torch.Tensor, n_atoms: int) -> int:
    """``k`` when the edges are every atom's ``k`` edges in atom order (``src = [0]*k + [1]*k + ...``), else 0.

    CGCNN graphs nearly always have this form: every atom keeps its
    ``max_num_nbr`` nearest neighbours, stored atom by atom. The convolutions
    then read each edge's centre atom by broadcasting (an ``(n_atoms, k, d)``
    view) and sum each atom's messages over that view, instead of gathering
    and scattering by index: on the CPU a gather or scatter of the per-edge
    tensors costs several times the broadcast or the sum. Checked on the CPU
    only (the comparison would make a GPU step wait for the device).

    Parameters
    ----------
    edge_src : torch.Tensor of shape (n_edges,)
        Centre atom of each edge.
    n_atoms : int
        Atoms in the batch.

    Returns
    -------
    int
        The common degree, or 0 when the edges have another form (or are not on the CPU).
    """
    n_edges = len(edge_src)
    if edge_src.device.type != "cpu" or n_atoms == 0 or n_edges == 0 or n_edges % n_atoms:
        return 0
    k = n_edges // n_atoms
    expected = torch.arange(n_atoms, device=edge_src.device, dtype=edge_src.dtype).unsqueeze(1).expand(n_atoms, k)
    return k if torch.equal(edge_src.view(n_atoms, k), expected) else 0


def _sum_into_sources(per_edge: torch.Tensor, edge_src: torch.Tensor, n_atoms: int, degree: int) -> torch.Tensor:
    """``sum`` of the per-edge rows into their centre atoms: ``(n_atoms, d)``."""
    if degree:
        return per_edge.view(n_atoms, degree, per_edge.shape[1]).sum(1)
    return per_edge.new_zeros((n_atoms, per_edge.shape[1])).index_add_(0, edge_src, per_edge)


def _global_batch_stats(local_mean, local_invstd, n_local, eps, running_mean, running_var, momentum):
    """Mean, inverse std and size of the global batch of a data-parallel step, from each rank's own.

    Two all-reduces, as :func:`normalize`: the sizes and sums first, then the
    squared deviations from the global mean (each rank's variance plus its
    mean's offset, so nothing cancels as ``E[x^2] - mean^2`` would). Updates
    the running statistics as torch's batch norm does (unbiased variance).
    """
    import torch.distributed as dist

    local_var = local_invstd.pow(-2) - eps  # torch's kernel returns 1 / sqrt(var + eps), var biased
    first = torch.cat([local_mean * n_local, local_mean.new_full((1,), float(n_local))])
    dist.all_reduce(first)
    n_total = first[-1]
    mean = first[:-1] / n_total
    m2 = (local_var + (local_mean - mean).square()) * n_local
    dist.all_reduce(m2)
    var = m2 / n_total
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var * (n_total / (n_total - 1).clamp(min=1)), alpha=momentum)
    return mean, torch.rsqrt(var + eps), int(n_total.item())


def _input_grads(needs, grad_z, grad_pair, edge_fea, w_edge, edge_src, edge_dst, degree, n_atoms) -> tuple:
    """Gradients of :class:`_EdgeConv`'s first six inputs from ``grad_z`` (2, n_edges, d).

    The formulas autograd uses for index_select and addmm, half by half, into
    the atoms' ``[centre | nbr]``; ``grad_pair`` (n_atoms, 4d) is that
    gradient when the caller has it already (the fused CPU kernels).
    """
    _, _, d = grad_z.shape
    grad_fc_bias = grad_edge = grad_w_edge = None
    if (needs[0] or needs[1]) and grad_pair is None:
        grad_pair = grad_z.new_empty((n_atoms, 4 * d))
        for h in range(2):
            # summed into contiguous rows, then copied: index_add_ into a column view runs ~3x slower
            grad_pair[:, h * d : (h + 1) * d] = _sum_into_sources(grad_z[h], edge_src, n_atoms, degree)
            nbr_h = grad_z.new_zeros((n_atoms, d)).index_add_(0, edge_dst, grad_z[h])
            grad_pair[:, (2 + h) * d : (3 + h) * d] = nbr_h
    if needs[1]:
        grad_fc_bias = grad_pair[:, : 2 * d].sum(0)
    if needs[2]:
        grad_edge = grad_z[0].mm(w_edge[:, :d].t()).addmm_(grad_z[1], w_edge[:, d:].t())
    if needs[3]:
        grad_w_edge = torch.cat([edge_fea.t().mm(grad_z[h]) for h in range(2)], 1)
    return (grad_pair if needs[0] else None, grad_fc_bias, grad_edge, grad_w_edge, None, None)


def _kernels_for(pair: torch.Tensor, degree: int):
    """crysk's fused CPU kernels when they are on and suit this batch (:mod:`crysk.nn.cpu_kernels`), else ``None``."""
    if not degree or pair.device.type != "cpu" or pair.dtype != torch.float32:
        return None
    from . import cpu_kernels

    return cpu_kernels.active()


def _fused_forward(kernels, z, g, pair, fc_bias, edge_fea, w_edge, edge_dst, weight, bias, running_mean,
                   running_var, momentum, eps, degree, synced):
    """:class:`_EdgeConv`'s forward pass with the fused CPU kernels: two passes over the per-edge rows.

    ``z`` is built as ``edge_fea @ w`` (torch's matrix product) and then, in
    one pass, gets the centre and neighbour parts added while the channels'
    statistics are summed; a second pass applies batch norm, keeps the gate
    values in ``g`` and sums the messages into the atoms.

    Returns
    -------
    summed, mean, invstd, n_total
    """
    n_edges, d = z.shape[1], z.shape[2]
    for h in range(2):
        torch.mm(edge_fea, w_edge[:, h * d : (h + 1) * d], out=z[h])
    stats = kernels.edge_pre_stats(z, pair.contiguous(), fc_bias.contiguous(), edge_dst.contiguous(), degree)
    mean, var = stats[0], stats[1]
    invstd = torch.rsqrt(var + eps)
    n_total = n_edges
    if synced:
        mean, invstd, n_total = _global_batch_stats(mean, invstd, n_edges, eps, running_mean, running_var, momentum)
    else:
        # as torch's batch norm: the running variance is the unbiased one
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var, alpha=momentum * n_edges / max(n_edges - 1, 1))
    scale = invstd * weight
    shift = bias - mean * scale
    summed = kernels.gate_forward(z, g, scale.contiguous(), shift.contiguous(), degree)
    return summed, mean, invstd, n_total


def _bn_backward_coefficients(ctx, grad_weight, grad_bias, weight, mean, invstd) -> tuple:
    """Per-channel ``a, b, c0`` of batch norm's input gradient ``dz = dy * a + c0 - z * b``.

    From the channel sums ``grad_weight = sum(dy * xhat)`` and ``grad_bias = sum(dy)``:
    ``dz = (dy - sum_dy / N - (z - mean) * k) * invstd * w`` with ``k = sum(dy * xhat) * invstd / N``.
    """
    sum_dy_xhat, sum_dy = grad_weight, grad_bias
    if ctx.synced:
        # every rank's loss depends on this rank's rows through the global statistics: the sums are
        # over the global batch (the parameters' own gradients stay this rank's; DDP averages them)
        import torch.distributed as dist

        both = torch.cat([grad_weight, grad_bias])
        dist.all_reduce(both)
        sum_dy_xhat, sum_dy = both.chunk(2)
    n = ctx.n_total
    a = invstd * weight
    b = sum_dy_xhat * invstd / n * a
    c0 = mean * b - sum_dy / n * a
    return a, b, c0


def _fused_backward(ctx, grad: torch.Tensor) -> tuple:
    """:class:`_EdgeConv`'s backward pass with the fused CPU kernels: two passes over the per-edge rows.

    The first turns the kept gate values into the gradient of the batch-norm
    output while summing what batch norm's backward needs per channel; the
    second applies that backward in place and sums the result into the
    centre and the neighbour atoms (the gradient of the atoms' products).
    In a data-parallel fit the channel sums are all-reduced between the two.
    """
    z, gates, edge_fea, w_edge, edge_src, edge_dst, weight, bias, mean, invstd = ctx.saved_tensors
    kernels, degree, needs = ctx.kernels, ctx.degree, ctx.needs_input_grad
    sums = kernels.gate_backward_sums(grad.contiguous(), gates, z, mean.contiguous(), degree)
    grad_bias, grad_weight = sums[0], sums[1] * invstd
    dy = grad_z = gates
    grad_pair = None
    if any(needs[:4]):
        a, b, c0 = _bn_backward_coefficients(ctx, grad_weight, grad_bias, weight, mean, invstd)
        grad_pair = kernels.bn_backward_apply(dy, z, a.contiguous(), b.contiguous(), c0.contiguous(),
                                              edge_dst.contiguous(), degree)
    return _input_grads(needs, grad_z, grad_pair, edge_fea, w_edge, edge_src, edge_dst, degree, len(grad)) + (
        grad_weight, grad_bias, None, None, None, None, None, None, None)


class _EdgeConv(torch.autograd.Function):
    """The per-edge half of :class:`ConvLayer`, keeping two per-edge tensors for backward.

    Computes ``sum_j gate(BN(z_ij))`` into each source atom ``i``, with
    ``z = nbr[dst] + edge_fea @ w_edge + centre[src]`` and training-mode batch
    norm. Composed from autograd ops, a layer keeps ``z``, the gated messages
    (``index_add_`` saves its source) and the batch-norm output, and its
    backward holds five more tensors of ``n_edges x 2 * atom_fea_len`` floats
    at once (torch's batch-norm backward alone allocates two). Here ``z`` and
    the gate values ``[sigmoid(f), softplus(c)]`` are saved, and backward
    turns the gate values, in place, into the gradient of the batch-norm
    output and then of ``z``. Both are stored as two contiguous halves
    (filter, core), so that every elementwise kernel runs on contiguous
    memory, and the atoms' products come in, and their gradient goes out,
    as one ``(n_atoms, 4 * atom_fea_len)`` tensor: 9-14 % less time per
    layer than half-width column views and separate slices
    (``benchmarks/conv_layer.py --against``). Keeping the gate values costs
    one per-edge tensor per layer (about +100 MB of peak memory at CGCNN's
    batch of 256) and saves recomputing the batch-norm output, the sigmoid
    and the softplus, the costliest operation on the CPU: a layer's forward
    and backward take 15-20 % less time (``benchmarks/RESULTS.md``). When every atom has the
    same number of edges, stored atom by atom (:func:`uniform_degree`), the
    centre atoms are read by broadcasting and the messages summed over a
    view instead of gathered and scattered by index.

    The forward pass is bit for bit what autograd computes. The gate's
    backward uses ``sigmoid(c) = 1 - exp(-softplus(c))``, and the batch-norm
    backward takes its sums from torch's kernel and applies them in place as
    ``dy * a + c - z * b`` per channel; both equal autograd's results within
    float rounding.

    In a data-parallel fit (``synced``) the batch statistics are the global
    batch's: two all-reduces in the forward pass (:func:`_global_batch_stats`)
    and one of the two per-channel sums in the backward pass, so the fused
    path, and its memory saving, serve data-parallel training too.

    With crysk's fused C++ kernels switched on (:mod:`crysk.nn.cpu_kernels`)
    and a uniform degree, the same function is computed in four passes over
    the per-edge rows instead of about fifteen (:func:`_fused_forward`,
    :func:`_fused_backward`): 0.53-0.54x the time per layer on 1 and 2 cores
    (``benchmarks/conv_layer.py --cpu-kernels --against REV``).

    The work is done on whole tensors. Finer slices would shrink the
    temporaries, but on a busy 2-core machine every extra parallel operation
    waits for both threads to be scheduled: 16k-row slices made a layer 2x
    slower there.
    """

    @staticmethod
    def forward(ctx, pair, fc_bias, edge_fea, w_edge, edge_src, edge_dst, weight, bias, running_mean, running_var,
                momentum, eps, workspace, degree, synced):
        n_edges, width = len(edge_src), fc_bias.shape[0]
        d = width // 2
        # z and the gate values are stored as two contiguous halves, (2, n_edges, d): filter then core. The
        # elementwise kernels (sigmoid, softplus, exp and the products) run 1.5-2x slower on a half-width
        # column view of an (n_edges, 2d) tensor than on contiguous memory. Batch norm is per channel, so each
        # half is normalised on its own with its channels' parameters, buffers and statistics.
        z = new_empty(workspace, 2 * n_edges, d, pair, tag=2).view(2, n_edges, d)
        g = new_empty(workspace, 2 * n_edges, d, pair, tag=2).view(2, n_edges, d)
        kernels = _kernels_for(pair, degree)
        ctx.kernels = kernels
        if kernels is not None:
            summed, mean, invstd, n_total = _fused_forward(
                kernels, z, g, pair, fc_bias, edge_fea, w_edge, edge_dst, weight, bias, running_mean, running_var,
                momentum, eps, degree, synced,
            )
            ctx.save_for_backward(z, g, edge_fea, w_edge, edge_src, edge_dst, weight, bias, mean, invstd)
            ctx.eps, ctx.workspace, ctx.degree, ctx.synced, ctx.n_total = eps, workspace, degree, synced, n_total
            return summed
        # the atoms' two products side by side, (n_atoms, 2 * width): centre-atom part, neighbour part. Taking
        # them whole (and returning their gradient whole) spares autograd the slices' backward, which zero-fills
        # and copies an (n_atoms, 2 * width) gradient for each
        centre = pair[:, :width] + fc_bias
        nbr = pair[:, width:]
        stats = []
        halves = [t.view(2, d) for t in (weight, bias, running_mean, running_var)]
        for h in range(2):
            cols = slice(h * d, (h + 1) * d)
            zh, gh = z[h], g[h]
            weight_h, bias_h, running_mean_h, running_var_h = (t[h] for t in halves)
            # nbr[dst] + edge_fea @ w + centre[src], in three passes over the per-edge rows
            torch.index_select(nbr[:, cols], 0, edge_dst, out=zh)
            zh.addmm_(edge_fea, w_edge[:, cols])
            if degree:
                zh.view(-1, degree, d).add_(centre[:, cols].unsqueeze(1))  # centre[src] without the gather
            else:
                zh.add_(torch.index_select(centre[:, cols], 0, edge_src, out=gh))
            mean, invstd = z.new_empty(0), z.new_empty(0)
            # with synced statistics, this rank's own first (running statistics untouched), mapped below
            torch.ops.aten.native_batch_norm.out(
                zh, weight_h, bias_h, None if synced else running_mean_h, None if synced else running_var_h, True,
                momentum, eps, out=gh, save_mean=mean, save_invstd=invstd,
            )
            stats.append((mean, invstd))
        mean, invstd = (torch.cat(s) for s in zip(*stats))
        n_total = n_edges
        if synced:
            # the global batch's statistics, and this rank's normalised values mapped onto them per channel
            local_mean, local_invstd = mean, invstd
            mean, invstd, n_total = _global_batch_stats(local_mean, local_invstd, n_edges, eps, running_mean,
                                                        running_var, momentum)
            ratio = invstd / local_invstd
            shift = bias * (1.0 - ratio) + (local_mean - mean) * invstd * weight
            torch.addcmul(shift.view(2, 1, d), g, ratio.view(2, 1, d), out=g)
        f, c = g[0], g[1]
        f.sigmoid_()
        torch.ops.aten.softplus.out(c, 1, 20, out=c)  # F.softplus's defaults, in place
        messages = torch.mul(f, c, out=new_empty(workspace, n_edges, d, centre, tag=1))
        summed = _sum_into_sources(messages, edge_src, centre.shape[0], degree)
        # the gate values are kept rather than recomputed in backward: softplus is the costliest operation
        # of a step on the CPU, and the backward pass then needs neither it nor the batch-norm output again
        ctx.save_for_backward(z, g, edge_fea, w_edge, edge_src, edge_dst, weight, bias, mean, invstd)
        ctx.eps = eps
        ctx.workspace = workspace
        ctx.degree = degree
        ctx.synced = synced
        ctx.n_total = n_total
        return summed

    @staticmethod
    def backward(ctx, grad):
        if getattr(ctx, "consumed", False):
            raise RuntimeError(
                "crysk's fused convolution turns its saved gate values into gradients in place, so its backward "
                "runs once per forward pass; call backward once per step (or train with "
                "crysk.nn.workspace.USE_PRIVATE_APIS = False for the plain autograd path)"
            )
        ctx.consumed = True
        z, gates, edge_fea, w_edge, edge_src, edge_dst, weight, bias, mean, invstd = ctx.saved_tensors
        workspace = ctx.workspace
        degree = ctx.degree
        _, n_edges, d = z.shape
        n_atoms = len(grad)
        needs = ctx.needs_input_grad
        if ctx.kernels is not None:
            return _fused_backward(ctx, grad)
        # the gate's backward turns the kept gate values into the gradient of the batch-norm output, in place
        dy = gates
        s, sp = gates[0], gates[1]  # sigmoid(f) and softplus(c) from the forward pass
        m_sp = new_empty(workspace, n_edges, d, z, tag=1)
        if degree:
            # each edge's gradient is its centre atom's: broadcast over (n_atoms, degree, d) views
            def edges(t):
                return t.view(-1, degree, d)

            m, m_neg = grad.unsqueeze(1), grad.neg().unsqueeze(1)
            torch.mul(edges(sp), m, out=edges(m_sp))
        else:
            def edges(t):
                return t

            m = torch.index_select(grad, 0, edge_src, out=new_empty(workspace, n_edges, d, z, tag=1))
            m_neg = None
            torch.mul(sp, m, out=m_sp)
        # d/dc = grad * s * sigmoid(c), with sigmoid(c) = 1 - exp(-softplus(c)): torch's CPU expm1 is not
        # vectorised (7x slower than exp here); where sigmoid(c) < ~1e-6 this is exact to ~6e-8 absolute only,
        # far below the rounding of the sums over edges those terms enter
        gc = sp.neg_().exp_().sub_(1.0).mul_(s)  # -s * sigmoid(c)
        if m_neg is not None:
            edges(gc).mul_(m_neg)
        else:
            gc.mul_(m).neg_()
        # d/df = grad * softplus(c) * s * (1 - s)
        torch.ops.aten.sigmoid_backward.grad_input(m_sp, s, grad_input=s)
        del m, m_neg, m_sp
        # batch norm's backward: torch's kernel gives the per-channel sums without allocating the input
        # gradient; dz = (dy - sum_dy / N - (z - mean) * k) * invstd * w with k = dotp * invstd^2 / N
        halves = [t.view(2, d) for t in (weight, mean, invstd)]
        sums = [
            torch.ops.aten.native_batch_norm_backward(
                dy[h], z[h], halves[0][h], None, None, halves[1][h], halves[2][h], True, ctx.eps, [False, True, True]
            )[1:]
            for h in range(2)
        ]
        grad_weight, grad_bias = (torch.cat(s) for s in zip(*sums))
        grad_z = dy
        if any(needs[:4]):
            a, b, c0 = _bn_backward_coefficients(ctx, grad_weight, grad_bias, weight, mean, invstd)
            torch.addcmul(c0.view(2, 1, d), dy, a.view(2, 1, d), out=grad_z).addcmul_(z, b.view(2, 1, d), value=-1)
        return _input_grads(needs, grad_z, None, edge_fea, w_edge, edge_src, edge_dst, degree, n_atoms) + (
            grad_weight, grad_bias, None, None, None, None, None, None, None)


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over all ranks of the default process group, with the gradient summed alike.

    (``torch.distributed.nn.functional.all_reduce`` does the same but is deprecated in favour of a
    private module.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        # every rank's loss depends on every rank's input through the sum: the gradients add up
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def normalize(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)``; in data-parallel training, with batch statistics over every rank's share of the batch.

    The estimators set ``bn.sync_stats = True`` while a data-parallel fit
    runs (see :mod:`crysk.distributed`): a training-mode layer then
    normalises with the mean and variance of the whole global batch, summed
    over the ranks with differentiable all-reduces, so a step equals the
    single-process step on the global batch within float rounding.
    (PyTorch's ``SyncBatchNorm`` does this on GPUs only.)

    Parameters
    ----------
    bn : torch.nn.BatchNorm1d
        The layer (its parameters, buffers and mode are used).
    x : torch.Tensor of shape (n, channels)
        Its input.

    Returns
    -------
    torch.Tensor of shape (n, channels)
    """
    if not (bn.training and getattr(bn, "sync_stats", False)):
        return bn(x)
    all_reduce = _AllReduceSum.apply
    # two passes (sum, then squared deviations) as torch's kernel: E[x^2] - mean^2 cancels badly in float32
    total = all_reduce(torch.cat([x.sum(0), x.new_full((1,), float(x.shape[0]))]))
    n = total[-1]
    mean = total[:-1] / n
    centred = x - mean
    var = all_reduce(centred.square().sum(0)) / n
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(m * mean)
            bn.running_var.mul_(1 - m).add_(m * var * n / (n - 1).clamp(min=1))  # unbiased, as torch keeps it
    out = centred * torch.rsqrt(var + bn.eps)
    return out * bn.weight + bn.bias if bn.affine else out


def batch_norm_gate(z: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """``gate(bn(z))``, storing less for backward when ``bn`` trains.

    Parameters
    ----------
    z : torch.Tensor of shape (n_edges, 2 * d)
        Pre-activations of the edges.
    bn : torch.nn.BatchNorm1d
        The batch norm applied before the gate.

    Returns
    -------
    torch.Tensor of shape (n_edges, d)
    """
    if _fusable(bn):
        bn.num_batches_tracked.add_(1)
        return _BatchNormGate.apply(z, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)
    return gate(normalize(bn, z))


def n_gaussians(dmax: float, step: float = 0.2, dmin: float = 0.0) -> int:
    """Number of Gaussian centres on ``[dmin, dmax]`` spaced by ``step`` (41 for 0-8 Å by 0.2 Å).

    Parameters
    ----------
    dmax : float
        Last centre (Å).
    step : float, default=0.2
        Spacing (Å).
    dmin : float, default=0.0
        First centre (Å).
    """
    return int(math.floor((dmax - dmin) / step + 1e-6)) + 1


#: exp(-x) for x above this is set to 0: exp(-87) ~ 1.6e-38 is about float32's smallest normal number
_EXP_CUTOFF = 87.0
#: Gaussian values below this become 0. Not just the subnormal values themselves: the edge products
#: multiply each value by a weight (forward) or a gradient (backward) of 1e-2 to 1e-8, and a product
#: below 1.2e-38 is subnormal too (values kept down to 2e-38 left the forward product 3x slower)
_TINY_GAUSSIAN = 1e-20


def _underflow_to_zero(scaled_sq: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``exp(-scaled_sq)``, with every value below ``_TINY_GAUSSIAN`` (1e-20) set to 0.

    A Gaussian far from its centre underflows: for about 4 % of CGCNN's expanded
    distances, ``exp`` of an argument below -87 lands in float32's subnormal range
    (or rounds to 0). x86 CPUs compute both on such values in microcode: ``exp`` of
    arguments below -88 ran ~50x slower than of normal ones, and the edge products
    that read subnormal operands (forward and backward) 6-12x slower, making a CPU
    training step ~1.7x slower overall. Clamping the argument keeps ``exp`` on its
    fast path. The threshold keeps the products off that path too, which needs
    more than normal operands: a value of 1e-37 times a weight of 0.01 is a
    subnormal product (with values kept down to 2e-38, the forward product on
    real edges took 36 ms against 12 ms with 1e-30). With centres one
    ``var`` apart (CGCNN's and CrysXPP's setting) each edge's largest Gaussian
    is above exp(-0.25) = 0.78, so the values set to 0 are far below float32's
    rounding of the sums they enter. Done on every device so that CPU and GPU
    compute the same function.
    """
    if inplace:
        return F.threshold_(scaled_sq.clamp_(max=_EXP_CUTOFF).neg_().exp_(), _TINY_GAUSSIAN, 0.0)
    return F.threshold(torch.exp(-scaled_sq.clamp(max=_EXP_CUTOFF)), _TINY_GAUSSIAN, 0.0)


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

    def forward(self, distances: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """Expand ``(n_edges,)`` distances into ``(n_edges, n_features)``.

        Parameters
        ----------
        distances : torch.Tensor of shape (n_edges,)
            Edge lengths (Å).
        workspace : Workspace, optional
            Where a training step takes its output buffer (the model's own).

        Returns
        -------
        torch.Tensor of shape (n_edges, n_features)
            The expanded distances.
        """
        if distances.requires_grad and torch.is_grad_enabled():
            diff = distances.unsqueeze(-1) - self.centers
            return _underflow_to_zero(diff * diff * self.inv_var2)
        if self.training:
            dtype = torch.result_type(distances, self.centers)
            out = new_empty(workspace, len(distances), len(self.centers), self.centers, dtype)
            diff = torch.sub(distances.unsqueeze(-1), self.centers, out=out)
        else:
            diff = distances.unsqueeze(-1) - self.centers
        # one per-edge tensor instead of five: the same operations, in place
        return _underflow_to_zero(diff.mul_(diff).mul_(self.inv_var2), inplace=True)


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
        self,
        atom_fea: torch.Tensor,
        edge_fea: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        workspace: Workspace | None = None,
        degree: int | None = None,
    ) -> torch.Tensor:
        """Update ``(n_atoms, atom_fea_len)`` atom features along the edges ``src -> dst``.

        Parameters
        ----------
        atom_fea : torch.Tensor of shape (n_atoms, atom_fea_len)
            Atom features.
        edge_fea : torch.Tensor of shape (n_edges, nbr_fea_len)
            Edge features (expanded distances).
        edge_src, edge_dst : torch.Tensor of shape (n_edges,)
            Centre and neighbour atom of each edge.
        workspace : Workspace, optional
            Where a training step takes its per-edge buffers (the model's own).
        degree : int, optional
            :func:`uniform_degree` of the edges (0: none), when the caller has
            it already (the encoder checks once for all its layers); checked
            here when not given.

        Returns
        -------
        torch.Tensor of shape (n_atoms, atom_fea_len)
            The updated atom features.
        """
        if degree is None:
            degree = uniform_degree(edge_src, len(atom_fea))
        f = self.atom_fea_len
        w = self.fc_full.weight
        # one product per atom for both atom parts: [:, :2f] centre atom (+ bias), [:, 2f:] neighbour
        pair = atom_fea @ torch.cat([w[:, :f], w[:, f : 2 * f]], dim=0).t()
        bn = self.bn1
        if _fusable(bn, synced=True):
            bn.num_batches_tracked.add_(1)
            summed = _EdgeConv.apply(
                pair, self.fc_full.bias, edge_fea, w[:, 2 * f :].t(), edge_src, edge_dst,
                bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, workspace, degree,
                bool(getattr(bn, "sync_stats", False)),
            )
        else:
            centre = pair[:, : 2 * f] + self.fc_full.bias
            nbr = pair[:, 2 * f :]
            # accumulate in place: each per-edge temporary costs a full pass over memory
            # in the fused path's order: nbr[dst] + edge_fea @ w + centre[src]
            gated = nbr.index_select(0, edge_dst).addmm_(edge_fea, w[:, 2 * f :].t())
            if degree:
                gated = gated.view(-1, degree, 2 * f).add_(centre.unsqueeze(1)).view(len(edge_src), -1)
            else:
                gated = gated.add_(centre.index_select(0, edge_src))
            messages = batch_norm_gate(gated, bn)
            summed = _sum_into_sources(messages, edge_src, len(atom_fea), degree)
        return F.softplus(atom_fea + normalize(self.bn2, summed))


def mean_pool(atom_fea: torch.Tensor, crystal_index: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """Average atom features per crystal (eq. 4 of the TL-CGCNN paper).

    Parameters
    ----------
    atom_fea : torch.Tensor of shape (n_atoms_total, d)
        Features of every atom of the batch.
    crystal_index : torch.Tensor of shape (n_atoms_total,)
        Crystal of each atom.
    n_atoms : torch.Tensor of shape (n_crystals,)
        Number of atoms of each crystal.

    Returns
    -------
    torch.Tensor of shape (n_crystals, d)
    """
    summed = atom_fea.new_zeros((len(n_atoms), atom_fea.shape[1])).index_add_(0, crystal_index, atom_fea)
    return summed / n_atoms.unsqueeze(1).to(atom_fea.dtype)
