"""CrysXPPRegressor: scikit-learn behaviour, the sparse feature selector, explanations."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from crysk import CrysAE, CrysXPPRegressor
from crysk.elements import ATOMIC_PROPERTIES, cgcnn_feature_table

FAST = dict(atom_fea_len=32, n_conv=2, h_fea_len=32, batch_size=40, max_epochs=3, random_state=0, lr=0.01)
ENCODER = ["embedding.weight"] + [
    f"convs.{i}.{name}"
    for i in range(3)
    for name in ("fc_full.weight", "fc_full.bias", "bn1.weight", "bn1.bias", "bn1.running_mean",
                 "bn1.running_var", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var")
]


@pytest.fixture(scope="module")
def data(eform_graphs):
    graphs, y = eform_graphs
    return graphs[:200], y[:200], graphs[200:260], y[200:260]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return CrysXPPRegressor(**FAST).fit(X, y)


def test_fit_predict_score_pickle_clone(data, fitted):
    _, _, Xt, yt = data
    pred = fitted.predict(Xt)
    assert pred.shape == (len(Xt),) and np.isfinite(pred).all()
    assert np.isfinite(fitted.score(Xt, yt))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict(Xt), pred)
    twin = clone(fitted)
    assert twin.get_params()["l1_penalty"] == 0.01 and not hasattr(twin, "module_")
    np.testing.assert_array_equal(twin.fit(*data[:2]).predict(Xt), pred)  # same seed, same model


def test_grid_search_over_l1_penalty_and_lr(data):
    X, y, _, _ = data
    search = GridSearchCV(
        CrysXPPRegressor(**{**FAST, "max_epochs": 1}),
        {"l1_penalty": [0.0, 0.05], "lr": [0.01, 0.003]},
        cv=2,
        scoring="neg_mean_absolute_error",
    ).fit(X[:120], y[:120])
    assert set(search.best_params_) == {"l1_penalty", "lr"}
    assert len(search.cv_results_["params"]) == 4


def test_l1_selector_shrinks_weights_of_properties_the_target_ignores(eform_graphs):
    graphs, _ = eform_graphs
    graphs = graphs[:300]
    # a target that depends on one atomic property only: the mean period number of the atoms
    period = next(p for p in ATOMIC_PROPERTIES if p.name == "period")
    table = cgcnn_feature_table()
    z = graphs.atomic_numbers.astype(int)
    per_atom = table[z, period.slice].argmax(axis=1) + 1.0
    crystal = np.repeat(np.arange(len(graphs)), graphs.n_atoms)
    y = np.bincount(crystal, per_atom) / graphs.n_atoms
    params = dict(atom_fea_len=16, n_conv=1, h_fea_len=16, batch_size=50, max_epochs=25, random_state=0,
                  optimizer="adam", lr=0.01, validation_fraction=None)
    sparse = CrysXPPRegressor(**params, l1_penalty=0.05).fit(graphs, y)
    dense = CrysXPPRegressor(**params, l1_penalty=0.0).fit(graphs, y)
    w_sparse, w_dense = np.abs(sparse.selector_weights_.to_numpy()), np.abs(dense.selector_weights_.to_numpy())
    used = np.flatnonzero(table[np.unique(z)].any(axis=0))  # dimensions the data switches on
    assert w_sparse[used].sum() < 0.5 * w_dense[used].sum()
    assert (w_sparse[used] < 0.1).sum() >= 10  # driven toward zero
    # and the property the target depends on keeps the largest share of the selector
    share = sparse.feature_importances_ / sparse.feature_importances_.sum()
    assert share.idxmax() == period.label, share


def test_l1_reduction_mean_is_the_sum_over_the_feature_dimensions(data):
    X, y, _, _ = data
    model = CrysXPPRegressor(**{**FAST, "max_epochs": 1}, l1_penalty=0.5).fit(X[:80], y[:80])
    y_pred, y_true = torch.zeros(4, 1), torch.ones(4, 1)
    plain = model.get_loss(y_pred, y_true, training=False)
    l1 = model.module_.penalty().item()
    assert l1 > 0
    assert model.get_loss(y_pred, y_true, training=True).item() == pytest.approx(plain.item() + 0.5 * l1)
    model.set_params(l1_reduction="mean")
    assert model.get_loss(y_pred, y_true, training=True).item() == pytest.approx(plain.item() + 0.5 * l1 / 92)
    with pytest.raises(ValueError, match=r"l1_reduction must be one of \['sum', 'mean'\]"):
        CrysXPPRegressor(**FAST, l1_reduction="max").fit(X[:80], y[:80])


def test_feature_importances_and_explain(data, fitted):
    imp = fitted.feature_importances_
    assert list(imp.index) == [p.label for p in ATOMIC_PROPERTIES] and (imp > 0).all()
    _, _, Xt, _ = data
    table = fitted.explain(Xt[:2])
    assert list(table.columns) == ["structure", "atom", "element", "property", "category", "feature", "weight"]
    assert table["structure"].iloc[0] == Xt.ids[0]
    n_atoms = int(Xt[:2].n_atoms.sum())
    assert n_atoms * 7 <= len(table) <= n_atoms * 9  # up to nine properties per atom
    row = table.iloc[0]
    assert fitted.selector_weights_.iloc[row["feature"]] == row["weight"]


def test_without_selector(data):
    X, y, Xt, _ = data
    plain = CrysXPPRegressor(**FAST, feature_selector=False).fit(X, y)
    assert "selector.weight" not in plain.module_.state_dict()
    assert plain.predict(Xt).shape == (len(Xt),)
    with pytest.raises(AttributeError, match="feature_selector=False"):
        plain.feature_importances_


def test_freeze_keeps_the_encoder_fixed(data):
    X, y, _, _ = data
    ae = CrysAE(atom_fea_len=32, n_conv=2, batch_size=40, max_epochs=1, random_state=0).fit(X[:80])
    model = CrysXPPRegressor(**FAST, warm_start_from=ae, freeze="convs").fit(X, y)
    for name, tensor in ae.module_.state_dict().items():
        if name.startswith("convs."):
            assert np.array_equal(tensor.numpy(), model.module_.state_dict()[name].numpy()), name
    assert model.transfer_report_.loaded[0] == "embedding.weight"


def test_released_crysae_transfers_exactly_the_encoder_and_runs_no_code(data_path, data):
    X, y, _, _ = data
    path = data_path / "checkpoints/crysxpp/model_pretrain.pth"
    assert "model" not in sys.modules
    model = CrysXPPRegressor(batch_size=50, max_epochs=1, random_state=0, warm_start_from=path).fit(X[:100], y[:100])
    report = model.transfer_report_
    assert sorted(report.loaded) == sorted(ENCODER)
    assert sorted(report.unused) == sorted(
        ["fc_adj.weight", "fc_adj.bias", "fc1.weight", "fc1.bias", "fc_atom_feature.weight", "fc_atom_feature.bias"]
    )
    assert "model" not in sys.modules  # the stand-in module is gone again


def test_plot_feature_selector_writes_png(tmp_path, data, fitted):
    pytest.importorskip("matplotlib")
    from crysk.plotting import plot_feature_selector

    out = tmp_path / "selector.png"
    plot_feature_selector(fitted, path=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_atom = tmp_path / "atoms.png"
    plot_feature_selector(fitted, data[2][0], path=per_atom)
    assert per_atom.stat().st_size > 1000
