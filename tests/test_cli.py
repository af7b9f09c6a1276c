"""The ``crysk`` command, run as users run it: in a subprocess (issue 19, item 3)."""

import csv
import gzip
import itertools
import os
import subprocess
import sys

import joblib
import pytest

from crysk.cli import Progress, main


def crysk(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "crysk", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def one_error_line(result, *fragments):
    """The run failed with exactly one 'crysk: error:' line holding the fragments, and no traceback."""
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith("crysk: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def ckpt(data_path):
    return data_path / "checkpoints" / "cgcnn" / "formation-energy-per-atom.pth.tar"


@pytest.fixture(scope="module")
def cifs(data_path):
    folder = data_path / "sample_regression_cgcnn"
    with open(folder / "id_prop.csv") as fh:
        ids = [row[0] for row in csv.reader(fh)]
    return [folder / f"{i}.cif" for i in ids[:3]]


def test_demo_states_its_pass_criterion_and_result(tmp_path, capsys):
    assert main(["demo", "--n", "120", "--epochs", "25", "--output", str(tmp_path / "d.pt")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pass criterion: ") and "result: PASS" in out
    assert "predicts identically" in out and (tmp_path / "d.pt").is_file()


def test_demo_failure_says_why(tmp_path, capsys):
    # one epoch cannot learn the target: the demo must fail and say which criterion failed
    assert main(["demo", "--n", "40", "--epochs", "1", "--output", str(tmp_path / "d.pt")]) == 1
    out = capsys.readouterr().out
    assert "result: FAIL: test MAE" in out and "--epochs" in out


def test_predict_with_original_checkpoint(ckpt, cifs, capsys):
    assert main(["predict", str(ckpt), str(cifs[0])]) == 0
    value = float(capsys.readouterr().out.split("\t")[1])
    assert abs(value - (-2.11325)) < 1e-3


def test_bad_models_fail_with_one_line_and_the_fix(tmp_path, ckpt, cifs):
    text = tmp_path / "model.pt"
    text.write_text("hello\n")
    one_error_line(crysk("predict", text, cifs[0]), "not a crysk checkpoint", "text file")
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    pickled = tmp_path / "pipe.pt"
    joblib.dump(Pipeline([("ridge", Ridge())]), pickled)
    one_error_line(crysk("predict", pickled, cifs[0]), "Python pickle", "joblib.load")
    one_error_line(crysk("predict", tmp_path, cifs[0]), "is a folder, not a checkpoint file")
    one_error_line(crysk("predict", ckpt, cifs[0].parent), "is a folder: pass the CIF files", "--folder")
    one_error_line(crysk("predict", ckpt, tmp_path / "missing.cif"), "does not exist")


def test_one_bad_cif_and_skip_bad(tmp_path, ckpt, cifs):
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n_cell_length_a 3\nloop_\n")
    one_error_line(crysk("predict", ckpt, cifs[0], bad), f"(id '{bad}')", "--skip-bad")
    out = tmp_path / "predictions.csv"
    result = crysk("predict", ckpt, cifs[0], bad, cifs[1], "--skip-bad", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "skipped 1 of 3 structures" in result.stderr and str(bad) in result.stderr
    with open(out) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "prediction"] and [r[0] for r in rows[1:]] == [str(cifs[0]), str(cifs[1])]
    assert abs(float(rows[1][1]) - (-2.11325)) < 1e-3


def test_featurize_train_predict_batch_flow(tmp_path, data_path, cifs, ckpt):
    table = tmp_path / "t.jsonl"
    with gzip.open(data_path / "mp_eform.jsonl.gz", "rt") as src:
        table.write_text("".join(itertools.islice(src, 60)))
    model = tmp_path / "m.pt"
    result = crysk("train", table, "-o", model, "--target", "formation_energy_per_atom", "--epochs", "3",
                   "--batch-size", "16", "--atom-fea-len", "8", "--h-fea-len", "8", "--nrows", "50")
    assert result.returncode == 0, result.stderr
    assert "on 50 structures" in result.stdout and model.is_file()
    assert not (tmp_path / "m.partial.pt").exists()
    # progress into a file (not a terminal): plain lines, no ANSI codes or carriage returns
    assert "training: 3/3 epochs" in result.stderr and "\x1b" not in result.stderr and "\r" not in result.stderr

    graphs = tmp_path / "g.npz"
    result = crysk("featurize", *cifs, "-o", graphs)
    assert result.returncode == 0 and graphs.is_file(), result.stderr
    out = tmp_path / "p.csv"
    assert crysk("predict", model, graphs, "-o", out).returncode == 0
    with open(out) as fh:
        assert len(list(csv.reader(fh))) == 1 + len(cifs)
    one_error_line(crysk("predict", graphs, cifs[0]), "numpy .npz file", "pass the model first")
    one_error_line(crysk("train", tmp_path / "nope.csv", "-o", model), "does not exist")


def test_bad_arguments_exit_2_with_usage():
    result = crysk("demo", "--epochs", "0")
    assert result.returncode == 2 and "must be a positive integer" in result.stderr


def test_plain_progress_lines(capsys):
    import io

    stream = io.StringIO()
    progress = Progress(100, "featurizing", unit="structures", stream=stream)
    for _ in range(100):
        progress.update(1)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("featurizing: 100/100 structures")


def test_train_on_a_cgcnn_folder_and_resume(tmp_path, data_path):
    folder = data_path / "cgcnn_format_sample"
    model = tmp_path / "m.pt"
    args = ["train", folder, "-o", model, "--epochs", "2", "--batch-size", "10", "--atom-fea-len", "8",
            "--h-fea-len", "8", "--nrows", "30"]
    result = crysk(*args)
    assert result.returncode == 0, result.stderr
    assert "on 30 structures" in result.stdout and model.is_file()
    one_error_line(crysk(*args, "--resume"), "--resume: no interrupted run")
def test_predict_with_original_classifier_prints_probabilities(data_path, capsys):
    folder = data_path / "sample_regression_cgcnn"
    ckpt = data_path / "checkpoints" / "cgcnn" / "semi-metal-classification.pth.tar"
    assert main(["predict", str(ckpt), str(folder / "9012304.cif")]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split("\t") == ["structure", "label", "P(0)", "P(1)"]
    fields = row.split("\t")
    assert fields[1] == "1" and abs(float(fields[3]) - 0.93518) < 1e-4  # CGCNN's predict.py
