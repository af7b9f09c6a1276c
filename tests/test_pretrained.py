"""crysk.pretrained: models by name, sha256 checks, architecture adoption, batch_size="auto", the CLI and the wheel."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

import crysk
from crysk import CGCNNRegressor, CheckpointError, CrysAE, CrysXPPRegressor, pretrained
from crysk.checkpoints import file_sha256
from crysk.demo import make_demo_data
from crysk.estimators.data import auto_batch_size

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "crysk" / "pretrained"
SHIPPED = sorted(p.stem for p in PACKAGE.glob("*.json") if (PACKAGE / f"{p.stem}.pt").is_file())
ORIGINAL_CGCNN = REPO.parent.parent / "shared" / "data" / "checkpoints" / "cgcnn" / "formation-energy-per-atom.pth.tar"
if not ORIGINAL_CGCNN.exists():
    ORIGINAL_CGCNN = Path("/work/shared/data/checkpoints/cgcnn/formation-energy-per-atom.pth.tar")
# a network unlike the defaults in both encoder parameters, so adoption has something to do
SMALL = dict(atom_fea_len=16, n_conv=2, h_fea_len=16, n_h=1)


@pytest.fixture(scope="module")
def demo():
    return make_demo_data(48, random_state=0)


@pytest.fixture(scope="module")
def small_model(demo, tmp_path_factory):
    X, y = demo
    est = CGCNNRegressor(**SMALL, max_epochs=2, batch_size=16, random_state=0).fit(X, y)
    path = est.save_pretrained(tmp_path_factory.mktemp("zoo") / "tiny-eform.pt")
    return est, path


@pytest.fixture
def registered(small_model):
    est, path = small_model
    pretrained.register("tiny-eform", path, sha256=file_sha256(path), card={"summary": "test model"})
    yield est, path
    pretrained.unregister("tiny-eform")


# ----------------------------------------------------------------------------- registry
def test_planned_models_are_listed_and_described():
    names = pretrained.available(include_planned=True)
    assert {"cgcnn-mp-eform", "cgcnn-mp-gap", "cgcnn-mp-nm-gap", "crysae-mp"} <= set(names)
    assert set(pretrained.available()) <= set(names)
    for name in pretrained.PLANNED:
        card = pretrained.describe(name)
        assert card["status"] in ("available", "planned")
        assert "CC BY 4.0" in card["licence"] and "Materials Project" in " ".join(card["attribution"])
        assert card["featurizer"]["radius"] == 8.0 and card["featurizer"]["max_num_nbr"] == 12
        assert (card["status"] == "available") == (name in SHIPPED)


def test_unknown_name_lists_the_names(demo):
    with pytest.raises(CheckpointError, match="no pretrained model named 'no-such-model'.*cgcnn-mp-eform"):
        crysk.load("no-such-model")
    with pytest.raises(CheckpointError, match="no pretrained model named"):
        pretrained.describe("no-such-model")
    X, y = demo
    with pytest.raises(CheckpointError, match="no pretrained model named 'no-such-model'"):
        CGCNNRegressor(max_epochs=1, warm_start_from="no-such-model").fit(X, y)
    # a path-like string keeps the file error
    with pytest.raises(CheckpointError, match="does not exist"):
        crysk.load("missing/model.pt")


def test_planned_but_unshipped_model_says_how_to_train_it(tmp_path, monkeypatch):
    # a package folder without the models: every planned name is then planned but not shipped
    monkeypatch.setattr(pretrained, "_HERE", tmp_path)
    monkeypatch.delenv(pretrained.ENV_DIRS, raising=False)
    with pytest.raises(CheckpointError, match="not shipped.*pretrain_zoo.py"):
        crysk.load("cgcnn-mp-eform")
    assert pretrained.describe("crysae-mp")["status"] == "planned"
    assert "cgcnn-mp-eform" not in pretrained.available()


def test_register_validates_names(tmp_path):
    with pytest.raises(ValueError, match="letters, digits"):
        pretrained.register("../escape", tmp_path / "x.pt")


# ----------------------------------------------------------------------------- use by name
def test_load_by_name_predicts_like_the_model(registered, demo):
    est, _ = registered
    X, _ = demo
    assert "tiny-eform" in pretrained.available()
    loaded = crysk.load("tiny-eform")
    np.testing.assert_allclose(loaded.predict(X), est.predict(X), rtol=1e-6, atol=1e-6)
    assert pretrained.describe("tiny-eform")["summary"] == "test model"
    again = CGCNNRegressor.from_pretrained("tiny-eform")
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=1e-6, atol=1e-6)


def test_warm_start_by_name(registered, demo):
    est, _ = registered
    X, y = demo
    tl = CGCNNRegressor(**SMALL, max_epochs=0, warm_start_from="tiny-eform", random_state=1).fit(X, y)
    assert "pretrained model 'tiny-eform'" in tl.transfer_report_.source
    assert tl.transfer_report_.complete
    for name, tensor in est.module_.state_dict().items():
        np.testing.assert_array_equal(tl.module_.state_dict()[name].numpy(), tensor.numpy())


def test_from_pretrained_with_a_new_head_is_ready_to_fine_tune(registered, demo):
    X, y = demo
    est = CGCNNRegressor.from_pretrained("tiny-eform", h_fea_len=8, max_epochs=1)
    assert not hasattr(est, "module_")  # unfitted: the new head has no weights yet
    params = est.get_params()
    assert params["warm_start_from"] == "tiny-eform"
    assert (params["atom_fea_len"], params["n_conv"], params["h_fea_len"]) == (16, 2, 8)
    est.fit(X, y)
    report = est.transfer_report_
    assert any(n.startswith("convs.1.") for n in report.loaded)
    assert "conv_to_fc.weight" in report.initialized


def test_sha256_mismatch_is_refused(small_model, tmp_path):
    _, path = small_model
    pretrained.register("tiny-bad-sha", path, sha256="0" * 64)
    try:
        with pytest.raises(CheckpointError, match="sha256.*damaged or was replaced"):
            crysk.load("tiny-bad-sha")
    finally:
        pretrained.unregister("tiny-bad-sha")
    # the same file changed after its digest was recorded
    copy = tmp_path / "changed.pt"
    shutil.copyfile(path, copy)
    pretrained.register("tiny-changed", copy, sha256=file_sha256(copy))
    try:
        with open(copy, "ab") as fh:
            fh.write(b"\0")
        with pytest.raises(CheckpointError, match="sha256"):
            CGCNNRegressor.from_pretrained("tiny-changed")
    finally:
        pretrained.unregister("tiny-changed")


def test_an_existing_path_wins_over_a_name(registered, demo, tmp_path, monkeypatch):
    X, y = demo
    other = CGCNNRegressor(**SMALL, max_epochs=1, batch_size=16, random_state=5).fit(X, y)
    other.save_pretrained(tmp_path / "tiny-eform")
    monkeypatch.chdir(tmp_path)
    loaded = crysk.load("tiny-eform")
    np.testing.assert_allclose(loaded.predict(X[:5]), other.predict(X[:5]), rtol=1e-6, atol=1e-6)


def _write_model_folder(small_model, folder: Path, name: str) -> Path:
    est, path = small_model
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / f"{name}.pt")
    card = {"summary": "a folder model", "sha256": file_sha256(folder / f"{name}.pt"), "epochs": 2}
    (folder / f"{name}.json").write_text(json.dumps(card))
    return folder


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "crysk", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def test_cli_pretrained_list_and_info(small_model, tmp_path):
    folder = _write_model_folder(small_model, tmp_path / "models", "folder-model")
    env = {**os.environ, pretrained.ENV_DIRS: str(folder), "PYTHONPATH": str(REPO)}
    listed = _cli("pretrained", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "folder-model\tavailable\ta folder model" in listed.stdout
    assert "cgcnn-mp-eform" not in listed.stdout or "cgcnn-mp-eform" in SHIPPED
    everything = _cli("pretrained", "list", "--all", env=env)
    assert "cgcnn-mp-gap" in everything.stdout and "crysae-mp" in everything.stdout
    info = _cli("pretrained", "info", "folder-model", env=env)
    assert info.returncode == 0, info.stderr
    assert "sha256: " in info.stdout and "status: available" in info.stdout
    card = json.loads(_cli("pretrained", "info", "cgcnn-mp-gap", "--json", env=env).stdout)
    assert "18012019" in card["split_plan"]
    bad = _cli("pretrained", "info", "no-such-model", env=env)
    assert bad.returncode == 1
    assert "folder-model" in bad.stderr and "cgcnn-mp-eform" in bad.stderr


def test_models_in_a_folder_named_by_the_environment_load(small_model, tmp_path, monkeypatch, demo):
    folder = _write_model_folder(small_model, tmp_path / "models", "env-model")
    monkeypatch.setenv(pretrained.ENV_DIRS, str(folder))
    est, _ = small_model
    X, _ = demo
    np.testing.assert_allclose(crysk.load("env-model").predict(X[:4]), est.predict(X[:4]), rtol=1e-6, atol=1e-6)
    with open(folder / "env-model.pt", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(CheckpointError, match="sha256"):
        crysk.load("env-model")


# ----------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize("name", SHIPPED or [pytest.param("none", marks=pytest.mark.skip("no model shipped yet"))])
def test_shipped_model_reproduces_its_card(name):
    card = pretrained.describe(name)
    path = PACKAGE / f"{name}.pt"
    assert card["status"] == "available" and card["sha256"] == file_sha256(path)
    assert path.stat().st_size <= 1_100_000
    for key in ("data", "licence", "split", "epochs", "validation_mae", "test_mae", "featurizer", "crysk_version",
                "training_commands", "wall_time_s"):
        assert key in card, key
    assert card["epochs"] >= 100
    assert card["plateau"]["plateaued"], card["plateau"]  # validation flat over the last epochs: not undertrained
    if name == "cgcnn-mp-eform":  # the DFT -> experiment benchmark's test crystals were kept out of training
        held = card["held_out"]
        assert held["n"] == len(held["ids"]) > 1000
        assert held["ids_sha256"] == hashlib.sha256("\n".join(held["ids"]).encode()).hexdigest()
    model = crysk.load(name)
    ref = card["reference"]
    assert len(ref["ids"]) == 10
    out = model.transform(ref["cif"]) if isinstance(model, CrysAE) else model.predict(ref["cif"])
    np.testing.assert_allclose(out, np.asarray(ref["outputs"]), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- architecture
def test_default_encoder_parameters_adopt_the_source(registered, demo, tmp_path):
    X, y = demo
    est = CGCNNRegressor(max_epochs=1, warm_start_from="tiny-eform", random_state=0).fit(X, y)
    assert est.adopted_params_ == {"atom_fea_len": 16, "n_conv": 2}
    assert len(est.module_.convs) == 2 and est.module_.embedding.weight.shape[0] == 16
    assert est.transfer_report_.adopted == est.adopted_params_
    assert not any(n.startswith(("convs.", "embedding.")) for n in est.transfer_report_.unused)
    # the constructor arguments stay as given (clone, get_params), the checkpoint records the real shape
    assert est.get_params()["n_conv"] == 3 and clone(est).get_params()["atom_fea_len"] == 64
    loaded = crysk.load(est.save_pretrained(tmp_path / "adopted.pt"))
    assert (loaded.n_conv, loaded.atom_fea_len) == (2, 16)
    np.testing.assert_allclose(loaded.predict(X[:4]), est.predict(X[:4]), rtol=1e-6, atol=1e-6)


def test_conflicting_encoder_parameters_raise_with_the_fix(registered, demo):
    X, y = demo
    with pytest.raises(CheckpointError, match=r"n_conv=4 here but 2 in the source.*Set n_conv=2"):
        CGCNNRegressor(n_conv=4, max_epochs=1, warm_start_from="tiny-eform").fit(X, y)
    with pytest.raises(CheckpointError, match=r"atom_fea_len=32 here but 16.*atom_fea_len=16"):
        CrysXPPRegressor(atom_fea_len=32, max_epochs=1, warm_start_from="tiny-eform").fit(X, y)
    # choosing the layers explicitly keeps the explicit value: two of four convolutions transferred
    est = CGCNNRegressor(n_conv=4, max_epochs=0, warm_start_from="tiny-eform", warm_start_include="convs",
                         random_state=0).fit(X, y)
    assert len(est.module_.convs) == 4 and est.adopted_params_ == {"atom_fea_len": 16}
    assert any(n.startswith("convs.1.") for n in est.transfer_report_.loaded)
    assert any(n.startswith("convs.3.") for n in est.transfer_report_.initialized)


@pytest.mark.skipif(not ORIGINAL_CGCNN.exists(), reason="original CGCNN checkpoint not available")
def test_original_cgcnn_four_convolutions_are_all_used(demo):
    X, y = demo
    est = CGCNNRegressor(max_epochs=0, warm_start_from=str(ORIGINAL_CGCNN), random_state=0).fit(X, y)
    assert est.adopted_params_ == {"n_conv": 4} and len(est.module_.convs) == 4
    assert not any(n.startswith("convs.") for n in est.transfer_report_.unused)
    with pytest.raises(CheckpointError, match="n_conv=4"):
        CGCNNRegressor(n_conv=2, max_epochs=0, warm_start_from=str(ORIGINAL_CGCNN)).fit(X, y)


# ----------------------------------------------------------------------------- batch_size="auto"
@pytest.mark.parametrize(("n", "cap", "expected"), [
    (0, 256, 16), (80, 256, 16), (400, 512, 16), (1000, 256, 32), (4000, 256, 128), (8000, 256, 256),
    (33000, 256, 256), (33000, 512, 512), (100000, 512, 512),
])
def test_auto_batch_size_rule(n, cap, expected):
    assert auto_batch_size(n, cap) == expected


def _train_batches(est):
    return [b["train_batch_size"] for b in est.history[-1, "batches"] if "train_batch_size" in b]


def test_batch_size_auto_resolves_in_fit(demo):
    X, y = demo
    est = CGCNNRegressor(**SMALL, max_epochs=1, random_state=0)
    assert est.get_params()["batch_size"] == "auto"
    est.fit(X, y)
    assert est.batch_size == "auto" and est.batch_size_ == 16
    assert _train_batches(est) == [16, 16, 6]  # 38 training crystals (48 less 10 for validation)
    assert clone(est).get_params()["batch_size"] == "auto"
    fixed = CrysXPPRegressor(**SMALL, batch_size=512, max_epochs=1, random_state=0).fit(X, y)
    assert fixed.batch_size_ == 512 and len(_train_batches(fixed)) == 1
    assert CrysXPPRegressor()._auto_batch_cap == 512 and CGCNNRegressor()._auto_batch_cap == 256
    for bad in ("big", 0, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            CGCNNRegressor(batch_size=bad, max_epochs=1).fit(X, y)
    assert CGCNNRegressor(**SMALL, batch_size=-1, max_epochs=1).fit(X, y).batch_size_ == 38


# ----------------------------------------------------------------------------- the wheel
@pytest.mark.slow
def test_installed_wheel_finds_its_models(small_model, tmp_path):
    """A non-editable wheel carries crysk/pretrained/*.pt and *.json, and the installed package finds them."""
    src = tmp_path / "src"
    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listing, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, src / rel)
    # a model placed as --finalize places one, in case this checkout ships none yet
    _write_model_folder(small_model, src / "crysk" / "pretrained", "wheel-model")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(wheels)], check=True, timeout=600)
    (wheel,) = wheels.glob("crysk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"wheel-model", *SHIPPED}
    for name in expected:
        assert f"crysk/pretrained/{name}.pt" in names and f"crysk/pretrained/{name}.json" in names
    assert "crysk/nn/_cpu_kernels.cpp" in names  # the fused CPU kernels' source, built on first use
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, timeout=600)
    code = ("import crysk, crysk.pretrained as p; print(crysk.__file__); print(sorted(p.available())); "
            "m = crysk.load('wheel-model'); print(type(m).__name__)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", pretrained.ENV_DIRS)}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(site))
    assert set(eval(lines[1])) == expected  # noqa: S307 - our own printed list
    assert lines[2] == "CGCNNRegressor"


# ----------------------------------------------------------------------------- benchmarks/pretrain_zoo.py
def test_zoo_run_goes_on_at_half_the_lr_after_a_divergence(tmp_path, monkeypatch):
    """An unattended pretraining piece that hits a NaN loss resumes from its last epoch, lr halved, and says so."""
    import torch
    from skorch.callbacks import Callback

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import pretrain_zoo as zoo

    class PoisonEpoch2(Callback):
        def on_epoch_begin(self, net, **kwargs):
            if len(net.history) == 2:  # the run's epoch 2 (the first piece starts at epoch 1)
                with torch.no_grad():
                    next(net.module_.parameters()).view(-1)[0] = float("nan")

    make = zoo.make_estimator

    def diverging_first_piece(model, args, callbacks):
        first = "lr_scale" not in zoo.read_run(args.state_dir / model)
        return make(model, args, callbacks + ([("poison", PoisonEpoch2())] if first else []))

    monkeypatch.setattr(zoo, "make_estimator", diverging_first_piece)
    monkeypatch.setattr(sys, "argv", ["pretrain_zoo.py", "--models", "crysae-mp", "--epochs", "3", "--limit", "60",
                                      "--state-dir", str(tmp_path)])
    assert zoo.main() == 0
    run = json.loads((tmp_path / "crysae-mp" / "run.json").read_text())
    assert run["done"] and run["epochs_done"] == 3
    assert [(d["epoch"], d["batch"]) for d in run["divergences"]] == [(2, 1)] and run["lr_scale"] == 0.5
    assert [p["lr"] for p in run["pieces"]] == [0.003, 0.0015]  # the model's lr, then halved
    assert [p["after_epoch"] for p in run["pieces"]] == [0, 1]  # the second piece resumed after epoch 1
    assert "diverged" in run["pieces"][0] and "diverged" not in run["pieces"][1]
    history = (tmp_path / "crysae-mp" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3"]


def test_zoo_run_stops_when_the_same_batch_diverges_at_half_the_lr(tmp_path, monkeypatch):
    """A NaN that comes back at the same batch after the lr was halved is not the lr's fault: stop, say so."""
    import torch
    from skorch.callbacks import Callback

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import pretrain_zoo as zoo

    class PoisonEpoch2(Callback):  # every piece: a bad batch does not care about the learning rate
        def on_epoch_begin(self, net, **kwargs):
            resumed = getattr(net, "_resume_state", None) is not None  # a resumed piece starts at epoch 2
            if len(net.history) == (1 if resumed else 2):
                with torch.no_grad():
                    next(net.module_.parameters()).view(-1)[0] = float("nan")

    make = zoo.make_estimator
    monkeypatch.setattr(zoo, "make_estimator",
                        lambda model, args, callbacks: make(model, args, callbacks + [("p", PoisonEpoch2())]))
    monkeypatch.setattr(sys, "argv", ["pretrain_zoo.py", "--models", "crysae-mp", "--epochs", "3", "--limit", "60",
                                      "--state-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"same batch \(epoch 2, batch 1\).*not the cause.*CRYSK_CPU_KERNELS"):
        zoo.main()
    run = json.loads((tmp_path / "crysae-mp" / "run.json").read_text())
    assert [(d["epoch"], d["batch"]) for d in run["divergences"]] == [(2, 1), (2, 1)]  # two tries, not four


def test_carry_saves_and_restores_unshipped_runs_only(tmp_path, monkeypatch):
    """benchmarks/carry.py: a run's resume point goes into the tracked folder and back onto a fresh machine."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import carry

    zoo, results = tmp_path / "zoo", tmp_path / "results"
    # a run whose model is not in the package yet, and a shipped one (its run is not carried)
    for model in ("zoo-run-in-progress", "cgcnn-mp-eform"):
        (zoo / model).mkdir(parents=True)
        for name in carry.ZOO_FILES:
            (zoo / model / name).write_bytes(f"{model} {name}".encode())
    (results / "pretrained").mkdir(parents=True)
    (results / "pretrained" / "dft2exp_full_crysxpp_e100.last.pt").write_bytes(b"weights")
    (results / "dft_to_experiment_fits.csv").write_text("fit_key,test_mae\nabc,0.1\n")
    monkeypatch.setenv("CRYSK_ZOO_DIR", str(zoo))
    monkeypatch.setattr(carry, "CARRY", tmp_path / "carry")
    monkeypatch.setattr(carry, "RESULTS", results)

    monkeypatch.setattr(sys, "argv", ["carry.py", "save"])
    assert carry.main() == 0
    saved = sorted(str(p.relative_to(tmp_path / "carry")) for p in (tmp_path / "carry").rglob("*") if p.is_file())
    assert saved == ["results/dft_to_experiment_fits.csv", "results/pretrained/dft2exp_full_crysxpp_e100.last.pt",
                     *(f"zoo/zoo-run-in-progress/{n}" for n in sorted(carry.ZOO_FILES))]

    shutil.rmtree(zoo)  # a fresh machine
    shutil.rmtree(results)
    monkeypatch.setattr(sys, "argv", ["carry.py", "restore"])
    assert carry.main() == 0
    assert (zoo / "zoo-run-in-progress" / "last.pt").read_bytes() == b"zoo-run-in-progress last.pt"
    assert (results / "dft_to_experiment_fits.csv").read_text().endswith("abc,0.1\n")
    assert not (zoo / "cgcnn-mp-eform").exists()

    # the DFT model finishes: its resume point leaves the carry folder, the finished model enters it
    (results / "pretrained" / "dft2exp_full_crysxpp_e100.last.pt").unlink()
    (results / "pretrained" / "dft2exp_full_crysxpp_e100.pt").write_bytes(b"final")
    monkeypatch.setattr(sys, "argv", ["carry.py", "save"])
    assert carry.main() == 0
    assert sorted(p.name for p in (tmp_path / "carry" / "results" / "pretrained").iterdir()) == [
        "dft2exp_full_crysxpp_e100.pt"]
