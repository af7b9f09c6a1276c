import csv

from crysk.cli import main


def test_demo_runs_and_learns(tmp_path, capsys):
    assert main(["demo", "--n", "120", "--epochs", "25", "--output", str(tmp_path / "d.pt")]) == 0
    out = capsys.readouterr().out
    assert "predicts identically" in out and (tmp_path / "d.pt").is_file()


def test_predict_with_original_checkpoint(data_path, capsys):
    folder = data_path / "sample_regression_cgcnn"
    with open(folder / "id_prop.csv") as fh:
        first = next(csv.reader(fh))[0]
    ckpt = data_path / "checkpoints" / "cgcnn" / "formation-energy-per-atom.pth.tar"
    assert main(["predict", str(ckpt), str(folder / f"{first}.cif")]) == 0
    value = float(capsys.readouterr().out.split("\t")[1])
    assert abs(value - (-2.11325)) < 1e-3


def test_predict_with_original_classifier_prints_probabilities(data_path, capsys):
    folder = data_path / "sample_regression_cgcnn"
    ckpt = data_path / "checkpoints" / "cgcnn" / "semi-metal-classification.pth.tar"
    assert main(["predict", str(ckpt), str(folder / "9012304.cif")]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split("\t") == ["structure", "label", "P(0)", "P(1)"]
    fields = row.split("\t")
    assert fields[1] == "1" and abs(float(fields[3]) - 0.93518) < 1e-4  # CGCNN's predict.py
