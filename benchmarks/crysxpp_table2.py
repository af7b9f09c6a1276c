"""CrysXPP paper, Table 2 (formation energy): CGCNN vs CrysXPP with and without CrysAE pretraining.

Protocol of the paper (Das et al. 2022, Table 2 and Methods), on the very data
it used (``mp_eform.jsonl.gz``, 36,737 Materials Project formation energies):

1. CrysAE is pretrained on *all* structures, without their labels;
2. the structures are split 20 % train / 80 % test (fixed seed), and 10 % of
   the training part is held out as validation (best epoch restored);
3. test MAE (eV/atom) of: CGCNN from scratch; CrysXPP without pretraining;
   CrysXPP warm-started from the CrysAE of step 1; the same without the L1
   term on the feature selector (Table 6 ablation); CrysXPP warm-started from
   the released CrysAE (``checkpoints/crysxpp/model_pretrain.pth``);
   CrysXPP with the L1 term averaged over the 92 selector weights
   (``l1_reduction="mean"``, as the authors' published training code has it)
   rather than summed as eq. 10 writes it; "CrysXPP, authors' recipe": the
   authors' transfer as their code does it, from the released CrysAE with the
   convolutions only (``warm_start_include="convs"``), a fresh embedding with
   a bias (``embedding_bias=True``) and the mean L1 term; and the "released
   CrysXPP predictor" (``checkpoints/crysxpp/model_best.pth.tar``) evaluated
   as it is, without training. Its training split is not stored: it was
   trained on 20 % of these very structures, so it may have seen some of this
   test split and its MAE here is not a held-out score.

The paper reports CGCNN 0.127 and CrysXPP 0.086 eV/atom (200 epochs each).
The authors' public logs put their released pipeline at 0.1399 eV/atom test
MAE with the epoch chosen on validation.

    python benchmarks/crysxpp_table2.py                # the full protocol (~4 h on 2 free CPU cores)
    python benchmarks/crysxpp_table2.py --quick        # a 3,000-structure subset, short runs (minutes)
    python benchmarks/crysxpp_table2.py --device cuda  # on a GPU
    python benchmarks/crysxpp_table2.py --rows "authors' recipe" "released CrysXPP predictor"
                                                       # only these rows (names or parts of names)

The pretrained CrysAE is cached under ``benchmarks/results/pretrained/`` (and
saved at every improving epoch, so an interrupted pretraining keeps its last
good checkpoint and a rerun resumes from it); reruns skip pretraining. Each
finished row is kept in ``benchmarks/results/crysxpp_table2_rows.json`` under
the run's settings, so a rerun fits only the models still missing: the full
protocol can be run in pieces (delete that file, or the rows concerned,
after changing the models' code). ``--rows`` runs only the named rows; the
CrysAE is pretrained only if a chosen row needs it. The table is printed and written to
``benchmarks/results/crysxpp_table2[_quick].md``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _data import data_dir, fit_resumable, read_jsonl

from crysk import CGCNNRegressor, CrysAE, CrystalGraphFeaturizer, CrysXPPRegressor

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = (
    "CGCNN (scratch)",
    "CrysXPP without pretraining",
    "CrysXPP (CrysAE pretrained here)",
    "CrysXPP without L1 (pretrained here)",
    "CrysXPP (released CrysAE)",
    "CrysXPP, mean L1 (pretrained here)",
    "CrysXPP, authors' recipe",
    "released CrysXPP predictor",
)


def pretrained_crysae(graphs, args, tag: str) -> Path:
    """Pretrain CrysAE on ``graphs`` (no labels), or reuse the cached checkpoint; resumes if interrupted."""
    path = RESULTS / "pretrained" / f"crysae_{tag}_n{len(graphs)}_e{args.ae_epochs}.pt"
    if path.exists():
        print(f"reusing {path}")
        return path

    def make(**fit_params):
        return CrysAE(batch_size=args.batch_size, device=args.device, random_state=0, verbose=1, **fit_params)

    t = time.perf_counter()
    _, done = fit_resumable(make, graphs, None, path, args.ae_epochs, "CrysAE pretraining")
    print(f"CrysAE pretraining: {len(graphs)} structures, {args.ae_epochs} epochs "
          f"({args.ae_epochs - done} in this run), {time.perf_counter() - t:.0f} s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3,000 structures, 15 CrysAE and 40 training epochs")
    parser.add_argument("--n", type=int, default=None, help="use this many structures (default: all, or 3,000 quick)")
    parser.add_argument("--ae-epochs", type=int, default=None, help="CrysAE epochs (paper: 200)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per predictor (paper: 200)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", nargs="+", default=None, metavar="NAME",
                        help="run only the rows whose name contains one of these (case-insensitive)")
    args = parser.parse_args()
    chosen = set(ROWS)
    if args.rows:  # checked before the minutes of featurizing
        unknown = [r for r in args.rows if not any(r.lower() in name.lower() for name in ROWS)]
        if unknown:
            parser.error(f"--rows {unknown} match no row; rows are: {list(ROWS)}")
        chosen = {name for name in ROWS if any(r.lower() in name.lower() for r in args.rows)}
    args.n = args.n or (3000 if args.quick else None)
    args.ae_epochs = args.ae_epochs or (15 if args.quick else 200)
    args.epochs = args.epochs or (40 if args.quick else 200)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()

    records = read_jsonl("mp_eform.jsonl.gz")
    if args.n:
        picked = np.sort(np.random.default_rng(0).permutation(len(records))[: args.n])
        records = [records[i] for i in picked]
    y = np.array([r["formation_energy_per_atom"] for r in records])
    graphs = CrystalGraphFeaturizer(n_jobs=2).transform([r["cif"] for r in records], ids=[r["id"] for r in records])
    print(f"featurized {len(graphs)} structures in {time.perf_counter() - t0:.0f} s")

    order = np.random.default_rng(0).permutation(len(graphs))
    n_train = int(round(0.2 * len(graphs)))
    n_valid = int(round(0.1 * n_train))
    valid, train, test = order[:n_valid], order[n_valid:n_train], order[n_train:]

    released = data_dir() / "checkpoints" / "crysxpp" / "model_pretrain.pth"
    released_predictor = data_dir() / "checkpoints" / "crysxpp" / "model_best.pth.tar"
    common = dict(max_epochs=args.epochs, batch_size=args.batch_size, device=args.device, random_state=0)
    # lr milestone: the CGCNN code's default (100) where runs are long enough, else at 3/4 of the run
    common["lr_milestones"] = (100,) if args.epochs > 130 else (int(args.epochs * 0.75),)
    ae = {}  # the CrysAE pretrained here, made on first use so that rows without it never pretrain

    def pretrained_here():
        if "path" not in ae:
            ae["path"] = pretrained_crysae(graphs, args, "quick" if args.quick else "all")
        return ae["path"]

    # name -> model factory; None marks the released predictor, which is evaluated as it is
    rows = {
        "CGCNN (scratch)": lambda: CGCNNRegressor(**common),
        "CrysXPP without pretraining": lambda: CrysXPPRegressor(**common),
        "CrysXPP (CrysAE pretrained here)": lambda: CrysXPPRegressor(warm_start_from=pretrained_here(), **common),
        "CrysXPP without L1 (pretrained here)": lambda: CrysXPPRegressor(
            warm_start_from=pretrained_here(), l1_penalty=0.0, **common
        ),
        "CrysXPP (released CrysAE)": lambda: CrysXPPRegressor(warm_start_from=released, **common),
        "CrysXPP, mean L1 (pretrained here)": lambda: CrysXPPRegressor(
            warm_start_from=pretrained_here(), l1_reduction="mean", **common
        ),
        "CrysXPP, authors' recipe": lambda: CrysXPPRegressor(
            warm_start_from=released, warm_start_include="convs", embedding_bias=True, l1_reduction="mean", **common
        ),
        "released CrysXPP predictor": None,
    }
    assert tuple(rows) == ROWS
    lines = [
        f"mp_eform: {len(graphs)} structures; train {len(train)} / validation {len(valid)} / test {len(test)} "
        f"(20 % / 80 %, seed 0); CrysAE pretrained here (rows that use it): {args.ae_epochs} epochs on all "
        f"{len(graphs)} (no labels); "
        f"{args.epochs} epochs per model; batch {args.batch_size}; device {args.device}",
        "",
        "| model | test MAE (eV/atom) | best epoch | fit time (s) |",
        "|---|---|---|---|",
    ]
    # each finished row is kept under the run's settings, so a rerun (e.g. after an interruption) skips it
    done_path = RESULTS / "crysxpp_table2_rows.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else {}
    settings = f"n{len(graphs)}_ae{args.ae_epochs}_e{args.epochs}_b{args.batch_size}_{args.device}"
    for name, make in rows.items():
        key = f"{settings}/{name}"
        if key not in done and name not in chosen:
            continue  # not asked for and not run before: the table lists the rows it has
        if key not in done:
            t = time.perf_counter()
            if make is None:
                model = CrysXPPRegressor.from_pretrained(released_predictor, device=args.device)
                fit_s = None
            else:
                model = make()
                model.fit(graphs[train], y[train], X_valid=graphs[valid], y_valid=y[valid])
                fit_s = time.perf_counter() - t
            mae = float(np.abs(model.predict(graphs[test]) - y[test]).mean())
            done[key] = {"mae": mae, "best_epoch": model.best_epoch_, "fit_s": fit_s}
            RESULTS.mkdir(exist_ok=True)
            done_path.write_text(json.dumps(done, indent=1))
        r = done[key]
        fit_s = "not trained here" if r["fit_s"] is None else f"{r['fit_s']:.0f}"
        lines.append(f"| {name} | {r['mae']:.4f} | {r['best_epoch']} | {fit_s} |")
        print(lines[-1], flush=True)
    if f"{settings}/released CrysXPP predictor" in done:
        lines += ["", "released CrysXPP predictor: the authors' model_best.pth.tar as released (best epoch = its own "
                  "validation epoch). It was trained on 20 % of these same structures with an unknown split, so it "
                  "may have seen some of this test split in training: its MAE here is not a held-out score."]
    mad = float(np.abs(y[test] - y[train].mean()).mean())
    lines += ["", f"mean predictor: {mad:.4f} eV/atom. Paper (200 epochs, full data): CGCNN 0.127, CrysXPP 0.086; "
              "the authors' logs: 0.1399 for their released pipeline (epoch chosen on validation).",
              f"total wall time {time.perf_counter() - t0:.0f} s"]
    text = "\n".join(lines)
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"crysxpp_table2{'_quick' if args.quick else ''}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
