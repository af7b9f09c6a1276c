"""Table S2 of the TL-CGCNN paper (Lee & Asahi 2021) with crysk's public API.

Protocol
--------
Three small-data targets, each evaluated on repeated random subsamples of
500 training / 125 validation / 125 test crystals (10 trials in full mode,
the same trials for every method):

==========  =====================================================  ==========================
target      data (pool sampled with a fixed seed from the file)    pretrained on
==========  =====================================================  ==========================
nm-eg       band gap of non-metals (``band_gap > 0.1``), mp_gap    formation energies, mp_eform
eform       formation energy per atom, mp_eform                    NM band gaps, mp_gap
kvrh        log10 K_VRH (GPa; K <= 0 dropped), mp_elastic_binary   formation energies, mp_eform
==========  =====================================================  ==========================

Rows per target (as in Table S2):

* ``CGCNN`` from scratch: Table S1 hyperparameters (atom_fea_len 64, 3
  convolutions, one 128-wide FC layer, SGD lr 0.01, decay x0.1 at epoch 100).
* ``TL fine-tuning``: ``warm_start_from`` the pretrained checkpoint, every
  layer trains, h_fea_len 64 and lr 0.005 (Table S1, transfer case). The
  64-wide FC layers cannot take the 128-wide pretrained ones, so they start
  fresh; embedding and convolutions are transferred.
* ``TL fine-tuning (whole head)``, with ``--source`` only: the same, but the
  hidden layer keeps the source's width (128 for the shipped models), so it
  transfers too and no layer starts fresh; this is what
  ``CGCNNRegressor(warm_start_from=name, lr=0.005)`` does with the defaults.
* ``TL fine-tuning (lr_transferred=x)``, with ``--lr-transferred x`` only: the
  transferred embedding and convolutions train at ``x``, the fresh head at 0.005.
* ``TL freezing``: same hyperparameters, ``freeze=["embedding", "convs"]``.
  The paper (S2) "only optimized the weights and biases of the last FC layer
  by freezing those of the other earlier layers" with identical
  hyperparameters, i.e. h_fea_len 64; since those FC layers have no
  pretrained counterpart, freezing them (``"all-but-head"``) would keep a
  random hidden layer fixed. We freeze everything that was transferred and
  train the fresh FC layers, which is what the paper's discussion (frozen
  convolutional layers) describes.
* ``CGCNN (scratch), ensemble of N`` and ``TL fine-tuning, ensemble of N``,
  with ``--ensemble N`` only: the mean of N seeds of that row
  (:class:`crysk.DeepEnsemble`, same validation part for every member).
* ``CGCNN (scratch) + RF, mean`` and ``TL fine-tuning + RF, mean``, with
  ``--blend`` only: scikit-learn's ``VotingRegressor`` averaging that row's
  network and the RF row; fitted as one estimator on training + validation,
  so the network picks its best epoch on its own 20 % of the 625 crystals.
* ``PLS``, ``LASSO``, ``SVR``, ``RF`` on 132 Magpie element descriptors,
  hyperparameters by 5-fold CV on training + validation
  (:func:`crysk.baselines.make_baseline`); ``SOAP`` kernel ridge only when
  dscribe is installed.

All networks pick their best epoch on the validation part and scale targets
with the tanh normalisation of paper eq. 6 in full mode (``--target-scaler
tanh``: :class:`crysk.targets.TanhScaler`, whose output is standardized as
the CGCNN code the paper ran standardized it; with the factor 0.01 this is
within a fraction of a percent of plain standardization). Quick mode
standardizes; nothing is tuned on the test parts. The
table gives mean (std) train and test MAE over trials and the paired t-test
p-values of each TL variant against the scratch CGCNN (against the same
recipe from scratch for the ensemble and blend rows: the scratch ensemble,
scratch + RF) and against RF. ``--rows NAME ...`` fits only the named rows.

Leakage check: the Materials Project pretraining and target sets share
structures (other property). The paper allowed this and so do we, but for
one target (nm-eg) a second model is pretrained on the same sample minus
every structure matching any of the target's test structures (same reduced
formula, then pymatgen ``StructureMatcher``), and TL fine-tuning from it is
compared with the normal TL fine-tuning on the same trials.

Pretrained models are cached in ``benchmarks/results/pretrained/<name>.pt``
(``save_pretrained``); during pretraining ``SaveBestCheckpoint`` keeps
``<name>.partial.pt`` up to date, and a rerun resumes from it. Reruns with
the same settings skip pretraining.

Commands::

    python benchmarks/tl_paper.py --quick                  # ~5 min on 2 free cores
    python benchmarks/tl_paper.py                          # full protocol (~10 h on 2 CPU cores)
    python benchmarks/tl_paper.py --quick --targets nm-eg --trials 1 --epochs 3 \\
        --pretrain-size 300 --pretrain-epochs 2            # smoke test
    python benchmarks/tl_paper.py --device cuda            # on a GPU
    python benchmarks/tl_paper.py --targets nm-eg kvrh --source cgcnn-mp-eform   # a shipped source
    python benchmarks/tl_paper.py --targets eform --source cgcnn-mp-nm-gap

Every finished fit is appended to ``benchmarks/results/tl_paper_fits.csv``
(:func:`crysk.evaluation.compare` with ``cache=``): a rerun with the same
settings skips the fits already done, so an interrupted run loses at most one
fit and the full protocol can be run piecewise (for instance in several
10-minute GPU calls). Delete that file after changing a pretrained model in
place.

Outputs: ``benchmarks/results/tl_paper[_quick][_custom].md`` (table),
``.csv`` (per-trial rows) and ``.png`` (bar chart of test MAE with std error
bars, like Figs. 5/6); ``_custom`` when any of the mode's settings was
changed on the command line (the table's title lists which).

Differences from the paper
--------------------------
* Data vintage: Matbench v0.1 ``mp_gap`` (106k, 56,258 non-metals), the
  CrysXPP formation-energy set (36,737) and the matcalc binary elastic set
  (3,953 binaries only) instead of the paper's Nov-2019 MP snapshot (118k);
  the eform target is all compounds, not non-metals only (mp_eform has no
  band gaps).
* Sizes: each target pool is a fixed-seed sample (``--pool-size``) rather
  than the whole database. Pretraining (full mode) uses all 36,737 formation
  energies (paper: 113k) and 36,737 NM band gaps (paper: 54k); quick mode a
  few thousand.
* Epochs: full mode 500 target epochs (paper: 500, more if needed) and 100
  pretraining epochs; quick mode far fewer, with batch size 64 so that the
  few epochs still give enough SGD steps (full mode: 256 as in Table S1).
* Quick mode scales targets with a StandardScaler, not eq. 6 (see above).
* Baseline grids are crysk's (the paper does not list its grids).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _data import data_dir, fit_resumable, peak_rss_mb

from sklearn.base import clone
from sklearn.ensemble import VotingRegressor

from crysk import CGCNNRegressor, CrystalGraphFeaturizer, DeepEnsemble
from crysk.baselines import make_baseline
from crysk.checkpoints import read_weights
from crysk.evaluation import RepeatedSubsample, compare, paired_ttest

RESULTS = Path(__file__).resolve().parent / "results"
PRETRAINED = RESULTS / "pretrained"
FITS = RESULTS / "tl_paper_fits.csv"  # one row per finished fit (compare cache): reruns resume

#: target name -> (file, target field, row filter, transform, label, unit, pretraining source)
TARGETS = {
    "nm-eg": dict(
        file="mp_gap.jsonl.gz", field="band_gap", keep=lambda v: v > 0.1, transform=lambda v: v,
        label="500-NM-Eg", unit="eV", source="eform",
    ),
    "eform": dict(
        file="mp_eform.jsonl.gz", field="formation_energy_per_atom", keep=lambda v: True,
        transform=lambda v: v, label="500-ΔEf", unit="eV/atom", source="nm-gap",
    ),
    "kvrh": dict(
        file="mp_elastic_binary.jsonl.gz", field="bulk_modulus_vrh", keep=lambda v: v > 0,
        transform=np.log10, label="500-log10 K_VRH", unit="log10 GPa", source="eform",
    ),
}
#: pretraining source -> the same kind of description
SOURCES = {
    "eform": dict(file="mp_eform.jsonl.gz", field="formation_energy_per_atom", keep=lambda v: True,
                  label="ΔEf"),
    "nm-gap": dict(file="mp_gap.jsonl.gz", field="band_gap", keep=lambda v: v > 0.1, label="NM-Eg"),
}
QUICK = dict(trials=3, epochs=10, pretrain_size=2000, pretrain_epochs=8, batch_size=64, pool_size=1000,
             target_scaler="standard")
FULL = dict(trials=10, epochs=500, pretrain_size=36737, pretrain_epochs=100, batch_size=256, pool_size=5000,
            target_scaler="tanh")


class Clock:
    """Print the wall time of each stage (and keep them for the summary)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stages: list[tuple[str, float]] = []

    def stage(self, name: str, since: float) -> None:
        dt = time.perf_counter() - since
        self.stages.append((name, dt))
        print(f"[{time.perf_counter() - self.start:7.0f} s] {name}: {dt:.0f} s (peak RSS {peak_rss_mb():.0f} MB)",
              flush=True)

    def times_markdown(self, total: float) -> str:
        """The stages' wall times and the total, one Markdown list item each."""
        return "\n".join(f"- {name}: {dt:.0f} s" for name, dt in self.stages) + f"\n- total: {total:.0f} s"


