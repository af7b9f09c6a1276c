import csv
import pickle

import numpy as np
import pytest
import torch

import crysk
from crysk import CGCNNRegressor, CheckpointError, CrystalGraphFeaturizer
from crysk.estimators import SaveBestCheckpoint
from crysk.targets import TanhScaler
from crysk.checkpoints import load_checkpoint, read_weights
from crysk.transfer import resolve_freeze

BASE = dict(atom_fea_len=16, n_conv=3, h_fea_len=32, batch_size=32, max_epochs=2, random_state=0)
ORACLE = {
    "1000041": -2.11325, "1000050": -2.13955, "1101051": -1.13140, "1507756": -3.52682, "7206075": -3.38030,
    "9000046": 0.00522, "9009743": -2.24120, "9011050": 0.01811, "9011998": 0.09059, "9012304": 0.40175,
}


@pytest.fixture(scope="module")
def data(eform_structures):
    structures, y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures, ids=ids), y


@pytest.fixture(scope="module")
def source(data):
    g, y = data
    return CGCNNRegressor(**BASE).fit(g[:100], y[:100])


@pytest.fixture(scope="module")
def cgcnn_path(data_path):
    return data_path / "checkpoints" / "cgcnn" / "formation-energy-per-atom.pth.tar"


def state(model):
    return {k: v.detach().clone() for k, v in model.module_.state_dict().items()}


def test_original_cgcnn_checkpoint_reproduces_reference_predictions(data_path, cgcnn_path):
    folder = data_path / "sample_regression_cgcnn"
    with open(folder / "id_prop.csv") as fh:
        ids = [row[0] for row in csv.reader(fh)]
    model = crysk.load(cgcnn_path)
    assert (model.n_conv, model.h_fea_len, model.atom_fea_len) == (4, 32, 64)
    pred = model.predict([folder / f"{i}.cif" for i in ids])
    for i, p in zip(ids, pred):
        assert abs(p - ORACLE[i]) < 1e-3, (i, p)
    assert isinstance(CGCNNRegressor.from_pretrained(cgcnn_path), CGCNNRegressor)


