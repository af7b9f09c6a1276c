"""crysk's fused C++ CPU kernels (crysk.nn.cpu_kernels): torch's function within rounding, used only where they
fit, and a clear message when they cannot be built."""

import copy
import types
import warnings

import numpy as np
import pytest
import torch

from crysk import CGCNNRegressor, CrysAE
from crysk.nn import GraphEncoder, cpu_kernels
from crysk.nn.layers import uniform_degree

KERNEL_NAMES = ("edge_pre_stats", "gate_forward", "gate_backward_sums", "bn_backward_apply")


@pytest.fixture(scope="module")
def built():
    """The compiled extension (about a minute the first time on a machine, then torch's cache)."""
    try:
        return cpu_kernels.build()
    except RuntimeError as exc:  # no compiler on this machine: what the message says is tested below
        pytest.skip(str(exc))


@pytest.fixture
def spy(built, monkeypatch):
    """Kernels switched on, with every call counted."""
    calls = {name: 0 for name in KERNEL_NAMES}

    def counted(name):
        def call(*args):
            calls[name] += 1
            return getattr(built, name)(*args)

        return call

    monkeypatch.setattr(cpu_kernels, "_module", types.SimpleNamespace(**{n: counted(n) for n in KERNEL_NAMES}))
    monkeypatch.setattr(cpu_kernels, "_switch", True)
    return calls


def _batch(eform_graphs, n=64):
    graphs, _ = eform_graphs
    return graphs[:n].to_tensors("cpu").batch()


def _layer_step(on: bool, encoder, batch, grad, monkeypatch):
    """One convolution's training forward and backward: output, input and parameter gradients, BN buffers."""
    monkeypatch.setattr(cpu_kernels, "_switch", on)
    enc = copy.deepcopy(encoder)
    conv = enc.convs[0]
    with torch.no_grad():
        h0 = enc.embedding(enc.atom_features(batch["atomic_numbers"]))
        e0 = enc.gaussian(batch["distances"])
    h, e = h0.clone().requires_grad_(True), e0.clone().requires_grad_(True)
    out = conv(h, e, batch["edge_src"], batch["edge_dst"], enc.workspace)
    out.backward(grad)
    named = {"out": out.detach(), "grad atoms": h.grad, "grad edges": e.grad}
    named.update({f"grad {k}": p.grad for k, p in conv.named_parameters()})
    named.update({k: b.clone() for k, b in conv.named_buffers() if b.is_floating_point()})
    return named


def test_a_convolution_with_the_kernels_is_torchs_within_rounding(spy, eform_graphs, monkeypatch):
    batch = _batch(eform_graphs)
    assert uniform_degree(batch["edge_src"], len(batch["atomic_numbers"])) == 12  # the kernels' case
    torch.manual_seed(0)
    encoder = GraphEncoder()
    encoder.train()
    grad = torch.randn(len(batch["atomic_numbers"]), encoder.convs[0].atom_fea_len)
    ref = _layer_step(False, encoder, batch, grad, monkeypatch)
    assert sum(spy.values()) == 0
    fused = _layer_step(True, encoder, batch, grad, monkeypatch)
    assert spy == {name: 1 for name in KERNEL_NAMES}
    for name, r in ref.items():
        # float32 sums in another order: relative 1e-4 of the tensor's scale, not of each element. The fc
        # bias feeds batch norm, which cancels its gradient: that is rounding noise on both paths, measured
        # against the fc weights' gradient
        scale = float(ref["grad fc_full.weight" if name == "grad fc_full.bias" else name].abs().max())
        torch.testing.assert_close(fused[name], r, rtol=1e-4, atol=1e-4 * scale, msg=name)


def test_a_fit_with_the_kernels_matches_one_without(spy, eform_graphs, monkeypatch):
    graphs, y = eform_graphs
    params = dict(atom_fea_len=32, n_conv=2, max_epochs=3, batch_size=32, validation_fraction=None,
                  random_state=0, n_threads=1)
    monkeypatch.setattr(cpu_kernels, "_switch", False)
    plain = CGCNNRegressor(**params).fit(graphs[:120], y[:120])
    monkeypatch.setattr(cpu_kernels, "_switch", True)
    fused = CGCNNRegressor(**params).fit(graphs[:120], y[:120])
    # 4 kernels per convolution and step: 2 layers x 4 steps x 3 epochs
    assert spy == {name: 2 * 4 * 3 for name in KERNEL_NAMES}
    np.testing.assert_allclose(fused.history[:, "train_loss"], plain.history[:, "train_loss"], rtol=1e-3)
    np.testing.assert_allclose(fused.predict(graphs[120:200]), plain.predict(graphs[120:200]), atol=2e-3)
    # the kernels serve training steps only: prediction is torch's either way
    before = dict(spy)
    fused.predict(graphs[:50])
    assert spy == before


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_crysae_fit_with_the_kernels_matches_one_without(spy, eform_graphs, monkeypatch, optimizer):
    """The autoencoder's encoder takes the same fused path (crysae-mp is pretrained with it, Adam at lr 0.003)."""
    graphs, _ = eform_graphs
    params = dict(atom_fea_len=32, n_conv=2, max_epochs=3, batch_size=40, optimizer=optimizer,
                  lr=0.003 if optimizer == "adam" else 0.001, validation_fraction=None, random_state=0, n_threads=1)
    monkeypatch.setattr(cpu_kernels, "_switch", False)
    plain = CrysAE(**params).fit(graphs[:120])
    monkeypatch.setattr(cpu_kernels, "_switch", True)
    fused = CrysAE(**params).fit(graphs[:120])
    assert spy == {name: 2 * 3 * 3 for name in KERNEL_NAMES}  # 2 layers x 3 steps x 3 epochs
    np.testing.assert_allclose(fused.history[:, "train_loss"], plain.history[:, "train_loss"], rtol=1e-3)
    if optimizer == "sgd":
        # not with Adam: it divides each gradient by its own size, so the convolutions' fc bias (whose gradient
        # batch norm cancels: rounding noise on both paths) takes full-size steps in noise-given directions,
        # which the eval-mode running means then carry into the embeddings
        np.testing.assert_allclose(fused.transform(graphs[120:160]), plain.transform(graphs[120:160]), atol=2e-3)