def read_records(name: str, field: str, keep) -> list[dict]:
    """All records of a data file whose ``field`` is finite and passes ``keep``.

    Streams the file so that the rejected records' CIF text is not kept.
    """
    out = []
    with gzip.open(data_dir() / name, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            v = rec.get(field)
            if v is not None and np.isfinite(v) and keep(v):
                out.append(rec)
    return out


def sample(records: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` records drawn without replacement with a fixed seed (all if fewer)."""
    if n >= len(records):
        return list(records)
    idx = np.sort(np.random.default_rng(seed).choice(len(records), n, replace=False))
    return [records[i] for i in idx]


def featurize(records: list[dict], n_jobs: int):
    """Crystal graphs of the records (CIF text parsed by the featurizer) and the kept records.

    Structures the featurizer cannot use (e.g. isolated atoms) are skipped
    and reported, so graphs and records stay aligned.
    """
    featurizer = CrystalGraphFeaturizer(radius=8.0, max_num_nbr=12, n_jobs=n_jobs, errors="skip")
    graphs, skipped = featurizer.transform_with_skipped([r["cif"] for r in records], ids=[r["id"] for r in records])
    kept = set(graphs.ids)
    for exc in skipped:
        print(f"  skipped: {exc}", flush=True)
    return graphs, [r for r in records if r["id"] in kept]


def reduced_formulas(graphs) -> list[str]:
    """Reduced formula of each crystal graph, from its atomic numbers (no CIF parsing)."""
    from pymatgen.core import Composition, Element

    return [
        Composition({Element.from_Z(z): n for z, n in counts.items()}).reduced_formula
        for counts in graphs.element_counts()
    ]


def matching_positions(pre_graphs, pre_records, test_graphs, test_records) -> np.ndarray:
    """Positions in the pretraining set of structures that match any test structure.

    Candidates share the reduced formula; pymatgen's ``StructureMatcher``
    (default tolerances) then decides, so polymorphs are not excluded.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    by_formula: dict[str, list[int]] = {}
    for j, f in enumerate(reduced_formulas(test_graphs)):
        by_formula.setdefault(f, []).append(j)
    matcher = StructureMatcher()
    cache: dict[int, Structure] = {}

    def test_structure(j):
        if j not in cache:
            cache[j] = Structure.from_str(test_records[j]["cif"], fmt="cif")
        return cache[j]

    hits = []
    for i, f in enumerate(reduced_formulas(pre_graphs)):
        if f not in by_formula:
            continue
        s = Structure.from_str(pre_records[i]["cif"], fmt="cif")
        if any(matcher.fit(s, test_structure(j)) for j in by_formula[f]):
            hits.append(i)
    return np.asarray(hits, dtype=np.int64)


def pretrain(name: str, graphs, y: np.ndarray, args, clock: Clock) -> Path:
    """Pretrain a CGCNN (Table S1, no transfer) or reuse the cached checkpoint.

    10 % of the pretraining crystals pick the best epoch; the checkpoint of
    the best epoch so far is kept on disk while training.
    """
    PRETRAINED.mkdir(parents=True, exist_ok=True)
    final = PRETRAINED / f"{name}.pt"
    if final.exists():
        print(f"  pretrained model {final.name} found: skipping pretraining", flush=True)
        return final
    t = time.perf_counter()

    def make(**fit_params):
        return CGCNNRegressor(
            h_fea_len=128, lr=0.01, lr_milestones=(100,), batch_size=args.batch_size, validation_fraction=0.1,
            target_scaler=args.target_scaler, device=args.device, random_state=0, **fit_params,
        )

    model, done = fit_resumable(make, graphs, y, final, args.pretrain_epochs, f"pretraining {name}")
    best = min((r["valid_mae"] for r in model.history), default=float("nan"))
    print(f"  {name}: {len(y)} crystals, {args.pretrain_epochs} epochs, best epoch "
          f"{model.best_epoch_}, validation MAE {best:.4f}", flush=True)
    clock.stage(f"pretrain {name}", t)
    return final


def cgcnn(args, **params) -> CGCNNRegressor:
    """CGCNN with Table S1 settings; ``params`` override (the transfer rows)."""
    base = dict(
        atom_fea_len=64, n_conv=3, h_fea_len=128, n_h=1, lr=0.01, optimizer="sgd", lr_milestones=(100,),
        batch_size=args.batch_size, max_epochs=args.epochs, target_scaler=args.target_scaler, device=args.device,
        random_state=0,
    )
    base.update(params)
    return CGCNNRegressor(**base)


def estimators(args, checkpoint: Path) -> dict:
    """The Table S2 rows for one target, pretrained model ``checkpoint``."""
    tl = dict(h_fea_len=64, lr=0.005, warm_start_from=str(checkpoint))
    rows = {
        "CGCNN (scratch)": cgcnn(args),
        "TL fine-tuning": cgcnn(args, **tl),
        "TL freezing": cgcnn(args, freeze=["embedding", "convs"], **tl),
    }
    head = read_weights(str(checkpoint)).state_dict.get("conv_to_fc.weight") if args.source else None
    if head is not None:
        # what CGCNNRegressor(warm_start_from=name, lr=0.005) does: the head keeps the source's width and transfers
        rows["TL fine-tuning (whole head)"] = cgcnn(args, **{**tl, "h_fea_len": int(head.shape[0])})
    if args.lr_transferred:
        # discriminative fine-tuning: the transferred tensors move slower than the fresh head
        rows[f"TL fine-tuning (lr_transferred={args.lr_transferred:g})"] = cgcnn(
            args, **tl, lr_transferred=args.lr_transferred
        )
    rows.update({
        "PLS": make_baseline("pls", random_state=0, n_jobs=2),
        "LASSO": make_baseline("lasso", random_state=0, n_jobs=2),
        "SVR": make_baseline("svr", random_state=0, n_jobs=2),
        "RF": make_baseline("rf", random_state=0, n_jobs=2),
    })
    try:
        import dscribe  # noqa: F401

        rows["SOAP KRR"] = make_baseline("soap", random_state=0, n_jobs=2)
    except ImportError:
        pass
    # each added recipe comes with its control: the same recipe from scratch (named with the same suffix)
    if args.ensemble:
        suffix = f", ensemble of {args.ensemble}"
        for name in ("CGCNN (scratch)", "TL fine-tuning"):
            rows[name + suffix] = DeepEnsemble(rows[name], n_members=args.ensemble, random_state=0)
    if args.blend:
        # a graph network and a composition model make different errors: their mean can beat both
        for name in ("CGCNN (scratch)", "TL fine-tuning"):
            rows[name + " + RF, mean"] = VotingRegressor([("cgcnn", clone(rows[name])), ("rf", clone(rows["RF"]))])
    if args.rows:
        unknown = sorted(set(args.rows) - set(rows))
        if unknown:
            raise SystemExit(f"--rows: unknown {unknown}; the rows of this run are {list(rows)}")
        rows = {name: est for name, est in rows.items() if name in args.rows}
    return rows


def pvalue(results: pd.DataFrame, a: str, b: str) -> float:
    """Paired t-test p-value (NaN with fewer than two trials)."""
    try:
        return paired_ttest(results, a, b).pvalue
    except ValueError:
        return float("nan")


def control_of(name: str, names) -> str | None:
    """The scratch row a TL row is tested against: the same recipe from scratch if the run has it."""
    if not name.startswith("TL"):
        return None
    same = "CGCNN (scratch)" + name.removeprefix("TL fine-tuning")
    return same if name.startswith("TL fine-tuning") and same in names else "CGCNN (scratch)"


def table_rows(target: str, source_label: str, results: pd.DataFrame) -> list[dict]:
    spec = TARGETS[target]
    names = set(results["estimator"].astype(str))
    rows = []
    for name, g in results.groupby("estimator", observed=True, sort=True):
        control = control_of(name, names)
        tl = control is not None
        rows.append({
            "Target": spec["label"], "Pretrained": source_label if tl else "", "Method": name,
            "Train MAE": f"{g.train_mae.mean():.3f} ({g.train_mae.std(ddof=1):.3f})",
            "Test MAE": f"{g.test_mae.mean():.3f} ({g.test_mae.std(ddof=1):.3f})",
            "p vs scratch": (f"{pvalue(results, name, control):.3g}"
                             + ("" if control == "CGCNN (scratch)" else f" (vs {control})")) if tl else "",
            "p vs RF": f"{pvalue(results, name, 'RF'):.3g}" if tl and "RF" in names else "",
            "Unit": spec["unit"],
        })
    return rows


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def figure(all_results: pd.DataFrame, path: Path) -> None:
    """Bar chart of test MAE (mean, std error bars) per method, one panel per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(pd.unique(all_results["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        r = all_results[all_results["target"] == target]
        s = r.groupby("estimator", observed=True, sort=True)["test_mae"].agg(["mean", "std"])
        colors = ["tab:red" if n.startswith("TL") else "tab:blue" if n.startswith("CGCNN") else "tab:gray"
                  for n in s.index]
        ax.bar(range(len(s)), s["mean"], yerr=s["std"].fillna(0), color=colors, capsize=3)
        ax.set_xticks(range(len(s)), s.index, rotation=60, ha="right", fontsize=8)
        ax.set_title(TARGETS[target]["label"])
        ax.set_ylabel(f"test MAE ({TARGETS[target]['unit']})")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few trials/epochs, small pretraining sets")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--trials", type=int, help="trials per target (quick 3, full 10)")
    parser.add_argument("--epochs", type=int, help="max epochs of target fits (quick 10, full 500)")
    parser.add_argument("--pretrain-size", type=int, help="crystals per pretraining set (quick 2000, full 36737)")
    parser.add_argument("--pretrain-epochs", type=int, help="pretraining epochs (quick 8, full 100)")
    parser.add_argument("--batch-size", type=int, help="minibatch size (quick 64, full 256)")
    parser.add_argument("--target-scaler", choices=["standard", "tanh"],
                        help="network target scaling (quick standard, full tanh = paper eq. 6)")
    parser.add_argument("--pool-size", type=int, help="target pool sampled per target (quick 1000, full 5000)")
    parser.add_argument("--leakage-trials", type=int, help="trials of the leakage check (default: --trials)")
    parser.add_argument("--no-leakage-check", action="store_true")
    parser.add_argument("--source", default=None,
                        help="transfer from this pretrained model (a name such as cgcnn-mp-eform, see `crysk pretrained "
                             "list`, or a checkpoint path) for every target instead of pretraining here")
    parser.add_argument("--lr-transferred", type=float, default=None,
                        help="add a TL fine-tuning row whose transferred tensors train at this learning rate "
                             "(the fresh ones at 0.005)")
    parser.add_argument("--ensemble", type=int, default=None, metavar="N",
                        help="add rows averaging N seeds (DeepEnsemble) of scratch and of TL fine-tuning")
    parser.add_argument("--blend", action="store_true",
                        help="add rows averaging scratch / TL fine-tuning with RF on Magpie (VotingRegressor)")
    parser.add_argument("--rows", nargs="+", default=None, metavar="NAME",
                        help="fit only these rows (exact names as in the table), e.g. to spare the freezing row")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-jobs", type=int, default=2, help="featurizer processes")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.leakage_trials = min(args.leakage_trials or args.trials, args.trials)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    clock = Clock()
    defaults = QUICK if args.quick else FULL
    changed = {k: getattr(args, k) for k in defaults if getattr(args, k) != defaults[k]}
    mode = ("quick" if args.quick else "full") + (" mode, changed: " + ", ".join(f"{k}={v}" for k, v in changed.items())
                                                   if changed else " mode")
    # a run with other settings must not overwrite the table of the standard quick or full run
    suffix = ("_quick" if args.quick else "") + ("_custom" if changed else "") + \
        (f"_source-{Path(args.source).stem}" if args.source else "") + \
        (f"_lrt-{args.lr_transferred:g}" if args.lr_transferred else "") + \
        (f"_ens-{args.ensemble}" if args.ensemble else "") + ("_blend" if args.blend else "") + \
        ("_rows-" + hashlib.sha1("|".join(sorted(args.rows)).encode()).hexdigest()[:6] if args.rows else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"settings: {vars(args)}", flush=True)
    n_needed = 500 + 125 + 125

    # ---------------------------------------------------------------- data
    t = time.perf_counter()
    cache: dict[str, list[dict]] = {}

    def records_of(file, field, keep, key):
        if key not in cache:
            cache[key] = read_records(file, field, keep)
        return cache[key]

    pools, sources = {}, {}
    for k, target in enumerate(args.targets):
        spec = TARGETS[target]
        recs = records_of(spec["file"], spec["field"], spec["keep"], target)
        # a fixed seed per target, independent of which other targets run
        pool = sample(recs, max(args.pool_size, n_needed), seed=100 + list(TARGETS).index(target))
        graphs, pool = featurize(pool, args.n_jobs)
        y = spec["transform"](np.array([r[spec["field"]] for r in pool], dtype=np.float64))
        pools[target] = (graphs, pool, y)
        print(f"  target {target}: {len(pool)} of {len(recs)} crystals in the pool", flush=True)
        src = spec["source"]
        if args.source is not None:
            continue  # a shipped (or given) source: nothing to pretrain here
        if src not in sources:
            s = SOURCES[src]
            srecs = records_of(s["file"], s["field"], s["keep"], "src-" + src)
            pre = sample(srecs, args.pretrain_size, seed=1)
            pgraphs, pre = featurize(pre, args.n_jobs)
            sources[src] = (pgraphs, pre, np.array([r[s["field"]] for r in pre], dtype=np.float64))
            print(f"  pretraining set {src}: {len(pre)} of {len(srecs)} crystals", flush=True)
    cache.clear()
    clock.stage("read + featurize", t)

    # ---------------------------------------------------------------- pretraining
    checkpoints = {}
    if args.source is not None:
        from crysk import pretrained

        label = args.source
        if pretrained.looks_like_name(args.source) and not Path(args.source).exists():
            card = pretrained.describe(args.source)
            label = f"{args.source} ({card.get('n_train_crystals', '?')} crystals, {card.get('epochs', '?')} epochs)"
        checkpoints = {TARGETS[t]["source"]: args.source for t in args.targets}
    for src, (pgraphs, pre, py) in sources.items():
        name = f"{src}_n{len(py)}_e{args.pretrain_epochs}_b{args.batch_size}"
        checkpoints[src] = pretrain(name, pgraphs, py, args, clock)

    # ---------------------------------------------------------------- targets
    rows, all_results = [], []
    for k, target in enumerate(args.targets):
        t = time.perf_counter()
        graphs, pool, y = pools[target]
        spec = TARGETS[target]
        cv = RepeatedSubsample(500, 125, 125, n_trials=args.trials, random_state=list(TARGETS).index(target))
        res = compare(estimators(args, checkpoints[spec["source"]]), graphs, y, cv, cache=FITS, verbose=True)
        res["target"] = target
        all_results.append(res)
        source_label = label if args.source is not None else \
            f"{len(sources[spec['source']][2])}-{SOURCES[spec['source']]['label']}"
        target_rows = table_rows(target, source_label, res)
        rows += target_rows
        print(markdown(target_rows), flush=True)
        clock.stage(f"target {target} ({args.trials} trials)", t)

    # ---------------------------------------------------------------- leakage check
    leakage_md = ""
    if (not args.no_leakage_check and "nm-eg" in args.targets and args.source is None
            and (args.rows is None or "TL fine-tuning" in args.rows)):
        t = time.perf_counter()
        target = "nm-eg"
        graphs, pool, y = pools[target]
        src = TARGETS[target]["source"]
        pgraphs, pre, py = sources[src]
        cv = RepeatedSubsample(500, 125, 125, n_trials=args.leakage_trials, random_state=list(TARGETS).index(target))
        test = np.unique(np.concatenate([te for _, _, te in cv.split_with_validation(graphs)]))
        hits = matching_positions(pgraphs, pre, graphs[test], [pool[i] for i in test])
        keep = np.setdiff1d(np.arange(len(py)), hits)
        print(f"  leakage: {len(hits)} of {len(py)} pretraining structures match one of the {len(test)} "
              f"{target} test structures", flush=True)
        digest = hashlib.sha1(",".join(sorted(pre[i]["id"] for i in hits)).encode()).hexdigest()[:8]
        name = f"{src}_n{len(py)}_e{args.pretrain_epochs}_b{args.batch_size}_excl-{target}-{digest}"
        base = all_results[args.targets.index(target)]
        base = base[(base.estimator == "TL fine-tuning") & (base.trial < args.leakage_trials)]
        if len(hits):
            ckpt = pretrain(name, pgraphs[keep], py[keep], args, clock)
            excl = compare({"TL fine-tuning (excl.)": estimators(args, ckpt)["TL fine-tuning"]}, graphs, y, cv,
                           cache=FITS, verbose=True)
        else:  # same pretrained model, seeded fits: the refit would repeat the numbers exactly
            excl = base.assign(estimator="TL fine-tuning (excl.)")
        both = pd.concat([base.assign(estimator="TL fine-tuning"), excl], ignore_index=True)
        both["estimator"] = both["estimator"].astype(str)
        p = pvalue(both, "TL fine-tuning", "TL fine-tuning (excl.)")
        lines = [
            f"Leakage check ({TARGETS[target]['label']}, {args.leakage_trials} trials): {len(hits)} of {len(py)} "
            f"pretraining structures match a test structure and are excluded.",
            "",
            "| Pretraining set | Test MAE (eV) |",
            "|---|---|",
        ]
        for label, r in (("all (leaky)", base), ("test structures excluded", excl)):
            lines.append(f"| {label} ({len(py) - (len(hits) if 'excl' in label else 0)}) | "
                         f"{r.test_mae.mean():.3f} ({r.test_mae.std(ddof=1):.3f}) |")
        lines += ["", f"paired t-test p = {p:.3g}"]
        leakage_md = "\n".join(lines)
        print(leakage_md, flush=True)
        clock.stage("leakage check", t)

    # ---------------------------------------------------------------- outputs
    results = pd.concat(all_results, ignore_index=True)
    results["estimator"] = results["estimator"].astype(str)
    results.to_csv(RESULTS / f"tl_paper{suffix}.csv", index=False)
    figure(results, RESULTS / f"tl_paper{suffix}.png")
    total = time.perf_counter() - clock.start
    pretraining = (f"source: {label}" if args.source is not None else
                   f"pretraining {args.pretrain_epochs} epochs on "
                   + ", ".join(f"{len(v[2])} {SOURCES[k]['label']}" for k, v in sources.items()))
    header = (
        f"# TL-CGCNN Table S2 reproduction ({mode})\n\n"
        f"500 train / 125 val / 125 test per trial, {args.trials} trials, {args.epochs} max epochs "
        f"(batch {args.batch_size}); {pretraining}"
        + ". MAE mean (std) over trials; p: paired t-test vs CGCNN (scratch) (or the named scratch recipe) "
        "and vs RF.\n"
    )
    times = clock.times_markdown(total)
    text = f"{header}\n{markdown(rows)}\n\n{leakage_md}\n\nWall times:\n\n{times}\n"
    (RESULTS / f"tl_paper{suffix}.md").write_text(text, encoding="utf-8")
    print("\n" + text, flush=True)
    print(f"wrote {RESULTS / f'tl_paper{suffix}.md'}, .csv and .png; total wall time {total:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
