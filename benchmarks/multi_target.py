"""MT-CGCNN: formation energy and band gap learnt jointly vs each alone (the CrysXPP paper's Table 2 comparison).

Data
----
The crystals that have both a formation energy (``mp_eform``, CrysXPP's data)
and a PBE band gap (``mp_gap``, Matbench). ``mp_gap`` carries no Materials
Project ids (see the data README, "Overlaps between the sets"), so the two
files are joined on the structures:

1. candidates: same reduced formula (``_chemical_formula_structural`` of the
   pymatgen-written CIFs) and volume per atom within 3 %; an ``mp_eform``
   crystal with several ``mp_gap`` candidates takes the closest volume, and
   an ``mp_gap`` crystal is used once;
2. confirmed: pymatgen's ``StructureMatcher`` (default tolerances) on the
   parsed structures. Candidate pairs are checked in a fixed random order
   until enough are confirmed; the count of rejected ones is printed.

The ``mp_eform`` structure of each confirmed pair is featurized. Band gaps
include metals (0 eV), as in ``matbench_mp_gap``.

Protocol
--------
One random split (``--seed``) into ``--n-train`` / ``--n-val`` / ``--n-test``
crystals, the same for every model. Three CGCNNs (atom_fea_len 64, 3
convolutions, h_fea_len 128, SGD lr 0.01, batch 64, ``--epochs`` epochs,
standard scaling of each target, MSE; best epoch on the validation crystals):

* ``ΔEf alone`` and ``Eg alone``: one target each;
* ``joint``: ``y`` with both columns, one network with two outputs (MT-CGCNN).
  Each target is scaled on its own, so the two terms of the loss weigh alike.
  The best epoch is chosen on ``valid_mae``, the mean of the two MAEs in
  their own units (eV/atom and eV): the band gap's larger errors dominate
  that choice.

The table gives each model's test MAE per target (and the mean predictor's,
for scale). Outputs: ``benchmarks/results/multi_target[_quick].md`` and ``.csv``.

Commands::

    python benchmarks/multi_target.py --quick   # 500 / 100 / 200, 5 epochs: checks the pipeline
    python benchmarks/multi_target.py           # 2,000 / 400 / 1,000, 20 epochs (~20 CPU-minutes)
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from _data import data_dir, fill_mode_defaults, peak_rss_mb

from crysk import CGCNNRegressor, CrystalGraphFeaturizer

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = dict(n_train=500, n_val=100, n_test=200, epochs=5)
FULL = dict(n_train=2000, n_val=400, n_test=1000, epochs=20)
_CIF_KEY = re.compile(
    r"_chemical_formula_structural\s+(\S+).*?_chemical_formula_sum\s+'?([^'\n]+?)'?\s*\n.*?_cell_volume\s+(\S+)", re.S
)
_COUNTS = re.compile(r"[A-Z][a-z]?(\d*\.?\d*)")


def formula_and_volume(cif: str) -> tuple[str, float]:
    """Reduced formula and volume per atom (Å³) from the header of a pymatgen-written CIF, without parsing it."""
    m = _CIF_KEY.search(cif)
    if m is None:
        raise ValueError("not a pymatgen-written CIF header")
    n_atoms = sum(float(c) if c else 1.0 for c in _COUNTS.findall(m.group(2)))
    return m.group(1), float(m.group(3)) / n_atoms


def candidate_pairs(tol: float = 0.03) -> tuple[list[tuple[dict, dict]], int]:
    """(mp_eform record, mp_gap record) pairs with the same formula and volume per atom within ``tol``."""
    by_formula: dict[str, list[tuple[int, float]]] = defaultdict(list)
    eform = []
    with gzip.open(data_dir() / "mp_eform.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            rec = json.loads(line)
            f, v = formula_and_volume(rec["cif"])
            by_formula[f].append((i, v))
            eform.append(rec)
    best: dict[int, tuple[float, int]] = {}  # eform index -> (volume mismatch, gap index)
    gap: dict[int, dict] = {}
    with gzip.open(data_dir() / "mp_gap.jsonl.gz", "rt", encoding="utf-8") as fh:
        for j, line in enumerate(fh):
            rec = json.loads(line)
            f, v = formula_and_volume(rec["cif"])
            for i, vi in by_formula.get(f, ()):
                d = abs(vi / v - 1.0)
                if d < tol and (i not in best or d < best[i][0]):
                    best[i] = (d, j)
                    gap[j] = rec
    used: set[int] = set()
    pairs = []
    for i in sorted(best, key=lambda i: best[i][0]):  # closest volumes claim their gap record first
        j = best[i][1]
        if j not in used:
            used.add(j)
            pairs.append((eform[i], gap[j]))
    return pairs, len(eform)


def confirmed_pairs(pairs, n: int, seed: int) -> tuple[list, list, int]:
    """The first ``n`` candidate pairs (in a seeded random order) that StructureMatcher confirms, parsed."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    matcher = StructureMatcher()
    order = np.random.default_rng(seed).permutation(len(pairs))
    structures, kept, rejected = [], [], 0
    for k in order:
        e, g = pairs[k]
        s = Structure.from_str(e["cif"], fmt="cif")
        if matcher.fit(s, Structure.from_str(g["cif"], fmt="cif")):
            structures.append(s)
            kept.append((e, g))
            if len(kept) == n:
                break
        else:
            rejected += 1
    if len(kept) < n:
        raise SystemExit(f"only {len(kept)} confirmed pairs, {n} needed: use smaller --n-train/--n-val/--n-test")
    return structures, kept, rejected