def test_batches_of_another_form_keep_torchs_kernels(spy):
    """Edges not stored as every atom's k neighbours in atom order (degree 0) take torch's path."""
    from crysk.nn.layers import ConvLayer

    torch.manual_seed(0)
    conv = ConvLayer(8, 5)
    n = 30
    src = torch.arange(n).repeat_interleave(torch.randint(1, 7, (n,)))
    dst = torch.randint(0, n, (len(src),))
    out = conv(torch.randn(n, 8, requires_grad=True), torch.rand(len(src), 5), src, dst)
    out.sum().backward()
    assert sum(spy.values()) == 0


def test_loading_the_kernels_keeps_subnormal_numbers(built):
    """Built with -ffast-math for the compiler only: nothing sets flush-to-zero for the whole process."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert float(tiny * 0.5) > 0
    assert np.float32(1e-39) * np.float32(0.5) > 0


def test_a_failed_build_says_what_is_missing(monkeypatch):
    import torch.utils.cpp_extension as cpp

    def no_compiler(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp, "load", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_module", None)
    monkeypatch.setattr(cpu_kernels, "_error", None)
    monkeypatch.setattr(cpu_kernels, "_switch", None)
    monkeypatch.setattr(cpu_kernels, "_warned", False)
    with pytest.raises(RuntimeError, match=r"(?s)could not be built.*Ninja is required.*C\+\+ compiler.*ninja"):
        cpu_kernels.enable()
    assert not cpu_kernels.enabled()
    # turned on by the environment: one warning, then torch's kernels
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "1")
    assert cpu_kernels.enabled()
    with pytest.warns(RuntimeWarning, match="torch's kernels"):
        assert cpu_kernels.active() is None
    assert not cpu_kernels.enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernels.active() is None


def test_the_environment_variable_and_enable(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_switch", None)
    monkeypatch.delenv(cpu_kernels.ENV_VAR, raising=False)
    assert not cpu_kernels.enabled() and cpu_kernels.active() is None
    for value, on in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv(cpu_kernels.ENV_VAR, value)
        assert cpu_kernels.enabled() is on
    cpu_kernels.enable(False)  # the call wins over the variable
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "1")
    assert not cpu_kernels.enabled()


def test_the_build_is_keyed_by_the_cpu(monkeypatch):
    """-march=native code from another CPU (a shared home directory on a cluster) is never loaded."""
    monkeypatch.setattr(cpu_kernels, "_cpu_signature", lambda: "flags : avx2")
    first = cpu_kernels._build_name()
    monkeypatch.setattr(cpu_kernels, "_cpu_signature", lambda: "flags : avx512f")
    assert cpu_kernels._build_name() != first
    assert first.startswith("crysk_cpu_kernels_")


def test_the_gate_stays_finite_where_sigmoid_saturates(built):
    # batch norm's output far below -88.7 (a trained model's rare channel, seen at epoch 74 of a CrysAE on
    # 114k crystals): exp(-f) overflows, and under -ffast-math 1 / (1 + inf) came out NaN instead of 0
    degree, d = 2, 8
    z = torch.linspace(-150.0, 150.0, 2 * 4 * degree * d).reshape(2, 4 * degree, d).contiguous()
    g = torch.empty_like(z)
    scale, shift = torch.ones(2 * d), torch.zeros(2 * d)
    summed = built.gate_forward(z, g, scale, shift, degree)
    sig, soft = torch.sigmoid(z[0]), torch.nn.functional.softplus(z[1])
    assert torch.isfinite(g).all() and torch.isfinite(summed).all()
    torch.testing.assert_close(g[0], sig, rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(g[1], soft, rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(summed, (sig * soft).view(-1, degree, d).sum(1), rtol=1e-5, atol=1e-30)
