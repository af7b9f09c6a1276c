"""CGCNN accuracy on formation energies: train 5,000 / validate 1,000 / test 2,000.

Structures come from ``mp_eform.jsonl.gz`` in a fixed random order (seed 0);
the model is CGCNNRegressor at the CGCNN defaults, with the best validation
epoch restored. Prints the test MAE in eV/atom and the wall time.

    python benchmarks/accuracy.py                 # 120 epochs (lr x0.1 at 100)
    python benchmarks/accuracy.py --epochs 30     # a shorter look
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _data import read_jsonl

from crysk import CGCNNRegressor, CrystalGraphFeaturizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--sizes", type=int, nargs=3, default=[5000, 1000, 2000], metavar=("TRAIN", "VALID", "TEST"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()

    records = read_jsonl("mp_eform.jsonl.gz")
    n_train, n_valid, n_test = args.sizes
    order = np.random.default_rng(0).permutation(len(records))[: n_train + n_valid + n_test]
    records = [records[i] for i in order]
    y = np.array([r["formation_energy_per_atom"] for r in records])
    graphs = CrystalGraphFeaturizer(n_jobs=2).transform([r["cif"] for r in records], ids=[r["id"] for r in records])
    t_feat = time.perf_counter() - t0
    tr, va, te = np.split(np.arange(len(y)), [n_train, n_train + n_valid])

    model = CGCNNRegressor(max_epochs=args.epochs, lr_milestones=(100,), device=args.device, random_state=0, verbose=1)
    t1 = time.perf_counter()
    model.fit(graphs[tr], y[tr], X_valid=graphs[va], y_valid=y[va])
    t_fit = time.perf_counter() - t1
    pred = model.predict(graphs[te])
    mae = float(np.abs(pred - y[te]).mean())
    mad = float(np.abs(y[te] - y[tr].mean()).mean())
    print()
    print(f"train/valid/test: {n_train}/{n_valid}/{n_test} mp_eform structures (seed 0), {args.epochs} epochs")
    print(f"best validation epoch: {model.best_epoch_}, validation MAE {min(r['valid_mae'] for r in model.history):.4f} eV/atom")
    print(f"test MAE: {mae:.4f} eV/atom (mean predictor: {mad:.4f})")
    print(f"wall time: featurize {t_feat:.0f} s, fit {t_fit:.0f} s, total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
