"""CGCNNClassifier (issue 17 items 1-2): classifier semantics, scikit-learn tools, the original CGCNN classifier."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

import crysk
from crysk import CGCNNClassifier, CGCNNRegressor, CrystalGraphFeaturizer

TINY = dict(atom_fea_len=8, n_conv=1, h_fea_len=8, batch_size=32, max_epochs=2, random_state=0)
INIT = {**TINY, "max_epochs": 0}  # only initialise (and warm-start)
ORACLE = {  # P(class 1) from the original CGCNN predict.py with semi-metal-classification.pth.tar
    "1000041": 4.4236e-06,
    "1000050": 1.8172e-08,
    "1101051": 0.015800,
    "1507756": 0.027990,
    "7206075": 0.21180,
    "9000046": 0.74321,
    "9009743": 3.8174e-09,
    "9011050": 0.67650,
    "9011998": 0.33046,
    "9012304": 0.93518,
}


@pytest.fixture(scope="module")
def graphs_labels(eform_structures):
    """60 crystals, labelled by whether their formation energy is below the median."""
    structures, y, ids = eform_structures
    g = CrystalGraphFeaturizer().transform(structures[:60], ids=ids[:60])
    y = y[:60]
    return g, y < np.median(y), y


@pytest.mark.parametrize(
    "labels",
    [
        lambda low: np.where(low, "stable", "unstable"),
        lambda low: np.where(low, 7, -3),
        lambda low: low,
    ],
    ids=["str", "int", "bool"],
)
def test_label_types_classes_and_probabilities(graphs_labels, labels):
    g, low, _ = graphs_labels
    y = labels(low)
    model = CGCNNClassifier(**TINY).fit(g, y)
    np.testing.assert_array_equal(model.classes_, np.unique(y))
    assert model.classes_.dtype == np.unique(y).dtype
    proba = model.predict_proba(g[:20])
    assert proba.shape == (20, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    pred = model.predict(g[:20])
    assert set(pred) <= set(model.classes_)
    # columns follow classes_: the predicted label is the column of the largest probability
    np.testing.assert_array_equal(pred, model.classes_[proba.argmax(axis=1)])
    # binary decision_function: positive where classes_[1] wins, the log-odds of it
    dec = model.decision_function(g[:20])
    assert dec.shape == (20,)
    np.testing.assert_array_equal(dec > 0, pred == model.classes_[1])
    np.testing.assert_allclose(dec, np.log(proba[:, 1] / proba[:, 0]), rtol=1e-5, atol=1e-6)
    assert model.score(g[:20], y[:20]) == pytest.approx(np.mean(pred == y[:20]))
    assert "valid_log_loss" in model.history[-1] and "valid_acc" in model.history[-1]
    assert model.best_epoch_ in (1, 2)


def test_multiclass_and_class_weight(graphs_labels):
    g, _, y = graphs_labels
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))  # three classes 0, 1, 2
    labels = np.array(["a", "b", "c"])[labels]
    model = CGCNNClassifier(**TINY, class_weight="balanced").fit(g, labels)
    assert list(model.classes_) == ["a", "b", "c"]
    assert model.module_.fc_out.out_features == 3
    proba = model.predict_proba(g[:10])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert model.decision_function(g[:10]).shape == (10, 3)
    # "balanced": n / (n_classes * count); a dict weighs the labels it names, the rest 1
    counts = np.array([np.sum(labels == c) for c in "abc"])
    np.testing.assert_allclose(model.class_weight_, len(labels) / (3 * counts))
    weighted = CGCNNClassifier(**TINY, class_weight={"a": 5.0}).fit(g, labels)
    np.testing.assert_allclose(weighted.class_weight_, [5.0, 1.0, 1.0])
    np.testing.assert_allclose(weighted.criterion_.weight.numpy(), [5.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="not in y"):
        CGCNNClassifier(**TINY, class_weight={"z": 2.0}).fit(g, labels)
    with pytest.raises(ValueError, match="class_weight must be"):
        CGCNNClassifier(**TINY, class_weight="auto").fit(g, labels)
    with pytest.raises(ValueError, match="single class"):
        CGCNNClassifier(**TINY).fit(g, np.zeros(len(g)))
    with pytest.raises(ValueError, match="not fitted on"):
        model.partial_fit(g[:3], ["a", "b", "q"])


def test_best_epoch_is_the_lowest_validation_log_loss(graphs_labels):
    g, low, _ = graphs_labels
    model = CGCNNClassifier(**{**TINY, "max_epochs": 4}, lr=0.05).fit(g, low)
    losses = [row["valid_log_loss"] for row in model.history]
    assert model.best_epoch_ == int(np.argmin(losses)) + 1


def test_pickle_clone_and_checkpoint(graphs_labels, tmp_path):
    g, low, _ = graphs_labels
    y = np.where(low, "metal", "insulator")
    model = CGCNNClassifier(**TINY).fit(g, y)
    expected = model.predict_proba(g[:10])
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(g[:10]), expected)
    np.testing.assert_array_equal(again.classes_, model.classes_)
    assert clone(model).get_params()["atom_fea_len"] == 8 and not hasattr(clone(model), "classes_")
    path = model.save_pretrained(tmp_path / "clf.pt")
    loaded = crysk.load(path)
    assert isinstance(loaded, CGCNNClassifier)
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_allclose(loaded.predict_proba(g[:10]), expected, rtol=1e-6)
    assert CGCNNClassifier.from_pretrained(path).best_epoch_ == model.best_epoch_
    with pytest.raises(crysk.CheckpointError, match="not a CGCNNRegressor"):
        CGCNNRegressor.from_pretrained(path)


def test_scikit_learn_tools(graphs_labels, eform_structures):
    g, low, _ = graphs_labels
    assert is_classifier(CGCNNClassifier())
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    search = GridSearchCV(CGCNNClassifier(**TINY), {"lr": [0.01, 0.05]}, cv=cv, scoring="roc_auc").fit(g, low)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert cross_val_score(CGCNNClassifier(**TINY), g, low, cv=cv).shape == (2,)
    calibrated = CalibratedClassifierCV(CGCNNClassifier(**TINY), cv=2).fit(g, low)
    np.testing.assert_allclose(calibrated.predict_proba(g[:5]).sum(axis=1), 1.0)
    structures = eform_structures[0][:40]
    pipe = Pipeline([("graphs", CrystalGraphFeaturizer()), ("clf", CGCNNClassifier(**TINY))])
    assert pipe.fit(structures, low[:40]).predict_proba(structures[:3]).shape == (3, 2)


def test_warm_start_across_tasks_transfers_the_encoder_only(graphs_labels, tmp_path):
    g, low, y = graphs_labels
    # two targets and two classes: the heads have the same shape, and must still not transfer
    reg = CGCNNRegressor(**TINY).fit(g, np.column_stack([y, -y]))
    path = reg.save_pretrained(tmp_path / "reg.pt")
    for source in (reg, path):
        clf = CGCNNClassifier(**INIT, warm_start_from=source).fit(g, low)
        report = clf.transfer_report_
        assert sorted(report.initialized) == ["fc_out.bias", "fc_out.weight"]
        assert "regression" in report.reasons["fc_out.weight"]
        state = clf.module_.state_dict()
        for name, tensor in reg.module_.state_dict().items():
            if name.startswith("fc_out."):
                assert not torch.equal(state[name], tensor)
            elif not name.endswith("num_batches_tracked"):
                assert torch.equal(state[name], tensor), name
    # and the reverse: a classifier's encoder into a regressor, never its head
    back = CGCNNRegressor(**INIT, warm_start_from=clf).fit(g, np.column_stack([y, -y]))
    assert sorted(back.transfer_report_.initialized) == ["fc_out.bias", "fc_out.weight"]
    assert torch.equal(back.module_.convs[0].fc_full.weight, clf.module_.convs[0].fc_full.weight)
    # the same task takes the head too
    same = CGCNNClassifier(**INIT, warm_start_from=clf).fit(g, low)
    assert same.transfer_report_.complete


def test_original_cgcnn_classifier_matches_predict_py(data_path):
    path = data_path / "checkpoints" / "cgcnn" / "semi-metal-classification.pth.tar"
    model = crysk.load(path)
    assert isinstance(model, CGCNNClassifier)
    assert list(model.classes_) == [0, 1] and model.module_.fc_out.out_features == 2
    folder = data_path / "sample_regression_cgcnn"
    proba = model.predict_proba([folder / f"{i}.cif" for i in ORACLE])
    np.testing.assert_allclose(proba[:, 1], list(ORACLE.values()), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.exp(model.predict_log_proba([folder / "9012304.cif"]))[0, 1], 0.93518, atol=1e-4)
    # the original regression files stay regressors
    eform = data_path / "checkpoints" / "cgcnn" / "formation-energy-per-atom.pth.tar"
    assert isinstance(crysk.load(eform), CGCNNRegressor)
    # warm starts from the original files: the classifier whole into a classifier, only the encoder across tasks
    cifs = [folder / f"{i}.cif" for i in ORACLE]
    labels = (proba[:, 1] > 0.5).astype(int)
    shape = dict(atom_fea_len=64, n_conv=4, h_fea_len=32, max_epochs=0, random_state=0)
    assert CGCNNClassifier(**shape, warm_start_from=path).fit(cifs, labels).transfer_report_.complete
    to_regressor = CGCNNRegressor(**shape, warm_start_from=path).fit(cifs, np.arange(10.0))
    assert sorted(to_regressor.transfer_report_.initialized) == ["fc_out.bias", "fc_out.weight"]
    assert "classification" in to_regressor.transfer_report_.reasons["fc_out.weight"]
    from_eform = CGCNNClassifier(**shape, warm_start_from=eform).fit(cifs, labels)
    assert "regression" in from_eform.transfer_report_.reasons["fc_out.weight"]


def test_numpy_scalars_are_allowed_but_nothing_else(tmp_path):
    from crysk.checkpoints import load_checkpoint

    ok = tmp_path / "ok.pt"
    torch.save({"state_dict": {}, "best_mae_error": np.float64(0.5), "n": np.int64(3)}, ok)
    ckpt = load_checkpoint(ok)
    assert ckpt["best_mae_error"] == 0.5 and ckpt["n"] == 3
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}, "best": np.float64(0.5), "arr": np.arange(3)}, bad)
    with pytest.raises(crysk.CheckpointError, match="never runs code"):
        load_checkpoint(bad)


def test_validation_split_is_stratified(graphs_labels):
    g, _, y = graphs_labels
    labels = np.where(np.argsort(np.argsort(y)) < 10, "rare", "common")  # 10 of 60
    model = CGCNNClassifier(**TINY).fit(g, labels)
    train, valid = model.get_split_datasets(g, model._encode_targets(labels, len(g), "y"))
    assert len(valid) == 12 and len(train) == 48
    counts = np.bincount(valid.y[torch.as_tensor(valid.indices)].numpy(), minlength=2)
    assert counts.tolist() == [10, 2]  # classes_ = ["common", "rare"]: the 1:5 proportion of the whole set
    assert sorted(np.concatenate([train.indices, valid.indices]).tolist()) == list(range(60))


def test_crysxpp_classifier_keeps_the_selector_and_explanations(graphs_labels, tmp_path):
    from crysk import CrysAE, CrysXPPClassifier

    g, low, _ = graphs_labels
    y = np.where(low, "low", "high")
    encoder = CrysAE(atom_fea_len=8, n_conv=1, batch_size=32, max_epochs=1, random_state=0).fit(g)
    model = CrysXPPClassifier(**TINY, warm_start_from=encoder, class_weight="balanced").fit(g, y)
    assert list(model.classes_) == ["high", "low"]
    assert "convs.0.fc_full.weight" in model.transfer_report_.loaded
    np.testing.assert_allclose(model.predict_proba(g[:5]).sum(axis=1), 1.0, atol=1e-12)
    assert len(model.feature_importances_) == 9 and len(model.explain(g[:1]))
    # the L1 term is added to the cross-entropy while training
    xb, yb = model.get_dataset(g[:8], model._encode_targets(y[:8], 8, "y")).batch(np.arange(8))
    pred = model.infer(xb)
    plain = torch.nn.functional.cross_entropy(pred, yb, weight=model.criterion_.weight)
    with_l1 = model.get_loss(pred, yb, X=xb, training=True)
    assert torch.allclose(with_l1 - plain, model.l1_penalty * model.module_.penalty("sum"))
    loaded = crysk.load(model.save_pretrained(tmp_path / "xpp.pt"))
    assert isinstance(loaded, CrysXPPClassifier)
    np.testing.assert_allclose(loaded.predict_proba(g[:5]), model.predict_proba(g[:5]), rtol=1e-6)