def test_save_and_load_predict_identically(source, data, tmp_path):
    g, _ = data
    path = source.save_pretrained(tmp_path / "model.pt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["crysk_version"] == crysk.__version__ and ckpt["graph_settings"]["radius"] == 8.0
    loaded = crysk.load(path)
    np.testing.assert_array_equal(loaded.predict(g[100:]), source.predict(g[100:]))
    assert loaded.get_params()["h_fea_len"] == 32
    np.testing.assert_array_equal(CGCNNRegressor.from_pretrained(path).predict(g[:5]), source.predict(g[:5]))


def test_tanh_scaler_checkpoint_round_trip(data, tmp_path):
    g, y = data
    model = CGCNNRegressor(**{**BASE, "target_scaler": "tanh"}).fit(g[:60], y[:60])
    loaded = crysk.load(model.save_pretrained(tmp_path / "t.pt"))
    np.testing.assert_allclose(loaded.predict(g[60:70]), model.predict(g[60:70]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["path", "estimator"])
def test_warm_start_from_crysk_checkpoint_or_estimator(kind, source, data, tmp_path):
    g, y = data
    start = source.save_pretrained(tmp_path / "src.pt") if kind == "path" else source
    target = CGCNNRegressor(**{**BASE, "warm_start_from": start, "freeze": "convs", "max_epochs": 1})
    target.fit(g[100:160], y[100:160])
    rep = target.transfer_report_
    assert rep.complete and "convs.2.fc_full.weight" in rep.loaded and "fc_out.weight" in rep.loaded
    before, after = state(source), state(target)
    for name in before:
        if name.startswith("convs."):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["fc_out.weight"], after["fc_out.weight"])


def test_head_width_change_transfers_the_rest(source, data):
    g, y = data
    target = CGCNNRegressor(**{**BASE, "h_fea_len": 16, "warm_start_from": source}).fit(g[:40], y[:40])
    rep = target.transfer_report_
    assert set(rep.initialized) == {"conv_to_fc.weight", "conv_to_fc.bias", "fc_out.weight"}
    assert "shape (32, 16) in the source, (16, 16) here" in rep.reasons["conv_to_fc.weight"]
    assert "embedding.weight" in rep.loaded and "fc_out.bias" in rep.loaded


def test_warm_start_from_original_cgcnn_checkpoint(cgcnn_path, data):
    g, y = data
    model = CGCNNRegressor(h_fea_len=64, batch_size=32, max_epochs=1, random_state=0, warm_start_from=cgcnn_path)
    model.fit(g[:40], y[:40])
    rep = model.transfer_report_
    # the file has four convolutions: left at its default, n_conv is taken from it (none is dropped)
    assert {f"convs.{i}.fc_full.weight" for i in range(4)} <= set(rep.loaded)
    assert "embedding.bias" in rep.loaded
    assert model.adopted_params_ == {"n_conv": 4} and not any(n.startswith("convs.") for n in rep.unused)
    assert "conv_to_fc.weight" in rep.initialized
    assert "transfer" not in str(rep) or "warm start from" in str(rep)


def test_warm_start_include_takes_only_the_named_layers(source, data):
    g, y = data
    target = CGCNNRegressor(**{**BASE, "max_epochs": 0, "warm_start_from": source,
                               "warm_start_include": ["embedding", "convs[:2]"]}).fit(g[:40], y[:40])
    rep = target.transfer_report_
    expected = {n for n in state(source) if n.startswith(("embedding.", "convs.0.", "convs.1."))}
    # BatchNorm's step counter is copied with its layer but, carrying no knowledge, is not reported
    assert set(rep.loaded) == {n for n in expected if not n.endswith("num_batches_tracked")} and "convs.0.bn1.running_mean" in rep.loaded  # buffers come along
    assert {"convs.2.fc_full.weight", "fc_out.weight"} <= set(rep.initialized) & set(rep.unused)
    fresh = state(CGCNNRegressor(**{**BASE, "max_epochs": 0}).fit(g[:40], y[:40]))
    before, after = state(source), state(target)
    for name in after:
        assert torch.equal(after[name], before[name] if name in expected else fresh[name]), name
    # it is a parameter, so grid searches and clones see it
    assert target.get_params()["warm_start_include"] == ["embedding", "convs[:2]"]


def test_strict_mode_lists_differences(source, data):
    g, y = data
    with pytest.raises(CheckpointError, match="warm_start_strict.*conv_to_fc.weight"):
        CGCNNRegressor(**{**BASE, "h_fea_len": 16, "warm_start_from": source, "warm_start_strict": True}).fit(
            g[:40], y[:40]
        )
    # an exact match passes
    CGCNNRegressor(**{**BASE, "warm_start_from": source, "warm_start_strict": True}).fit(g[:40], y[:40])


def test_featurizer_settings_must_match(source, data, eform_structures, tmp_path):
    _, y = data
    path = source.save_pretrained(tmp_path / "s.pt")
    small = CrystalGraphFeaturizer(radius=6.0).transform(eform_structures[0][:10])
    with pytest.raises(CheckpointError, match="checkpoint radius=8.0 .expected 6.0"):
        CGCNNRegressor(**{**BASE, "radius": 6.0, "warm_start_from": path}).fit(small, y[:10])


FREEZE_SPECS = [
    ("embedding", lambda n: n.startswith("embedding.")),
    ("convs", lambda n: n.startswith("convs.")),
    ("convs[:2]", lambda n: n.startswith(("convs.0.", "convs.1."))),
    ("all-but-head", lambda n: not n.startswith("fc_out.")),
    (["convs.2.bn1", "embedding.*"], lambda n: n.startswith(("convs.2.bn1.", "embedding."))),
]


@pytest.mark.parametrize("spec,is_frozen", FREEZE_SPECS, ids=[str(s) for s, _ in FREEZE_SPECS])
def test_frozen_tensors_stay_bit_identical(spec, is_frozen, source, data):
    g, y = data
    model = CGCNNRegressor(**{**BASE, "warm_start_from": source, "freeze": spec, "max_epochs": 3, "lr": 0.05})
    model.fit(g[100:180], y[100:180])
    before, after = state(source), state(model)
    frozen_seen = trained_seen = 0
    for name in before:
        if name.endswith("num_batches_tracked"):
            continue
        # a batch-norm layer's running statistics freeze with its parameters
        owner = name.rsplit(".", 1)[0]
        frozen = is_frozen(name) or (name.endswith(("running_mean", "running_var")) and is_frozen(owner + ".weight"))
        if frozen:
            assert torch.equal(before[name], after[name]), f"{name} changed although frozen"
            frozen_seen += 1
        else:
            assert not torch.equal(before[name], after[name]), f"{name} did not train"
            trained_seen += 1
    assert frozen_seen and trained_seen
    assert all(is_frozen(n) for n in model.frozen_parameters_)
    n_opt = sum(len(g["params"]) for g in model.optimizer_.param_groups)
    assert n_opt == sum(1 for p in model.module_.parameters() if p.requires_grad)


def test_bad_freeze_spec(data):
    g, y = data
    with pytest.raises(ValueError, match="matches no parameter"):
        CGCNNRegressor(**{**BASE, "freeze": "decoder"}).fit(g[:20], y[:20])
    assert resolve_freeze(CGCNNRegressor(**BASE).fit(g[:20], y[:20]).module_, None) == []


def test_lr_transferred_makes_two_groups(source, data):
    g, y = data
    model = CGCNNRegressor(**{**BASE, "h_fea_len": 16, "warm_start_from": source, "lr_transferred": 0.001})
    model.fit(g[:40], y[:40])
    lrs = sorted(group["initial_lr"] for group in model.optimizer_.param_groups)
    assert lrs == [0.001, BASE.get("lr", 0.01)]


def test_atomic_write_keeps_old_file_on_failure(source, data, tmp_path, monkeypatch):
    g, _ = data
    path = source.save_pretrained(tmp_path / "m.pt")
    good = path.read_bytes()

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        source.save_pretrained(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert list(tmp_path.iterdir()) == [path], "the temporary file must be cleaned up"
    np.testing.assert_array_equal(crysk.load(path).predict(g[:3]), source.predict(g[:3]))


class Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys, data):
    g, y = data
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": Sneaky()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        crysk.load(path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        CGCNNRegressor(warm_start_from=path).fit(g[:10], y[:10])
    assert "this must never run" not in capsys.readouterr().out


def test_unreadable_and_foreign_checkpoints(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a crysk checkpoint: it is a text file"):
        read_weights(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights(tmp_path / "missing.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a crysk, CGCNN, CrysXPP or CrysAE checkpoint"):
        read_weights(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="unfitted"):
        read_weights(CGCNNRegressor())


def test_released_crysae_encoder_transfers_without_running_its_code(data_path, data):
    g, y = data
    path = data_path / "checkpoints" / "crysxpp" / "model_pretrain.pth"
    ckpt = load_checkpoint(path)
    assert "model" not in __import__("sys").modules
    assert ckpt["state_dict"]["fc_adj.weight"].shape == (6, 64, 64)
    model = CGCNNRegressor(batch_size=32, max_epochs=1, random_state=0, warm_start_from=path).fit(g[:40], y[:40])
    rep = model.transfer_report_
    assert "embedding.weight" in rep.loaded and "embedding.bias" in rep.initialized
    assert {"fc_adj.weight", "fc1.weight", "fc_atom_feature.weight"} <= set(rep.unused)
    assert len([n for n in rep.loaded if n.startswith("convs.")]) == 3 * 10  # fc_full 2, bn1 4, bn2 4


def test_tanh_scaler_round_trip_and_estimator():
    rng = np.random.default_rng(0)
    y = rng.normal(5.0, 3.0, size=(200, 2))
    raw = TanhScaler(standardize=False).fit(y)
    u = raw.transform(y)
    assert (u > 0).all() and (u < 1).all()
    expected = 0.5 * (np.tanh(0.01 * (y - y.mean(0)) / y.std(0)) + 1)
    np.testing.assert_allclose(u, expected)
    np.testing.assert_allclose(raw.inverse_transform(u), y, atol=1e-9)
    # a network output at (or past) the edge of (0, 1) maps to at most 10 standard deviations
    far = raw.inverse_transform(np.array([[1.2, -0.5]]))
    np.testing.assert_allclose(far, [[y[:, 0].mean() + 10 * y[:, 0].std(), y[:, 1].mean() - 10 * y[:, 1].std()]])
    # the default standardizes eq. 6's values, as the CGCNN code's Normalizer did in the paper's pipeline
    scaler = TanhScaler().fit(y)
    z = scaler.transform(y)
    np.testing.assert_allclose(z, (expected - expected.mean(0)) / expected.std(0))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-9)
    np.testing.assert_allclose(scaler.inverse_transform(z), y, atol=1e-9)
    with pytest.raises(ValueError):
        TanhScaler(scale=0).fit(y)


def test_tanh_scaled_cgcnn_learns_as_well_as_standard_scaled(data):
    # the paper's normalisation must not cripple training: unstandardized, eq. 6 gives a network targets within
    # 0.5 +- 0.005 per std, and this fit ended far worse than predicting the mean (3.5 eV/atom against 0.87)
    g, y = data
    params = {**BASE, "max_epochs": 15, "batch_size": 16}
    mae = {}
    for scaler in ("tanh", "standard"):
        model = CGCNNRegressor(**{**params, "target_scaler": scaler}).fit(g[:120], y[:120])
        mae[scaler] = np.abs(model.predict(g[120:]) - y[120:]).mean()
    mean_predictor = np.abs(y[120:] - y[:120].mean()).mean()
    assert mae["tanh"] < 0.7 * mean_predictor, (mae, mean_predictor)
    assert mae["tanh"] < 1.3 * mae["standard"], mae


def test_tanh_checkpoint_saved_before_standardization_loads_as_trained():
    from crysk.checkpoints import scaler_from_state

    old = {"kind": "tanh", "mean": [2.0], "std": [0.5], "scale": 0.01}
    scaler = scaler_from_state(old, 1)
    assert scaler.standardize is False
    np.testing.assert_allclose(scaler.inverse_transform([[0.5 + 0.005]]), [[2.0 + 0.5 * np.arctanh(0.01) / 0.01]])


def test_interrupted_fit_keeps_best_weights_and_checkpoint(data, tmp_path):
    from skorch.callbacks import Callback

    g, y = data

    class Interrupt(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 3:
                raise KeyboardInterrupt

    path = tmp_path / "best.pt"
    model = CGCNNRegressor(
        **{**BASE, "max_epochs": 10},
        callbacks=[("save", SaveBestCheckpoint(path)), ("interrupt", Interrupt())],
    )
    model.fit(g[:80], y[:80])
    assert len(model.history) == 3
    assert model.best_epoch_ in (1, 2, 3)
    saved = crysk.load(path)
    assert saved.best_epoch_ == model.best_epoch_
    np.testing.assert_allclose(saved.predict(g[80:90]), model.predict(g[80:90]), atol=1e-6)


def test_pickled_warm_started_model(source, data):
    g, y = data
    model = CGCNNRegressor(**{**BASE, "warm_start_from": source, "freeze": "all-but-head"}).fit(g[:40], y[:40])
    back = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(back.predict(g[40:50]), model.predict(g[40:50]))


def test_freezing_untransferred_tensors_warns(source, data):
    g, y = data
    with pytest.warns(UserWarning, match="stay random"):
        CGCNNRegressor(**{**BASE, "h_fea_len": 16, "warm_start_from": source, "freeze": "all-but-head"}).fit(
            g[:20], y[:20]
        )
    with pytest.warns(UserWarning, match="stay random"):
        CGCNNRegressor(**{**BASE, "freeze": "convs"}).fit(g[:20], y[:20])


def test_target_scaler_source_keeps_the_source_predictions(source, data):
    # training further on a narrow slice of the same property (the 40 lowest formation energies):
    # a scaler refitted on that slice shifts what the transferred output layer means; "source" does not
    g, y = data
    low = np.argsort(y[100:])[:40] + 100
    held_out = g[:100]
    common = {**BASE, "warm_start_from": source, "freeze": "all-but-head", "lr": 1e-9, "max_epochs": 1}
    kept = CGCNNRegressor(**common, target_scaler="source").fit(g[low], y[low])
    np.testing.assert_allclose(kept.target_scaler_.mean_, source.target_scaler_.mean_)
    np.testing.assert_allclose(kept.predict(held_out), source.predict(held_out), atol=1e-5)
    refit = CGCNNRegressor(**common).fit(g[low], y[low])
    assert np.abs(refit.predict(held_out) - source.predict(held_out)).max() > 0.1


def test_target_scaler_source_reads_checkpoints_and_refuses_what_does_not_fit(source, data, cgcnn_path, tmp_path):
    g, y = data
    original = CGCNNRegressor(warm_start_from=cgcnn_path, target_scaler="source", max_epochs=1, random_state=0)
    original.fit(g[:20], y[:20])
    np.testing.assert_allclose(original.target_scaler_.mean_, crysk.load(cgcnn_path).target_scaler_.mean_)
    path = source.save_pretrained(tmp_path / "src.pt")
    with pytest.raises(CheckpointError, match="scales 1 target.*y has 2"):
        CGCNNRegressor(**BASE, warm_start_from=path, target_scaler="source").fit(g[:20], np.c_[y[:20], y[:20]])
    with pytest.raises(ValueError, match="set warm_start_from"):
        CGCNNRegressor(**BASE, target_scaler="source").fit(g[:20], y[:20])
