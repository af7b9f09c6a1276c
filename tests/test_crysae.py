"""CrysAE: unsupervised pretraining, reconstruction terms, embeddings, checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

import crysk
from crysk import CrysAE
from crysk.elements import ATOMIC_PROPERTIES

FAST = dict(atom_fea_len=32, n_conv=2, batch_size=40, random_state=0)
TERMS = ("node", "edge", "count", "length")


@pytest.fixture(scope="module")
def split(eform_graphs):
    graphs, _ = eform_graphs
    return graphs[:160], graphs[160:240]


@pytest.fixture(scope="module")
def trained(split):
    train, _ = split
    return CrysAE(**FAST, max_epochs=5).fit(train)


def test_every_reconstruction_loss_falls_on_held_out_crystals(split, trained):
    train, held_out = split
    untrained = CrysAE(**FAST, max_epochs=0).fit(train).reconstruction_loss(held_out)
    after = trained.reconstruction_loss(held_out)
    for term in TERMS:
        assert after[term] < untrained[term], (term, after, untrained)
    # and better than guessing uniformly among each property's categories and among edge counts
    uniform_node = sum(np.log(p.n_categories) for p in ATOMIC_PROPERTIES)
    assert after["node"] < 0.7 * uniform_node, after
    assert after["count"] < np.log(12), after


def test_history_logs_each_term(trained):
    row = trained.history[-1]
    for term in TERMS:
        assert np.isfinite(row[f"train_{term}_loss"]) and np.isfinite(row[f"valid_{term}_loss"])
    assert trained.best_epoch_ is not None


@pytest.mark.parametrize("reconstruct, used", [("global", {"edge", "count"}), ("local", {"node", "length"})])
def test_reconstruct_switch_trains_only_those_terms(split, reconstruct, used):
    ae = CrysAE(**{**FAST, "max_epochs": 1, "reconstruct": reconstruct}).fit(split[0][:60])
    logged = {t for t in TERMS if f"train_{t}_loss" in ae.history[-1]}
    assert logged == used


def test_bad_parameters_are_refused(split):
    with pytest.raises(ValueError, match="reconstruct"):
        CrysAE(reconstruct="everything").fit(split[0][:10])
    with pytest.raises(ValueError, match="weight 0"):
        CrysAE(reconstruct="local", node_weight=0, length_weight=0).fit(split[0][:10])


def test_transform_shape_and_determinism(split, trained):
    train, held_out = split
    emb = trained.transform(held_out)
    assert emb.shape == (len(held_out), 32) and np.isfinite(emb).all()
    np.testing.assert_array_equal(emb, trained.transform(held_out))
    assert list(trained.get_feature_names_out()[:2]) == ["crysae0", "crysae1"]
    one, two = (CrysAE(**FAST, max_epochs=1).fit(train[:80]) for _ in range(2))
    np.testing.assert_array_equal(one.transform(held_out), two.transform(held_out))  # same seed, same model


def test_crysae_is_a_feature_step_for_scikit_learn(eform_graphs):
    graphs, y = eform_graphs
    pipe = make_pipeline(CrysAE(**FAST, max_epochs=1), Ridge()).fit(graphs[:100], y[:100])
    assert pipe.predict(graphs[100:110]).shape == (10,)


def test_save_load_and_pickle_keep_the_embeddings(tmp_path, split, trained):
    _, held_out = split
    expected = trained.transform(held_out)
    path = trained.save_pretrained(tmp_path / "ae.pt")
    loaded = crysk.load(path)
    assert isinstance(loaded, CrysAE)
    np.testing.assert_array_equal(loaded.transform(held_out), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(trained)).transform(held_out), expected)


def test_transform_before_fit_raises(split):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CrysAE().transform(split[1][:2])


def test_released_crysae_warm_starts_the_autoencoder(data_path, split):
    ae = CrysAE(batch_size=50, max_epochs=1, random_state=0,
                warm_start_from=data_path / "checkpoints/crysxpp/model_pretrain.pth").fit(split[0][:60])
    report = ae.transfer_report_
    # the encoder only: the released node decoder was trained with a per-bit binary loss, crysk's
    # decoder of that name with a cross-entropy per property, and its pair decoders are CrysXPP's own
    assert "embedding.weight" in report.loaded and "convs.2.bn2.running_var" in report.loaded
    assert not any(n.startswith("fc_atom_feature") for n in report.loaded)
    assert report.reasons["fc_atom_feature.weight"].startswith("skipped: the released CrysAE")
    assert sorted(report.unused) == ["fc1.bias", "fc1.weight", "fc_adj.bias", "fc_adj.weight",
                                     "fc_atom_feature.bias", "fc_atom_feature.weight"]