def model(args, **params) -> CGCNNRegressor:
    """The CGCNN of every row (Table S1 widths, batch 64 so that a few epochs still take many steps)."""
    return CGCNNRegressor(
        atom_fea_len=64, n_conv=3, h_fea_len=128, lr=0.01, batch_size=64, max_epochs=args.epochs,
        target_scaler="standard", device=args.device, n_threads=args.n_threads, random_state=0, **params,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 / 100 / 200 crystals, 5 epochs")
    parser.add_argument("--n-train", type=int, help="training crystals (quick 500, full 2000)")
    parser.add_argument("--n-val", type=int, help="validation crystals (quick 100, full 400)")
    parser.add_argument("--n-test", type=int, help="test crystals (quick 200, full 1000)")
    parser.add_argument("--epochs", type=int, help="max epochs per model (quick 5, full 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair order and the split")
    parser.add_argument("--n-threads", type=int, default=1, help="torch threads per fit")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    defaults = fill_mode_defaults(args, QUICK, FULL)
    changed = {k: getattr(args, k) for k in defaults if getattr(args, k) != defaults[k]}
    suffix = ("_quick" if args.quick else "") + ("_custom" if changed or args.seed else "")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"settings: {vars(args)}", flush=True)
    start = time.perf_counter()
    stages = []

    def stage(name, since):
        stages.append((name, time.perf_counter() - since))
        print(f"[{time.perf_counter() - start:6.0f} s] {name}: {stages[-1][1]:.0f} s (peak RSS {peak_rss_mb():.0f} MB)",
              flush=True)

    # ---------------------------------------------------------------- join and featurize
    t = time.perf_counter()
    pairs, n_eform = candidate_pairs()
    stage(f"candidates: {len(pairs)} of {n_eform} mp_eform crystals", t)
    t = time.perf_counter()
    n = args.n_train + args.n_val + args.n_test
    structures, kept, rejected = confirmed_pairs(pairs, n, args.seed)
    stage(f"StructureMatcher: {n} confirmed, {rejected} candidates rejected", t)
    t = time.perf_counter()
    graphs = CrystalGraphFeaturizer().transform(structures, ids=[e["id"] for e, _ in kept])
    y = np.array([[e["formation_energy_per_atom"], g["band_gap"]] for e, g in kept], dtype=np.float64)
    stage("featurize", t)
    # the pairs are already in a seeded random order: consecutive blocks are a random split
    train, val, test = (np.arange(a, b) for a, b in ((0, args.n_train), (args.n_train, args.n_train + args.n_val),
                                                      (args.n_train + args.n_val, n)))

    # ---------------------------------------------------------------- fits
    names = ("ΔEf (eV/atom)", "Eg (eV)")
    rows = []
    runs = {"ΔEf alone": [0], "Eg alone": [1], "joint (MT-CGCNN)": [0, 1]}
    for label, cols in runs.items():
        t = time.perf_counter()
        yy = y[:, cols] if len(cols) > 1 else y[:, cols[0]]
        est = model(args).fit(graphs[train], yy[train], X_valid=graphs[val], y_valid=yy[val])
        pred = est.predict(graphs[test]).reshape(len(test), -1)
        fit_time = time.perf_counter() - t
        for k, col in enumerate(cols):
            rows.append({"model": label, "target": names[col], "test_mae": float(np.abs(pred[:, k] - y[test, col]).mean()),
                         "best_epoch": est.best_epoch_, "fit_time": fit_time})
        stage(f"fit {label}", t)
    for col, name in enumerate(names):
        rows.append({"model": "mean predictor", "target": name,
                     "test_mae": float(np.abs(y[train, col].mean() - y[test, col]).mean()), "best_epoch": None,
                     "fit_time": 0.0})

    res = pd.DataFrame(rows)
    res.to_csv(RESULTS / f"multi_target{suffix}.csv", index=False)
    table = res.pivot_table(index="model", columns="target", values="test_mae", sort=False)
    lines = ["| model | " + " | ".join(f"test MAE {c}" for c in table.columns) + " | best epoch |",
             "|---|" + "---|" * (len(table.columns) + 1)]
    for m in table.index:
        epochs = res[(res.model == m)].best_epoch.dropna().astype(int).unique()
        lines.append(f"| {m} | " + " | ".join("" if np.isnan(v) else f"{v:.4f}" for v in table.loc[m]) + " | "
                     + " ".join(map(str, epochs)) + " |")
    total = time.perf_counter() - start
    times = "\n".join(f"- {name}: {dt:.0f} s" for name, dt in stages) + f"\n- total: {total:.0f} s"
    text = (
        f"# Formation energy + band gap, jointly vs alone ({'quick' if args.quick else 'full'} mode"
        + (", changed: " + ", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "") + ")\n\n"
        f"{len(pairs)} candidate pairs (formula + volume), {n} confirmed by StructureMatcher ({rejected} rejected on "
        f"the way); split {args.n_train} / {args.n_val} / {args.n_test} (seed {args.seed}), {args.epochs} max "
        "epochs, batch 64, best validation epoch.\n\n" + "\n".join(lines) + f"\n\nWall times:\n\n{times}\n"
    )
    (RESULTS / f"multi_target{suffix}.md").write_text(text, encoding="utf-8")
    print("\n" + text, flush=True)
    print(f"wrote {RESULTS / f'multi_target{suffix}.md'} and .csv; total wall time {total:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
