"""Transfer learning in three lines: fine-tune a pretrained CGCNN on 500 band gaps.

Compares, on the same 125-structure test set of non-metal PBE band gaps
(``band_gap > 0.1`` eV from ``mp_gap.jsonl.gz``; 500 train / 125 validation):

* CGCNN trained from scratch,
* TL fine-tuning (all weights start from the pretrained model, lr 0.005),
* TL layer freezing (only the output layer trains),

starting either from the original CGCNN formation-energy checkpoint shipped
in the data folder (``--source cgcnn``, the default) or from a model crysk
pretrains here on 10,000 formation energies (``--source pretrain``).

    python examples/transfer_learning.py --quick      # ~5 minutes on 2 CPU cores
    python examples/transfer_learning.py --source pretrain

Needs the shared data folder (``../shared/data`` or ``$CRYSK_DATA``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from crysk import CGCNNRegressor, CrystalGraphFeaturizer


def data_dir() -> Path:
    return Path(os.environ.get("CRYSK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def read(name: str) -> list[dict]:
    with gzip.open(data_dir() / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs (about 5 minutes on 2 cores)")
    parser.add_argument("--source", choices=["cgcnn", "pretrain"], default="cgcnn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    epochs = 60 if args.quick else 300
    t0 = time.perf_counter()

    featurizer = CrystalGraphFeaturizer(n_jobs=2)
    if args.source == "cgcnn":
        source = data_dir() / "checkpoints" / "cgcnn" / "formation-energy-per-atom.pth.tar"
        arch = dict(atom_fea_len=64, n_conv=4)  # the checkpoint's architecture
    else:
        eform = read("mp_eform.jsonl.gz")
        pick = np.random.default_rng(args.seed).permutation(len(eform))[:10_000]
        X_pre = featurizer.transform([eform[i]["cif"] for i in pick])
        y_pre = np.array([eform[i]["formation_energy_per_atom"] for i in pick])
        arch = dict(atom_fea_len=64, n_conv=3)
        pre_epochs = 30 if args.quick else 100
        pretrained = CGCNNRegressor(**arch, max_epochs=pre_epochs, lr_milestones=(int(0.8 * pre_epochs),), random_state=args.seed)
        source = pretrained.fit(X_pre, y_pre).save_pretrained("pretrained_eform.pt")
        print(f"pretrained on 10k formation energies: best validation MAE "
              f"{min(r['valid_mae'] for r in pretrained.history):.3f} eV/atom")

    gaps = [r for r in read("mp_gap.jsonl.gz") if r["band_gap"] > 0.1]
    pick = np.random.default_rng(args.seed).permutation(len(gaps))[:750]
    X = featurizer.transform([gaps[i]["cif"] for i in pick])
    y = np.array([gaps[i]["band_gap"] for i in pick])
    train, valid, test = np.split(np.arange(750), [500, 625])

    common = dict(max_epochs=epochs, lr_milestones=(int(0.8 * epochs),), batch_size=64, random_state=args.seed)
    models = {
        "CGCNN from scratch": CGCNNRegressor(**arch, h_fea_len=64, lr=0.01, **common),
        "TL fine-tuning": CGCNNRegressor(**arch, h_fea_len=64, lr=0.005, warm_start_from=source, **common),
        "TL layer freezing": CGCNNRegressor(
            **arch, h_fea_len=32 if args.source == "cgcnn" else 128, lr=0.005,
            warm_start_from=source, freeze="all-but-head", **common,
        ),
    }
    print(f"\n500 train / 125 validation / 125 test non-metal band gaps (mean predictor MAE "
          f"{np.abs(y[test] - y[train].mean()).mean():.3f} eV), {epochs} epochs, source: {args.source}")
    print("| model | test MAE (eV) | fit time (s) |\n|---|---|---|")
    for name, model in models.items():
        t = time.perf_counter()
        model.fit(X[train], y[train], X_valid=X[valid], y_valid=y[valid])
        mae = np.abs(model.predict(X[test]) - y[test]).mean()
        print(f"| {name} | {mae:.3f} | {time.perf_counter() - t:.0f} |", flush=True)
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
