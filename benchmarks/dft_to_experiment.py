"""DFT -> experiment: Table 3 of the CrysXPP paper on pymatgen's measured formation enthalpies.

The CrysXPP paper (Das et al. 2022, Table 3) trains on DFT formation energies,
fine-tunes on a few hundred measured ones and beats DFT itself against
experiment. Here the experimental data are the 2,135 formation enthalpies
pymatgen ships (Kingsbury et al. 2022), joined by Materials Project id with
``mp_eform.jsonl.gz``: 1,156 crystals have a structure, a DFT value and a
measurement (:func:`crysk.datasets.load_experimental_formation_enthalpy`).

Protocol
--------
* Pretraining on DFT: every ``mp_eform`` crystal *except all 1,156
  experimental ones* (so no test crystal, and no fine-tuning crystal either,
  was seen with its DFT label): 35,581 in full mode, a fixed-seed subset in
  quick mode. Models: CGCNN; CrysXPP from scratch; CrysXPP warm-started from
  a CrysAE pretrained (without labels) on the same structures. 10 % of them
  pick the best epoch. Cached in ``benchmarks/results/pretrained/``;
  interrupted pretraining resumes (``_data.fit_resumable``). In full mode
  the DFT CGCNN is the pretrained ``cgcnn-mp-eform`` when it is installed
  (``--dft-cgcnn auto``): it is trained on exactly these 35,581 crystals
  (120 epochs) and its model card lists the held-out measured crystals,
  which the script checks; ``--dft-cgcnn none`` trains one here instead.
  Likewise the CrysAE is the pretrained ``crysae-mp`` when installed
  (``--crysae auto``; trained without labels on every unique mp_gap and
  mp_eform structure, as the paper trains its CrysAE on all structures).
* Trials: a fraction ``f`` (default 20 %) of the 1,156 crystals is used for
  fitting, 80 % of it for training and 20 % for validation (best epoch of
  the networks; baselines fit on both), and the other ``1 - f`` are the
  test set. 5 trials in full mode, the same random splits for every row
  (:class:`crysk.evaluation.RepeatedSubsample`, seed 0). Test MAE in eV/atom
  against experiment, mean (std) over trials, paired t-test of each row
  against DFT itself on the same trials.

Rows
----
* ``DFT``: the mp_eform value as the prediction; ``DFT + mean shift``: DFT
  plus the mean of (experiment - DFT) on the fitting crystals.
* ``<model> on DFT only``: the pretrained model's predictions, untouched.
* ``<model> DFT -> exp``: the pretrained model fine-tuned (all layers,
  lr 0.005) on the measured values.
* ``DFT + <model> correction``: :class:`crysk.correction.ResidualRegressor`,
  a model of (experiment - DFT) added back to DFT; CGCNN from scratch,
  CGCNN warm-started from the DFT model (embedding and convolutions; fresh
  64-wide head, the TL-CGCNN fine-tuning setting), five of those averaged
  (:class:`crysk.DeepEnsemble`), RF on Magpie, and the mean of that
  ensemble's and RF's corrections (scikit-learn's ``VotingRegressor``; the
  ensemble's members then pick their best epochs on their own 10 %).
* ``CGCNN (scratch) on exp``, ``RF``/``SVR (Magpie) on exp``: the fitting
  crystals alone.
* ``control: CGCNN DFT -> DFT``: the paper's control, the DFT model
  fine-tuned on the *DFT* values of the same crystals (same number of
  values), tested on experiment.

Commands::

    python benchmarks/dft_to_experiment.py --quick            # a few minutes on 2 cores
    python benchmarks/dft_to_experiment.py                    # full protocol (see RESULTS.md for the time)
    python benchmarks/dft_to_experiment.py --fractions 0.2 0.5 0.8
    python benchmarks/dft_to_experiment.py --device cuda
    python benchmarks/dft_to_experiment.py --no-crysae-rows   # every row but the two CrysXPP (CrysAE) ones

``--no-crysae-rows`` runs the table while the CrysAE is still training elsewhere: its fits go into the same
cache, so the full run afterwards fits only the two CrysAE rows.

Every finished fit is appended to ``benchmarks/results/dft_to_experiment_fits.csv``
(:func:`crysk.evaluation.compare` with ``cache=``), so a rerun skips what is
done; delete it after changing a pretrained model in place. Outputs:
``benchmarks/results/dft_to_experiment[_quick][_custom].md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _data import fit_resumable, ids_sha256, peak_rss_mb, read_jsonl
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import VotingRegressor

from crysk import CGCNNRegressor, CrysAE, CrystalGraphFeaturizer, CrysXPPRegressor, DeepEnsemble, load
from crysk.baselines import make_baseline
from crysk.correction import ResidualRegressor
from crysk.datasets import load_experimental_formation_enthalpy
from crysk.evaluation import RepeatedSubsample, compare, paired_ttest

RESULTS = Path(__file__).resolve().parent / "results"
PRETRAINED = RESULTS / "pretrained"
FITS = RESULTS / "dft_to_experiment_fits.csv"
QUICK = dict(trials=2, epochs=12, pretrain_size=1000, pretrain_epochs=5, ae_epochs=2, batch_size=32,
             pretrain_batch_size=64)
FULL = dict(trials=5, epochs=200, pretrain_size=None, pretrain_epochs=100, ae_epochs=200, batch_size=32,
            pretrain_batch_size=256)
DFT_ROW = "DFT (mp_eform)"


class FitOnOtherTargets(RegressorMixin, BaseEstimator):
    """Fit ``estimator`` on other targets of the same crystals (looked up by id), e.g. their DFT values.

    The paper's control: the same number of fine-tuning values, but DFT ones.

    Parameters
    ----------
    estimator : crysk network estimator
    targets : dict
        Crystal id -> the value to fit instead of ``y``.
    """

    def __init__(self, estimator, targets: dict):
        self.estimator = estimator
        self.targets = targets

    def _lookup(self, graphs) -> np.ndarray:
        return np.array([self.targets[i] for i in graphs.ids], dtype=np.float64)

    def fit(self, X, y, X_valid=None, y_valid=None):
        valid = {} if X_valid is None else {"X_valid": X_valid, "y_valid": self._lookup(X_valid)}
        self.estimator_ = clone(self.estimator).fit(X, self._lookup(X), **valid)
        return self

    def predict(self, X) -> np.ndarray:
        return self.estimator_.predict(X)


def featurize(structures, ids, n_jobs: int):
    return CrystalGraphFeaturizer(n_jobs=n_jobs).transform(structures, ids=ids)


def installed_model(source: str, default: str, flag: str) -> tuple[str, Path] | None:
    """``(name, weights)`` of the pretrained model an option names ("auto": ``default`` if installed).

    ``None`` for "none", and for "auto" when ``default`` is not installed; an explicit name that is not
    installed stops the run.
    """
    from crysk import pretrained

    if source == "none":
        return None
    name = default if source == "auto" else source
    card = pretrained.describe(name)
    if card["status"] != "available":
        if source == "auto":
            return None
        raise SystemExit(f"{flag} {name}: not installed ({card['status']}); train it with "
                         f"benchmarks/pretrain_zoo.py or pass {flag} none to train one here")
    return name, Path(pretrained.locate(name)[0])


def shipped_dft_cgcnn(source: str, exp_ids) -> Path | None:
    """The weights of pretrained model ``source`` if its card proves it never saw the measured crystals.

    ``crysk.pretrained``'s ``cgcnn-mp-eform`` is trained on mp_eform without them; its card's
    ``held_out`` lists their ids, checked here against this run's. ``None`` when ``source`` is "none"
    or (for "auto") when no such model is installed; an explicit name that fails the check stops the run.
    """
    from crysk import pretrained

    found = installed_model(source, "cgcnn-mp-eform", "--dft-cgcnn")
    if found is None:
        return None
    name, path = found
    held = pretrained.describe(name).get("held_out") or {}
    if held.get("ids_sha256") != ids_sha256(exp_ids):
        raise SystemExit(f"--dft-cgcnn {name}: its card does not show the {len(exp_ids)} measured crystals held out "
                         "of its training set (held_out.ids_sha256 differs), so it may have seen the test crystals; "
                         "pass --dft-cgcnn none to pretrain a DFT CGCNN here")
    return path


def shipped_crysae(source: str) -> Path | None:
    """The weights of the pretrained CrysAE ``source`` ("auto": ``crysae-mp`` if installed; "none": train one).

    An autoencoder sees no labels, so one trained on every unique mp_gap and mp_eform structure (the
    measured crystals' structures among them, without any value) leaks no target; the CrysXPP paper too
    trains its CrysAE on all structures of its data set, test crystals included.
    """
    found = installed_model(source, "crysae-mp", "--crysae")
    return None if found is None else found[1]


def pretrain_all(graphs, y, args, tag: str, cgcnn: Path | None = None, crysae: Path | None = None,
                 with_crysae: bool = True) -> dict[str, Path]:
    """The DFT models (and the CrysAE they start from), trained once and cached.

    ``cgcnn``, ``crysae``: a DFT CGCNN (the shipped ``cgcnn-mp-eform``) or a CrysAE (``crysae-mp``) trained
    elsewhere, used instead of training one here. ``with_crysae=False`` stops before the CrysAE and the
    CrysXPP started from it.
    """
    PRETRAINED.mkdir(parents=True, exist_ok=True)
    b, e = args.pretrain_batch_size, args.pretrain_epochs
    stem = f"dft2exp_{tag}_n{len(y)}_b{b}"
    common = dict(batch_size=b, validation_fraction=0.1, device=args.device, random_state=0)
    paths = {}

    def run(name, make, target, epochs):
        path = PRETRAINED / f"{stem}_{name}_e{epochs}.pt"
        if path.exists():
            print(f"  reusing {path.name}", flush=True)
        else:
            t = time.perf_counter()
            fit_resumable(make, graphs, target, path, epochs, name)
            print(f"  pretrained {name}: {len(graphs)} crystals, {epochs} epochs, {time.perf_counter() - t:.0f} s "
                  f"(peak RSS {peak_rss_mb():.0f} MB)", flush=True)
        paths[name] = path

    if cgcnn is not None:
        print(f"  DFT CGCNN: {cgcnn} (pretrained model, measured crystals held out)", flush=True)
        paths["cgcnn"] = cgcnn
    else:
        run("cgcnn", lambda **kw: CGCNNRegressor(h_fea_len=128, lr=0.01, **common, **kw), y, e)
    # CrysXPP from scratch before the CrysAE: it needs nothing else, so a run stopped while waiting for (or
    # training) the autoencoder has already banked it
    run("crysxpp", lambda **kw: CrysXPPRegressor(**common, **kw), y, e)
    if not with_crysae:
        return paths
    if crysae is not None:
        print(f"  CrysAE: {crysae} (pretrained model)", flush=True)
        paths["crysae"] = crysae
    else:
        run("crysae", lambda **kw: CrysAE(**common, **kw), None, args.ae_epochs)

    def crysxpp_from_ae(warm_start_from=None, **kw):
        # a resumed run starts from its own partial checkpoint, a fresh one from the CrysAE
        return CrysXPPRegressor(warm_start_from=warm_start_from or str(paths["crysae"]), **common, **kw)

    stem_ae = f"crysxpp-{crysae.stem}" if crysae is not None else f"crysxpp-ae{args.ae_epochs}"
    run(stem_ae, crysxpp_from_ae, y, e)
    paths["crysxpp+ae"] = paths.pop(stem_ae)
    return paths


def estimators(args, ckpt: dict[str, Path], dft: dict, dft_models: dict[str, dict]) -> dict:
    """The table's rows, all fitted on the same trials by :func:`compare`."""
    net = dict(max_epochs=args.epochs, batch_size=args.batch_size, device=args.device, random_state=0,
               lr_milestones=(100,))
    tuned = dict(lr=0.005, **net)
    zero = DummyRegressor(strategy="constant", constant=0.0)
    rf = make_baseline("rf", random_state=0, n_jobs=1)
    rows = {
        DFT_ROW: ResidualRegressor(zero, baseline=dft),
        "DFT + mean shift": ResidualRegressor(DummyRegressor(), baseline=dft),
        "CGCNN on DFT only": ResidualRegressor(zero, baseline=dft_models["cgcnn"]),
        "CGCNN DFT -> exp": CGCNNRegressor(h_fea_len=128, warm_start_from=str(ckpt["cgcnn"]), **tuned),
        "CrysXPP on DFT only": ResidualRegressor(zero, baseline=dft_models["crysxpp"]),
        "CrysXPP DFT -> exp": CrysXPPRegressor(warm_start_from=str(ckpt["crysxpp"]), **tuned),
        **({
            "CrysXPP (CrysAE) on DFT only": ResidualRegressor(zero, baseline=dft_models["crysxpp+ae"]),
            "CrysXPP (CrysAE) DFT -> exp": CrysXPPRegressor(warm_start_from=str(ckpt["crysxpp+ae"]), **tuned),
        } if "crysxpp+ae" in ckpt else {}),
        "DFT + CGCNN correction (scratch)": ResidualRegressor(CGCNNRegressor(**net), baseline=dft),
        "DFT + CGCNN correction (from DFT model)": ResidualRegressor(
            CGCNNRegressor(h_fea_len=64, warm_start_from=str(ckpt["cgcnn"]), **tuned), baseline=dft
        ),
        # five such networks, differently seeded, averaged: the single network's train MAE is a quarter of its
        # test MAE on ~185 crystals, so its error is largely variance, which an ensemble averages away
        "DFT + CGCNN correction ensemble (5, from DFT model)": ResidualRegressor(
            DeepEnsemble(CGCNNRegressor(h_fea_len=64, warm_start_from=str(ckpt["cgcnn"]), **tuned), n_members=5,
                         random_state=0),
            baseline=dft,
        ),
        "DFT + RF (Magpie) correction": ResidualRegressor(rf, baseline=dft),
        # a graph network and a composition model make different errors: their mean correction can beat both
        "DFT + mean of CGCNN ensemble and RF corrections": ResidualRegressor(
            VotingRegressor([
                ("cgcnn", DeepEnsemble(CGCNNRegressor(h_fea_len=64, warm_start_from=str(ckpt["cgcnn"]), **tuned),
                                       n_members=5, random_state=0)),
                ("rf", clone(rf)),
            ]),
            baseline=dft,
        ),
        "CGCNN (scratch) on exp": CGCNNRegressor(**net),
        "RF (Magpie) on exp": make_baseline("rf", random_state=0, n_jobs=1),
        "SVR (Magpie) on exp": make_baseline("svr", random_state=0, n_jobs=1),
        "control: CGCNN DFT -> DFT": FitOnOtherTargets(
            CGCNNRegressor(h_fea_len=128, warm_start_from=str(ckpt["cgcnn"]), **tuned), dft
        ),
    }
    return rows


def pvalue(results: pd.DataFrame, a: str, b: str) -> float:
    try:
        return paired_ttest(results, a, b).pvalue
    except ValueError:  # fewer than 2 trials
        return float("nan")


def table(results: pd.DataFrame) -> str:
    dft = results[results.estimator == DFT_ROW].test_mae.mean()
    lines = ["| method | train MAE | test MAE | vs DFT (eV/atom) | p vs DFT |", "|---|---|---|---|---|"]
    for name, g in results.groupby("estimator", observed=True, sort=True):
        d = g.test_mae.mean() - dft
        p = "" if name == DFT_ROW else f"{pvalue(results, name, DFT_ROW):.2g}"
        lines.append(
            f"| {name} | {g.train_mae.mean():.3f} ({g.train_mae.std(ddof=1):.3f}) | "
            f"{g.test_mae.mean():.3f} ({g.test_mae.std(ddof=1):.3f}) | {d:+.3f} | {p} |"
        )
    return "\n".join(lines)


def verdict(results: pd.DataFrame) -> str:
    """Which rows beat DFT (significantly), and crysk's best row against the RF correction."""
    means = results.groupby("estimator", observed=True).test_mae.mean()
    dft = means[DFT_ROW]
    better = [f"{n} ({dft - m:.3f} lower, p = {pvalue(results, n, DFT_ROW):.2g})"
              for n, m in means.sort_values().items() if m < dft and n != DFT_ROW]
    crysk_rows = means[[n for n in means.index if ("CGCNN" in n or "CrysXPP" in n) and not n.startswith("control")]]
    network_rows = crysk_rows[[n for n in crysk_rows.index if "RF" not in n]]
    rf = "DFT + RF (Magpie) correction"
    lines = [f"DFT against experiment: {dft:.3f} eV/atom. Rows below it: " + ("; ".join(better) or "none") + "."]
    for what, rows in (("crysk row", crysk_rows), ("network-only row", network_rows)):
        best = rows.idxmin()
        lines.append(f"Best {what}: {best} ({rows[best]:.3f}); against {rf} ({means[rf]:.3f}): "
                     f"p = {pvalue(results, best, rf):.2g}.")
    return "\n".join(dict.fromkeys(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small pretraining set, few epochs, 2 trials")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2],
                        help="share of the experimental crystals used for fitting (default 0.2)")
    parser.add_argument("--trials", type=int, help="random splits (quick 2, full 5)")
    parser.add_argument("--epochs", type=int, help="max epochs of each fit on experiment (quick 12, full 200)")
    parser.add_argument("--pretrain-size", type=int, help="DFT crystals for pretraining (quick 1000, full all)")
    parser.add_argument("--pretrain-epochs", type=int, help="epochs of the DFT models (quick 5, full 100)")
    parser.add_argument("--ae-epochs", type=int, help="CrysAE epochs (quick 2, full 200 as in the paper)")
    parser.add_argument("--batch-size", type=int, help="batch of the fits on experiment (32)")
    parser.add_argument("--pretrain-batch-size", type=int, help="batch of pretraining (quick 64, full 256)")
    parser.add_argument("--dft-cgcnn", default="auto",
                        help="the DFT CGCNN (full mode): 'auto' takes the pretrained cgcnn-mp-eform when installed "
                             "(its card must show the measured crystals held out), else trains one here; a "
                             "pretrained model's name; 'none' always trains one here")
    parser.add_argument("--crysae", default="auto",
                        help="the CrysAE behind the CrysXPP (CrysAE) rows (full mode): 'auto' takes the pretrained "
                             "crysae-mp when installed, else trains one here on the DFT crystals; a pretrained "
                             "model's name; 'none' always trains one here")
    parser.add_argument("--no-crysae-rows", action="store_true",
                        help="leave out the two CrysXPP (CrysAE) rows and their pretraining (their fits are cached "
                             "like the others, so a later full run adds just these)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-jobs", type=int, default=2, help="featurizer processes")
    args = parser.parse_args()
    defaults = QUICK if args.quick else FULL
    changed = {k: getattr(args, k) for k in defaults if getattr(args, k) is not None and getattr(args, k) != defaults[k]}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.fractions != [0.2]:
        changed["fractions"] = args.fractions
    if args.no_crysae_rows:
        changed["rows"] = "all but CrysXPP (CrysAE)"
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.perf_counter()
    print(f"settings: {vars(args)}", flush=True)

    # ---------------------------------------------------------------- data
    records = read_jsonl("mp_eform.jsonl.gz")
    exp = load_experimental_formation_enthalpy({r["id"]: r["cif"] for r in records}, n_jobs=args.n_jobs)
    dft_all = {r["id"]: r["formation_energy_per_atom"] for r in records}
    graphs = featurize(exp.X, exp.ids, args.n_jobs)
    y = exp.y.to_numpy(dtype=np.float64)
    dft = {i: dft_all[i] for i in exp.ids}
    held_out = set(exp.ids)
    pool = [r for r in records if r["id"] not in held_out]
    if args.pretrain_size and args.pretrain_size < len(pool):
        pick = np.sort(np.random.default_rng(1).choice(len(pool), args.pretrain_size, replace=False))
        pool = [pool[i] for i in pick]
    pre_graphs = CrystalGraphFeaturizer(n_jobs=args.n_jobs, errors="skip").transform(
        [r["cif"] for r in pool], ids=[r["id"] for r in pool]
    )
    pre_y = np.array([dft_all[i] for i in pre_graphs.ids])
    del records, pool
    gap = y - np.array([dft[i] for i in exp.ids])
    print(f"{len(exp)} measured crystals with structure and DFT value (experiment - DFT: MAE {np.abs(gap).mean():.3f}, "
          f"mean {gap.mean():+.3f} eV/atom); pretraining on {len(pre_y)} other DFT crystals; "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    # ---------------------------------------------------------------- pretraining on DFT
    ckpt = pretrain_all(pre_graphs, pre_y, args, "quick" if args.quick else "full",
                        cgcnn=None if args.quick else shipped_dft_cgcnn(args.dft_cgcnn, exp.ids),
                        crysae=None if args.quick or args.no_crysae_rows else shipped_crysae(args.crysae),
                        with_crysae=not args.no_crysae_rows)
    del pre_graphs
    # the DFT models' predictions for the measured crystals, as fixed per-id baselines
    dft_models = {name: dict(zip(exp.ids, load(path).predict(graphs).tolist()))
                  for name, path in ckpt.items() if name != "crysae"}
    print(f"pretraining done: {time.perf_counter() - t0:.0f} s", flush=True)

    # ---------------------------------------------------------------- trials
    rows = estimators(args, ckpt, dft, dft_models)
    sections, all_results = [], []
    for frac in args.fractions:
        t = time.perf_counter()
        n_fit = int(round(frac * len(y)))
        n_val = int(round(0.2 * n_fit))
        cv = RepeatedSubsample(n_fit - n_val, n_val, len(y) - n_fit, n_trials=args.trials, random_state=0)
        res = compare(rows, graphs, y, cv, cache=FITS, verbose=True)
        res["fraction"] = frac
        all_results.append(res)
        text = (f"### Fitting on {frac:.0%} of the measurements ({n_fit - n_val} train + {n_val} validation), "
                f"testing on the other {len(y) - n_fit}\n\n{table(res)}\n\n{verdict(res)}\n")
        print(text, f"({time.perf_counter() - t:.0f} s)", flush=True)
        sections.append(text)

    # ---------------------------------------------------------------- outputs
    total = time.perf_counter() - t0
    suffix = ("_quick" if args.quick else "") + ("_custom" if changed else "")
    mode = ("quick" if args.quick else "full") + (f" mode, changed: {changed}" if changed else " mode")
    taken = {name: ckpt[key] for name, key in (("DFT CGCNN", "cgcnn"), ("CrysAE", "crysae"))
             if key in ckpt and not str(ckpt[key]).startswith(str(PRETRAINED))}
    sources = "".join(f"; {name}: the pretrained {Path(path).stem} instead" for name, path in taken.items())
    header = (
        f"# DFT -> experiment (CrysXPP Table 3 protocol, {mode})\n\n"
        f"{len(y)} crystals with a measured formation enthalpy (Kingsbury et al. 2022, shipped with pymatgen), "
        f"a structure and a DFT value (mp_eform); {args.trials} trials; DFT models pretrained on {len(pre_y)} "
        f"other mp_eform crystals ({args.pretrain_epochs} epochs; CrysAE {args.ae_epochs}){sources}; fits on experiment "
        f"{args.epochs} max epochs, batch {args.batch_size}. MAE in eV/atom against experiment, mean (std) over "
        "trials; p: paired t-test against DFT on the same trials.\n"
    )
    out = f"{header}\n" + "\n".join(sections) + f"\nTotal wall time {total:.0f} s (peak RSS {peak_rss_mb():.0f} MB).\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"dft_to_experiment{suffix}.md").write_text(out, encoding="utf-8")
    results = pd.concat(all_results, ignore_index=True)
    results["estimator"] = results["estimator"].astype(str)
    results.to_csv(RESULTS / f"dft_to_experiment{suffix}.csv", index=False)
    print(f"\nwrote {RESULTS / f'dft_to_experiment{suffix}.md'} and .csv; total wall time {total:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
