"""Several targets, some missing (issue 17 item 3): masked loss, per-target scaling, weights and validation MAE."""

import numpy as np
import pytest
import torch

import crysk
from crysk import CGCNNRegressor, CrystalGraphFeaturizer
from crysk.estimators.regressor import MaskedLoss

TINY = dict(atom_fea_len=8, n_conv=1, h_fea_len=8, batch_size=16, random_state=0)


@pytest.fixture(scope="module")
def graphs_two_targets(eform_structures):
    """60 crystals; target 0 is the formation energy, target 1 (another scale) is missing for every other crystal."""
    structures, y, ids = eform_structures
    g = CrystalGraphFeaturizer().transform(structures[:60], ids=ids[:60])
    y = y[:60]
    y2 = np.column_stack([y, 100.0 * y**2 + 50.0])
    y2[::2, 1] = np.nan
    return g, y2


def test_masked_loss_ignores_missing_entries_exactly():
    torch.manual_seed(0)
    pred = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    true = torch.randn(6, 3, dtype=torch.float64)
    true[0, 1] = true[3, 0] = true[4, 2] = float("nan")
    present = ~torch.isnan(true)
    for kind, ref in (("mse", torch.nn.MSELoss()), ("l1", torch.nn.L1Loss())):
        loss = MaskedLoss(kind)(pred, true)
        expected = ref(pred[present], true[present])
        assert torch.allclose(loss, expected, rtol=0, atol=1e-14)
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(grad).all()
        assert (grad[~present] == 0).all() and (grad[present] != 0).all()
    # per-target weights: sum(w_j * l_ij) / sum(w_j) over the present entries
    w = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    weighted = MaskedLoss("mse", w)(pred, true)
    sq = (pred - true).square()
    wm = w.expand_as(sq)[present]
    assert torch.allclose(weighted, (sq[present] * wm).sum() / wm.sum(), rtol=0, atol=1e-14)
    # without NaN and weights it is exactly MSELoss
    full = torch.randn(6, 3, dtype=torch.float64)
    assert torch.allclose(MaskedLoss("mse")(pred, full), torch.nn.MSELoss()(pred, full), rtol=0, atol=1e-14)


def test_half_missing_column_still_trains_the_other(graphs_two_targets):
    g, y = graphs_two_targets
    model = CGCNNRegressor(**TINY, max_epochs=30, lr=0.05, missing_targets="ignore").fit(g, y)
    pred = model.predict(g)
    assert pred.shape == (60, 2) and np.isfinite(pred).all()
    assert all(torch.isfinite(p).all() for p in model.module_.parameters())
    # target 0 (known for every crystal) is learnt: well below the error of predicting its mean
    mae0 = np.abs(pred[:, 0] - y[:, 0]).mean()
    assert mae0 < 0.5 * np.abs(y[:, 0] - y[:, 0].mean()).mean()
    # per-target scaling used the present values only
    np.testing.assert_allclose(model.target_scaler_.mean_, np.nanmean(y, axis=0))
    # the history has each target's validation MAE, over its present values
    row = model.history[-1]
    assert {"valid_mae", "valid_mae_0", "valid_mae_1"} <= set(row)
    assert np.isfinite([row["valid_mae"], row["valid_mae_0"], row["valid_mae_1"]]).all()
    assert row["valid_mae_1"] > row["valid_mae_0"]  # target 1 is on a 100x scale
    # score: each target's R2 over the crystals that have it, averaged
    assert np.isfinite(model.score(g, y))


def test_missing_targets_default_error_and_checks(graphs_two_targets, tmp_path):
    g, y = graphs_two_targets
    with pytest.raises(ValueError, match="missing_targets='ignore'"):
        CGCNNRegressor(**TINY, max_epochs=1).fit(g, y)
    with pytest.raises(ValueError, match="missing_targets"):
        CGCNNRegressor(**TINY, max_epochs=1, missing_targets="drop").fit(g, y)
    empty = y.copy()
    empty[:, 1] = np.nan
    with pytest.raises(ValueError, match="no value for any crystal"):
        CGCNNRegressor(**TINY, max_epochs=1, missing_targets="ignore").fit(g, empty)
    with pytest.raises(ValueError, match="target_weights has 3"):
        CGCNNRegressor(**TINY, max_epochs=1, target_weights=[1, 1, 1]).fit(g, y[:, [0, 0]])
    with pytest.raises(ValueError, match="criterion"):
        CGCNNRegressor(**TINY, max_epochs=1, missing_targets="ignore", criterion=torch.nn.L1Loss).fit(g, y)
    inf = y.copy()
    inf[1, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        CGCNNRegressor(**TINY, max_epochs=1, missing_targets="ignore").fit(g, inf)


def test_weights_tanh_scaler_and_checkpoint(graphs_two_targets, tmp_path):
    g, y = graphs_two_targets
    model = CGCNNRegressor(
        **TINY, max_epochs=2, missing_targets="ignore", target_weights=[1.0, 0.1], target_scaler="tanh", loss="l1"
    ).fit(g, y)
    assert isinstance(model.criterion_, MaskedLoss)
    np.testing.assert_allclose(model.criterion_.weights.numpy(), [1.0, 0.1])
    np.testing.assert_allclose(model.target_scaler_.mean_, np.nanmean(y, axis=0))
    loaded = crysk.load(model.save_pretrained(tmp_path / "mt.pt"))
    assert loaded.missing_targets == "ignore" and list(loaded.target_weights) == [1.0, 0.1]
    np.testing.assert_allclose(loaded.predict(g[:5]), model.predict(g[:5]), rtol=1e-6)
    # partial_fit and an explicit validation set with gaps go through the same masking
    model.partial_fit(g[:30], y[:30], X_valid=g[30:], y_valid=y[30:])
    assert np.isfinite(model.history[-1]["valid_mae_1"])
