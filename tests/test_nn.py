import copy

import pytest
import torch
from torch.nn import functional as F

from crysk.nn import CGCNN
from crysk.nn import workspace
from crysk.nn.layers import ConvLayer, GaussianExpansion, batch_norm_gate, gate, uniform_degree


def reference_conv(conv, h, e, src, dst):
    """The original CGCNN formulation: concatenate, one linear map, BN, gate, sum, BN."""
    z = conv.bn1(conv.fc_full(torch.cat([h[src], h[dst], e], dim=1)))
    f, c = z.chunk(2, dim=1)
    summed = torch.zeros_like(h).index_add_(0, src, torch.sigmoid(f) * F.softplus(c))
    return F.softplus(h + conv.bn2(summed))


def edge_lists(kind, n):
    """Centre atoms of CGCNN-like edges: 4 per atom in atom order, or the same shuffled, or 1-6 per atom."""
    src = torch.arange(n).repeat_interleave(4)
    if kind == "shuffled":
        src = src[torch.randperm(len(src))]
    elif kind == "ragged":
        src = torch.arange(n).repeat_interleave(torch.randint(1, 7, (n,)))
    return src


@pytest.mark.parametrize("private", [True, False])
@pytest.mark.parametrize("kind", ["uniform", "shuffled", "ragged"])
def test_conv_layer_matches_the_concatenated_formulation(kind, private, monkeypatch):
    monkeypatch.setattr(workspace, "USE_PRIVATE_APIS", private and workspace.USE_PRIVATE_APIS)
    torch.manual_seed(0)
    conv = ConvLayer(8, 5).double()
    twin = copy.deepcopy(conv)
    n = 30
    src = edge_lists(kind, n)
    assert uniform_degree(src, n) == (4 if kind == "uniform" else 0)
    dst = torch.randint(0, n, (len(src),))
    h = torch.randn(n, 8, dtype=torch.float64, requires_grad=True)
    h2 = h.detach().clone().requires_grad_(True)
    e = torch.rand(len(src), 5, dtype=torch.float64)
    out, ref = conv(h, e, src, dst), reference_conv(twin, h2, e, src, dst)
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(h.grad, h2.grad)
    for (name, p), (_, q) in zip(conv.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    for (name, b), (_, c) in zip(conv.named_buffers(), twin.named_buffers()):
        torch.testing.assert_close(b, c, msg=name)


def test_uniform_degree_recognises_only_atom_ordered_equal_degrees():
    assert uniform_degree(torch.arange(5).repeat_interleave(12), 5) == 12
    assert uniform_degree(torch.arange(5).repeat_interleave(12), 6) == 0  # an atom without edges
    assert uniform_degree(torch.arange(5).repeat(12), 5) == 0  # equal degrees, other order
    assert uniform_degree(torch.tensor([0, 0, 1, 2, 2, 2]), 3) == 0
    assert uniform_degree(torch.zeros(0, dtype=torch.long), 0) == 0


def test_gate_saturation_keeps_exact_gradients():
    """Far out on the softplus, its gradient sigmoid(c) is tiny or 1: the kept gate values must give it exactly."""
    torch.manual_seed(0)
    conv = ConvLayer(4, 3)
    twin = copy.deepcopy(conv).double()
    with torch.no_grad():  # pre-activations from about -40 to 40
        conv.bn1.weight.mul_(15.0)
        twin.bn1.weight.mul_(15.0)
    n = 40
    src, dst = torch.arange(n).repeat_interleave(3), torch.randint(0, n, (3 * n,))
    h = torch.randn(n, 4, requires_grad=True)
    h2 = h.detach().double().requires_grad_(True)
    e = torch.rand(3 * n, 3)
    w = torch.randn(n, 4)
    (conv(h, e, src, dst) * w).sum().backward()
    (reference_conv(twin, h2, e.double(), src, dst) * w.double()).sum().backward()
    torch.testing.assert_close(h.grad, h2.grad.float(), rtol=1e-4, atol=1e-5)
    for (name, p), (_, q) in zip(conv.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_fused_convolution_refuses_a_second_backward():
    torch.manual_seed(0)
    conv = ConvLayer(4, 3)
    h = torch.randn(6, 4, requires_grad=True)
    out = conv(h, torch.rand(12, 3), torch.arange(6).repeat_interleave(2), torch.randint(0, 6, (12,)))
    out.sum().backward(retain_graph=True)
    if workspace.USE_PRIVATE_APIS:
        with pytest.raises(RuntimeError, match="backward runs once per forward pass"):
            out.sum().backward()


def test_gates_have_correct_gradients():
    x = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gate, (x,))
    bn = torch.nn.BatchNorm1d(6).double()
    assert torch.autograd.gradcheck(lambda v: batch_norm_gate(v, copy.deepcopy(bn)), (x,))


def test_gaussian_expansion_defaults():
    g = GaussianExpansion(0.0, 8.0, 0.2)
    assert g.n_features == 41
    out = g(torch.tensor([0.0, 8.0]))
    assert torch.allclose(out[0, 0], torch.tensor(1.0)) and torch.allclose(out[1, -1], torch.tensor(1.0))


def test_gaussian_expansion_has_no_subnormal_values():
    # far tails underflow below float32's smallest normal number; x86 CPUs compute exp into that range,
    # and multiply such operands (or operands whose product is that small), many times slower, so the
    # expansion sets values below 1e-20 to 0 (and leaves every other value as exp gives it)
    g = GaussianExpansion(0.0, 8.0, 0.2)
    d = torch.linspace(0.5, 8.0, 3001)
    tiny = torch.finfo(torch.float32).tiny
    diff = d.unsqueeze(-1) - g.centers
    exact = torch.exp(-(diff * diff * g.inv_var2))
    assert ((exact > 0) & (exact < tiny)).any()  # the data do produce subnormals
    for mode in (True, False):  # the in-place training path and the evaluation path
        g.train(mode)
        with torch.no_grad():
            out = g(d)
        assert not ((out > 0) & (out < tiny)).any()
        # a weight or gradient of 1e-15 times any value kept is still a normal float32 product
        product = out * 1e-15
        assert not ((product > 0) & (product < tiny)).any()
        kept = exact >= 1e-20
        torch.testing.assert_close(out[kept], exact[kept], rtol=1e-6, atol=0)
        assert (out[~kept] == 0).all()
    # the differentiable path (distances that need a gradient) computes the same values
    d.requires_grad_(True)
    out = g(d)
    assert torch.equal(out.detach()[~kept], torch.zeros_like(exact[~kept]))
    out.sum().backward()
    assert torch.isfinite(d.grad).all()


def test_cgcnn_parameter_names_follow_the_original():
    names = set(CGCNN(n_conv=2, n_h=2).state_dict())
    for expected in ["embedding.weight", "embedding.bias", "convs.1.fc_full.weight", "convs.0.bn1.running_var",
                     "convs.1.bn2.weight", "conv_to_fc.weight", "fcs.0.weight", "fc_out.bias"]:
        assert expected in names
    assert not any("element_table" in n or "centers" in n for n in names)
