"""Learning curve behind ``batch_size="auto"``: the papers' fixed batch sizes against the automatic one.

For each training-set size n (default 100, 500, 5,000 crystals drawn with a fixed seed from
``mp_eform``), each model (``CGCNNRegressor``, ``CrysXPPRegressor`` with their other defaults) is
fitted twice for the same number of epochs: with the paper's batch size (CGCNN 256, CrysXPP 512)
and with ``batch_size="auto"``. Test MAE on a fixed set of 1,000 other crystals (the same for every
n), wall time per fit and the load average are printed and appended to
``benchmarks/results/batch_size_curve.csv`` (rows already there are skipped on a rerun, so the run
can be continued after an interruption).

Graphs are read from the zoo cache (``$CRYSK_ZOO_DIR/graphs/mp_eform.npz``, written by
``pretrain_zoo.py``) when it exists, else the needed records are featurized.

Command::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/batch_size_curve.py --sizes 100 500 5000 --epochs 30
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
from _data import read_jsonl

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_BATCH = {"CGCNN": 256, "CrysXPP": 512}


def load_graphs(n_needed: int):
    """Formation-energy graphs and targets (all 36,737 from the zoo cache, else the first ``n_needed``)."""
    from crysk import CrystalGraphFeaturizer, CrystalGraphs

    cache = Path(os.environ.get("CRYSK_ZOO_DIR", RESULTS / "zoo")) / "graphs" / "mp_eform.npz"
    if cache.exists() and cache.with_suffix(".meta.npz").exists():
        meta = np.load(cache.with_suffix(".meta.npz"))
        return CrystalGraphs.load(cache), np.asarray(meta["targets"], dtype=np.float64)
    recs = read_jsonl("mp_eform.jsonl.gz", limit=n_needed)
    graphs = CrystalGraphFeaturizer().transform([r["cif"] for r in recs], ids=[r["id"] for r in recs])
    return graphs, np.array([r["formation_energy_per_atom"] for r in recs])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 5000])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", nargs="+", choices=list(PAPER_BATCH), default=list(PAPER_BATCH))
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=RESULTS / "batch_size_curve.csv")
    args = parser.parse_args()

    from crysk import CGCNNRegressor, CrysXPPRegressor

    classes = {"CGCNN": CGCNNRegressor, "CrysXPP": CrysXPPRegressor}
    graphs, y = load_graphs(max(args.sizes) + args.n_test)
    order = np.random.default_rng(2026).permutation(len(y))
    test, pool = order[: args.n_test], order[args.n_test:]
    done = set()
    if args.output.exists():
        with open(args.output) as fh:
            done = {(r["model"], int(r["n"]), r["batch_size"], int(r["epochs"])) for r in csv.DictReader(fh)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    mean_mae = float(np.mean(np.abs(y[test] - np.mean(y[pool[: max(args.sizes)]]))))
    print(f"test: {len(test)} crystals, mean predictor MAE {mean_mae:.4f} eV/atom", flush=True)
    for n in args.sizes:
        train = pool[:n]
        for model in args.models:
            for batch in (PAPER_BATCH[model], "auto"):
                key = (model, n, str(batch), args.epochs)
                if key in done:
                    continue
                load = " ".join(f"{v:.2f}" for v in os.getloadavg())
                est = classes[model](batch_size=batch, max_epochs=args.epochs, random_state=0)
                t = time.perf_counter()
                est.fit(graphs[train], y[train])
                wall = time.perf_counter() - t
                mae = float(np.mean(np.abs(est.predict(graphs[test]) - y[test])))
                row = {"model": model, "n": n, "batch_size": str(batch), "resolved": est.batch_size_,
                       "epochs": args.epochs, "best_epoch": est.best_epoch_, "test_mae": f"{mae:.4f}",
                       "mean_predictor": f"{mean_mae:.4f}", "fit_s": f"{wall:.1f}", "load_avg": load}
                new = not args.output.exists()
                with open(args.output, "a", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=list(row))
                    if new:
                        w.writeheader()
                    w.writerow(row)
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
